#!/usr/bin/env python3
"""HTTP file-serving benchmark: netbootd's /files vs nginx, driven by wrk.

Where (--link): loopback (the default) - servers and wrk on the loopback
of one private network namespace (labnet.Lab) that this script creates and
deletes; veth - the servers in one namespace, wrk in another, joined by a
veth pair (10.213.15.1-2/30, addresses that exist only there; MTU 1500) with
RPS steering each side's receive processing onto its own side's core (the
server's on the server CPU, wrk's on wrk's), as on two machines with NICs:
on loopback the client's TCP receive and ACK work runs in the sender's
softirq and is charged to the server.  Loopback stays the default so that
results compare with every earlier run; veth is the shape closer to a
boot server on a real link, and both are reported.  Both servers run at
once (the idle one sleeps); trials are interleaved, the order rotating every
repetition.

Servers:
  netbootd   only its HTTP site (bench/http/serve_netbootd.py: build_site()
             on the global reactor, GET /files/<name> from HttpApp.roots)
  nginx      worker_processes 1, sendfile on, tcp_nopush on, access log on
             (otherwise Debian's defaults)
  nginx-nosendfile  (diagnostic, not a goal peer) the same with
             sendfile off: what nginx costs when it copies through user space
  netbootd-copy  (diagnostic, not in the default set) the same runner with
             sendfile off: bodies copied through Python, as before sendfile.py
  netbootd-reactor  (diagnostic, not in the default set) the same runner with
             the body sent by sendfile on the reactor's write events instead of
             the sender thread (net/http/sendthread.py)
  netbootd-cork  (diagnostic, not in the default set) the same runner
             with TCP_CORK from the headers to the end of each body
  netbootd-b256  (diagnostic, not in the default set) the same runner with
             256 KiB per connection per sender-thread turn (4 MiB by default)
  netbootd-cork32  (diagnostic, not in the default set) TCP_CORK only while
             at least 32 bodies are under way (sendfile.CORK_AT)
  netbootd-nomemtune  (diagnostic, not in the default set) the same runner
             without netbootd.runtime.memtune.tune_malloc(), i.e. glibc's malloc
             defaults, as the daemon ran before it pinned the thresholds

Scenarios ("shapes"; one 40 MiB file of random bytes, "initrd.img", page-cached),
every one wrk keep-alive connections fetching the file again and again:
  t1c1, t1c20, t1c200   wrk -t1 -c1 / -c20 / -c200 (one client thread)
  t2c2, t2c20, t2c200   wrk -t2 -c2 / -c20 / -c200 (two client threads; wrk
                        needs a connection per thread, so 2 stands for 1)
(c1 and c20 are accepted as the old names of t1c1 and t1c20.)
Aggregate MB/s = bytes wrk read (headers included, partial last responses
too) / trial duration, 10^6 bytes per second.  Each trial lasts --duration
seconds and is repeated (--reps; tables show the median).

Pinning (--pin): by default (split) every server runs on the last CPU and wrk
on the first, so each server has exactly one core (nginx one worker, netbootd
its one reactor thread) and a one-thread wrk never competes with it; a
two-thread wrk is not pinned (two threads on one core would be one client:
it may then take some of the server's core, the same for every server).  `server CPU` is the
share of its core the server used during the trial: about 100% means the
server was the bottleneck, clearly less means the client (wrk) or the kernel
was; wrk's own CPU share is reported too.

Usage (as root):  .venv/bin/python bench/http/run.py [--quick] [--servers ...]
Results: tables on stdout, JSON in bench/results/http-<timestamp>.json;
--profile also samples netbootd with py-spy in each scenario.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402
from common import BUSY_WARN, PY, PYSPY, RESULTS, BenchError, log, tail  # noqa: E402

HERE = Path(__file__).resolve().parent
labnet = common.load_labnet()

FILE_NAME = "initrd.img"
FILE_SIZE = 40 << 20
# shape -> (wrk threads, connections)
SCENARIOS = {"t1c1": (1, 1), "t1c20": (1, 20), "t1c200": (1, 200),
             "t2c2": (2, 2), "t2c20": (2, 20), "t2c200": (2, 200)}
ALIASES = {"c1": "t1c1", "c20": "t1c20"}
CLIENT_BOUND = 90.0      # % of a core per wrk thread: the client, not the server, was the limit
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

WRK_LUA = r"""
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"duration_us": %d, "requests": %d, "bytes": %d, ' ..
    '"err_connect": %d, "err_read": %d, "err_write": %d, "err_status": %d, "err_timeout": %d, ' ..
    '"latency_mean_us": %.1f, "latency_max_us": %d}\n',
    summary.duration, summary.requests, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency.mean, latency.max))
