"""Real `dig` (Debian: bind9-dnsutils) against DnsServer on 127.0.0.1 (loopback only).

The server runs in this process on the real reactor (pytest-twisted); dig runs in a
worker thread, so the reactor keeps serving.  Served subnet: 127.0.0.1/32 only, so
dig bound to 127.0.0.2 is an outsider.  The only upstream is a fake one in this
process on 127.0.0.3, which records what it is asked and can forge answers.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import pytest_twisted
from dnslib import A, QTYPE, RR, DNSRecord
from twisted.internet import protocol, threads

from netbootd.model import Lease, LeaseState
from netbootd.net.dns import DnsServer
from netbootd.policy.zone import Zone
from netbootd.writes import LeaseWrite

SERVER = "127.0.0.1"
OUTSIDER = "127.0.0.2"
UPSTREAM = "127.0.0.3"
MAC = "52:54:00:77:00:10"
GENUINE = "192.0.2.1"
FORGED = "203.0.113.66"

pytestmark = pytest.mark.skipif(shutil.which("dig") is None,
                                reason="dig is not installed (Debian package: bind9-dnsutils)")


class FakeUpstream(protocol.DatagramProtocol):
    """Answers every A question with GENUINE.  mode "forge_id": first a
    forged answer (FORGED, wrong ID) from the right address and port;
    "forge_port": a forged answer with the right ID from another port.
    The genuine answer follows 50 ms later in both cases."""

    def __init__(self):
        self.seen: list[tuple[str, int, int, str]] = []     # (src ip, src port, id, qname)
        self.mode = "answer"
        self.other = None

    def datagramReceived(self, data, addr):
        from twisted.internet import reactor
        q = DNSRecord.parse(data)
        self.seen.append((addr[0], addr[1], q.header.id, str(q.q.qname)))

        def reply(ip, qid=q.header.id):
            r = q.reply()
            r.header.id = qid
            r.add_answer(RR(q.q.qname, QTYPE.A, rdata=A(ip), ttl=30))
            return r.pack()
        if self.mode == "forge_id":
            self.transport.write(reply(FORGED, q.header.id ^ 0x5A5A), addr)
        elif self.mode == "forge_port":
            self.other.transport.write(reply(FORGED), addr)
        delay = 0.05 if self.mode != "answer" else 0
        reactor.callLater(delay, self.transport.write, reply(GENUINE), addr)


@pytest.fixture
def dns():
    from twisted.internet import reactor
    upstream = FakeUpstream()
    up_port = reactor.listenUDP(0, upstream, interface=UPSTREAM)
    forger = protocol.DatagramProtocol()
    forger_port = reactor.listenUDP(0, forger, interface=UPSTREAM)
    upstream.other = forger
    zone = Zone("netboot.lan", ["10.77.0.0/16"], SERVER,
                reservations=[("52:54:00:00:00:05", "10.77.0.5", "node5")])
    server = DnsServer(reactor, zone, served_subnets=["127.0.0.1/32"],
                       forwarders=[(UPSTREAM, up_port.getHost().port)], forward_timeout=1.0)
    ep, _ = server.listen(0, SERVER)
    yield server, ep.socket.getsockname()[1], upstream
    server.stop()
    up_port.stopListening()
    forger_port.stopListening()


def dig(port: int, *args: str, src: str | None = None):
    argv = ["dig", "-p", str(port), f"@{SERVER}", "+tries=1", "+time=3", *args]
    if src:
        argv[1:1] = ["-b", src]
    return threads.deferToThread(subprocess.run, argv, capture_output=True, text=True, timeout=30)


def parsed(out: str) -> dict:
    """status, flags, answers (name, type, value) and transport of dig's last reply."""
    status = re.findall(r"status: (\w+)", out)
    flags = re.findall(r";; flags: ([a-z ]*);", out)
    answers = []
    section = None
    for line in out.splitlines():
        if line.startswith(";; ") and line.endswith("SECTION:"):
            section = line[3:-9].strip()
            continue
        if section == "ANSWER" and line and not line.startswith(";"):
            f = line.split()
            answers.append((f[0], f[3], f[4]))
    via = re.findall(r";; SERVER: .*\((UDP|TCP)\)", out)
    return {"status": status[-1] if status else None, "flags": flags[-1].split() if flags else [],
            "answers": answers, "via": via[-1] if via else None, "raw": out}


@pytest_twisted.inlineCallbacks
def test_a_ptr_nodata_nxdomain_over_udp_and_tcp(dns):
    server, port, _ = dns
    for mode in ("+notcp", "+tcp"):
        r = parsed((yield dig(port, mode, "node5.netboot.lan")).stdout)
        assert r["status"] == "NOERROR" and "aa" in r["flags"]
        assert r["answers"] == [("node5.netboot.lan.", "A", "10.77.0.5")]
        assert r["via"] == ("TCP" if mode == "+tcp" else "UDP")
        r = parsed((yield dig(port, mode, "-x", "10.77.0.5")).stdout)
        assert r["answers"] == [("5.0.77.10.in-addr.arpa.", "PTR", "node5.netboot.lan.")]
        out = (yield dig(port, mode, "node5.netboot.lan", "AAAA")).stdout
        r = parsed(out)
        assert r["status"] == "NOERROR" and r["answers"] == [] and "AUTHORITY: 1" in out
        r = parsed((yield dig(port, mode, "nobody.netboot.lan")).stdout)
        assert r["status"] == "NXDOMAIN" and "aa" in r["flags"]


