#!/usr/bin/env python3
"""TFTP throughput benchmark: netbootd vs tftpd-hpa vs atftpd vs dnsmasq.

Everything runs on the loopback of one private network namespace
(labnet.Lab) that this script creates and deletes: all four servers are
started at once (idle ones sleep), each on its own port (dnsmasq can only
listen on 69), and trials of all servers are interleaved, the order rotating
every repetition, so slow drift of the machine is spread over all of them.

Servers (each with its defaults unless said here):
  netbootd   only its TFTP server (bench/tftp/serve_netbootd.py: TftpServer
             with the daemon's defaults on the global reactor)
  tftpd-hpa  in.tftpd -L -s -u tftp          (no windowsize: RFC 7440 unknown)
  atftpd     atftpd --daemon --no-fork, Debian's --maxthread 100 (has windowsize);
             unpacked from its .deb (it conflicts with tftpd-hpa)
  dnsmasq    --enable-tftp --tftp-max 64 (default 50), no DNS/DHCP (no windowsize)

Scenarios (one 8 MiB file of random bytes, blksize 1468, page-cached):
  lockstep   one transfer, curl (tftp://, --tftp-blksize 1468), lock-step
  lockstep-atftp  the same with the atftp client
  window16   one transfer, atftp --option "windowsize 16"; servers without
             windowsize ignore it and serve lock-step (tftpd-hpa, dnsmasq)
  parallel   50 curl transfers at once, each from its own source address
             (127.0.0.10-59, as 50 booting machines), lock-step; wall time from
             the first start to the last exit

MB/s is 10^6 bytes per second of transfer time (curl's own time_total, which
leaves its start-up out; atftp: its process wall time).  Every trial is
repeated (--reps; the tables show the median).  By default (LAB.md) server and
clients are pinned to the same CPU with taskset (--pin split: servers CPU 1,
clients CPU 0); `server CPU` is the CPU time the server's process tree used in
the trial, the clearest figure of its cost per byte.

Usage (as root):  .venv/bin/python bench/tftp/run.py [--quick] [--servers ...]
Results: tables on stdout, JSON in bench/results/tftp-<timestamp>.json;
--profile also samples netbootd with py-spy in every scenario (raw
collapsed stacks next to the JSON, top frames in the JSON).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402
from common import BUSY_WARN, PY, PYSPY, RESULTS, BenchError, Server, log, tail  # noqa: E402

HERE = Path(__file__).resolve().parent
labnet = common.load_labnet()

FILE_NAME = "f8m.bin"
FILE_SIZE = 8 << 20
BLKSIZE = 1468
WINDOW = 16
PARALLEL = 50
ATFTPD_CACHE = Path("/var/tmp/netbootd-bench-atftpd")

SCENARIOS = {
    # name: (tool, windowsize, parallel, title)
    "lockstep": ("curl", 0, 1, "single 8 MiB transfer, blksize 1468, lock-step, curl"),
    "lockstep-atftp": ("atftp", 0, 1, "single 8 MiB transfer, blksize 1468, lock-step, atftp"),
    "window16": ("atftp", WINDOW, 1, "single 8 MiB transfer, blksize 1468, atftp windowsize 16"),
    "parallel": ("curl", 0, -1, "{n} parallel {mib} MiB transfers, blksize 1468, "
                                "lock-step, curl, one source address each"),
    # The same, the clients pinned to the other CPU: the 50 curls need about
    # as much CPU as a server, so sharing one CPU makes the wall time the sum
    # of both, including curl's own sleep/wake cost, which differs by server.
    "parallel-split": ("curl", 0, -1, "{n} parallel {mib} MiB transfers as above, "
                                      "clients on the other CPU"),
}


def mib() -> str:
    return f"{FILE_SIZE / (1 << 20):g}"


def scenario_spec(name: str) -> tuple[str, int, int, str]:
    """(tool, windowsize, clients, title) with --clients/--size-mib applied."""
    tool, ws, par, title = SCENARIOS[name]
    if par < 0:
        par = PARALLEL
    title = title.format(n=PARALLEL, mib=mib()).replace("8 MiB", f"{mib()} MiB")
    return tool, ws, par, title


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------
class Netbootd(Server):
    name = "netbootd"
    label = "netbootd (TftpServer defaults)"
    port = 1069
    stop_timeout = 20.0

    def binary(self):
        return PY

    def version(self):
        return common.runner_version("import importlib.metadata as m; print(m.version('netbootd'))")

    def command(self):
        return [PY, str(HERE / "serve_netbootd.py"), "--root", str(self.root),
                "--port", str(self.port), "--ip", "127.0.0.1"]

    def counters(self):
        return common.runner_counters(self.logfile.read_text(errors="replace")) or None

    # netbootd logs every failed transfer at INFO: "failed" lines are problems.
    PROBLEMS = r"Traceback|\bERROR\b|CRITICAL|Unhandled| failed: "


class NetbootdDiag(Netbootd):
    """Diagnostic, not in the default set: the same server with the runner's
    --diag monkeypatches (serve_netbootd.py), to measure the suggestions."""
    name = "netbootd-diag"
    label = "netbootd +mmap"
    port = 1169

    def command(self):
        return super().command() + ["--diag", "mmap"]


class TftpdHpa(Server):
    name = "tftpd-hpa"
    label = "tftpd-hpa (in.tftpd -s)"
    port = 2069

    def binary(self):
        return shutil.which("in.tftpd") or ("/usr/sbin/in.tftpd" if os.path.exists("/usr/sbin/in.tftpd")
                                            else None)

    def version(self):
        return subprocess.run([self.binary(), "-V"], capture_output=True, text=True).stdout.strip()

    def command(self):
        user = "tftp" if _user_exists("tftp") else "nobody"
        return [self.binary(), "-L", "-a", f"127.0.0.1:{self.port}", "-s", "-u", user, str(self.root)]


class Atftpd(Server):
    name = "atftpd"
    label = "atftpd (--maxthread 100)"
    port = 3069

    def binary(self):
        return self.args.atftpd_path

    def version(self):
        return subprocess.run([self.binary(), "-V"], capture_output=True, text=True).stdout.strip()

    def command(self):
        # Debian's /etc/default/atftpd: --maxthread 100 --verbose=5 (and inetd);
        # here standalone in the foreground, logging to a file.
        return [self.binary(), "--daemon", "--no-fork", "--port", str(self.port),
                "--bind-address", "127.0.0.1", "--maxthread", "100", "--verbose=5",
                "--logfile", str(self.work / "atftpd-own.log"), "--user", "nobody",
                "--group", "nogroup", str(self.root)]

    def log_problems(self):
        own = self.work / "atftpd-own.log"
        try:
            lines = own.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return [l for l in lines if re.search(r"timeout|error|abort", l, re.I)
                and "Serving" not in l] + super().log_problems()


class Dnsmasq(Server):
    name = "dnsmasq"
    label = "dnsmasq (TFTP only)"
    port = 69

    def binary(self):
        return shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq")
                                           else None)

    def version(self):
        return subprocess.run([self.binary(), "-v"], capture_output=True,
                              text=True).stdout.splitlines()[0]

    def command(self):
        return [self.binary(), "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                "--enable-tftp", f"--tftp-root={self.root}", "--listen-address=127.0.0.1",
                "--bind-interfaces", f"--tftp-max={PARALLEL + 14}",
                f"--log-facility={self.work / 'dnsmasq-own.log'}",
                f"--pid-file={self.work / 'dnsmasq.pid'}"]

    def log_problems(self):
        own = self.work / "dnsmasq-own.log"
        try:
            lines = own.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return [l for l in lines if re.search(r"failed|error", l, re.I)] + super().log_problems()


SERVERS = {c.name: c for c in (Netbootd, TftpdHpa, Atftpd, Dnsmasq, NetbootdDiag)}
DEFAULT_SERVERS = "netbootd,tftpd-hpa,atftpd,dnsmasq"


def _user_exists(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def find_atftpd(explicit: str | None) -> str | None:
    """atftpd: --atftpd, PATH, or Debian's package unpacked (apt-get download +
    dpkg -x, never installed: it conflicts with tftpd-hpa) under /var/tmp."""
    if explicit:
        return explicit
    p = shutil.which("atftpd")
    if p:
        return p
    cached = ATFTPD_CACHE / "root" / "usr" / "sbin" / "atftpd"
    if cached.exists():
        return str(cached)
    if not shutil.which("apt-get"):
        return None
    log(f"atftpd: unpacking Debian's package into {ATFTPD_CACHE} (apt-get download + dpkg -x)")
    ATFTPD_CACHE.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["apt-get", "download", "atftpd"], cwd=ATFTPD_CACHE, capture_output=True,
                       text=True, timeout=120)
    debs = sorted(ATFTPD_CACHE.glob("atftpd_*.deb"))
    if r.returncode != 0 or not debs:
        log(f"atftpd: apt-get download failed: {r.stderr.strip()[-300:]}")
        return None
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(ATFTPD_CACHE / "root")], check=True, timeout=60)
    return str(cached) if cached.exists() else None


# --------------------------------------------------------------------------
# the bench
# --------------------------------------------------------------------------
class Bench:
    def __init__(self, args, lab, ns: str, work: Path, root: Path):
        self.args = args
        self.lab = lab
        self.ns = ns
        self.work = work
        self.root = root
        ncpu = len(os.sched_getaffinity(0))
        last = str(max(os.sched_getaffinity(0)))
        first = str(min(os.sched_getaffinity(0)))
        if args.pin == "same" or (args.pin == "split" and ncpu < 2):
            self.server_cpu = self.client_cpu = last
        elif args.pin == "split":
            self.server_cpu, self.client_cpu = last, first
        else:
            self.server_cpu = self.client_cpu = None
        self.idle = common.IdleWait(args.wait_idle, first=0.2)
        self.others_seen: set[str] = set()
        self.profile_client_cpu = (first if self.server_cpu == last and ncpu >= 2
                                   else self.client_cpu)

    def wait_idle(self) -> float:
        for line in common.other_benchmarks():
            self.others_seen.add(" ".join(line.split()[1:]))
        return self.idle(common.cpu_busy)

    def client(self, srv: Server, tool: str, windowsize: int, parallel: int,
               out: str | None = None, timeout: float | None = None, cpu: str | None = None) -> dict:
        cmd = [PY, str(HERE / "clients.py"), "--tool", tool, "--port", str(srv.port),
               "--file", FILE_NAME, "--blksize", str(BLKSIZE), "--parallel", str(parallel),
               "--timeout", str(timeout or self.args.trial_timeout)]
        if windowsize:
            cmd += ["--windowsize", str(windowsize)]
        if out:
            cmd += ["--out", out]
        cpu = cpu or self.client_cpu
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        r = self.lab.ns_exec(self.ns, *cmd, check=False,
                             timeout=(timeout or self.args.trial_timeout) + 30)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BenchError(f"clients.py failed (rc {r.returncode}): {r.stderr[-1000:]}") from None

    # -- verification: content, and whether windowsize was negotiated --------
    def verify(self, srv: Server, want_sha: str) -> dict:
        res = {}
        for tool, ws in (("curl", 0), ("atftp", WINDOW)):
            dest = self.work / f"verify-{srv.name}-{tool}.bin"
            dest.unlink(missing_ok=True)
            t = self.client(srv, tool, ws, 1, out=str(dest), timeout=60)
            ok = t["clients"][0]["rc"] == 0 and dest.exists() and \
                hashlib.sha256(dest.read_bytes()).hexdigest() == want_sha
            res[f"{tool}{'-ws' + str(ws) if ws else ''}_content_ok"] = ok
            dest.unlink(missing_ok=True)
        trace = self.lab.ns_exec(self.ns, "atftp", "--trace", "--tftp-timeout", "1",
                                 "--option", f"blksize {BLKSIZE}", "--option", f"windowsize {WINDOW}",
                                 "-g", "-r", FILE_NAME, "-l", "/dev/null", "127.0.0.1", str(srv.port),
                                 check=False, timeout=60)
        m = re.search(r"received OACK <([^>]*)>", trace.stdout + trace.stderr)
        res["oack_to_windowsize_request"] = (
            "".join(c for c in m.group(1) if c.isprintable()).strip(" ,") if m else None)
        res["windowsize_negotiated"] = bool(m and re.search(rf"windowsize: {WINDOW}\b", m.group(1)))
        return res

    # -- one trial ------------------------------------------------------------
    def trial(self, srv: Server, scenario: str) -> dict:
        tool, ws, par, _ = scenario_spec(scenario)
        busy = self.wait_idle()
        cpu0 = srv.cpu()
        t = self.client(srv, tool, ws, par,
                        cpu=self.profile_client_cpu if scenario.endswith("-split") else None)
        cpu1 = srv.cpu()
        clients = t["clients"]
        failed = [c for c in clients if c["rc"] != 0 or ("bytes" in c and c["bytes"] != FILE_SIZE)]
        total = FILE_SIZE * (len(clients) - len(failed))
        res = {"wall_s": t["wall"], "spawn_s": t["spawn_s"], "client_cpu_s": t["client_cpu_s"],
               "client_usage": t.get("client_usage"),
               "server_cpu_s": round(cpu1 - cpu0, 3), "failed": len(failed),
               "timed_out": t["timed_out"], "cpu_busy_before_pct": round(busy, 1)}
        if par == 1:
            secs = clients[0]["seconds"]
            res["seconds"] = secs
            res["mb_s"] = round(FILE_SIZE / secs / 1e6, 2) if not failed and secs > 0 else 0.0
        else:
            res["aggregate_mb_s"] = round(total / t["wall"] / 1e6, 2)
            res["per_client_s"] = sorted(c["seconds"] for c in clients)
        if failed:
            res["problems"] = [f"{len(failed)} of {len(clients)} transfers failed; first: "
                               f"{json.dumps(failed[0])[:300]}"]
        if not srv.alive():
            res.setdefault("problems", []).append(f"{srv.name} died:\n{tail(srv.logfile)}")
        return res

    def run_scenario(self, servers: list[Server], scenario: str, reps: int) -> dict:
        tool, ws, par, title = scenario_spec(scenario)
        log(f"== {scenario}: {title} ({reps} reps)")
        trials: dict[str, list] = {s.name: [] for s in servers}
        for rep, srv in common.rotations(servers, reps):
            t = self.trial(srv, scenario)
            trials[srv.name].append(t)
            metric = (f"{t['mb_s']:8.1f} MB/s" if par == 1 else
                      f"{t['wall_s']:7.2f} s wall ({t['aggregate_mb_s']:.1f} MB/s)")
            log(f"    rep {rep + 1} {srv.name:10} {metric}  server cpu {t['server_cpu_s']:.2f}s"
                + (f"  FAILED {t['failed']}" if t["failed"] else "")
                + (f"  [cpu {t['cpu_busy_before_pct']:.0f}% busy before]"
                   if t["cpu_busy_before_pct"] > BUSY_WARN else ""))
        out = {}
        for s in servers:
            ts = trials[s.name]
            ok = [t for t in ts if not t["failed"] and not t.get("problems")]
            d = {"trials": ts, "reps_ok": len(ok)}
            if ok:
                if par == 1:
                    v = [t["mb_s"] for t in ok]
                    d.update(mb_s=statistics.median(v), mb_s_min=min(v), mb_s_max=max(v))
                else:
                    v = [t["wall_s"] for t in ok]
                    d.update(wall_s=statistics.median(v), wall_s_min=min(v), wall_s_max=max(v),
                             aggregate_mb_s=round(PARALLEL * FILE_SIZE / statistics.median(v) / 1e6, 2))
                d["server_cpu_s"] = statistics.median(t["server_cpu_s"] for t in ok)
                d["server_cpu_us_per_block"] = round(
                    1e6 * d["server_cpu_s"] / (par * -(-FILE_SIZE // BLKSIZE)), 2)
            probs = [p for t in ts for p in t.get("problems", [])]
            if probs:
                d["problems"] = probs
            d["max_cpu_busy_before_pct"] = max((t["cpu_busy_before_pct"] for t in ts), default=0)
            out[s.name] = d
        return out

    # -- profile (netbootd only, after the timed runs) ------------------------
    def profile(self, srv: Server, scenario: str, seconds: float, dest: Path) -> dict:
        tool, ws, par, _ = scenario_spec(scenario)
        # Clients on another CPU than the server (if there is one), so that
        # samples outside epoll_wait are netbootd's own CPU time, not time it
        # spent preempted by a client on its CPU.
        cpu = self.profile_client_cpu
        spy = common.start_pyspy(srv.proc.pid, cpu, self.args.profile_rate, seconds, dest)
        t_end = time.monotonic() + seconds - 1.5
        n = 0
        cpu0 = srv.cpu()
        t0 = time.monotonic()
        while time.monotonic() < t_end:
            self.client(srv, tool, ws, par, cpu=cpu)
            n += 1
        busy_frac = (srv.cpu() - cpu0) / max(1e-6, time.monotonic() - t0)
        summary = common.stop_pyspy(spy, seconds, dest)
        info = {"file": str(dest), "trials_during": n, "server_cpu_share": round(busy_frac, 3),
                "server_cpu": self.server_cpu, "client_cpu": cpu}
        info.update(summary)
        return info


# --------------------------------------------------------------------------
def print_report(doc: dict) -> None:
    res = doc["results"]
    names = doc["servers"]
    labels = doc["labels"]
    print()
    print(f"TFTP, loopback in a private netns, pinning: {doc['method']['pinning']}; "
          f"file {mib()} MiB random, blksize {BLKSIZE}; median of the repetitions")
    for scen, per in res.items():
        tool, ws, par, title = scenario_spec(scen)
        print()
        print(f"[{scen}] {title}")
        if par == 1:
            hdr = f"  {'server':32} {'MB/s':>8} {'min':>7} {'max':>7} {'ok':>4}  {'srv CPU us/blk':>14}  note"
        else:
            hdr = (f"  {'server':32} {'wall s':>8} {'min':>7} {'max':>7} {'ok':>4} {'agg MB/s':>9}"
                   f"  {'srv CPU s':>9}  note")
        print(hdr)
        print("  " + "-" * (len(hdr) - 2))
        for n in names:
            d = per.get(n)
            if not d:
                continue
            note = ""
            if scen == "window16":
                v = doc["verify"].get(n, {})
                note = "windowsize 16" if v.get("windowsize_negotiated") else "no windowsize: lock-step"
            if d.get("problems"):
                note += "  [problems: see JSON]"
            if d.get("max_cpu_busy_before_pct", 0) > BUSY_WARN:
                note += f"  [bg cpu {d['max_cpu_busy_before_pct']:.0f}%]"
            if "mb_s" in d:
                print(f"  {labels[n]:32} {d['mb_s']:8.1f} {d['mb_s_min']:7.1f} {d['mb_s_max']:7.1f} "
                      f"{d['reps_ok']:>4}  {d['server_cpu_us_per_block']:14.1f}  {note}")
            elif "wall_s" in d:
                print(f"  {labels[n]:32} {d['wall_s']:8.2f} {d['wall_s_min']:7.2f} {d['wall_s_max']:7.2f} "
                      f"{d['reps_ok']:>4} {d['aggregate_mb_s']:9.1f}  {d['server_cpu_s']:9.2f}  {note}")
            else:
                print(f"  {labels[n]:32} {'-':>8}  (no successful trial){note}")
        kind = "MB/s ratio, higher is better" if par == 1 else "wall-time ratio, lower is better"
        for ours, rat in doc["ratios"].get(scen, {}).items():
            if not rat:
                continue
            print(f"  {ours} / peer ({kind}): " +
                  ", ".join(f"{p} {common.fmt_ratio(v)}" for p, v in rat.items()))
    common.print_goals(doc)
    for n, v in doc["verify"].items():
        bad = [k for k, ok in v.items() if k.endswith("_ok") and not ok]
        if bad:
            print(f"! {n}: verification failed: {', '.join(bad)}")
    common.print_problems(doc)
    common.print_profiles(doc, lambda scen, p: (
        f"netbootd profile [{scen}]: server on CPU {p['server_cpu']} ({p['server_cpu_share']:.0%} "
        f"busy), clients on CPU {p['client_cpu']}; {p['busy_samples']} busy samples "
        f"({p['epoll_pct']}% of all in epoll_wait): {p['file']}"))


def compute(doc: dict) -> None:
    """Ratios of every netbootd* row to every peer, per scenario; the goals."""
    res = doc["results"]
    ratios: dict = {}
    for scen, per in res.items():
        par = scenario_spec(scen)[2]
        key = "mb_s" if par == 1 else "wall_s"
        for ours in (n for n in per if n.startswith("netbootd")):
            if key not in per[ours]:
                continue
            ratios.setdefault(scen, {})[ours] = {
                p: (round(per[ours][key] / d[key], 3) if d.get(key) else None)
                for p, d in per.items() if not p.startswith("netbootd")}
    doc["ratios"] = ratios
    goals = []
    for ours in ("netbootd", "netbootd-diag"):
        g = lambda s, p: ratios.get(s, {}).get(ours, {}).get(p)   # noqa: E731
        tag = "" if ours == "netbootd" else f"(diagnostic, {ours}) "
        for name, v, ok in (
            ("lock-step (curl) >= 0.6x tftpd-hpa", g("lockstep", "tftpd-hpa"), lambda v: v >= 0.6),
            ("windowsize 16 (atftp) >= 1.0x tftpd-hpa (which serves lock-step)",
             g("window16", "tftpd-hpa"), lambda v: v >= 1.0),
            (f"{PARALLEL} x {mib()} MiB wall time <= 1.0x atftpd", g("parallel", "atftpd"),
             lambda v: v <= 1.0),
            (f"{PARALLEL} x {mib()} MiB wall time <= 1.0x atftpd, clients on the other CPU",
             g("parallel-split", "atftpd"), lambda v: v <= 1.0)):
            if ours != "netbootd" and v is None:
                continue
            goals.append({"goal": tag + name, "value": v, "met": (ok(v) if v is not None else None)})
    doc["goals"] = goals


def main() -> int:
    global PARALLEL, FILE_SIZE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse ~1-2 minute version")
    ap.add_argument("--servers", default=DEFAULT_SERVERS,
                    help="comma list of: " + ",".join(SERVERS) + f" (default {DEFAULT_SERVERS})")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma list of: " + ",".join(SCENARIOS))
    ap.add_argument("--reps", type=int, help="repetitions of a single-transfer trial (default 5; quick 3)")
    ap.add_argument("--parallel-reps", type=int, help="repetitions of the parallel trial (default 3; quick 1)")
    ap.add_argument("--clients", type=int, default=PARALLEL,
                    help=f"parallel transfers in the parallel scenario (default {PARALLEL})")
    ap.add_argument("--size-mib", type=float, default=FILE_SIZE >> 20,
                    help="file size in MiB (default 8; smaller only for smoke tests)")
    ap.add_argument("--pin", choices=("same", "split", "none"), default="same",
                    help="same: servers and clients on one CPU (default, LAB.md); "
                         "split: servers on the last CPU, clients on the first")
    ap.add_argument("--trial-timeout", type=float, default=120.0, help="seconds per trial")
    common.add_run_options(ap)
    ap.add_argument("--atftpd-path", help="atftpd binary (default: PATH, else Debian's .deb unpacked "
                                          f"under {ATFTPD_CACHE})")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    PARALLEL, FILE_SIZE = args.clients, int(args.size_mib * (1 << 20))
    q = args.quick
    args.reps = args.reps or (3 if q else 5)
    args.parallel_reps = args.parallel_reps or (1 if q else 3)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    bad = [n for n in names if n not in SERVERS] + [s for s in scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown: {', '.join(bad)}")
    why = common.cannot_run("bench-tftp", "network namespace, dnsmasq on port 69",
                            (("curl", "curl"), ("atftp", "atftp"), ("taskset", "util-linux")))
    if why:
        print(why, file=sys.stderr)
        return 2
    if "atftpd" in names:
        args.atftpd_path = find_atftpd(args.atftpd_path)
    if args.profile and not PYSPY.exists():
        print(f"bench-tftp: --profile needs {PYSPY} (pip install py-spy)", file=sys.stderr)
        return 2

    common.unwind_on_signals()
    others, idle_busy = common.check_machine()
    started = _dt.datetime.now().astimezone()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-tftp-", dir=args.workdir))
    os.chmod(work, 0o777)               # atftpd and dnsmasq log as nobody
    root, want_sha = common.make_root(work, FILE_NAME, FILE_SIZE)

    servers: list[Server] = []
    bench = None
    doc: dict = {"bench": "tftp", "started": started.isoformat(), "servers": [], "labels": {},
                 "versions": {}, "verify": {}, "results": {}, "profiles": {}}
    skipped = {}
    try:
        with labnet.Lab() as lab:
            ns = lab.namespace("tftp")
            # glibc's getaddrinfo(AI_ADDRCONFIG), used by in.tftpd -a, wants an
            # IPv4 address other than 127.0.0.1 configured.
            lab.ns_exec(ns, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
            bench = Bench(args, lab, ns, work, root)
            log(f"lab {ns}; work dir {work}; servers on CPU {bench.server_cpu}, "
                f"clients on CPU {bench.client_cpu}")
            common.start_servers(servers, lambda n: SERVERS[n](args, work, root), names, lab, ns,
                                 bench.server_cpu, doc, skipped)
            for srv in servers:
                doc["verify"][srv.name] = bench.verify(srv, want_sha)
                log(f"  verify {srv.name}: {doc['verify'][srv.name]}")
            for scen in scenarios:
                reps = args.reps if scenario_spec(scen)[2] == 1 else args.parallel_reps
                doc["results"][scen] = bench.run_scenario(servers, scen, reps)
            common.profile_netbootd(bench, servers, scenarios, args, started, doc)
            doc["server_exit"] = {}
            for srv in servers:
                doc["server_exit"][srv.name] = srv.stop()
            nbc = next((s.counters() for s in servers if s.name == "netbootd"), None)
            if nbc:
                doc["netbootd_counters"] = nbc
            doc["server_log_problems"] = {s.name: s.log_problems()[:20] for s in servers}
    finally:
        common.stop_servers(servers, work, args.keep)
    elapsed = time.monotonic() - t0
    doc["skipped"] = skipped
    doc["elapsed_s"] = round(elapsed, 1)
    doc["host"] = {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                   "cpu_busy_before_start_pct": round(idle_busy, 1), "other_benchmarks": others,
                   "cpu_model": common.cpu_model()}
    doc["settings"] = vars(args)
    doc["method"] = {
        "file_bytes": FILE_SIZE, "blksize": BLKSIZE, "windowsize": WINDOW, "parallel": PARALLEL,
        "pinning": (f"servers CPU {bench.server_cpu}, clients CPU {bench.client_cpu}"
                    if bench is not None and bench.server_cpu else "none"),
        "mb_s": "10^6 bytes / transfer seconds (curl time_total; atftp process wall time)",
        "parallel_wall": "first client start to last client exit (clients.py, inside the netns)",
        "server_cpu": "utime+stime of the server's process tree during the trial",
    }
    return common.finish(doc, args, started, elapsed, others,
                         bench.others_seen if bench is not None else set(), compute, print_report)


if __name__ == "__main__":
    sys.exit(main())