end
"""


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------
class Server(common.Server):
    """The server runner bench/tftp uses, listening on TCP."""
    stop_timeout = 15.0
    ss_flags = "-Hltn"
    settle = 0.3
    PROBLEMS = r"Traceback|\bERROR\b|CRITICAL|Unhandled|\[(crit|alert|emerg)\]"


class Netbootd(Server):
    name = "netbootd"
    label = "netbootd (/files, build_site)"
    port = 8081

    def binary(self):
        return PY

    def version(self):
        return common.runner_version("import importlib.metadata as m, twisted; "
                                     "print(m.version('netbootd'), 'twisted', twisted.__version__)")

    def command(self):
        return [PY, str(HERE / "serve_netbootd.py"), "--root", str(self.root),
                "--port", str(self.port), "--ip", self.args.host]

    def counters(self):
        text = self.logfile.read_text(errors="replace")
        out = common.runner_counters(text)
        if "serving /files only" in text:
            out["site"] = "files-only fallback (build_site failed, see log)"
        return out or None


class NetbootdNoMemtune(Netbootd):
    """Diagnostic: the same runner without netbootd.runtime.memtune.tune_malloc()
    (glibc's default, dynamic mmap threshold and 128 KiB heap trimming), to
    show what that start-up setting buys: without it, Twisted's file-serving
    buffers land on freshly faulted pages (see flt/MB)."""
    name = "netbootd-nomemtune"
    label = "netbootd, glibc malloc defaults"
    port = 8084

    def command(self):
        return super().command() + ["--no-memtune"]


class Nginx(Server):
    name = "nginx"
    label = "nginx (1 worker, sendfile on)"
    port = 8082
    sendfile = "on"

    def binary(self):
        return NGINX if os.access(NGINX, os.X_OK) else None

    def version(self):
        r = subprocess.run([NGINX, "-v"], capture_output=True, text=True)
        return (r.stderr or r.stdout).strip()

    def command(self):
        d = self.work / self.name
        d.mkdir(exist_ok=True)
        conf = d / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
    sendfile {self.sendfile};
    tcp_nopush on;
    types_hash_max_size 2048;
    default_type application/octet-stream;
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {self.args.host}:{self.port};
        location /files/ {{ alias {self.root}/; }}
    }}
}}
""")
        return [NGINX, "-c", str(conf), "-e", str(d / "error.log")]

    def log_problems(self):
        try:
            lines = (self.work / self.name / "error.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return [l for l in lines if re.search(r"\[(error|crit|alert|emerg)\]", l)] + \
            super().log_problems()


class NginxNoSendfile(Nginx):
    name = "nginx-nosendfile"
    label = "nginx (1 worker, sendfile off)"
    port = 8083
    sendfile = "off"


class NetbootdCopy(Netbootd):
    """Diagnostic: the same runner with net/http/sendfile.py switched off, so
    bodies are copied through Python 64 KiB at a time (static.File), as
    before sendfile: what sendfile buys, in the same run."""
    name = "netbootd-copy"
    label = "netbootd, copying (no sendfile)"
    port = 8085

    def command(self):
        return super().command() + ["--no-sendfile"]


class NetbootdReactor(Netbootd):
    """Diagnostic: bodies sent by sendfile calls on the reactor's write events
    (sendfile.THREAD off), as before the sender thread: what it buys, same run."""
    name = "netbootd-reactor"
    label = "netbootd, sendfile on the reactor thread"
    port = 8086

    def command(self):
        return super().command() + ["--reactor-send"]


class NetbootdCork(Netbootd):
    """Diagnostic: the same runner with TCP_CORK from the headers to the end
    of each body (sendfile.CORK on, nginx's tcp_nopush): what it costs, same run."""
    name = "netbootd-cork"
    label = "netbootd, TCP_CORK"
    port = 8087

    def command(self):
        return super().command() + ["--cork"]


class NetbootdBudget256(Netbootd):
    """Diagnostic: the sender thread gives each connection at most 256 KiB per
    turn (sendthread.BUDGET, 4 MiB by default), so at many connections all are
    served in turn, as nginx does, without the cork."""
    name = "netbootd-b256"
    label = "netbootd, 256 KiB per turn"
    port = 8088

    def command(self):
        return super().command() + ["--budget-kib", "256"]


class NetbootdCork32(Netbootd):
    """Diagnostic: TCP_CORK only while at least 32 bodies are under way in the
    sender thread (sendfile.CORK_AT): the cork's turn-taking at 200
    connections without its cost at 1-20."""
    name = "netbootd-cork32"
    label = "netbootd, cork at >= 32 bodies"
    port = 8089

    def command(self):
        return super().command() + ["--cork-at", "32"]


SERVERS = {c.name: c for c in (Netbootd, Nginx, NginxNoSendfile, NetbootdNoMemtune,
                                NetbootdCopy, NetbootdReactor, NetbootdCork, NetbootdBudget256,
                                NetbootdCork32)}


def tree_user(root: int | None) -> float:
    """User-mode CPU seconds of `root` and its live descendants (utime, field
    14 of /proc/PID/stat, clock ticks): the part of the server's CPU spent in
    its own code, not the kernel's (sendfile, TCP)."""
    if root is None:
        return 0.0
    kids = common._children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        st = common._stat(pid)
        if st:
            total += int(st[11])
        todo.extend(kids.get(pid, ()))
    return total / common._TICK


# --------------------------------------------------------------------------
class Bench:
    def __init__(self, args, lab, ns: str, work: Path, client_ns: str | None = None):
        self.args = args
        self.lab = lab
        self.ns = client_ns or ns     # where wrk and curl run (the servers' namespace on loopback)
        self.work = work
        cpus = sorted(os.sched_getaffinity(0))
        if args.pin == "split" and len(cpus) >= 2:
            self.server_cpu, self.client_cpu = str(cpus[-1]), str(cpus[0])
        elif args.pin in ("same", "split"):
            self.server_cpu = self.client_cpu = str(cpus[-1])
        else:
            self.server_cpu = self.client_cpu = None
        self.idle = common.IdleWait(args.wait_idle, first=0.2)
        self.others_seen: set[str] = set()
        self.lua = work / "report.lua"
        self.lua.write_text(WRK_LUA)

    def wait_idle(self) -> float:
        for line in common.other_benchmarks():
            self.others_seen.add(" ".join(line.split()[1:]))
        return self.idle(common.cpu_busy)

    def url(self, srv: Server) -> str:
        return f"http://{self.args.host}:{srv.port}/files/{FILE_NAME}"

    def verify(self, srv: Server, want_sha: str) -> dict:
        dest = self.work / f"verify-{srv.name}.bin"
        r = self.lab.ns_exec(self.ns, "curl", "-s", "-S", "-o", str(dest), "-w",
                             "%{http_code} %{size_download} %{speed_download}", self.url(srv),
                             check=False, timeout=60)
        parts = r.stdout.split()
        ok = (r.returncode == 0 and parts[:1] == ["200"] and dest.exists()
              and hashlib.sha256(dest.read_bytes()).hexdigest() == want_sha)
        dest.unlink(missing_ok=True)
        return {"content_ok": ok, "curl": r.stdout.strip(), "curl_rc": r.returncode}

    def wrk(self, srv: Server, scen: str, seconds: float) -> list[str]:
        threads, conns = SCENARIOS[scen]
        cmd = [WRK, f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "60s",
               "-s", str(self.lua), self.url(srv)]
        if self.client_cpu is not None and (threads == 1 or self.args.pin == "same"):
            cmd = ["taskset", "-c", self.client_cpu, *cmd]
        return cmd

    def trial(self, srv: Server, scen: str) -> dict:
        a = self.args
        threads, conns = SCENARIOS[scen]
        busy = self.wait_idle()
        cmd = self.wrk(srv, scen, a.duration)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        flt0 = srv.minflt()
        pid = srv.proc.pid if srv.proc else None
        user0 = tree_user(pid)
        cpu0 = srv.cpu()
        t0 = time.monotonic()
        r = self.lab.ns_exec(self.ns, *cmd, check=False, timeout=a.duration + 60)
        wall = time.monotonic() - t0
        cpu1 = srv.cpu()
        user1 = tree_user(pid)
        flt1 = srv.minflt()
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m = re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M)
        if not m:
            raise BenchError(f"wrk failed (rc {r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
        w = json.loads(m.group(1))
        dur = w["duration_us"] / 1e6
        errors = {k: v for k, v in w.items() if k.startswith("err_") and v}
        cpu_s = cpu1 - cpu0
        res = {"threads": threads, "connections": conns, "duration_s": round(dur, 3),
               "requests": w["requests"],
               "bytes": w["bytes"], "mb_s": round(w["bytes"] / dur / 1e6, 1),
               "files_per_s": round(w["requests"] / dur, 2),
               "latency_mean_ms": round(w["latency_mean_us"] / 1000, 1),
               "server_cpu_pct": round(100 * cpu_s / wall, 1),
               "server_cpu_s": round(cpu_s, 3),
               # CPU cost: server CPU seconds per GB (10^9 B) served (lower is better)
               "server_cpu_s_per_gb": round(cpu_s / (w["bytes"] / 1e9), 4) if w["bytes"] else None,
               "server_user_s_per_gb": (round((user1 - user0) / (w["bytes"] / 1e9), 4)
                                        if w["bytes"] else None),
               "wrk_cpu_pct": round(100 * ((ru1.ru_utime - ru0.ru_utime) +
                                           (ru1.ru_stime - ru0.ru_stime)) / wall, 1),
               "server_minflt_per_mb": round((flt1 - flt0) / max(1.0, w["bytes"] / 1e6), 2),
               "cpu_busy_before_pct": round(busy, 1)}
        if errors:
            res["problems"] = [f"wrk errors: {errors}"]
        if w["bytes"] == 0:
            res.setdefault("problems", []).append("no byte received")
        if not srv.alive():
            res.setdefault("problems", []).append(f"{srv.name} died:\n{tail(srv.logfile)}")
        return res

    def run_scenario(self, servers: list[Server], scen: str, reps: int) -> dict:
        threads, conns = SCENARIOS[scen]
        log(f"== {scen}: wrk {threads} thread(s), {conns} connection(s), "
            f"{self.args.duration:g}s per trial, {reps} reps")
        trials: dict[str, list] = {s.name: [] for s in servers}
        for rep, srv in common.rotations(servers, reps):
            t = self.trial(srv, scen)
            trials[srv.name].append(t)
            log(f"    rep {rep + 1} {srv.name:17} {t['mb_s']:8.1f} MB/s  {t['requests']:4} files  "
                f"server cpu {t['server_cpu_pct']:3.0f}%  wrk cpu {t['wrk_cpu_pct']:3.0f}%  "
                f"{t['server_cpu_s_per_gb'] or 0:.3f} CPU-s/GB"
                + (f"  ! {t['problems'][0][:80]}" if t.get("problems") else "")
                + (f"  [cpu {t['cpu_busy_before_pct']:.0f}% busy before]"
                   if t["cpu_busy_before_pct"] > BUSY_WARN else ""))
        out = {}
        for s in servers:
            ts = trials[s.name]
            ok = [t for t in ts if not t.get("problems")]
            d = {"trials": ts, "reps_ok": len(ok)}
            if ok:
                v = [t["mb_s"] for t in ok]
                d.update(mb_s=statistics.median(v), mb_s_min=min(v), mb_s_max=max(v),
                         server_cpu_pct=statistics.median(t["server_cpu_pct"] for t in ok),
                         wrk_cpu_pct=statistics.median(t["wrk_cpu_pct"] for t in ok),
                         latency_mean_ms=statistics.median(t["latency_mean_ms"] for t in ok),
                         server_minflt_per_mb=statistics.median(t["server_minflt_per_mb"] for t in ok))
                # CPU cost: median over trials of server CPU seconds per GB served
                d["server_cpu_s_per_gb"] = statistics.median(t["server_cpu_s_per_gb"] for t in ok)
                d["server_user_s_per_gb"] = statistics.median(t["server_user_s_per_gb"] for t in ok)
                # wrk near a full core per thread: the client held the server back
                d["client_bound"] = d["wrk_cpu_pct"] >= CLIENT_BOUND * threads
            probs = [p for t in ts for p in t.get("problems", [])]
            if probs:
                d["problems"] = probs
            d["max_cpu_busy_before_pct"] = max((t["cpu_busy_before_pct"] for t in ts), default=0)
            out[s.name] = d
        return out

    def profile(self, srv: Server, scen: str, seconds: float, dest: Path) -> dict:
        # --nonblocking: py-spy's pausing mode slowed netbootd ~3x here.  Samples
        # in epoll_wait are left out by summarize_profile (busy time only).
        spy = common.start_pyspy(srv.proc.pid, self.client_cpu, self.args.profile_rate, seconds, dest)
        cmd = self.wrk(srv, scen, max(1, int(seconds - 2)))
        cpu0, t0 = srv.cpu(), time.monotonic()
        r = self.lab.ns_exec(self.ns, *cmd, check=False, timeout=seconds + 60)
        share = (srv.cpu() - cpu0) / max(1e-6, time.monotonic() - t0)
        summary = common.stop_pyspy(spy, seconds, dest)
        info = {"file": str(dest), "server_cpu_share": round(share, 3)}
        m = re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M)
        if m:
            w = json.loads(m.group(1))
            info["mb_s_while_profiled"] = round(w["bytes"] / (w["duration_us"] / 1e6) / 1e6, 1)
        info.update(summary)
        return info


