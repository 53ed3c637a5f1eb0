#!/usr/bin/env python3
"""Agent API benchmark (issue 11): enrollment rate, the cost of 1,000 idle
agents polling, and a DHCP boot storm with and without them.

One real `netbootd serve --mode full` runs in the server namespace of a lab
built the way bench/dhcp builds it (its functions are imported, not copied:
bench/dhcp/run.py's Netbootd runner, relay config, Bench.perfdhcp/search,
the bench lock and the foreign-CPU sampler).  DHCP only ever runs inside the
lab's namespaces.  The simulated agents (bench/agent/agents.py) run in the
server namespace and reach the daemon's HTTP port on that namespace's
loopback, host i from its own address 127.0.<1 + i // 250>.<1 + i % 250>.
The daemon is pinned to CPU 1, perfdhcp and the agents to CPU 0 (--no-pin).

Parts (--parts):
  enroll  an account and an enrollment token made through the admin API (the
          admin token from the state dir), then --agents hosts register with
          the token and their identifiers, then each posts its inventory,
          --concurrency callers in a closed loop, one connection per call.
          Rate, the daemon's CPU per registration / per inventory post,
          the client's CPU share.
  idle    the daemon's CPU with nothing to do (--idle-seconds), then with
          the first --agents enrolled hosts polling GET /api/v1/agent/next
          for --poll-seconds, each pausing [interval/2, interval] (the
          agent's equal jitter) between polls, a new connection per poll as
          the agent's nc does; once per --intervals (10: the server's hint;
          60: the cap the agent backs off to while told `wait`).  Goal: 1,000
          agents at the first interval < 5% of one core.
  dhcp    bench/dhcp's returning scenario on this daemon (1,000 perfdhcp
          clients warmed up, highest rate with < 2.5% failed exchanges,
          --dhcp-period s trials): searched without agents, then with the
          agents polling; then --paired-reps pairs of trials at
          --paired-fraction (0.75) of the rate found without agents, without
          and with agents alternately: the daemon's extra CPU share with
          agents during the storm.  Goal: with / without >= 0.9.

Usage (as root):  .venv/bin/python bench/agent/run.py [--quick]
Results: a report on stdout, JSON in bench/results/agent-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402
from common import PY, RESULTS, BenchError, log, tail  # noqa: E402

HERE = Path(__file__).resolve().parent
AGENTS = HERE / "agents.py"
HTTP = "http://127.0.0.1:8080"
# New hosts made over HTTP are limited per source (1/s, burst 10: every
# simulated host has its own address, so this default stays) and in total for
# MACs DHCP never saw (20/s, burst 100: a cap on the whole enrollment, raised).
BENCH_TOML = "[hosts]\nnew_total_pps = 100000.0\n"
GOAL_IDLE_PCT = 5.0
GOAL_DHCP_RATIO = 0.9


def load_dhcp():
    """bench/dhcp/run.py as a module (imported, never edited here)."""
    name = "_bench_dhcp_run"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "dhcp" / "run.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


dhcp = load_dhcp()


def dhcp_args(a, conf: Path) -> argparse.Namespace:
    """The settings bench/dhcp's Netbootd and Bench read, from ours."""
    return argparse.Namespace(
        netbootd_config=str(conf), start_timeout=a.start_timeout, start_settle=0.0,
        no_pin=a.no_pin, exit_wait=1.0 if not a.quick else 0.5, wait_idle=a.wait_idle,
        redo=a.redo, perfdhcp_threads="single", drop_time=1.0, drop_limit=dhcp.DROP_LIMIT,
        max_trials=a.max_trials, ramp=2, min_rate=25, max_rate=64000,
        tolerance=0.5 if a.quick else 0.08, confirm=a.confirm, settle=1.0)


