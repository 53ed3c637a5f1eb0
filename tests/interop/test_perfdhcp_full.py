"""perfdhcp (acting as a relay: giaddr = its address, source port 67) runs
DORA load against `netbootd serve --mode full` with one [[networks]] entry
for the interface's own subnet, 10.77.0.0/16, that lists perfdhcp's address
as a trusted relay (any other giaddr is dropped)."""
from __future__ import annotations

import ipaddress

import pytest

from .harness import (Capture, acks_in, build_pair, leases, norm_mac, relay_config, require_bin,
                      run_perfdhcp, describe_all)

SUBNET = ipaddress.IPv4Network("10.77.0.0/16")
SERVER = "10.77.0.1"
FORBIDDEN = {str(SUBNET.network_address), str(SUBNET.broadcast_address), SERVER}

N_EXCHANGES = 1000
N_CLIENTS = 500


@pytest.mark.interop
def test_perfdhcp_dora_gets_acks_and_distinct_in_subnet_leases(lab, netbootd_factory, tmp_path):
    """1000 DORAs from 500 perfdhcp clients: >=95% are ACKed, every ACK is
    unicast to giaddr:67, and the leases table then holds one active lease
    per ACKed client, matching the ACK, with distinct addresses inside
    10.77.0.0/16 that are never the network, broadcast or server address;
    SIGTERM then exits 0."""
    require_bin("perfdhcp")
    lan = build_pair(lab)
    srv, cli = lan.ns["srv"], lan.ns["cli"]
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", lan.ifs["srv"],
                                *relay_config(tmp_path / "relay.toml")]).start()
    cap = Capture(lab, srv, lan.ifs["srv"], tmp_path / "dora.pcap").start()
    try:
        res = run_perfdhcp(lab, cli, ["-4", "-l", lan.ifs["cli"], "-r", "200",
                                      "-n", str(N_EXCHANGES), "-R", str(N_CLIENTS), SERVER],
                           timeout=60, log_path=tmp_path / "perfdhcp.log")
    finally:
        cap.stop()

    # perfdhcp: rc 0 = no drops, 3 = some drops (judged below); else it failed to run.
    assert res.rc in (0, 3), f"perfdhcp failed (rc={res.rc}):\n{res.output}"
    assert res.sent.get("DO", 0) >= N_EXCHANGES * 0.99, res.output
    assert res.acks >= N_EXCHANGES * 0.95, (
        f"only {res.acks} ACKs for {res.sent.get('DO')} DISCOVERs "
        f"(offers {res.received.get('DO')}, requests {res.requests}):\n{res.output}\n"
        f"netbootd log:\n{nb.log_tail()}")

    acks = acks_in(cap.packets())
    assert len(acks) >= res.acks, f"capture saw {len(acks)} ACKs, perfdhcp {res.acks}"
    wrong_dst = [a for a in acks if (a.ip_dst, a.dport) != (lan.ip("cli"), 67)]
    assert not wrong_dst, "ACKs not unicast to giaddr:67:\n" + describe_all(wrong_dst[:5])

    by_mac: dict[str, set[str]] = {}
    by_ip: dict[str, set[str]] = {}
    for a in acks:
        by_mac.setdefault(a.chaddr, set()).add(a.yiaddr)
        by_ip.setdefault(a.yiaddr, set()).add(a.chaddr)
    assert all(len(v) == 1 for v in by_mac.values()), (
        "a client was ACKed different addresses: "
        f"{ {m: sorted(v) for m, v in by_mac.items() if len(v) > 1} }")
    assert all(len(v) == 1 for v in by_ip.values()), (
        "an address was ACKed to several clients: "
        f"{ {ip: sorted(v) for ip, v in by_ip.items() if len(v) > 1} }")
    bad_ack_ips = sorted(ip for ip in by_ip
                         if ipaddress.IPv4Address(ip) not in SUBNET or ip in FORBIDDEN)
    assert not bad_ack_ips, f"ACKed addresses outside the pool: {bad_ack_ips}"

    rows = leases(nb.state_dir)
    active = [r for r in rows if r["state"] == "active"]
    addrs = [r["address"] for r in active]
    assert len(addrs) == len(set(addrs))
    bad = sorted(a for a in addrs if ipaddress.IPv4Address(a) not in SUBNET or a in FORBIDDEN)
    assert not bad, f"leases outside the pool or on reserved addresses: {bad}"
    macs = [norm_mac(r["mac"]) for r in active]
    dup_macs = sorted({m for m in macs if macs.count(m) > 1})
    assert not dup_macs, f"clients holding several active leases: {dup_macs}"

    db = {(norm_mac(r["mac"]), r["address"]) for r in active}
    acked = {(m, next(iter(v))) for m, v in by_mac.items()}
    missing = sorted(acked - db)
    assert not missing, (f"{len(missing)} ACKed (mac, address) pairs have no active lease "
                         f"row, e.g. {missing[:5]}")
    assert len(acked) >= N_CLIENTS * 0.9, f"only {len(acked)} distinct clients ACKed"

    # The daemon paces its garbage collection (gcpace.py): the start-up sweep
    # ran and the pacer's ticks have run since.
    metrics = lab.ns_exec(srv, "curl", "-sf", "-m", "10", f"http://{SERVER}:8080/metrics").stdout
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("netbootd_gc_")}
    assert values.get("netbootd_gc_sweeps_total", 0) >= 1, metrics[-2000:]
    assert values.get("netbootd_gc_ticks_total", 0) >= 2, metrics[-2000:]
    assert values.get("netbootd_gc_pause_max_seconds", 0) > 0, metrics[-2000:]

    assert nb.stop() == 0, f"SIGTERM exit code != 0; log:\n{nb.log_tail()}"