# --------------------------------------------------------------------------
def print_report(doc: dict) -> None:
    names, labels = doc["servers"], doc["labels"]
    print()
    print(f"HTTP GET of a {FILE_SIZE >> 20} MiB file over {doc['method'].get('link', 'loopback')}, wrk; "
          f"pinning: {doc['method']['pinning']}; {doc['settings']['duration']:g}s trials; "
          "median of the repetitions")
    for scen, per in doc["results"].items():
        print()
        th, conns = SCENARIOS[scen]
        print(f"[{scen}] wrk -t{th} -c{conns}: aggregate MB/s")
        hdr = (f"  {'server':32} {'MB/s':>8} {'min':>8} {'max':>8} {'ok':>3} {'srv CPU':>8} "
               f"{'wrk CPU':>8} {'CPU s/GB':>9} {'flt/MB':>7} {'lat ms':>7}  note")
        print(hdr)
        print("  " + "-" * (len(hdr) - 2))
        for n in names:
            d = per.get(n)
            if not d:
                continue
            note = "  [problems: see JSON]" if d.get("problems") else ""
            if d.get("max_cpu_busy_before_pct", 0) > BUSY_WARN:
                note += f"  [bg cpu {d['max_cpu_busy_before_pct']:.0f}%]"
            if d.get("client_bound"):
                note += "  [client-bound: wrk at its cores' limit]"
            if "mb_s" not in d:
                print(f"  {labels[n]:32} {'-':>8}  (no successful trial){note}")
                continue
            print(f"  {labels[n]:32} {d['mb_s']:8.1f} {d['mb_s_min']:8.1f} {d['mb_s_max']:8.1f} "
                  f"{d['reps_ok']:>3} {d['server_cpu_pct']:7.0f}% {d['wrk_cpu_pct']:7.0f}% "
                  f"{d['server_cpu_s_per_gb'] or 0:9.3f} {d['server_minflt_per_mb']:7.1f} "
                  f"{d['latency_mean_ms']:7.1f}{note}")
        for ours, rat in doc["ratios"].get(scen, {}).items():
            if not rat:
                continue
            print(f"  {ours} / peer: MB/s (higher is better) " +
                  ", ".join(f"{p} {common.fmt_ratio(v['mb_s'])}" for p, v in rat.items()) +
                  "; CPU s/GB (lower is better) " +
                  ", ".join(f"{p} {common.fmt_ratio(v['cpu_per_gb'])}" for p, v in rat.items()))
    print_summary(doc)
    common.print_goals(doc)
    for n, v in doc["verify"].items():
        if not v.get("content_ok"):
            print(f"! {n}: verification download failed: {v}")
    common.print_problems(doc)
    if doc.get("netbootd_counters", {}).get("site", "").startswith("files-only"):
        print("! netbootd: build_site() failed in this work tree; the runner served /files through "
              "the same Files resource without /api (see the netbootd log)")
    common.print_profiles(doc, lambda scen, p: (
        f"netbootd profile [{scen}]: server {p['server_cpu_share']:.0%} busy, "
        f"{p.get('mb_s_while_profiled', '?')} MB/s while profiled; {p['busy_samples']} busy "
        f"samples ({p['epoll_pct']}% of all in epoll_wait): {p['file']}"))