class Run:
    def __init__(self, a, lab, work: Path):
        self.a, self.lab, self.work = a, lab, work
        conf = work / "bench-extra.toml"
        conf.write_text(BENCH_TOML)
        self.dargs = dhcp_args(a, conf)
        self.bench = dhcp.Bench(self.dargs)
        self.srv = dhcp.Netbootd(self.dargs)
        self.state = work / "state"
        self.secrets = work / "secrets.json"
        self.sns = lab.namespace("srv")
        self.cns = lab.namespace("cli")
        self.sif, _ = lab.link(self.sns, f"{dhcp.SERVER_ADDR}/{dhcp.PREFIX}",
                               self.cns, f"{dhcp.CLIENT_ADDR}/{dhcp.PREFIX}")

    # -- the daemon ---------------------------------------------------------
    def start(self) -> None:
        self.srv.start(self.lab, self.sns, self.sif, self.state, self.bench.server_cpu)
        log(f"  netbootd pid {self.srv.proc.pid} in {self.sns} (DHCP on {self.sif} only), "
            f"HTTP {HTTP} there")
        self.wait_quiet()

    @property
    def pid(self) -> int:
        return self.srv.proc.pid

    def wait_quiet(self, limit: float = 2.0, longest: float = 120.0) -> None:
        """Until the daemon uses < `limit`% of a core for 2 s in a row (it
        builds its discover initrd in a thread after `ready`), at most `longest` s."""
        t0, calm, last = time.monotonic(), 0, common.tree_cpu(self.pid)
        while time.monotonic() - t0 < longest and calm < 2:
            time.sleep(1.0)
            now = common.tree_cpu(self.pid)
            calm = calm + 1 if 100 * (now - last) < limit else 0
            last = now
        log(f"  daemon quiet after {time.monotonic() - t0:.0f}s" if calm >= 2 else
            f"  WARNING: daemon still busy after {longest:.0f}s")

    def foreign(self):
        return dhcp.foreign_sample(self.lab)

    def foreign_pct(self, f0) -> float:
        return round(dhcp.foreign_pct(f0, dhcp.foreign_sample(self.lab))[0], 1)

    # -- the simulated agents ---------------------------------------------------
    def _agents_cmd(self, *argv: str) -> list[str]:
        cmd = [PY, str(AGENTS), *argv, "--server", HTTP, "--server-pid", str(self.pid)]
        cpu = self.bench.client_cpu
        return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd

    def agents(self, *argv: str, timeout: float = 600) -> dict:
        r = self.lab.ns_exec(self.sns, *self._agents_cmd(*argv), check=False, timeout=timeout)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        if r.returncode != 0 or not lines:
            raise BenchError(f"agents.py {argv[0]}: exit {r.returncode}: {r.stderr[-1500:]}")
        return json.loads(lines[-1])

    def start_poller(self, duration: float, warmup: float, tag: str,
                     interval: float | None = None):
        """agents.py poll in the background; returns once it counts."""
        ready = self.work / f"poll-{tag}.ready"
        out = open(self.work / f"poll-{tag}.out", "w")
        p = self.lab.popen(self.sns, self._agents_cmd(
            "poll", "--secrets", str(self.secrets), "--agents", str(self.a.agents),
            "--interval", str(interval or self.a.intervals[0]), "--jitter", str(self.a.jitter),
            "--duration", str(duration), "--warmup", str(warmup), "--ready-file", str(ready)),
            stdout=out, stderr=subprocess.STDOUT, text=True)
        out.close()
        deadline = time.monotonic() + warmup + 30
        while not ready.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"poller did not start: {tail(self.work / f'poll-{tag}.out')}")
            time.sleep(0.2)
        p.tag = tag
        return p

    def stop_poller(self, p, wait: float | None = None) -> dict:
        """SIGTERM (or, with `wait`, let it end its --duration); its JSON line."""
        if wait is not None:
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        self.lab.stop(p, timeout=30)
        if p in self.lab.procs:
            self.lab.procs.remove(p)
        text = (self.work / f"poll-{p.tag}.out").read_text(errors="replace")
        lines = [l for l in text.splitlines() if l.startswith("{")]
        if not lines:
            raise BenchError(f"poller printed no result: {text[-1500:]}")
        return json.loads(lines[-1])

    # -- parts ------------------------------------------------------------------
    def enroll(self) -> dict:
        a = self.a
        made = self.agents("setup", "--admin-token-file", str(self.state / "admin.token"))
        log(f"  account {made['account']!r}, enrollment token {made.get('token_id')}")
        self.bench.wait_idle(self.lab)
        f0 = self.foreign()
        r = self.agents("enroll", "--token", made["token"], "--n", str(a.enroll),
                        "--concurrency", str(a.concurrency), "--secrets", str(self.secrets))
        r["foreign_cpu_pct"] = self.foreign_pct(f0)
        for ph in ("register", "inventory"):
            log("  " + phase_line(ph, r[ph]))
        if r.get("refusals"):
            log(f"  ! refusals: {r['refusals']}")
        r["account"], r["token_id"] = made["account"], made.get("token_id")
        return r

    def idle(self) -> dict:
        """The daemon with nothing to do, then with the agents polling at
        each of --intervals (the first is the goal's)."""
        a = self.a
        self.wait_quiet()
        self.bench.wait_idle(self.lab)
        f0, c0, t0 = self.foreign(), common.tree_cpu(self.pid), time.monotonic()
        time.sleep(a.idle_seconds)
        wall = time.monotonic() - t0
        out = {"baseline": {"seconds": round(wall, 1), "foreign_cpu_pct": self.foreign_pct(f0),
                            "daemon_cpu_pct": round(100 * (common.tree_cpu(self.pid) - c0)
                                                    / wall, 2)},
               "by_interval": {}}
        base = out["baseline"]["daemon_cpu_pct"]
        log(f"  no agents: daemon {base}% of a core over {wall:.0f}s "
            f"(other processes {out['baseline']['foreign_cpu_pct']}% of all CPUs)")
        for k, interval in enumerate(a.intervals):
            r = self._poll_window(interval, profile=a.profile and k == 0)
            r["net_daemon_cpu_pct"] = round(r["daemon_cpu_pct"] - base, 2)
            out["by_interval"][f"{interval:g}"] = r
            log(f"  {idle_line(r)}; other processes {r['foreign_cpu_pct']}%")
        return out

    def _poll_window(self, interval: float, profile: bool) -> dict:
        a = self.a
        self.bench.wait_idle(self.lab)
        f0 = self.foreign()
        p = self.start_poller(a.poll_seconds, a.warmup, f"idle{interval:g}", interval)
        spy = None
        if profile:
            dest = Path(a.out) / f"agent-profile-poll-{time.strftime('%Y%m%d-%H%M%S')}.txt"
            dest.parent.mkdir(parents=True, exist_ok=True)
            secs = min(a.profile_seconds, a.poll_seconds - 2)
            spy = common.start_pyspy(self.pid, self.bench.client_cpu, a.profile_rate, secs, dest)
        r = self.stop_poller(p, wait=a.poll_seconds + 30)
        if spy is not None:
            r["profile"] = dict(common.stop_pyspy(spy, secs, dest), raw=str(dest))
        r["foreign_cpu_pct"] = self.foreign_pct(f0)
        return r

    def _trial(self, rate: int) -> dict:
        d = self.dargs
        t = self.bench.perfdhcp(self.lab, self.cns, rate, self.a.returning_clients, d.period,
                                int(rate * d.period), unique=False, server_pid=self.pid)
        if not self.srv.alive():
            t["fatal"] = "netbootd died during the trial"
            log(f"    ! {t['fatal']}:\n{tail(self.srv.logfile)}")
        time.sleep(d.settle)
        return t

    def dhcp(self) -> dict:
        a, n = self.a, self.a.returning_clients
        self.dargs.period = a.dhcp_period
        out: dict = {"clients": n, "period": a.dhcp_period}
        for warm_rate in (500, 200, 100, 50):       # as bench/dhcp's returning warm-up
            w = self.bench.perfdhcp(self.lab, self.cns, warm_rate, n, n / warm_rate + 2, n,
                                    unique=False, server_pid=self.pid)
            log(f"  warm-up r={warm_rate}/s: {w['acks']}/{n} ACKs")
            if w["acks"] >= n:
                break
        out["warmup_acks"] = w["acks"]
        self.wait_quiet()
        log("  search without agents")
        best, trials = self.bench.search(a.start_rate, self._trial)
        out["without"] = self.bench._summary(best, trials)
        log("  search with the agents polling")
        p = self.start_poller(3600, a.warmup, "storm")
        try:
            best, trials = self.bench.search(a.start_rate, self._trial)
        finally:
            out["agents_during_search"] = self.stop_poller(p)
        out["with"] = self.bench._summary(best, trials)
        lw, lo = out["with"]["leases_per_s"], out["without"]["leases_per_s"]
        out["ratio"] = round(lw / lo, 3) if lo else None
        for side in ("without", "with"):
            out[side]["rcvbuf_drops"] = {end: sum(t.get("udp", {}).get(end, {}).get(
                "RcvbufErrors", 0) for t in out[side]["trials"]) for end in ("server", "client")}
        rate = out["without"].get("offered_rate")
        if rate and a.paired_reps:
            out["paired"] = self.paired(max(100, int(rate * a.paired_fraction)))
        return out

    def paired(self, rate: int) -> dict:
        log(f"  paired trials at {rate}/s: without, then with agents, x{self.a.paired_reps}")
        res: dict = {"rate": rate, "without": [], "with": [], "agents": []}
        for k in range(self.a.paired_reps):
            res["without"].append(self._trial(rate))
            p = self.start_poller(3600, self.a.warmup, f"pair{k}")
            try:
                res["with"].append(self._trial(rate))
            finally:
                res["agents"].append(self.stop_poller(p))
            for side in ("without", "with"):
                t = res[side][-1]
                # the daemon's share of its core over the trial (perfdhcp's wall time)
                t["server_cpu_pct"] = round(100 * (t["server_cpu_s"] or 0) /
                                            (t["duration"] + self.bench.wait_s), 1)
                log(f"    {side:7} r={rate}/s leases/s={t['leases_per_s']:.0f} "
                    f"drop={t['drop_pct']:.2f}% netbootd {t['server_cpu_pct']}% of its core "
                    f"[other processes {t['foreign_cpu_pct']}%]")
        for side in ("without", "with"):
            for key in ("leases_per_s", "drop_pct", "server_cpu_pct"):
                res[f"{side}_median_{key}"] = statistics.median(t[key] for t in res[side])
        m = res["without_median_leases_per_s"]
        res["ratio"] = round(res["with_median_leases_per_s"] / m, 3) if m else None
        # What the agents cost the daemon's core during the storm; if that
        # core is what limits DHCP, capacity with agents = (1 - cost) x without.
        res["agents_cpu_pct"] = round(res["with_median_server_cpu_pct"]
                                      - res["without_median_server_cpu_pct"], 1)
        res["capacity_ratio_from_cpu"] = round(1 - res["agents_cpu_pct"] / 100, 3)
        return res