@pytest_twisted.inlineCallbacks
def test_mixed_case_question_is_echoed(dns):
    _, port, _ = dns
    out = (yield dig(port, "NoDe5.NetBoot.LAN")).stdout
    assert ";NoDe5.NetBoot.LAN.\t" in out and "10.77.0.5" in out


@pytest_twisted.inlineCallbacks
def test_lease_appears_and_disappears_at_once(dns):
    server, port, _ = dns
    lease = Lease(0x0A4D0010, "lab", b"\x01k", MAC, LeaseState.ACTIVE, 0, 1e12, "web")
    r = parsed((yield dig(port, "web.netboot.lan")).stdout)
    assert r["status"] == "NXDOMAIN"
    server.zone.apply([LeaseWrite(lease)])
    r = parsed((yield dig(port, "web.netboot.lan")).stdout)
    assert r["answers"] == [("web.netboot.lan.", "A", "10.77.0.16")]
    r = parsed((yield dig(port, "-x", "10.77.0.16")).stdout)
    assert r["answers"] == [("16.0.77.10.in-addr.arpa.", "PTR", "web.netboot.lan.")]
    lease.state = LeaseState.RELEASED
    server.zone.apply([LeaseWrite(lease)])
    assert parsed((yield dig(port, "web.netboot.lan")).stdout)["status"] == "NXDOMAIN"
    assert parsed((yield dig(port, "-x", "10.77.0.16")).stdout)["status"] == "NXDOMAIN"


def trunk(server: DnsServer, vlans: int) -> None:
    """One MAC on many VLANs, one lease per network: a large A RRset."""
    server.zone.apply([LeaseWrite(Lease((10 << 24) | (77 << 16) | (i << 8) | 9, f"vlan{i}",
                                       b"\x01" + MAC.encode(), MAC, LeaseState.ACTIVE, 0, 1e12,
                                       "trunk")) for i in range(1, vlans + 1)])


@pytest_twisted.inlineCallbacks
def test_large_answer_sets_tc_over_udp_and_dig_retries_over_tcp(dns):
    server, port, _ = dns
    trunk(server, 40)                                   # 40 A records: ~700 bytes
    for args in (("+bufsize=512",), ("+noedns",)):
        out = (yield dig(port, *args, "trunk.netboot.lan")).stdout
        r = parsed(out)
        assert "Truncated, retrying in TCP mode" in out
        assert r["via"] == "TCP" and len(r["answers"]) == 40
        r = parsed((yield dig(port, *args, "+ignore", "trunk.netboot.lan")).stdout)
        assert "tc" in r["flags"] and r["answers"] == [] and r["via"] == "UDP"
    r = parsed((yield dig(port, "+bufsize=1232", "trunk.netboot.lan")).stdout)
    assert r["via"] == "UDP" and len(r["answers"]) == 40 and "tc" not in r["flags"]
    assert server.counters["truncated"] >= 4


@pytest_twisted.inlineCallbacks
def test_tcp_connection_carries_several_queries(dns):
    server, port, _ = dns
    out = (yield dig(port, "+tcp", "+keepopen", "node5.netboot.lan", "ns.netboot.lan",
                     "netboot.lan", "SOA")).stdout
    assert out.count("status: NOERROR") == 3
    assert server.counters["tcp.connections"] == 1


@pytest_twisted.inlineCallbacks
def test_outsiders_get_our_names_but_are_refused_anything_else(dns):
    server, port, upstream = dns
    r = parsed((yield dig(port, "example.com", src=OUTSIDER)).stdout)
    assert r["status"] == "REFUSED" and r["answers"] == []
    r = parsed((yield dig(port, "node5.netboot.lan", src=OUTSIDER)).stdout)
    assert r["answers"] == [("node5.netboot.lan.", "A", "10.77.0.5")]
    assert upstream.seen == []


@pytest_twisted.inlineCallbacks
def test_forwarding_uses_random_ports_and_ids(dns):
    server, port, upstream = dns
    names = [f"n{i}.example.com" for i in range(30)]
    out = (yield dig(port, *names)).stdout
    assert out.count(GENUINE) == 30
    assert [s[3] for s in upstream.seen] == [n + "." for n in names]
    ports = [s[1] for s in upstream.seen]
    ids = [s[2] for s in upstream.seen]
    assert {s[0] for s in upstream.seen} == {SERVER}
    assert len(set(ports)) >= 28 and max(ports) - min(ports) > 1000
    assert sum(1 for a, b in zip(ports, ports[1:]) if abs(b - a) <= 2) <= 2
    assert len(set(ids)) >= 28
    assert sum(1 for a, b in zip(ids, ids[1:]) if abs(b - a) <= 2) <= 2
    client_ids = [int(x) for x in re.findall(r"id: (\d+)", out)]
    assert len(client_ids) == 30
    assert sum(1 for c, u in zip(client_ids, ids) if c == u) <= 1     # not passed through


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("mode", ["forge_id", "forge_port"])
def test_forged_answers_are_ignored(dns, mode):
    server, port, upstream = dns
    upstream.mode = mode
    r = parsed((yield dig(port, "victim.example.com")).stdout)
    assert r["answers"] == [("victim.example.com.", "A", GENUINE)]
    if mode == "forge_id":
        assert server.counters["forward.mismatch.id"] == 1
    assert server.counters["forward.answered"] == 1


@pytest_twisted.inlineCallbacks
def test_no_answer_upstream_gives_servfail(dns):
    server, port, upstream = dns
    upstream.mode = "silent"
    upstream.transport.stopReading()
    try:
        r = parsed((yield dig(port, "+time=4", "slow.example.com")).stdout)
    finally:
        upstream.transport.startReading()
    assert r["status"] == "SERVFAIL"
    assert server.counters["forward.timeout"] == 1
