"""DnsServer's protocols and forwarder on fake sockets, StringTransport and a task.Clock.

MemoryReactor has no UDP, so (as in test_tftp_protocol.py) a small fake of our own
stands in: sockets record what would have been sent; tests deliver datagrams by
calling the handlers directly."""
from __future__ import annotations

import struct

import pytest
import pytest_twisted
from dnslib import A, QTYPE, RCODE, RR, DNSRecord
from twisted.internet import address
from twisted.internet.testing import StringTransport

from netbootd.model import Lease, LeaseState
from netbootd.net.dns import DnsServer, DnsTcpFactory, DnsUdp
from netbootd.net.dns_forward import random_port_socket
from netbootd.policy.zone import Zone
from netbootd.writes import LeaseWrite
from tests.fakes import FakeReactor, FakeUdpSocket

CLIENT = ("10.77.0.50", 40000)
UP1, UP2 = ("192.0.2.53", 53), ("192.0.2.54", 53)


class FakeSocket(FakeUdpSocket):
    def __init__(self, dest=None, ports=None, port=53, ip="10.77.0.1"):
        super().__init__(ip, port, dest)
        self.ports = ports


class Harness:
    def __init__(self, forwarders=(), **kw):
        self.reactor = FakeReactor()
        self.reactor.advance(1000)
        self.upstream: list[FakeSocket] = []
        zone = Zone("netboot.lan", ["10.77.0.0/16"], "10.77.0.1",
                    reservations=[("52:54:00:00:00:05", "10.77.0.5", "node5")])
        kw.setdefault("rate_limit", None)
        self.server = DnsServer(self.reactor, zone, served_subnets=["10.77.0.0/16"],
                                forwarders=forwarders, socket_factory=self._listen_socket,
                                upstream_socket_factory=self._up_socket, **kw)
        self.udp = DnsUdp(self.server)
        self.lsock = FakeSocket()

        class T:
            socket = self.lsock
        self.udp.transport = T()

    def _listen_socket(self, port, ip):
        return FakeSocket(port=port, ip=ip)

    def _up_socket(self, dest, ports):
        s = FakeSocket(dest, ports, port=40000 + len(self.upstream))
        self.upstream.append(s)
        return s

    def query(self, name, qtype="A", qid=0x1111, src=CLIENT):
        q = DNSRecord.question(name, qtype)
        q.header.id = qid
        self.udp.datagramsReceived([(bytes(q.pack()), src)])

    def replies(self):
        out = [(DNSRecord.parse(data), dest) for data, dest in self.lsock.sent]
        self.lsock.sent.clear()
        return out

    def answer_upstream(self, sock, qid=None, ip="198.51.100.7", name=None, src=None):
        q = DNSRecord.parse(sock.sent[-1][0])
        r = q.reply()
        if qid is not None:
            r.header.id = qid
        if name is not None:
            r.q.qname = name
        r.add_answer(RR(r.q.qname, QTYPE.A, rdata=A(ip)))
        ep = next(e for e in self.reactor.readers if e.socket is sock)
        ep.handler.datagramsReceived([(bytes(r.pack()), src or sock.dest)])


def tcp_conn(h: Harness, host="10.77.0.50"):
    proto = DnsTcpFactory(h.server).buildProtocol(address.IPv4Address("TCP", host, 5555))
    if proto is None:
        return None, None
    t = StringTransport()
    proto.makeConnection(t)
    return proto, t


def framed(name, qtype="A", qid=7) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    raw = bytes(q.pack())
    return struct.pack("!H", len(raw)) + raw


def unframe(data: bytes) -> list[DNSRecord]:
    out = []
    while data:
        ln = struct.unpack("!H", data[:2])[0]
        out.append(DNSRecord.parse(data[2:2 + ln]))
        data = data[2 + ln:]
    return out


# -- UDP -----------------------------------------------------------------------------
def test_udp_answers_from_the_zone_to_the_sender():
    h = Harness()
    h.query("node5.netboot.lan")
    [(r, dest)] = h.replies()
    assert dest == CLIENT and str(r.rr[0].rdata) == "10.77.0.5"


def test_udp_internal_error_is_counted_and_the_next_query_served(monkeypatch):
    h = Harness()
    real = h.server.engine.handle
    calls = []

    def flaky(data, src, now, tcp=False):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(data, src, now, tcp)
    monkeypatch.setattr(h.server.engine, "handle", flaky)
    h.query("node5.netboot.lan")
    h.query("node5.netboot.lan")
    assert h.server.counters["drop.internal_error"] == 1 and len(h.replies()) == 1


