"""Real and scripted DHCP clients against `netbootd serve --mode full` with a
[[networks]] entry: busybox udhcpc (DORA + RELEASE), scapy DECLINE and
INFORM.  Server, clients and a bridge each live in their own namespace."""
from __future__ import annotations

import ipaddress
import json
import random
import signal
import subprocess
import time

import pytest

from .harness import (ACK, DECLINE, HELPERS, INFORM, RELEASE, Capture, client_agent, decode_reply,
                      netbootd_bin, norm_mac, build_lan, describe_all, dhcp_frame,
                      discover, dora, iface_mac, ip_bytes, is_reply, lease_rows_for, leases,
                      opt, require_bin, wait_for, write_config)

SERVER = "10.77.0.1"
CLI = "10.77.0.2"
RANGE_LO, RANGE_HI = ipaddress.IPv4Address("10.77.1.10"), ipaddress.IPv4Address("10.77.1.250")
DNS = ["10.77.0.1", "10.77.0.53"]
LEASE_TIME = 600

CONFIG = f"""
[dhcp]
lease_time = {LEASE_TIME}

[[networks]]
name = "lab"
subnet = "10.77.0.0/16"
ranges = ["{RANGE_LO}-{RANGE_HI}"]
router = "{SERVER}"
dns = ["{DNS[0]}", "{DNS[1]}"]
domain = "netboot.lan"
"""


def in_range(a: str) -> bool:
    return RANGE_LO <= ipaddress.IPv4Address(a) <= RANGE_HI


@pytest.fixture
def clients_lab(lab, netbootd_factory, tmp_path):
    """srv (netbootd, 10.77.0.1/16), cli (scapy agent, 10.77.0.2/16) and
    bb (unconfigured, for udhcpc), joined by a bridge."""
    lan = build_lan(lab, {"srv": f"{SERVER}/16", "cli": f"{CLI}/16", "bb": None})
    cfg = write_config(tmp_path / "netbootd.toml", CONFIG)
    nb = netbootd_factory(lan.ns["srv"], ["--config", str(cfg), "--mode", "full",
                                          "--interface", lan.ifs["srv"]]).start()
    with client_agent(lab, lan, tmp_path) as agent:
        yield lan, nb, agent


def _events(path) -> list[dict]:
    recs, cur = [], {}
    for line in path.read_text().splitlines():
        if line == "--":
            recs.append(cur)
            cur = {}
        elif "=" in line:
            k, v = line.split("=", 1)
            cur[k] = v
    return recs


def run_udhcpc(lan, tmp_path, tag: str, release: bool = False) -> tuple[int, str, list[dict]]:
    """busybox udhcpc in the 'bb' namespace.  release=False: `-q` (quit once
    bound).  release=True: run with -R until bound, then SIGTERM, on which
    udhcpc unicasts a DHCPRELEASE (busybox's -q exits before BOUND, so
    `-q -R` never releases)."""
    bb = require_bin("busybox")["busybox"]
    events = tmp_path / f"udhcpc-{tag}.events"
    events.write_text("")
    cmd = ["env", f"UDHCPC_EVENTS={events}", bb, "udhcpc", "-i", lan.ifs["bb"], "-f", "-n",
           "-t", "5", "-T", "1", "-s", str(HELPERS / "udhcpc_record.sh"),
           "-x", "hostname:bbclient"]
    if not release:
        r = lan.lab.ns_exec(lan.ns["bb"], *cmd, "-q", check=False, timeout=40)
        return r.returncode, r.stdout + r.stderr, _events(events)
    logp = tmp_path / f"udhcpc-{tag}.log"
    with open(logp, "w") as logf:
        p = lan.lab.popen(lan.ns["bb"], cmd + ["-R"], stdout=logf, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(e.get("event") == "bound" for e in _events(events))
                 or p.poll() is not None, 20, what="udhcpc bound")
    except TimeoutError:
        pass
    rc = lan.lab.stop(p, signal.SIGTERM, timeout=10)
    return rc, logp.read_text(), _events(events)