def print_summary(doc: dict) -> None:
    """One line per shape: netbootd against nginx (sendfile on), same run."""
    per_shape = [(scen, per) for scen, per in doc["results"].items()
                 if per.get("netbootd", {}).get("mb_s") and per.get("nginx", {}).get("mb_s")]
    if not per_shape:
        return
    print()
    print("netbootd vs nginx (sendfile on), per shape; wrk CPU = the client's share of a core "
          "(netbootd run / nginx run)")
    hdr = (f"  {'shape':8} {'nb MB/s':>9} {'nginx MB/s':>11} {'ratio':>6} {'nb CPU/GB':>10} "
           f"{'nginx CPU/GB':>13} {'ratio':>6} {'user/GB nb/ng':>14} {'wrk CPU':>11}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for scen, per in per_shape:
        nb, ng = per["netbootd"], per["nginx"]
        r = doc["ratios"][scen]["netbootd"]["nginx"]
        print(f"  {scen:8} {nb['mb_s']:9.1f} {ng['mb_s']:11.1f} {common.fmt_ratio(r['mb_s']):>6} "
              f"{nb['server_cpu_s_per_gb']:10.3f} {ng['server_cpu_s_per_gb']:13.3f} "
              f"{common.fmt_ratio(r['cpu_per_gb']):>6} "
              f"{nb['server_user_s_per_gb']:7.3f}/{ng['server_user_s_per_gb']:.3f} "
              f"{nb['wrk_cpu_pct']:4.0f}%/{ng['wrk_cpu_pct']:4.0f}%"
              + ("  client-bound" if nb.get("client_bound") or ng.get("client_bound") else ""))


def compute(doc: dict) -> None:
    """Ratios of every netbootd* row to every peer row, per scenario: MB/s and
    server CPU seconds per GB; the goals per shape against nginx."""
    ratios = {}
    for scen, per in doc["results"].items():
        for ours in (n for n in per if n.startswith("netbootd")):
            nb = per[ours]
            if "mb_s" not in nb:
                continue
            ratios.setdefault(scen, {})[ours] = {
                p: {"mb_s": round(nb["mb_s"] / d["mb_s"], 3) if d.get("mb_s") else None,
                    "cpu_per_gb": (round(nb["server_cpu_s_per_gb"] / d["server_cpu_s_per_gb"], 3)
                                   if d.get("server_cpu_s_per_gb") else None)}
                for p, d in per.items() if not p.startswith("netbootd")}
    doc["ratios"] = ratios
    doc["goals"] = []
    for scen in doc["results"]:
        r = ratios.get(scen, {}).get("netbootd", {}).get("nginx") or {}
        v, c = r.get("mb_s"), r.get("cpu_per_gb")
        doc["goals"].append({"goal": f"[{scen}] MB/s >= 0.9x nginx", "value": v,
                             "met": (v >= 0.9) if v is not None else None})
        doc["goals"].append({"goal": f"[{scen}] CPU s/GB <= 1.2x nginx (sendfile on)", "value": c,
                             "met": (c <= 1.2) if c is not None else None})


VETH_CLIENT, VETH_SERVER = "10.213.15.1", "10.213.15.2"


def veth_link(lab, client_ns: str, server_ns: str, bench: "Bench") -> str:
    """--link veth: the pair between wrk's namespace and the servers', and RPS:
    a veth hands each packet to the receiving side in the sender's softirq, on
    the sender's CPU; rps_cpus queues it to the receiving side's own CPU
    instead, so the client's receive work is not charged to the server."""
    cdev, sdev = lab.link(client_ns, f"{VETH_CLIENT}/30", server_ns, f"{VETH_SERVER}/30")
    how = f"veth {cdev} ({VETH_CLIENT}, wrk) <-> {sdev} ({VETH_SERVER}, servers), MTU 1500"
    if bench.server_cpu is not None and bench.client_cpu != bench.server_cpu:
        for ns, dev, cpu in ((client_ns, cdev, bench.client_cpu),
                             (server_ns, sdev, bench.server_cpu)):
            lab.ns_exec(ns, "sh", "-c", f"echo {1 << int(cpu):x} > "
                        f"/sys/class/net/{dev}/queues/rx-0/rps_cpus")
        how += f"; RPS: wrk's receive on CPU {bench.client_cpu}, servers' on CPU {bench.server_cpu}"
    return how


def main() -> int:
    global FILE_SIZE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse ~1 minute version")
    ap.add_argument("--servers", default="netbootd,nginx,nginx-nosendfile", help="comma list of: " + ",".join(SERVERS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of: " + ",".join(SCENARIOS))
    ap.add_argument("--duration", type=float, help="seconds per wrk trial (default 5; quick 2)")
    ap.add_argument("--reps", type=int, help="repetitions (default 5; quick 2)")
    ap.add_argument("--link", choices=("loopback", "veth"), default="loopback",
                    help="loopback: servers and wrk in one namespace (default, as every earlier "
                         "run); veth: two namespaces joined by a veth pair, RPS steering each "
                         "side's receive onto its own core")
    ap.add_argument("--pin", choices=("split", "same", "none"), default="split",
                    help="split: servers on the last CPU, wrk on the first (default); "
                         "same: all on the last CPU")
    common.add_run_options(ap)
    ap.add_argument("--size-mib", type=float, default=FILE_SIZE >> 20,
                    help="file size in MiB (default 40; smaller only for smoke tests)")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    FILE_SIZE = int(args.size_mib * (1 << 20))
    q = args.quick
    args.duration = args.duration or (2.0 if q else 5.0)
    args.reps = args.reps or (2 if q else 5)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    scenarios = [ALIASES.get(s.strip(), s.strip()) for s in args.scenarios.split(",") if s.strip()]
    bad = [n for n in names if n not in SERVERS] + [s for s in scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown: {', '.join(bad)}")
    why = common.cannot_run("bench-http", "network namespace",
                            ((WRK, "wrk"), ("curl", "curl"), ("taskset", "util-linux")))
    if why:
        print(why, file=sys.stderr)
        return 2
    if any(n.startswith("nginx") for n in names) and not os.access(NGINX, os.X_OK):
        print("bench-http: nginx not found (Debian: nginx-light; install with a policy-rc.d "
              "that exits 101 so its service does not start)", file=sys.stderr)
        return 2
    if args.profile and not PYSPY.exists():
        print(f"bench-http: --profile needs {PYSPY}", file=sys.stderr)
        return 2

    common.unwind_on_signals()
    others, idle_busy = common.check_machine()
    started = _dt.datetime.now().astimezone()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-http-", dir=args.workdir))
    os.chmod(work, 0o755)
    root, want_sha = common.make_root(work, FILE_NAME, FILE_SIZE)

    servers: list[Server] = []
    bench = None
    link_desc = args.link
    doc: dict = {"bench": "http", "started": started.isoformat(), "servers": [], "labels": {},
                 "versions": {}, "verify": {}, "results": {}, "profiles": {}}
    skipped = {}
    try:
        with labnet.Lab() as lab:
            ns = lab.namespace("http")
            client_ns = None
            args.host = "127.0.0.1"
            if args.link == "veth":
                client_ns = lab.namespace("wrk")
                args.host = VETH_SERVER
            bench = Bench(args, lab, ns, work, client_ns)
            if client_ns:
                link_desc = veth_link(lab, client_ns, ns, bench)
            else:
                link_desc = "loopback (one private netns)"
            log(f"link: {link_desc}")
            log(f"lab {ns}; work dir {work}; servers on CPU {bench.server_cpu}, "
                f"wrk on CPU {bench.client_cpu}")
            common.start_servers(servers, lambda n: SERVERS[n](args, work, root), names, lab, ns,
                                 bench.server_cpu, doc, skipped, errors=(BenchError, OSError))
            for srv in servers:
                doc["verify"][srv.name] = bench.verify(srv, want_sha)
                log(f"  verify {srv.name}: {doc['verify'][srv.name]}")
            for scen in scenarios:
                doc["results"][scen] = bench.run_scenario(servers, scen, args.reps)
            common.profile_netbootd(bench, servers, scenarios, args, started, doc)
            doc["server_exit"] = {s.name: s.stop() for s in servers}
            nbc = {s.name: s.counters() for s in servers if s.name.startswith("netbootd")}
            if nbc.get("netbootd"):
                doc["netbootd_counters"] = nbc["netbootd"]
            doc["netbootd_variants_counters"] = nbc
            doc["server_log_problems"] = {s.name: s.log_problems()[:20] for s in servers}
    finally:
        common.stop_servers(servers, work, args.keep)
    elapsed = time.monotonic() - t0
    doc["skipped"] = skipped
    doc["elapsed_s"] = round(elapsed, 1)
    doc["host"] = {"kernel": platform.release(), "cpus": os.cpu_count(),
                   "python": platform.python_version(), "cpu_model": common.cpu_model(),
                   "cpu_busy_before_start_pct": round(idle_busy, 1), "other_benchmarks": others}
    doc["settings"] = vars(args)
    doc["method"] = {
        "file_bytes": FILE_SIZE,
        "link": link_desc,
        "client": "wrk -t<threads> -c<N> --timeout 60s (keep-alive); 2-thread wrk not pinned",
        "server_cpu_s_per_gb": "server CPU seconds (process tree, over the trial's wall time) / "
                               "GB (10^9 B) wrk read; median over trials",
        "server_user_s_per_gb": "the user-mode part of it (utime): the server's own code",
        "pinning": (f"servers CPU {bench.server_cpu}, wrk CPU {bench.client_cpu}"
                    if bench is not None and bench.server_cpu else "none"),
        "mb_s": "bytes read by wrk (headers and partial responses included) / wrk duration, 10^6 B/s",
        "server_cpu_pct": "CPU time of the server's process tree / trial wall time",
    }
    return common.finish(doc, args, started, elapsed, others,
                         bench.others_seen if bench is not None else set(), compute, print_report)


if __name__ == "__main__":
    sys.exit(main())