def test_expired_leases_leave_the_zone_on_the_clock():
    h = Harness()
    h.server._expire.start(h.server.expire_interval, now=False)
    h.server.zone.apply([LeaseWrite(Lease(0x0A4D0010, "lab", b"k", "52:54:00:77:00:10",
                                         LeaseState.ACTIVE, 0, 1003.0, "web"))])
    h.query("web.netboot.lan")
    assert h.replies()[0][0].rr
    h.reactor.advance(5)
    h.query("web.netboot.lan")
    assert RCODE[h.replies()[0][0].header.rcode] == "NXDOMAIN"
    assert h.server.counters["zone.expired"] == 1


# -- TCP -----------------------------------------------------------------------------
def test_tcp_pipelined_and_split_messages_are_all_answered():
    h = Harness()
    proto, t = tcp_conn(h)
    data = framed("node5.netboot.lan", qid=1) + framed("nope.netboot.lan", qid=2)
    proto.dataReceived(data[:5])
    proto.dataReceived(data[5:40])
    proto.dataReceived(data[40:])
    r1, r2 = unframe(t.value())
    assert (r1.header.id, str(r1.rr[0].rdata)) == (1, "10.77.0.5")
    assert (r2.header.id, RCODE[r2.header.rcode]) == (2, "NXDOMAIN")


def test_tcp_large_answer_is_not_truncated():
    h = Harness()
    mac = "52:54:00:77:00:10"
    h.server.zone.apply([LeaseWrite(Lease((10 << 24) | (77 << 16) | (i << 8) | 9, f"v{i}",
                                         b"k", mac, LeaseState.ACTIVE, 0, 1e12, "trunk"))
                         for i in range(1, 101)])
    proto, t = tcp_conn(h)
    proto.dataReceived(framed("trunk.netboot.lan"))
    [r] = unframe(t.value())
    assert len(r.rr) == 100 and r.header.tc == 0


def test_tcp_message_too_short_for_a_header_aborts():
    h = Harness()
    proto, t = tcp_conn(h)
    proto.dataReceived(b"\x00\x05hello")
    assert t.disconnecting or t.disconnected
    assert h.server.counters["drop.tcp_short"] == 1


def test_tcp_idle_connection_is_closed_and_dribbling_does_not_keep_it():
    h = Harness(tcp_idle=10.0)
    proto, t = tcp_conn(h)
    msg = framed("node5.netboot.lan")
    h.reactor.advance(6)
    proto.dataReceived(msg[:3])                  # incomplete: no reset
    h.reactor.advance(4.1)
    assert t.disconnecting and h.server.counters["tcp.idle_closed"] == 1


def test_tcp_complete_queries_keep_the_connection():
    h = Harness(tcp_idle=10.0)
    proto, t = tcp_conn(h)
    for _ in range(3):
        h.reactor.advance(9)
        proto.dataReceived(framed("node5.netboot.lan"))
    assert not t.disconnecting


def test_tcp_connections_are_capped_per_source_and_in_all():
    h = Harness(tcp_max=3, tcp_per_source=2)
    conns = [tcp_conn(h, "10.77.0.50") for _ in range(3)]
    assert conns[2] == (None, None)
    assert tcp_conn(h, "10.77.0.51")[0] is not None
    assert tcp_conn(h, "10.77.0.52") == (None, None)
    conns[0][0].connectionLost(None)
    assert tcp_conn(h, "10.77.0.52")[0] is not None
    assert h.server.counters["tcp.refused_connection"] == 2


def test_tcp_stops_reading_while_replies_are_not_read():
    h = Harness()
    proto, t = tcp_conn(h)
    assert t.producer is proto and t.streaming
    proto.pauseProducing()
    assert t.producerState == "paused"
    proto.resumeProducing()
    assert t.producerState == "producing"


# -- forwarding ----------------------------------------------------------------------
def test_forwarded_answer_reaches_the_client_with_its_id():
    h = Harness(forwarders=[UP1])
    h.query("example.com", qid=0x1234)
    [up] = h.upstream
    assert up.dest == UP1 and str(DNSRecord.parse(up.sent[0][0]).q.qname) == "example.com."
    h.answer_upstream(up)
    [(r, dest)] = h.replies()
    assert dest == CLIENT and r.header.id == 0x1234 and str(r.rr[0].rdata) == "198.51.100.7"
    assert up.closed and not h.reactor.readers


def test_upstream_ids_and_ports_are_drawn_at_random():
    h = Harness(forwarders=[UP1])
    for i in range(40):
        h.query(f"n{i}.example.com", qid=5)
    ids = [DNSRecord.parse(s.sent[0][0]).header.id for s in h.upstream]
    assert len(set(ids)) >= 38
    lo, hi = h.upstream[0].ports
    assert 1024 <= lo < hi <= 65535


def test_random_port_socket_binds_inside_the_range():
    ports = set()
    for _ in range(20):
        s = random_port_socket(("127.0.0.1", 9), (40000, 60000))
        ports.add(s.getsockname()[1])
        s.close()
    assert all(40000 <= p <= 60000 for p in ports) and len(ports) >= 18