@pytest.mark.interop
def test_udhcpc_gets_address_router_dns_then_release_marks_lease_released(clients_lab, tmp_path):
    """busybox udhcpc (unicast replies, no broadcast flag) obtains an address
    from the configured range with router, both DNS servers, domain, server
    id and the configured lease time; the lease is active in the DB for its
    MAC; a second run gets the same address back and its RELEASE (-R) turns
    the row into 'released'."""
    lan, nb, _agent = clients_lab
    mac = iface_mac(lan.lab, lan.ns["bb"], lan.ifs["bb"])

    rc, out, recs = run_udhcpc(lan, tmp_path, "first")
    bound = [e for e in recs if e.get("event") == "bound"]
    assert rc == 0 and bound, (f"udhcpc got no lease (rc={rc}); events={recs}\n{out}\n"
                               f"netbootd log:\n{nb.log_tail()}")
    b = bound[-1]
    assert in_range(b["ip"]), f"address {b['ip']} outside {RANGE_LO}-{RANGE_HI}: {b}"
    assert b.get("router", "").split() == [SERVER], f"router: {b}"
    assert b.get("dns", "").split() == DNS, f"dns: {b}"
    assert b.get("domain") == "netboot.lan", f"domain: {b}"
    assert b.get("serverid") == SERVER, f"server id: {b}"
    assert b.get("subnet") == "255.255.0.0", f"subnet mask: {b}"
    assert int(b.get("lease", 0)) == LEASE_TIME, f"lease time: {b}"
    ip = b["ip"]
    rows = wait_for(lambda: lease_rows_for(nb.state_dir, mac=mac), 3, what="lease row")
    assert [(r["address"], r["state"]) for r in rows] == [(ip, "active")], rows
    assert rows[0]["ends"] - rows[0]["starts"] == pytest.approx(LEASE_TIME, abs=5), rows

    cap = Capture(lan.lab, lan.ns["srv"], lan.ifs["srv"], tmp_path / "release.pcap").start()
    try:
        rc, out, recs = run_udhcpc(lan, tmp_path, "release", release=True)
        time.sleep(0.3)
    finally:
        cap.stop()
    seen = [r for r in map(decode_reply, cap.packets()) if r is not None]
    releases = [r for r in seen if r.op == 1 and r.msg_type == RELEASE]
    bound = [e for e in recs if e.get("event") == "bound"]
    assert rc == 0 and bound, f"second udhcpc run got no lease (rc={rc}); events={recs}\n{out}"
    assert bound[-1]["ip"] == ip, f"same client got a different address: {ip} -> {bound[-1]}"
    assert recs[-1].get("event") == "deconfig", f"udhcpc did not release: {recs}"
    assert releases, f"no DHCPRELEASE reached the server; wire:\n{describe_all(seen)}\n{out}"

    def released():
        rs = lease_rows_for(nb.state_dir, address=ip)
        return rs if rs and rs[0]["state"] == "released" else None
    try:
        wait_for(released, 3, what="state 'released'")
    except TimeoutError:
        pytest.fail(f"after udhcpc's RELEASE of {ip} the row is "
                    f"{lease_rows_for(nb.state_dir, address=ip)}; log:\n{nb.log_tail()}")


@pytest.mark.interop
def test_decline_puts_address_on_probation_and_it_is_not_offered_again(clients_lab):
    """Client A completes DORA for x, then DECLINEs x: the row for x becomes
    'declined', and neither A's next DISCOVER nor a new client B is offered x."""
    lan, nb, agent = clients_lab
    a_mac, b_mac = "02:77:00:0d:ec:0a", "02:77:00:0d:ec:0b"
    offer, ack = dora(agent, a_mac)
    x = ack.yiaddr
    assert in_range(x), ack.describe()
    rows = wait_for(lambda: lease_rows_for(nb.state_dir, address=x), 3, what="lease row")
    assert rows[0]["state"] == "active", rows

    xid = random.getrandbits(32)
    agent.send(dhcp_frame(chaddr=a_mac, xid=xid, msg_type=DECLINE,
                          options=opt(50, ip_bytes(x)) + opt(54, ip_bytes(ack.server_id))))
    try:
        wait_for(lambda: lease_rows_for(nb.state_dir, address=x)[0]["state"] == "declined", 3,
                 what="state 'declined'")
    except TimeoutError:
        pytest.fail(f"after DECLINE of {x} by {a_mac} the row is "
                    f"{lease_rows_for(nb.state_dir, address=x)}; log:\n{nb.log_tail()}")

    again, got = discover(agent, a_mac)
    assert again is not None, f"no OFFER to {a_mac} after its DECLINE; saw:\n{describe_all(got)}"
    assert again.yiaddr != x, f"declined {x} offered again to the client that declined it"
    assert in_range(again.yiaddr), again.describe()
    other, got = discover(agent, b_mac)
    assert other is not None, f"no OFFER to a new client; saw:\n{describe_all(got)}"
    assert other.yiaddr != x, f"declined {x} offered to another client {b_mac}"
    assert lease_rows_for(nb.state_dir, address=x)[0]["state"] == "declined"


