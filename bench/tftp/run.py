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
import collections
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "bench" / "results"
VENV_PY = REPO / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
PYSPY = REPO / ".venv" / "bin" / "py-spy"


def _load_labnet():
    spec = importlib.util.spec_from_file_location("_bench_labnet", REPO / "netbootd" / "labnet.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


labnet = _load_labnet()

FILE_NAME = "f8m.bin"
FILE_SIZE = 8 << 20
BLKSIZE = 1468
WINDOW = 16
PARALLEL = 50
BUSY_WARN = 10.0
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


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()     # fields from "state" on


def _task_ns(pid: int) -> int | None:
    """CPU ns of all live threads of `pid` (schedstat: ns resolution)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def tree_cpu(root: int) -> float:
    """CPU seconds used by `root` and its descendants: live threads from
    schedstat (ns), reaped children from cutime+cstime (clock ticks: tftpd-hpa
    forks a child per transfer, reaped when it ends)."""
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                kids[int(st[1])].append(int(d))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        ns = _task_ns(pid)
        if st is None or ns is None:
            continue
        # cutime cstime = fields 16-17 of /proc/PID/stat (index 13-14 here)
        total += ns / 1e9 + sum(int(x) for x in st[13:15]) / _TICK
        todo.extend(kids.get(pid, ()))
    return total


def tree_minflt(root: int) -> int:
    """Minor page faults of `root` and its live descendants (field 10 of
    /proc/PID/stat, all threads included)."""
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                kids[int(st[1])].append(int(d))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st:
            total += int(st[7])          # minflt (field 10; index 7 from "state")
        todo.extend(kids.get(pid, ()))
    return total


class CpuAccount:
    """CPU time of a server and of everything it forks or spawns (tftpd-hpa
    forks a child per transfer and does not reap it into cutime; atftpd's
    threads exit; nginx has a worker): the server starts inside its own
    cgroup (v1 cpuacct, else v2 cpu.stat), made here and removed on close().
    Without a writable cgroup hierarchy: tree_cpu() (misses such children)."""

    def __init__(self, name: str):
        self.path: Path | None = None
        self.v2 = False
        tag = f"netbootd-bench-{os.getpid()}-{name}"
        v1 = Path("/sys/fs/cgroup/cpuacct")
        candidates = [(v1, False)] if (v1 / "cpuacct.usage").exists() else []
        for base in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
            if (base / "cgroup.procs").exists() and (base / "cgroup.controllers").exists():
                candidates.append((base, True))
        for base, v2 in candidates:
            try:
                (base / tag).mkdir()
            except OSError:
                continue
            self.path, self.v2 = base / tag, v2
            break

    @property
    def method(self) -> str:
        return f"cgroup {self.path}" if self.path else "/proc tree (children that exit are missed)"

    def wrap(self, cmd: list[str]) -> list[str]:
        if self.path is None:
            return cmd
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.path / "cgroup.procs"), *cmd]

    def seconds(self, pid: int | None) -> float:
        if self.path is not None:
            try:
                if self.v2:
                    for line in (self.path / "cpu.stat").read_text().splitlines():
                        if line.startswith("usage_usec "):
                            return int(line.split()[1]) / 1e6
                else:
                    return int((self.path / "cpuacct.usage").read_text()) / 1e9
            except (OSError, ValueError):
                pass
        return tree_cpu(pid) if pid else 0.0

    def close(self) -> None:
        if self.path is None:
            return
        for _ in range(50):
            try:
                self.path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        self.path = None


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]), v[3] + (v[4] if len(v) > 4 else 0)


def cpu_busy(seconds: float) -> float:
    t0, i0 = _cpu_times()
    time.sleep(seconds)
    t1, i1 = _cpu_times()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def other_benchmarks() -> list[str]:
    """Other bench/*/run.py processes (ours and our ancestors left out)."""
    mine, pid = set(), os.getpid()
    while pid > 1:
        mine.add(pid)
        st = _stat(pid)
        pid = int(st[1]) if st else 0
    r = subprocess.run(["pgrep", "-af", r"bench/\w+/run\.py"], capture_output=True, text=True)
    return [l for l in r.stdout.splitlines() if int(l.split()[0]) not in mine]


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------
class Server:
    """A peer under test, started in a namespace by PID with its CPU counted.
    bench/http reuses it: subclasses set the listen check and the patterns."""
    name = "?"
    label = "?"
    port = 0
    stop_timeout = 10.0
    ss_flags = "-Hlun"          # how `ss` sees it listening (UDP here; -Hltn for TCP)
    settle = 0.2                # pause once it listens
    PROBLEMS = r"Traceback|\bERROR\b|\bCRITICAL\b|Unhandled|failed sending|timeout"

    def __init__(self, args, work: Path, root: Path):
        self.args = args
        self.work = work
        self.root = root
        self.proc = None
        self.lab = None
        self.logfile = work / f"{self.name}.log"
        self.acct: CpuAccount | None = None

    def binary(self) -> str | None:
        raise NotImplementedError

    def version(self) -> str:
        return ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, lab, ns: str, cpu: str | None) -> None:
        out = open(self.logfile, "ab")
        cmd = self.command()
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        self.acct = CpuAccount(self.name)
        self.lab = lab
        # The cgroup is joined before `ip netns exec`, which mounts its own /sys.
        self.proc = subprocess.Popen(self.acct.wrap(["ip", "netns", "exec", ns, *cmd]),
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=self.env())
        lab.procs.append(self.proc)             # killed by PID on lab.close()
        out.close()
        deadline = time.monotonic() + self.args.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.acct.close()
                raise BenchError(f"{self.name} exited with {self.proc.returncode} during start:\n"
                                 f"{tail(self.logfile)}")
            r = lab.ns_exec(ns, "ss", self.ss_flags, f"sport = :{self.port}", check=False,
                            timeout=10)
            if r.stdout.strip():
                time.sleep(self.settle)
                return
            time.sleep(0.1)
        self.stop()
        raise BenchError(f"{self.name} not listening on :{self.port} after "
                         f"{self.args.start_timeout}s:\n{tail(self.logfile)}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        rc = self.lab.stop(self.proc, signal.SIGTERM, timeout=self.stop_timeout)
        if self.proc in self.lab.procs:
            self.lab.procs.remove(self.proc)
        self.proc = None
        if self.acct is not None:
            self.acct.close()
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu(self) -> float:
        return self.acct.seconds(self.proc.pid if self.proc else None) if self.acct else 0.0

    def minflt(self) -> int:
        return tree_minflt(self.proc.pid) if self.proc else 0

    def env(self) -> dict | None:
        return None

    def counters(self) -> dict | None:
        return None

    def log_problems(self) -> list[str]:
        pat = re.compile(self.PROBLEMS, re.I)
        try:
            return [l for l in self.logfile.read_text(errors="replace").splitlines() if pat.search(l)]
        except OSError:
            return []


class Netbootd(Server):
    name = "netbootd"
    label = "netbootd (TftpServer defaults)"
    port = 1069
    stop_timeout = 20.0

    def binary(self):
        return PY

    def version(self):
        r = subprocess.run([PY, "-c", "import importlib.metadata as m; print(m.version('netbootd'))"],
                           capture_output=True, text=True)
        git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        return f"netbootd {r.stdout.strip() or '?'} ({git or 'no git'})"

    def command(self):
        return [PY, str(HERE / "serve_netbootd.py"), "--root", str(self.root),
                "--port", str(self.port), "--ip", "127.0.0.1"]

    def counters(self):
        text = self.logfile.read_text(errors="replace")
        found = re.findall(r"^counters (\{.*\})$", text, re.M)
        out = json.loads(found[-1]) if found else {}
        ready = re.findall(r"^READY .*$", text, re.M)
        if ready:
            out["ready"] = ready[-1]
        return out or None

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
        self.idle_budget = 4 * args.wait_idle
        self.others_seen: set[str] = set()
        self.profile_client_cpu = (first if self.server_cpu == last and ncpu >= 2
                                   else self.client_cpu)

    def wait_idle(self) -> float:
        for line in other_benchmarks():
            self.others_seen.add(" ".join(line.split()[1:]))
        busy = cpu_busy(0.2)
        if busy <= BUSY_WARN or self.idle_budget <= 0:
            return busy
        wait = min(self.args.wait_idle, self.idle_budget)
        log(f"    machine {busy:.0f}% busy (not us): waiting up to {wait:.0f}s for it to calm down")
        t0 = time.monotonic()
        while busy > BUSY_WARN and time.monotonic() - t0 < wait:
            busy = cpu_busy(1.0)
        self.idle_budget -= time.monotonic() - t0
        return busy

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
        for rep in range(reps if servers else 0):
            k = rep % len(servers)
            for srv in servers[k:] + servers[:k]:
                if not srv.alive():
                    continue
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
        # spent preempted by a client on its CPU.  --nonblocking: py-spy's
        # pausing mode slows the server down several times.
        cpu = self.profile_client_cpu
        spy = subprocess.Popen((["taskset", "-c", cpu] if cpu else []) +
                               [str(PYSPY), "record", "-f", "raw", "--nonblocking",
                                "-r", str(self.args.profile_rate), "-d", str(int(seconds)), "-o", str(dest),
                                "-p", str(srv.proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        t_end = time.monotonic() + seconds - 1.5
        n = 0
        cpu0 = srv.cpu()
        t0 = time.monotonic()
        while time.monotonic() < t_end:
            self.client(srv, tool, ws, par, cpu=cpu)
            n += 1
        busy_frac = (srv.cpu() - cpu0) / max(1e-6, time.monotonic() - t0)
        try:
            spy.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)
        info = {"file": str(dest), "trials_during": n, "server_cpu_share": round(busy_frac, 3),
                "server_cpu": self.server_cpu, "client_cpu": cpu}
        if dest.exists():
            info.update(summarize_profile(dest))
        else:
            info["error"] = (spy.stderr.read() if spy.stderr else "")[-500:]
        return info


def summarize_profile(path: Path, top: int = 15) -> dict:
    """Self and inclusive shares per function from py-spy's raw (collapsed)
    output, in % of the samples that were not waiting in epoll_wait (the
    reactor's doPoll), i.e. of the server's busy time; 'epoll_pct' is the
    share of all samples seen in doPoll."""
    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = busy = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        if "doPoll" in frames[-1] and "epollreactor" in frames[-1]:
            continue
        busy += n
        funcs = [re.sub(r" \((.*?)/([^/]+):\d+\)$", r" (\2)", f) for f in frames]
        self_c[funcs[-1]] += n
        for f in set(funcs):
            incl[f] += n
    if not busy:
        return {"samples": total, "busy_samples": 0}
    pct = lambda c: round(100.0 * c / busy, 1)   # noqa: E731
    return {"samples": total, "busy_samples": busy, "epoll_pct": round(100.0 * (total - busy) / total, 1),
            "top_self": [[f, pct(c)] for f, c in self_c.most_common(top)],
            "top_inclusive": [[f, pct(c)] for f, c in incl.most_common(top + 10)]}


# --------------------------------------------------------------------------
def fmt_ratio(x) -> str:
    return f"{x:.2f}x" if x else "-"


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
                  ", ".join(f"{p} {fmt_ratio(v)}" for p, v in rat.items()))
    print()
    for g in doc["goals"]:
        status = "MET" if g["met"] else ("NOT MET" if g["met"] is not None else "n/a")
        print(f"goal {g['goal']}: {fmt_ratio(g['value'])} -> {status}")
    for n, v in doc["verify"].items():
        bad = [k for k, ok in v.items() if k.endswith("_ok") and not ok]
        if bad:
            print(f"! {n}: verification failed: {', '.join(bad)}")
    for scen, per in res.items():
        for n, d in per.items():
            for p in d.get("problems", [])[:3]:
                print(f"! {n}/{scen}: {p.splitlines()[0]}")
    for n, probs in doc.get("server_log_problems", {}).items():
        if probs:
            print(f"! {n}: {len(probs)} problem lines in its log, first: {probs[0][:200]}")
    if doc.get("profiles"):
        print()
        for scen, p in doc["profiles"].items():
            if not p.get("busy_samples"):
                continue
            print(f"netbootd profile [{scen}]: server on CPU {p['server_cpu']} ({p['server_cpu_share']:.0%} "
                  f"busy), clients on CPU {p['client_cpu']}; {p['busy_samples']} busy samples "
                  f"({p['epoll_pct']}% of all in epoll_wait): {p['file']}")
            for f, v in p["top_self"][:10]:
                print(f"    {v:5.1f}% of busy, self  {f}")


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
    ap.add_argument("--start-timeout", type=float, default=20.0)
    ap.add_argument("--wait-idle", type=float, default=20.0,
                    help="before a trial, wait up to this many seconds while other processes keep "
                         "the CPUs > 10%% busy (4x this in all; 0: never wait)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed runs, sample netbootd with py-spy in each scenario")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--profile-rate", type=int, default=1000, help="py-spy samples per second")
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
    if os.geteuid() != 0:
        print("bench-tftp: needs root (network namespace, dnsmasq on port 69)", file=sys.stderr)
        return 2
    why = labnet.available()
    if why:
        print(f"bench-tftp: cannot build a lab: {why}", file=sys.stderr)
        return 2
    for tool, pkg in (("curl", "curl"), ("atftp", "atftp"), ("taskset", "util-linux")):
        if not shutil.which(tool):
            print(f"bench-tftp: {tool} not found (Debian: {pkg})", file=sys.stderr)
            return 2
    if "atftpd" in names:
        args.atftpd_path = find_atftpd(args.atftpd_path)
    if args.profile and not PYSPY.exists():
        print(f"bench-tftp: --profile needs {PYSPY} (pip install py-spy)", file=sys.stderr)
        return 2

    def _sig(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGHUP, _sig)

    others = other_benchmarks()
    if others:
        log("WARNING: another benchmark is running, numbers will be perturbed: " + "; ".join(others))
    idle_busy = cpu_busy(1.0)
    if idle_busy > BUSY_WARN:
        log(f"WARNING: the machine is {idle_busy:.0f}% busy before the bench starts")
    started = _dt.datetime.now().astimezone()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-tftp-", dir=args.workdir))
    os.chmod(work, 0o777)               # atftpd and dnsmasq log as nobody
    root = work / "root"
    root.mkdir()
    os.chmod(root, 0o755)
    data = os.urandom(FILE_SIZE)
    (root / FILE_NAME).write_bytes(data)
    os.chmod(root / FILE_NAME, 0o644)   # dnsmasq as root serves world-readable files only
    want_sha = hashlib.sha256(data).hexdigest()
    del data

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
            for n in names:
                srv = SERVERS[n](args, work, root)
                b = srv.binary()
                if not b or not os.access(b, os.X_OK):
                    skipped[n] = "binary not found"
                    log(f"!! {n}: binary not found, skipped")
                    continue
                try:
                    doc["versions"][n] = srv.version()
                    srv.start(lab, ns, bench.server_cpu)
                except BenchError as e:
                    skipped[n] = str(e)
                    log(f"!! {n}: {e}")
                    continue
                servers.append(srv)
                doc["servers"].append(n)
                doc["labels"][n] = srv.label
                log(f"  {n}: {doc['versions'][n]} on :{srv.port} (pid {srv.proc.pid})")
            for srv in servers:
                doc["verify"][srv.name] = bench.verify(srv, want_sha)
                log(f"  verify {srv.name}: {doc['verify'][srv.name]}")
            for scen in scenarios:
                reps = args.reps if scenario_spec(scen)[2] == 1 else args.parallel_reps
                doc["results"][scen] = bench.run_scenario(servers, scen, reps)
            nb = next((s for s in servers if s.name == "netbootd"), None)
            if args.profile and nb is not None:
                for scen in scenarios:
                    dest = Path(args.out) / f"tftp-profile-{scen}-{started.strftime('%Y%m%d-%H%M%S')}.txt"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    log(f"== profile netbootd in {scen} ({args.profile_seconds:g}s py-spy)")
                    doc["profiles"][scen] = bench.profile(nb, scen, args.profile_seconds, dest)
            doc["server_exit"] = {}
            for srv in servers:
                doc["server_exit"][srv.name] = srv.stop()
            nbc = next((s.counters() for s in servers if s.name == "netbootd"), None)
            if nbc:
                doc["netbootd_counters"] = nbc
            doc["server_log_problems"] = {s.name: s.log_problems()[:20] for s in servers}
    finally:
        for srv in servers:
            if srv.proc is not None:
                try:
                    srv.stop()
                except Exception:       # noqa: BLE001
                    pass
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - t0
    doc["skipped"] = skipped
    doc["elapsed_s"] = round(elapsed, 1)
    doc["host"] = {"kernel": platform.release(), "cpus": os.cpu_count(), "python": platform.python_version(),
                   "cpu_busy_before_start_pct": round(idle_busy, 1), "other_benchmarks": others,
                   "cpu_model": _cpu_model()}
    doc["settings"] = vars(args)
    doc["method"] = {
        "file_bytes": FILE_SIZE, "blksize": BLKSIZE, "windowsize": WINDOW, "parallel": PARALLEL,
        "pinning": (f"servers CPU {bench.server_cpu}, clients CPU {bench.client_cpu}"
                    if bench is not None and bench.server_cpu else "none"),
        "mb_s": "10^6 bytes / transfer seconds (curl time_total; atftp process wall time)",
        "parallel_wall": "first client start to last client exit (clients.py, inside the netns)",
        "server_cpu": "utime+stime of the server's process tree during the trial",
    }
    seen = sorted(set(" ".join(l.split()[1:]) for l in others) |
                  (bench.others_seen if bench is not None else set()))
    doc["host"]["other_benchmarks_seen"] = seen
    compute(doc)
    print_report(doc)
    if seen:
        print("WARNING: another benchmark ran during this run (numbers perturbed): " + "; ".join(seen))
    print(f"\n(total {elapsed / 60:.1f} min)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"tftp-{started.strftime('%Y%m%d-%H%M%S')}{'-quick' if q else ''}.json"
    path.write_text(json.dumps(doc, indent=1, default=str))
    print(f"JSON: {path}")
    return 1 if skipped or any(d.get("problems") for per in doc["results"].values()
                               for d in per.values()) else 0


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    sys.exit(main())