@pytest.mark.parametrize("forgery", ["id", "source", "question"])
def test_forged_replies_are_counted_and_ignored(forgery):
    h = Harness(forwarders=[UP1])
    h.query("victim.example.com")
    [up] = h.upstream
    real_id = DNSRecord.parse(up.sent[0][0]).header.id
    if forgery == "id":
        h.answer_upstream(up, qid=real_id ^ 1, ip="203.0.113.66")
    elif forgery == "source":
        h.answer_upstream(up, ip="203.0.113.66", src=("192.0.2.53", 5353))
    else:
        h.answer_upstream(up, ip="203.0.113.66", name="other.example.com")
    assert h.replies() == []
    assert h.server.counters[f"forward.mismatch.{forgery}"] == 1
    h.answer_upstream(up)
    [(r, _)] = h.replies()
    assert str(r.rr[0].rdata) == "198.51.100.7"


def test_timeout_moves_to_the_next_upstream_then_servfail():
    h = Harness(forwarders=[UP1, UP2], forward_timeout=2.0)
    h.query("slow.example.com")
    h.reactor.advance(2.0)
    assert [s.dest for s in h.upstream] == [UP1, UP2] and h.upstream[0].closed
    h.reactor.advance(2.0)
    [(r, _)] = h.replies()
    assert RCODE[r.header.rcode] == "SERVFAIL" and h.server.counters["forward.timeout"] == 2
    assert not h.server.forwarder.pending and not h.reactor.readers


def test_identical_questions_in_flight_go_upstream_once():
    h = Harness(forwarders=[UP1])
    h.query("same.example.com", qid=1, src=("10.77.0.50", 1000))
    h.query("SAME.example.com", qid=2, src=("10.77.0.51", 2000))
    assert len(h.upstream) == 1
    h.answer_upstream(h.upstream[0])
    got = {dest: r for r, dest in h.replies()}
    assert got[("10.77.0.50", 1000)].header.id == 1
    assert got[("10.77.0.51", 2000)].header.id == 2
    assert str(got[("10.77.0.51", 2000)].q.qname) == "SAME.example.com."


def test_too_many_queries_in_flight_get_servfail():
    h = Harness(forwarders=[UP1])
    h.server.forwarder.max_pending = 2
    for i in range(3):
        h.query(f"q{i}.example.com", qid=i)
    [(r, _)] = h.replies()
    assert r.header.id == 2 and RCODE[r.header.rcode] == "SERVFAIL"


def test_forwarded_tcp_query_answers_on_its_connection():
    h = Harness(forwarders=[UP1])
    proto, t = tcp_conn(h)
    proto.dataReceived(framed("example.com", qid=99))
    h.answer_upstream(h.upstream[0])
    [r] = unframe(t.value())
    assert r.header.id == 99 and r.rr


def test_stop_closes_everything():
    h = Harness(forwarders=[UP1])
    h.query("example.com")
    h.server.stop()
    assert all(s.closed for s in h.upstream) and not h.server.forwarder.pending


def test_tcp_idle_close_is_forced_when_the_client_never_reads():
    h = Harness(tcp_idle=10.0)
    proto, t = tcp_conn(h)
    t.loseConnection = lambda: None            # the graceful close never completes
    aborted = []
    t.abortConnection = lambda: aborted.append(1)
    h.reactor.advance(10)
    assert not aborted
    h.reactor.advance(10)
    assert aborted == [1]


def test_tcp_idle_waits_for_a_forwarded_answer():
    h = Harness(forwarders=[UP1], tcp_idle=1.0, forward_timeout=3.0)
    proto, t = tcp_conn(h)
    proto.dataReceived(framed("example.com", qid=3))
    h.reactor.advance(1.5)
    assert not t.disconnecting
    h.answer_upstream(h.upstream[0])
    assert unframe(t.value())[0].header.id == 3


@pytest_twisted.inlineCallbacks
def test_port_zero_retries_when_the_udp_port_is_taken_over_tcp():
    """Port 0: the kernel's free UDP port can be a busy TCP port (the CI
    flake); listen() picks again instead of failing."""
    import socket

    from twisted.internet import reactor

    from netbootd.net import interfaces
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    taken = busy.getsockname()[1]
    picks = []

    def factory(port, ip):
        s = interfaces.udp_socket(None, taken if not picks else port, ip)
        picks.append(s.getsockname()[1])
        return s

    server = DnsServer(reactor, Zone("netboot.lan", ["10.77.0.0/16"], "127.0.0.1"),
                       served_subnets=["127.0.0.1/32"], socket_factory=factory)
    try:
        ep, tcp = server.listen(0, "127.0.0.1")
        # the next free UDP port may be a busy TCP port too on a loaded machine
        assert picks[0] == taken and len(picks) >= 2
        assert ep.socket.getsockname()[1] == tcp.getHost().port != taken
        assert ep.socket.fileno() >= 0
    finally:
        busy.close()
        yield server.stop()