# --------------------------------------------------------------------------
def phase_line(ph: str, d: dict) -> str:
    return (f"{ph:10} {d['ok']:>6} {d['per_s']:>8.0f} {d.get('daemon_ms_per_op') or 0:>13.2f} "
            f"{d.get('daemon_cpu_pct') or 0:>13.1f} {d['client_cpu_pct']:>13.1f} "
            f"{d.get('p50_ms', 0):>8.1f} {d.get('p99_ms', 0):>8.1f}")


def idle_line(i: dict) -> str:
    return (f"{i['agents']} agents, pause [{i['interval'] * (1 - i['jitter']):g}, "
            f"{i['interval']:g}] s: {i['per_s']:.0f} polls/s over {i['seconds']:.0f}s; daemon "
            f"{i['daemon_cpu_pct']}% of one core (net {i['net_daemon_cpu_pct']}%, "
            f"{i['daemon_ms_per_op']} ms per poll); client {i['client_cpu_pct']}%; "
            f"p99 {i.get('p99_ms')} ms; statuses {i['statuses']}")


def report(doc: dict) -> None:
    r = doc["results"]
    print(f"\nagent API bench: {doc['settings']['enroll']} hosts enrolled, the first "
          f"{doc['settings']['agents']} poll; netbootd on CPU "
          f"{doc['pinning']['server']}, clients on CPU {doc['pinning']['client']}")
    if "enroll" in r:
        e = r["enroll"]
        print(f"{'phase':10} {'ok':>6} {'per s':>8} {'daemon ms/op':>13} {'daemon %core':>13} "
              f"{'client %core':>13} {'p50 ms':>8} {'p99 ms':>8}")
        for ph in ("register", "inventory"):
            print(phase_line(ph, e[ph]))
        print(f"  (concurrency {e['concurrency']}, one connection per call; other processes "
              f"{e['foreign_cpu_pct']}% of all CPUs)")
    if "idle" in r:
        i = r["idle"]
        print(f"\nidle agents (daemon without agents: {i['baseline']['daemon_cpu_pct']}% of "
              f"one core):")
        for k, w in enumerate(i["by_interval"].values()):
            print("  " + idle_line(w))
            goal = "MET" if w["daemon_cpu_pct"] < GOAL_IDLE_PCT else "NOT MET"
            print(f"  {'goal' if k == 0 else 'also'}: < {GOAL_IDLE_PCT:g}% of one core -> {goal}")
    if "dhcp" in r:
        d = r["dhcp"]
        print(f"\nDHCP returning clients ({d['clients']}, < 2.5% failed, {d['period']:g} s trials):")
        for side in ("without", "with"):
            s = d[side]
            print(f"  {side:7} agents: {s['leases_per_s']:7.0f} leases/s (offered "
                  f"{s['offered_rate']}/s, fails at {s['lowest_failing_rate']}, "
                  f"{'confirmed' if s['confirmed'] else 'not confirmed'}, bg cpu "
                  f"{s['max_foreign_cpu_pct']}%; rcvbuf drops over the search: server "
                  f"{s['rcvbuf_drops']['server']}, perfdhcp {s['rcvbuf_drops']['client']})")
        ag = d["agents_during_search"]
        print(f"  agents during that search: {ag['polls']} polls, {ag['per_s']:.0f}/s, "
              f"statuses {ag['statuses']}, p99 {ag.get('p99_ms')} ms")
        ratio = d["ratio"]
        print(f"goal with/without >= {GOAL_DHCP_RATIO:g}: {ratio}x -> "
              f"{'MET' if ratio is not None and ratio >= GOAL_DHCP_RATIO else 'NOT MET'}")
        pr = d.get("paired")
        if pr:
            print(f"  paired at {pr['rate']}/s: median {pr['without_median_leases_per_s']:.0f} "
                  f"without, {pr['with_median_leases_per_s']:.0f} with ({pr['ratio']}x), "
                  f"drop% {pr['without_median_drop_pct']} / {pr['with_median_drop_pct']}, "
                  f"netbootd {pr['without_median_server_cpu_pct']}% / "
                  f"{pr['with_median_server_cpu_pct']}% of its core")
            print(f"  agents' cost during the storm: {pr['agents_cpu_pct']}% of the daemon's core "
                  f"-> capacity with/without ~{pr['capacity_ratio_from_cpu']}x when that core "
                  f"is the limit")
    for p in doc.get("problems", []):
        print(f"! {p[:300]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows, coarse DHCP search")
    ap.add_argument("--parts", default="enroll,idle,dhcp")
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--enroll", type=int, help="hosts enrolled (default 3000, quick 1000); the "
                    "first --agents of them poll")
    ap.add_argument("--concurrency", type=int, default=16, help="enroll: callers at once")
    ap.add_argument("--intervals", default="10,60",
                    help="idle: poll pauses measured, s (10: the server's hint, every pause; "
                         "60: the agent's cap, where it backs off to while told `wait`); the "
                         "first is the goal's and the DHCP part's")
    ap.add_argument("--jitter", type=float, default=0.5, help="pause in [interval x (1-j), interval]")
    ap.add_argument("--idle-seconds", type=float, help="baseline window (default 30, quick 15)")
    ap.add_argument("--poll-seconds", type=float, help="polling window (default 60, quick 20)")
    ap.add_argument("--warmup", type=float, default=5.0, help="polling before a window counts")
    ap.add_argument("--returning-clients", type=int, default=dhcp.RETURNING_CLIENTS)
    ap.add_argument("--dhcp-period", type=float, help="s per DHCP trial (default 5, quick 2)")
    ap.add_argument("--start-rate", type=int, default=2000)
    ap.add_argument("--max-trials", type=int, help="per search (default 10, quick 5)")
    ap.add_argument("--confirm", type=int, help="as bench/dhcp (default 1, quick 0)")
    ap.add_argument("--paired-reps", type=int, help="default 3, quick 1")
    ap.add_argument("--paired-fraction", type=float, default=0.75,
                    help="paired trials at this fraction of the rate found without agents "
                         "(below capacity: both sides pass, the daemon's CPU tells the cost)")
    ap.add_argument("--redo", type=int, default=4)
    ap.add_argument("--wait-idle", type=float, default=20.0)
    ap.add_argument("--start-timeout", type=float, default=60.0)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy the daemon during the idle polling window (its CPU then "
                         "includes py-spy's sampling cost: compare runs without it)")
    ap.add_argument("--profile-seconds", type=float, default=30.0)
    ap.add_argument("--profile-rate", type=int, default=1000)
    ap.add_argument("--lock", default="/run/lock/netbootd-bench.lock")
    ap.add_argument("--lock-wait", type=float, default=900.0)
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--keep-state", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    q = a.quick
    a.idle_seconds = a.idle_seconds or (15.0 if q else 30.0)
    a.poll_seconds = a.poll_seconds or (20.0 if q else 60.0)
    try:
        a.intervals = [float(x) for x in a.intervals.split(",") if x.strip()]
    except ValueError:
        ap.error("--intervals: comma-separated seconds")
    if not a.intervals or min(a.intervals) <= 0:
        ap.error("--intervals: at least one positive number of seconds")
    a.enroll = max(a.enroll or (1000 if q else 3000), a.agents)
    a.dhcp_period = a.dhcp_period or (2.0 if q else 5.0)
    a.max_trials = a.max_trials or (5 if q else 10)
    a.confirm = a.confirm if a.confirm is not None else (0 if q else 1)
    a.paired_reps = a.paired_reps if a.paired_reps is not None else (1 if q else 3)
    parts = [p.strip() for p in a.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("enroll", "idle", "dhcp")]
    if bad:
        ap.error(f"--parts: unknown {', '.join(bad)}")
    if ("idle" in parts or "dhcp" in parts) and "enroll" not in parts:
        ap.error("--parts: idle and dhcp need enroll (the agents' secrets)")
    why = common.cannot_run("bench-agent", "network namespaces", [("perfdhcp", "kea-admin")]
                            if "dhcp" in parts else [])
    if why:
        print(why, file=sys.stderr)
        return 2
    common.unwind_on_signals()
    lock = dhcp.take_bench_lock(a.lock, a.lock_wait)
    others, idle_busy = common.check_machine()
    started = _dt.datetime.now().astimezone()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-agent-", dir=a.workdir))
    doc = {"bench": "agent", "started": started.isoformat(), "settings": vars(a).copy(),
           "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                    "cpu_model": common.cpu_model(), "python": platform.python_version(),
                    "cpu_busy_before_start_pct": round(idle_busy, 1)},
           "config_extra": BENCH_TOML, "results": {}, "problems": []}
    rc = 0
    try:
        with dhcp.labnet.Lab() as lab:
            run = Run(a, lab, work)
            doc["pinning"] = {"server": run.bench.server_cpu, "client": run.bench.client_cpu}
            doc["version"] = run.srv.version()
            log(f"== netbootd [{doc['version']}] in lab {lab.prefix}, work {work}")
            run.start()
            try:
                for part in parts:
                    log(f"== {part}")
                    doc["results"][part] = getattr(run, part)()
            except BenchError as e:
                log(f"!! {e}")
                doc["problems"].append(str(e))
                rc = 1
            finally:
                code = run.srv.stop()
                if code not in (0, None):
                    doc["problems"].append(f"netbootd exit code {code} on SIGTERM")
                doc["server_counters"] = run.srv.counters()
                doc["problems"] += [f"netbootd log: {l}" for l in run.srv.log_problems()[:5]]
    finally:
        if not a.keep_state:
            shutil.rmtree(work, ignore_errors=True)
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    doc["host"]["other_benchmarks_seen"] = others
    report(doc)
    print(f"\n(total {doc['elapsed_s'] / 60:.1f} min)")
    print(f"JSON: {common.save_json(doc, a.out, 'agent', started, q)}")
    if lock is not None:
        lock.close()
    return 1 if rc or doc["problems"] else rc


if __name__ == "__main__":
    sys.exit(main())
