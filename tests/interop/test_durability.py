"""kill -9 durability: every DHCPACK that left netbootd must name a lease that
survives SIGKILL, and no address is ever ACKed to two clients across
restarts.  ACKs are taken from a tcpdump capture in the server namespace
(what really went on the wire), not from perfdhcp's counters."""
from __future__ import annotations

import ipaddress
import time

import pytest

from .harness import (Capture, acks_in, build_pair, leases, norm_mac, relay_config, require_bin,
                      start_perfdhcp, wait_for)

SERVER = "10.77.0.1"
SUBNET = ipaddress.IPv4Network("10.77.0.0/16")
PHASE1_BASE = "00:0c:01:02:03:04"   # perfdhcp's default base MAC
PHASE3_BASE = "00:0c:0a:00:00:00"   # fresh clients after the restarts


def _perf_args(ifname: str, base: str, rate: int, clients: int, period: int) -> list[str]:
    return ["-4", "-l", ifname, "-b", f"mac={base}", "-r", str(rate), "-R", str(clients),
            "-p", str(period), "-n", str(rate * period), SERVER]


def _wait_exit(proc, timeout: float, what: str) -> int:
    try:
        return proc.wait(timeout)
    except Exception:
        pytest.fail(f"{what} still running after {timeout}s")


@pytest.mark.interop
def test_sigkill_mid_load_loses_no_acked_lease_and_never_reuses_an_acked_address(
        lab, netbootd_factory, tmp_path):
    """perfdhcp at 1000 DORA/s over 3000 clients for 6 s; netbootd is SIGKILLed
    mid-run and restarted on the same state dir, and SIGKILLed again right
    after the load ends.  After a third start: every (chaddr, yiaddr) seen in
    an ACK on the wire is an active lease; no address was ACKed to two MACs;
    no MAC holds two active leases; and fresh clients served after the
    restarts never get an address that was ACKed to another MAC."""
    require_bin("perfdhcp")
    lan = build_pair(lab)
    srv, cli = lan.ns["srv"], lan.ns["cli"]
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", lan.ifs["srv"],
                                *relay_config(tmp_path / "relay.toml")]).start()
    cap = Capture(lab, srv, lan.ifs["srv"], tmp_path / "durability.pcap").start()
    kill_times = []
    try:
        perf = start_perfdhcp(lab, cli, _perf_args(lan.ifs["cli"], PHASE1_BASE, 1000, 3000, 6),
                              tmp_path / "perfdhcp-phase1.log")
        # Let leases accumulate, then pull the plug mid-run.
        try:
            wait_for(lambda: len(leases(nb.state_dir, "active")) >= 500 or perf.poll() is not None,
                     4, interval=0.1, what="500 active leases")
        except TimeoutError:
            pass
        time.sleep(0.3)
        assert perf.poll() is None, "perfdhcp ended before the kill; raise its period"
        nb.kill9()
        kill_times.append(time.time())
        nb.start()  # restart on the same state dir while the load continues
        _wait_exit(perf, 30, "perfdhcp phase 1")
        # Second crash right after the load: ACKs of the restarted instance too.
        nb.kill9()
        kill_times.append(time.time())
        nb.start()

        rows = leases(nb.state_dir)  # as recovered by the third start

        perf3 = start_perfdhcp(lab, cli, _perf_args(lan.ifs["cli"], PHASE3_BASE, 500, 500, 2),
                               tmp_path / "perfdhcp-phase3.log")
        _wait_exit(perf3, 30, "perfdhcp phase 3")
        time.sleep(0.3)
    finally:
        cap.stop()

    assert cap.kernel_drops in (0, None), (
        f"tcpdump lost {cap.kernel_drops} packets: the capture cannot vouch for every ACK")
    all_acks = acks_in(cap.packets())
    phase1_acks = [a for a in all_acks if a.chaddr.startswith(PHASE1_BASE[:8])]
    fresh = [a for a in all_acks if a.chaddr.startswith(PHASE3_BASE[:8])]
    perf_log = (tmp_path / "perfdhcp-phase1.log").read_text()
    assert len(phase1_acks) >= 1000, (
        f"only {len(phase1_acks)} ACKs on the wire in phase 1; perfdhcp said:\n{perf_log}\n"
        f"netbootd log:\n{nb.log_tail()}")
    first_kill = kill_times[0]
    before_kill = [a for a in phase1_acks if a.t < first_kill]
    print(f"phase 1: {len(phase1_acks)} ACKs ({len(before_kill)} before the first SIGKILL, "
          f"{len({a.chaddr for a in phase1_acks})} clients); {len(rows)} lease rows after "
          f"restart; phase 3: {len(fresh)} ACKs to fresh clients")
    assert len(before_kill) >= 200, (
        f"only {len(before_kill)} ACKs before the first SIGKILL: the kill did not hit a "
        f"loaded server")

    # 1. No address ACKed to two clients (across both crashes), one address per MAC.
    owner: dict[str, str] = {}
    clashes = []
    for a in phase1_acks:
        prev = owner.setdefault(a.yiaddr, a.chaddr)
        if prev != a.chaddr:
            clashes.append((a.yiaddr, prev, a.chaddr, a.t))
    assert not clashes, (f"{len(clashes)} addresses ACKed to two MACs, e.g. "
                         f"{clashes[:5]} (kills at {kill_times})")

    # 2. Every ACKed (mac, address) is an active lease after the crashes.
    active = {(norm_mac(r["mac"]), r["address"]) for r in rows if r["state"] == "active"}
    state_of = {r["address"]: (norm_mac(r["mac"]), r["state"]) for r in rows}
    acked = {(a.chaddr, a.yiaddr) for a in phase1_acks}
    lost = sorted(acked - active)
    if lost:
        t_ack = {(a.chaddr, a.yiaddr): a.t for a in phase1_acks}
        detail = [(m, ip, f"acked at t={t_ack[(m, ip)]:.3f}", state_of.get(ip, "no row"))
                  for m, ip in lost[:8]]
        pytest.fail(f"{len(lost)} of {len(acked)} ACKed leases are not active after SIGKILL "
                    f"(kills at {[f'{t:.3f}' for t in kill_times]}): {detail}")

    # 3. No client holds two active leases.
    per_mac: dict[str, list[str]] = {}
    for m, ip in active:
        per_mac.setdefault(m, []).append(ip)
    multi = {m: ips for m, ips in per_mac.items() if len(ips) > 1}
    assert not multi, f"clients with several active leases after restart: {list(multi.items())[:5]}"

    # 4. Fresh clients after the restarts never get an address ACKed to another MAC.
    perf3_log = (tmp_path / "perfdhcp-phase3.log").read_text()
    assert len(fresh) >= 400, (f"only {len(fresh)} ACKs for fresh clients after restart:\n"
                               f"{perf3_log}\nnetbootd log:\n{nb.log_tail()}")
    stolen = [(a.yiaddr, a.chaddr, owner[a.yiaddr]) for a in fresh
              if a.yiaddr in owner and owner[a.yiaddr] != a.chaddr]
    assert not stolen, (f"{len(stolen)} addresses ACKed before the crash were handed to fresh "
                        f"clients after restart, e.g. {stolen[:5]}")
    outside = sorted({a.yiaddr for a in all_acks
                      if ipaddress.IPv4Address(a.yiaddr) not in SUBNET})
    assert not outside, outside
