#!/usr/bin/env python3
"""CPU per DORA at fixed offered rates, returning or new clients: netbootd vs Kea.

    sudo .venv/bin/python bench/dhcp/cpu_at.py                      # 1000,2000,4000/s
    sudo .venv/bin/python bench/dhcp/cpu_at.py --scenario unique --rates 2000,4000
    sudo .venv/bin/python bench/dhcp/cpu_at.py --rates 1000,4000 --rounds 3
    sudo .venv/bin/python bench/dhcp/cpu_at.py --netbootd-src base=/tmp/old-tree

A rate search (run.py) reports one number per server, and on this shared
2-core VM that number moves with whatever else runs.  The CPU a server spends
per completed exchange at a fixed offered rate moves much less, so it is the
A/B metric for a change in the DHCP path.  Each server gets its own lab
(run.py's namespaces, pinning and perfdhcp relay set-up), its clients are
warmed up once (each holds a lease), and then every (round, rate) runs one
trial on every server in turn, so the servers are measured side by side in
time.  CPU = utime + stime of the server process (all its threads) over the
trial, from /proc/<pid>/stat; per DORA = that / ACKs received.

`--scenario unique`: every DORA from a new client (run.py's unique scenario:
perfdhcp -R 52000 -u); each trial starts its server on an empty state
directory (start-up not measured: the CPU is counted over the trial only),
so the pool never runs out and every client is new to the server.

`--netbootd-src LABEL=DIR` adds a netbootd run from another source tree (its
`netbootd` package directory's parent, put first on PYTHONPATH), e.g. the
previous commit from `git archive HEAD netbootd | tar -x -C DIR`: old and new
code in the same run.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))          # run.py
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))      # common.py
import common  # noqa: E402
import run  # noqa: E402
from common import BUSY_WARN, RESULTS, BenchError, log  # noqa: E402


def _run_args(a) -> argparse.Namespace:
    """The settings run.Bench reads, for fixed-rate trials."""
    return argparse.Namespace(
        no_pin=a.no_pin, exit_wait=1.0, wait_idle=a.wait_idle, redo=0,
        perfdhcp_threads=a.perfdhcp_threads, drop_time=1.0, start_timeout=30.0, start_settle=1.0,
        netbootd_config=None, kea_log_severity="WARN", keep_state=False)


class Side:
    """One server in its own lab, warmed up, kept running for all trials."""

    def __init__(self, bench, srv, clients: int, workdir: str, unique: bool = False):
        self.bench, self.srv, self.clients, self.unique = bench, srv, clients, unique
        self.starts = 0
        self.root = Path(tempfile.mkdtemp(prefix=f"bench-dhcp-cpu-{srv.name}-", dir=workdir))
        self.lab = run.labnet.Lab()
        self.trials: list[dict] = []

    def __enter__(self):
        lab = self.lab.__enter__()
        self.sns, self.cns = lab.namespace("srv"), lab.namespace("cli")
        sif, _ = lab.link(self.sns, f"{run.SERVER_ADDR}/{run.PREFIX}", self.cns,
                          f"{run.CLIENT_ADDR}/{run.PREFIX}")
        self.sif = sif
        if self.unique:
            return self                 # a fresh server per trial (trial())
        self.srv.start(lab, self.sns, sif, self.root / "state", self.bench.server_cpu)
        n = self.clients
        for rate in (500, 200, 100):
            w = self.bench.perfdhcp(lab, self.cns, rate, n, n / rate + 2, n, unique=False,
                                    server_pid=self.srv.proc.pid)
            log(f"  {self.srv.name}: warm-up r={rate}/s: {w['acks']}/{n} ACKs")
            if w["acks"] >= n:
                break
        else:
            raise BenchError(f"{self.srv.name}: warm-up gave only {w['acks']} of {n} ACKs")
        return self

    def __exit__(self, *exc):
        try:
            self.srv.stop()
        finally:
            self.lab.__exit__(*exc)
            shutil.rmtree(self.root, ignore_errors=True)

    def trial(self, rate: int, period: float) -> dict:
        if self.unique:
            self.srv.stop()
            self.starts += 1
            state = self.root / f"state-{self.starts}"
            shutil.rmtree(self.root / f"state-{self.starts - 1}", ignore_errors=True)
            self.srv.start(self.lab, self.sns, self.sif, state, self.bench.server_cpu)
        if not self.srv.alive():
            raise BenchError(f"{self.srv.name} died:\n{common.tail(self.srv.logfile)}")
        before = thread_jiffies(self.srv.proc.pid)
        count = min(int(rate * period), run.UNIQUE_MAX_EXCHANGES) if self.unique \
            else int(rate * period)
        t = self.bench.perfdhcp(self.lab, self.cns, rate, self.clients, period, count,
                                unique=self.unique, server_pid=self.srv.proc.pid)
        t["cpu_us_per_dora"] = (round(1e6 * t["server_cpu_s"] / t["acks"], 1)
                                if t["acks"] else None)
        t["threads_us_per_dora"] = per_thread(before, thread_jiffies(self.srv.proc.pid),
                                              t["acks"])
        self.trials.append(t)
        split = " ".join(f"{n}={us:.0f}" for n, us in t["threads_us_per_dora"].items())
        log(f"    {self.srv.name:24} r={rate:>5}/s acks/s={t['leases_per_s']:>7.0f} "
            f"drop={t['drop_pct']:5.2f}% cpu={t['server_cpu_s']:5.2f}s "
            f"= {t['cpu_us_per_dora'] or 0:6.1f} us/DORA ({split})"
            f" perfdhcp cpu={t['client_cpu_s']:.2f}s"
            f" delay avg/max {t['avg_delay_ms'][1]:.1f}/{t['max_delay_ms'][1]:.0f} ms"
            + "".join(f" {side}-rcvbuf-drops={t['udp'][side]['RcvbufErrors']}"
                      for side in ("server", "client")
                      if t.get("udp", {}).get(side, {}).get("RcvbufErrors"))
            + (f"  [other processes: {t['foreign_cpu_pct']:.0f}% CPU]"
               if t["foreign_cpu_pct"] > BUSY_WARN else ""))
        time.sleep(0.5)
        return t


def thread_jiffies(pid: int) -> dict[str, int]:
    """utime + stime of the main thread ("main") and of all others ("other"),
    from /proc/<pid>/task (Python does not name OS threads, so every thread
    shows the process's name): for netbootd, main = the reactor (sockets,
    engine, codec), other = the group commit's SQLite work (plus any
    start-up thread still running)."""
    out = {"main": 0, "other": 0}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue                    # the thread ended meanwhile
        out["main" if int(tid) == pid else "other"] += int(fields[11]) + int(fields[12])
    return out


def per_thread(before: dict[str, int], after: dict[str, int], acks: int) -> dict[str, float]:
    """CPU us per DORA by thread name, over a trial (threads that used none left out)."""
    if not acks:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    return {n: round(1e6 * (j - before.get(n, 0)) / tick / acks, 1)
            for n, j in sorted(after.items()) if j > before.get(n, 0)}


def summarize(sides: list[Side], rates: list[int]) -> dict:
    """Per server and rate: the median CPU per DORA over the quiet rounds
    (other processes below BUSY_WARN % CPU), or over all rounds when none
    was quiet.  A perturbed round is no upper bound: descheduled, a server
    finds more packets per wake-up and spends *less* CPU per DORA."""
    out = {}
    for s in sides:
        rows = {}
        for r in rates:
            ts = [t for t in s.trials if t["rate"] == r and t["cpu_us_per_dora"]]
            if not ts:
                continue
            quiet = [t for t in ts if t["foreign_cpu_pct"] <= BUSY_WARN]
            us = sorted(t["cpu_us_per_dora"] for t in (quiet or ts))
            names = {n for t in (quiet or ts) for n in t.get("threads_us_per_dora", {})}
            threads = {n: sorted(t.get("threads_us_per_dora", {}).get(n, 0.0)
                                 for t in (quiet or ts)) for n in sorted(names)}
            rows[r] = {"cpu_us_per_dora": us[(len(us) - 1) // 2], "quiet_rounds": len(quiet),
                       "threads_us_per_dora": {n: v[(len(v) - 1) // 2] for n, v in threads.items()},
                       "all": [t["cpu_us_per_dora"] for t in ts],
                       "leases_per_s": sorted(t["leases_per_s"] for t in ts)[len(ts) // 2],
                       "max_drop_pct": max(t["drop_pct"] for t in ts),
                       "max_foreign_cpu_pct": max(t["foreign_cpu_pct"] for t in ts)}
        out[s.srv.name] = rows
    return out


def print_table(summary: dict, labels: dict, rates: list[int], scenario: str) -> None:
    print()
    print("CPU per DORA (us, median of the quiet rounds; server process, all threads), "
          f"{scenario} clients")
    hdr = f"{'server':44} " + " ".join(f"{str(r) + '/s':>16}" for r in rates)
    print(hdr)
    print("-" * len(hdr))
    for name, rows in summary.items():
        cells = []
        for r in rates:
            d = rows.get(r)
            cells.append(f"{d['cpu_us_per_dora']:6.1f}{' ' if d['quiet_rounds'] else '*'}"
                         f"({d['max_drop_pct']:4.1f}%)" if d else f"{'-':>16}")
        print(f"{labels[name]:44} " + " ".join(f"{c:>16}" for c in cells))
        names = sorted({n for d in rows.values() for n in d.get("threads_us_per_dora", {})})
        for n in names if len(names) > 1 else ():
            cells = [f"{rows[r]['threads_us_per_dora'].get(n, 0.0):6.1f}" if r in rows else "-"
                     for r in rates]
            print(f"{'    thread ' + n:44} " + " ".join(f"{c:>16}" for c in cells))
    kea = summary.get("kea")
    if kea:
        for name, rows in summary.items():
            if name == "kea":
                continue
            cells = [f"{rows[r]['cpu_us_per_dora'] / kea[r]['cpu_us_per_dora']:15.2f}x"
                     if r in rows and r in kea else f"{'-':>16}" for r in rates]
            print(f"{'  ' + name + ' / kea (lower is better)':44} " + " ".join(cells))
    print("(%) = worst failed-exchange share over the rounds at that rate; "
          "* = no quiet round (other processes > 10% CPU in all): perturbed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,2000,4000", help="offered rates (perfdhcp -r)")
    ap.add_argument("--servers", default="netbootd,kea", help="any of netbootd, kea")
    ap.add_argument("--netbootd-src", action="append", default=[], metavar="LABEL=DIR",
                    help="also run netbootd from this source tree (repeatable)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--period", type=float, default=5.0, help="seconds per trial")
    ap.add_argument("--scenario", choices=("returning", "unique"), default="returning")
    ap.add_argument("--clients", type=int, help="perfdhcp -R (default: 1,000 returning "
                    "clients; unique: run.py's 52,000)")
    ap.add_argument("--wait-idle", type=float, default=20.0)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--perfdhcp-threads", choices=("single", "multi"), default="single")
    ap.add_argument("--shape", choices=("default", "wide"), default="default",
                    help="wide: as run.py --shape wide (no pinning, perfdhcp's own threads)")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--lock", default="/run/lock/netbootd-bench.lock")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    rates = [int(r) for r in a.rates.split(",") if r.strip()]
    unique = a.scenario == "unique"
    if a.shape == "wide":
        a.no_pin, a.perfdhcp_threads = True, "multi"
    if a.clients is None:
        a.clients = run.UNIQUE_CLIENTS if unique else run.RETURNING_CLIENTS
    why = run.labnet.available()
    if why:
        print(f"bench-dhcp-cpu: cannot build labs: {why}", file=sys.stderr)
        return 2
    common.unwind_on_signals()
    lock = run.take_bench_lock(a.lock, 900.0)
    ra = _run_args(a)
    bench = run.Bench(ra)
    servers = []
    for n in (s.strip() for s in a.servers.split(",") if s.strip()):
        if n not in ("netbootd", "netbootd-normal", "kea"):
            ap.error(f"unknown server {n}")
        servers.append(run.SERVERS[n](ra))
    try:
        servers += run.netbootd_sources(a.netbootd_src, ra)
    except ValueError as e:
        ap.error(str(e))
    started = _dt.datetime.now().astimezone()
    sides: list[Side] = []
    try:
        for srv in servers:
            log(f"== {srv.label}")
            side = Side(bench, srv, a.clients, a.workdir, unique)
            side.__enter__()
            sides.append(side)
        log(f"CPU check (fixed loop on the server CPU): {run.cpu_speed(bench.server_cpu)} s")
        for k in range(a.rounds):
            for rate in rates:
                log(f"  round {k + 1}/{a.rounds}, {rate}/s")
                for side in (sides if k % 2 == 0 else reversed(sides)):
                    side.trial(rate, a.period)
    finally:
        for side in sides:
            side.__exit__(None, None, None)
    summary = summarize(sides, rates)
    print_table(summary, {s.srv.name: s.srv.label for s in sides}, rates, a.scenario)
    doc = {"bench": "dhcp-cpu", "started": started.isoformat(), "settings": vars(a),
           "pinning": bench.pin, "summary": summary,
           "trials": {s.srv.name: s.trials for s in sides}}
    path = common.save_json(doc, a.out, "dhcp-cpu", started, False)
    print(f"JSON: {path}")
    if lock is not None:
        lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
