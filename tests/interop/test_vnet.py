"""Networks as objects (issue 14) on the wire: `netbootd vnet ...` (the real
CLI, inside the server's namespace) changes what a running `netbootd serve`
hands out, without a restart.  FIXED leases with MAC_PREFIX, a RANGED pool
run dry, an interface with no network, several segments, a relay, and
networks created/changed/deleted while perfdhcp runs."""
from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import sys
import time

import pytest

from .harness import (ACK, DISCOVER, OFFER, REQUEST, Agent, Capture, acks_in, build_pair,
                      client_agent, db_query, describe_all, dhcp_frame, dora, discover, iface_mac,
                      ip_bytes, leases, norm_mac, opt, start_perfdhcp, parse_perfdhcp,
                      require_bin, wait_for, write_config)

SERVER, RELAY = "10.77.0.1", "10.77.0.2"


def vnet(nb, *args, stdin: str | None = None, check: bool = True):
    """The real CLI in the server's namespace (the daemon's API on 127.0.0.1)."""
    cmd = ["ip", "netns", "exec", nb.ns, sys.executable, "-m", "netbootd", "vnet", *args,
           "--state-dir", str(nb.state_dir), "--server", "http://127.0.0.1:8080", *nb_config(nb)]
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, f"vnet {' '.join(args)}: rc {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def dig(nb, *args: str) -> str:
    """The daemon's DNS asked by the real dig in its namespace: the short answer."""
    require_bin("dig")
    r = subprocess.run(["ip", "netns", "exec", nb.ns, "dig", "+short", "+tries=1", "+time=3",
                        f"@{SERVER}", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def nb_config(nb) -> list[str]:
    i = nb.args.index("--config") if "--config" in nb.args else -1
    return ["--config", nb.args[i + 1]] if i >= 0 else []


def _is(msg, xid):
    return lambda r: r.op == 2 and r.xid == xid and r.msg_type == msg


def relayed_dora(agent, srv_mac, chaddr):
    """DISCOVER (+ REQUEST when offered) through a relay at RELAY; the OFFER or None."""
    xid = random.getrandbits(32)
    common = dict(chaddr=chaddr, xid=xid, src_mac=agent.mac, dst_mac=srv_mac, src_ip=RELAY,
                  dst_ip=SERVER, sport=67, dport=67, giaddr=RELAY, hops=1, broadcast=False)
    got = agent.exchange(dhcp_frame(msg_type=DISCOVER, options=opt(55, [1, 3, 51]), **common),
                         timeout=3, want=_is(OFFER, xid))
    offers = [r for r in got if _is(OFFER, xid)(r)]
    if not offers:
        return None, None
    o = offers[0]
    got = agent.exchange(dhcp_frame(msg_type=REQUEST, options=opt(50, ip_bytes(o.yiaddr))
                                    + opt(54, ip_bytes(SERVER)), **common),
                         timeout=3, want=_is(ACK, xid))
    acks = [r for r in got if _is(ACK, xid)(r)]
    return o, acks[0] if acks else None


@pytest.fixture
def served(lab, netbootd_factory, tmp_path):
    """One segment: network "lab" with a 3-address pool on the server's link."""
    lan = build_pair(lab)
    cfg = write_config(tmp_path / "nb.toml", 'mode = "full"\n[dhcp.rate_limit]\n'
                       'unknown_share = 1.0\n[[networks]]\nname = "lab"\n'
                       'subnet = "10.77.0.0/16"\nranges = ["10.77.1.10-10.77.1.12"]\n')
    nb = netbootd_factory(lan.ns["srv"], ["--interface", lan.ifs["srv"], "--config", str(cfg)]
                          ).start()
    with client_agent(lab, lan, tmp_path) as agent:
        yield lan, nb, agent


@pytest.mark.interop
def test_fixed_leases_with_mac_prefix_pool_exhaustion_and_delete_in_use(served):
    """A RANGED pool of 3 serves 3 clients; the 4th gets no OFFER (an event, the
    daemon stays up).  Then `vnet create` an OpenNebula FIXED template served
    through a relay: the lease without a MAC goes to 02:00 + its IP's bytes, the
    one with a MAC to that MAC, any other MAC gets nothing.  `vnet list/show`
    count them used; `vnet delete` is refused while they are, --force deletes."""
    lan, nb, agent = served
    got = [dora(agent, f"02:77:00:00:10:{i:02x}")[1].yiaddr for i in range(3)]
    assert sorted(got) == ["10.77.1.10", "10.77.1.11", "10.77.1.12"]
    offer, seen = discover(agent, "02:77:00:00:10:99", timeout=3)
    assert offer is None, f"an OFFER from an exhausted pool: {describe_all(seen)}"
    wait_for(lambda: db_query(nb.state_dir, "SELECT 1 FROM events WHERE kind = "
                              "'pool.exhausted'"), 5, what="pool.exhausted event")
    assert nb.alive()

    template = ('# OpenNebula syntax\nNAME = "public"\nTYPE = FIXED\nRELAYS = 10.77.0.2\n'
                'NETWORK_ADDRESS = 10.88.0.0\nNETWORK_SIZE = C\nROUTER = 10.88.0.1\n'
                'LEASES = [ IP = 10.88.0.5 ]\n'
                'LEASES = [\n  IP = "10.88.0.6",\n  MAC = 02:aa:00:00:00:06,\n'
                '  HOSTNAME = web6\n]\n')
    r = vnet(nb, "create", "-", stdin=template)
    assert "created" in r.stdout, r.stdout
    # DNS follows at once: the lease's HOSTNAME and the new subnet's reverse zone.
    assert dig(nb, "web6.netboot.lan", "A") == "10.88.0.6"
    assert dig(nb, "-x", "10.88.0.6") == "web6.netboot.lan."
    srv_mac = iface_mac(lan.lab, lan.ns["srv"], lan.ifs["srv"])
    o, a = relayed_dora(agent, srv_mac, "02:00:0a:58:00:05")
    assert o is not None and a is not None and a.yiaddr == "10.88.0.5", nb.log_tail()
    assert a.ips(3) == ["10.88.0.1"] and a.giaddr == RELAY, a.describe()
    o, a = relayed_dora(agent, srv_mac, "02:aa:00:00:00:06")
    assert a is not None and a.yiaddr == "10.88.0.6"
    o, _ = relayed_dora(agent, srv_mac, "02:bb:00:00:00:07")
    assert o is None, "a MAC with no lease in a FIXED network got an OFFER"

    rows = {n["name"]: n for n in json.loads(vnet(nb, "list", "--json").stdout)}
    assert (rows["public"]["type"], rows["public"]["used"], rows["public"]["total"]) == \
        ("FIXED", 2, 2)
    assert (rows["lab"]["used"], rows["lab"]["total"], rows["lab"]["origin"]) == (3, 3, "config")
    shown = json.loads(vnet(nb, "show", "public", "--json").stdout)
    assert {(x["ip"], x["mac"], x["used"]) for x in shown["leases"]} == {
        ("10.88.0.5", "02:00:0a:58:00:05", True), ("10.88.0.6", "02:aa:00:00:00:06", True)}
    table = vnet(nb, "list").stdout
    assert "public" in table and "2/2" in table, table

    r = vnet(nb, "delete", "public", check=False)
    assert r.returncode == 1 and "in use" in r.stderr, r.stdout + r.stderr
    r = vnet(nb, "rmleases", "public", "10.88.0.6", check=False)
    assert r.returncode == 1 and "in use" in r.stderr
    vnet(nb, "delete", "public", "--force")
    assert "public" not in vnet(nb, "list").stdout
    o, _ = relayed_dora(agent, srv_mac, "02:00:0a:58:00:05")
    assert o is None, "a deleted network's relay still served"
    # The config's network cannot be changed through the API (it is reconciled at start).
    r = vnet(nb, "delete", "lab", check=False)
    assert r.returncode == 1 and "config" in r.stderr
    # A template error names the line and the key, before the daemon is asked.
    r = vnet(nb, "create", "-", stdin='NAME = "x"\nTYPE = FIXED\nLEASES = [ IP = 10.9.0.300 ]\n',
             check=False)
    assert r.returncode != 0 and "line 3" in r.stderr and "LEASES[0].IP" in r.stderr, r.stderr
    # An overlap with a served network is refused whole; the service is unchanged.
    r = vnet(nb, "create", "-", stdin='name = "clash"\nsubnet = "10.77.5.0/24"\n', check=False)
    assert r.returncode == 1 and "overlaps lab" in r.stderr, r.stderr
    assert nb.alive()


@pytest.mark.interop
def test_two_segments_and_an_interface_with_no_network(lab, netbootd_factory, tmp_path):
    """Three links on the server: two with a network each answer from their own
    subnet at once; the third has none and answers nothing (a dhcp.no_network
    event).  A network created for it with `vnet create` serves it at once."""
    srv = lab.namespace("srv")
    names = {}
    agents = {}
    for seg in ("a", "b", "c"):
        cli = lab.namespace("cli" + seg)
        n = {"a": 77, "b": 78, "c": 79}[seg]
        s_if, c_if = lab.link(srv, f"10.{n}.0.1/16", cli, f"10.{n}.0.2/16")
        names[seg] = s_if
        agents[seg] = Agent(lab, cli, c_if, absorb=(67, 68), log_path=tmp_path / f"{seg}.log")
    cfg = write_config(tmp_path / "nb.toml", 'mode = "full"\n'
                       '[[networks]]\nname = "a"\nsubnet = "10.77.0.0/16"\n'
                       'ranges = ["10.77.3.1-10.77.3.50"]\n'
                       '[[networks]]\nname = "b"\nsubnet = "10.78.0.0/16"\n'
                       f'ranges = ["10.78.3.1-10.78.3.50"]\ninterface = "{names["b"]}"\n')
    nb = netbootd_factory(srv, [a for s in names.values() for a in ("--interface", s)]
                          + ["--config", str(cfg)]).start()
    try:
        _, ack_a = dora(agents["a"], "02:77:00:00:aa:01")
        _, ack_b = dora(agents["b"], "02:77:00:00:bb:01")
        assert ipaddress.IPv4Address(ack_a.yiaddr) in ipaddress.IPv4Network("10.77.3.0/24")
        assert ipaddress.IPv4Address(ack_b.yiaddr) in ipaddress.IPv4Network("10.78.3.0/24")
        offer, _ = discover(agents["c"], "02:77:00:00:cc:01", timeout=3)
        assert offer is None
        ev = wait_for(lambda: db_query(nb.state_dir, "SELECT detail FROM events WHERE kind = "
                                       "'dhcp.no_network'"), 5, what="dhcp.no_network")
        assert names["c"] in ev[0]["detail"]
        vnet(nb, "create", "-", stdin=f'name = "c"\ntype = "RANGED"\nsubnet = "10.79.0.0/16"\n'
             f'ranges = ["10.79.3.1-10.79.3.9"]\ninterface = "{names["c"]}"\npolicy = "sequential"\n')
        _, ack_c = dora(agents["c"], "02:77:00:00:cc:01")
        assert ack_c.yiaddr == "10.79.3.1"
        _, ack_a2 = dora(agents["a"], "02:77:00:00:aa:01")       # unchanged on segment a
        assert ack_a2.yiaddr == ack_a.yiaddr
        # A restart keeps the admin's network; the config's are reconciled from the file
        # ("b" dropped from it: deleted; "a" given another range: rewritten).
        write_config(cfg, 'mode = "full"\n[[networks]]\nname = "a"\nsubnet = "10.77.0.0/16"\n'
                     'ranges = ["10.77.4.1-10.77.4.50"]\n')
        assert nb.stop() == 0
        nb.start()
        rows = {n["name"]: n for n in json.loads(vnet(nb, "list", "--json").stdout)}
        assert set(rows) == {"a", "c"} and rows["c"]["origin"] == "api", rows
        assert rows["a"]["ranges"] == ["10.77.4.1-10.77.4.50"], rows["a"]
        _, ack_c2 = dora(agents["c"], "02:77:00:00:cc:02")
        assert ack_c2.yiaddr == "10.79.3.2"
        offer, _ = discover(agents["b"], "02:77:00:00:bb:02", timeout=3)
        assert offer is None
    finally:
        for a in agents.values():
            a.close()


@pytest.mark.interop
def test_networks_change_while_perfdhcp_runs_and_no_lease_is_lost(lab, netbootd_factory,
                                                                  tmp_path):
    """perfdhcp (a relay) runs DORAs on network "lab" while networks are created,
    updated, given leases and deleted through the CLI.  Every ACKed client holds
    exactly the address it was ACKed, no address went to two clients, every
    change was applied (no restart)."""
    require_bin("perfdhcp")
    lan = build_pair(lab)
    srv, cli = lan.ns["srv"], lan.ns["cli"]
    cfg = write_config(tmp_path / "nb.toml", 'mode = "full"\n[[networks]]\nname = "lab"\n'
                       'subnet = "10.77.0.0/16"\nrelays = ["10.77.0.2"]\n')
    nb = netbootd_factory(srv, ["--interface", lan.ifs["srv"], "--config", str(cfg)]).start()
    cap = Capture(lab, srv, lan.ifs["srv"], tmp_path / "dora.pcap").start()
    perf = start_perfdhcp(lab, cli, ["-4", "-l", lan.ifs["cli"], "-r", "100", "-n", "2000",
                                     "-R", "600", SERVER], tmp_path / "perfdhcp.log")
    changes = 0
    try:
        t0 = time.monotonic()
        while perf.poll() is None and time.monotonic() - t0 < 25 and changes < 40:
            i = changes
            vnet(nb, "create", "-", stdin=f'name = "x{i}"\nsubnet = "10.{100 + i % 50}.0.0/24"\n'
                 f'relays = ["10.200.0.{i + 1}"]\n')
            vnet(nb, "update", f"x{i}", "-", stdin=f'name = "x{i}"\nsubnet = '
                 f'"10.{100 + i % 50}.0.0/24"\nlease_time = 120\npolicy = "random"\n')
            vnet(nb, "create", "-", stdin=f'NAME = f{i}\nTYPE = FIXED\nRELAYS = 10.201.0.{i + 1}\n'
                 f'LEASES = [IP = 10.{150 + i % 50}.0.5]\n')
            vnet(nb, "addleases", f"f{i}", f"10.{150 + i % 50}.0.6", "02:cc:00:00:00:06")
            vnet(nb, "delete", f"x{i}")
            vnet(nb, "delete", f"f{i}")
            changes += 1
        perf.wait(60)
    finally:
        if perf.poll() is None:
            perf.kill()
        cap.stop()
    out = (tmp_path / "perfdhcp.log").read_text()
    sent, received, _ = parse_perfdhcp(out)
    assert perf.returncode in (0, 3), out
    assert changes >= 2, f"only {changes} change rounds while perfdhcp ran"
    acks = acks_in(cap.packets())
    assert len(acks) >= 0.9 * sent.get("DO", 0), (len(acks), out, nb.log_tail())
    by_ip: dict[str, set] = {}
    last: dict[str, str] = {}
    for a in acks:
        by_ip.setdefault(a.yiaddr, set()).add(a.chaddr)
        last[a.chaddr] = a.yiaddr
    assert all(len(v) == 1 for v in by_ip.values()), \
        {ip: v for ip, v in by_ip.items() if len(v) > 1}
    rows = leases(nb.state_dir, "active")
    db = {norm_mac(r["mac"]): r["address"] for r in rows}
    lost = {m: ip for m, ip in last.items() if db.get(norm_mac(m)) != ip}
    assert not lost, f"{len(lost)} ACKed leases not held as ACKed: {list(lost.items())[:5]}"
    log = nb.log_path.read_text()
    assert log.count("networks: created") >= 2 * changes and nb.alive()
    print(f"{changes} change rounds (6 API changes each) during {sent.get('DO')} DORAs; "
          f"{len(acks)} ACKs, {len(last)} clients, all held")