@pytest.mark.interop
def test_inform_gets_ack_with_options_and_creates_no_lease(clients_lab):
    """DHCPINFORM from 10.77.0.2 (ciaddr set): a DHCPACK unicast to
    ciaddr:68 with yiaddr 0, router, DNS and domain but no lease time
    (RFC 2131 table 3); the leases table is unchanged."""
    lan, nb, agent = clients_lab
    before = leases(nb.state_dir)
    xid = random.getrandbits(32)
    frame = dhcp_frame(chaddr=agent.mac, src_mac=agent.mac, xid=xid, msg_type=INFORM,
                       ciaddr=CLI, src_ip=CLI, dst_ip="255.255.255.255", broadcast=False,
                       options=opt(55, [1, 3, 6, 15, 51]))
    got = agent.exchange(frame, timeout=4, want=is_reply(ACK, xid))
    acks = [r for r in got if is_reply(ACK, xid)(r)]
    assert acks, f"no DHCPACK to INFORM from {CLI}; saw:\n{describe_all(got)}"
    a = acks[0]
    ctx = a.describe()
    assert (a.ip_dst, a.dport) == (CLI, 68), f"ACK not unicast to ciaddr:68: {ctx}"
    assert a.yiaddr == "0.0.0.0", f"INFORM ACK must not assign an address: {ctx}"
    assert a.ips(3) == [SERVER], ctx
    assert a.ips(6) == DNS, ctx
    assert a.options.get(15, b"").rstrip(b"\x00") == b"netboot.lan", ctx
    assert 51 not in a.options, f"INFORM ACK carries a lease time (option 51): {ctx}"
    time.sleep(0.5)
    after = leases(nb.state_dir)
    assert after == before, f"INFORM changed the leases table: before={before} after={after}"


@pytest.mark.interop
def test_leases_list_json_cli_matches_the_leases_table(clients_lab):
    """After two DORAs and a DECLINE, `netbootd leases list --json` prints
    the same (address, mac, state) rows as the leases table."""
    lan, nb, agent = clients_lab
    _o, ack1 = dora(agent, "02:77:00:c1:00:01")
    _o, ack2 = dora(agent, "02:77:00:c1:00:02")
    agent.send(dhcp_frame(chaddr="02:77:00:c1:00:02", xid=random.getrandbits(32),
                          msg_type=DECLINE, options=opt(50, ip_bytes(ack2.yiaddr))
                          + opt(54, ip_bytes(ack2.server_id))))
    wait_for(lambda: lease_rows_for(nb.state_dir, address=ack2.yiaddr)[0]["state"] != "active",
             3, what="DECLINE to be recorded")
    r = subprocess.run([netbootd_bin(), "leases", "list", "--state-dir", str(nb.state_dir),
                        "--json"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    assert isinstance(cli, list), r.stdout
    got = sorted((o["address"], norm_mac(o["mac"]), o["state"]) for o in cli)
    want = sorted((o["address"], norm_mac(o["mac"]), o["state"]) for o in leases(nb.state_dir))
    assert got == want, f"CLI {got} != DB {want}"
    assert (ack1.yiaddr, "02:77:00:c1:00:01", "active") in got, got
    assert all("ends" in o for o in cli), cli
