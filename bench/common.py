"""What the benchmark harnesses share (bench/*/run.py and the
bench/*/serve_netbootd.py runners).

The harnesses are scripts, not a package: each puts bench/ on sys.path and
imports this module.  It never imports the netbootd package when it is
imported (netbootd/lab/netns.py is loaded from its file by load_labnet(); the
runner helpers import netbootd only when called), so a half-written
netbootd/__init__.py cannot break a harness.

  - log(), tail(), BenchError; load_labnet()
  - the machine's load: cpu_busy(), other_benchmarks(), check_machine(),
    IdleWait (the bounded wait before a trial)
  - CPU accounting of a server: tree_cpu(), tree_minflt(), CpuAccount
  - Server: a peer started in a lab namespace by PID (bench/tftp, bench/http)
  - py-spy: start_pyspy(), stop_pyspy(), summarize_profile()
  - the frame of a tftp/http run: add_run_options(), unwind_on_signals(),
    make_root(), start_servers(), profile_netbootd(), stop_servers(), finish(),
    save_json(), cpu_model()
  - the runners: tune_memory(), serve()
"""
from __future__ import annotations

import collections
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
VENV_PY = REPO / ".venv" / "bin" / "python"
PY = str(VENV_PY) if VENV_PY.exists() else sys.executable
PYSPY = REPO / ".venv" / "bin" / "py-spy"
BUSY_WARN = 10.0                 # % CPU used by others just before a trial that deserves a warning


def load_labnet():
    # Load the helper straight from its file so that a half-written
    # netbootd/__init__.py cannot break the harness (once per process).
    name = "_bench_labnet"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "netbootd" / "lab" / "netns.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


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
# the machine's load
# --------------------------------------------------------------------------
def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v[:8]), v[3] + (v[4] if len(v) > 4 else 0)


def cpu_busy(seconds: float) -> float:
    """% of all CPUs busy (anything but idle and iowait) over `seconds`."""
    t0, i0 = _cpu_times()
    time.sleep(seconds)
    t1, i1 = _cpu_times()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def other_benchmarks(pattern: str = r"bench/\w+/run\.py", skip: str | None = None) -> list[str]:
    """pgrep -af lines of other processes matching `pattern` (ours and our
    ancestors left out, and lines containing `skip`)."""
    mine, pid = set(), os.getpid()
    while pid > 1:
        mine.add(pid)
        st = _stat(pid)
        pid = int(st[1]) if st else 0
    r = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True)
    return [l for l in r.stdout.splitlines()
            if l and int(l.split()[0]) not in mine and not (skip and skip in l)]


def check_machine() -> tuple[list[str], float]:
    """Before a run: (other benchmarks running, % CPU busy over 1 s), each
    logged as a warning when it will perturb the numbers."""
    others = other_benchmarks()
    if others:
        log("WARNING: another benchmark is running, numbers will be perturbed: " + "; ".join(others))
    idle_busy = cpu_busy(1.0)
    if idle_busy > BUSY_WARN:
        log(f"WARNING: the machine is {idle_busy:.0f}% busy before the bench starts")
    return others, idle_busy


class IdleWait:
    """Before a trial: if other processes keep the machine busy, wait up to
    `longest` s for them to stop; all waits together never exceed
    4 x `longest` (the run stays bounded)."""

    def __init__(self, longest: float, first: float, say_used_up: bool = False):
        self.longest = longest
        self.first = first                  # seconds of the first sample
        self.budget = 4 * longest           # seconds, whole run
        self.say_used_up = say_used_up

    def __call__(self, measure) -> float:
        """`measure(seconds)`: the % CPU busy (not us) over that time.
        Returns the last measure."""
        busy = measure(self.first)
        if busy <= BUSY_WARN or self.budget <= 0:
            return busy
        wait = min(self.longest, self.budget)
        log(f"    machine {busy:.0f}% busy (not us): waiting up to {wait:.0f}s for it to calm down")
        t0 = time.monotonic()
        while busy > BUSY_WARN and time.monotonic() - t0 < wait:
            busy = measure(1.0)
        self.budget -= time.monotonic() - t0
        if self.say_used_up and busy > BUSY_WARN and self.budget <= 0:
            log("    still busy; wait budget used up, not waiting again in this run")
        return busy


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


def _children() -> dict[int, list[int]]:
    """Every live process's children, by parent PID."""
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                kids[int(st[1])].append(int(d))
    return kids


def tree_cpu(root: int) -> float:
    """CPU seconds used by `root` and its descendants: live threads from
    schedstat (ns), reaped children from cutime+cstime (clock ticks: tftpd-hpa
    forks a child per transfer, reaped when it ends)."""
    kids = _children()
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
    kids = _children()
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


# --------------------------------------------------------------------------
# a server under test (bench/tftp, bench/http)
# --------------------------------------------------------------------------
def stop_in_lab(lab, proc, timeout: float) -> int | None:
    """SIGTERM a server the lab started (SIGKILL after `timeout`); the lab
    then no longer kills it on close.  Its exit code."""
    rc = lab.stop(proc, signal.SIGTERM, timeout=timeout)
    if proc in lab.procs:
        lab.procs.remove(proc)
    return rc


class Server:
    """A peer under test, started in a namespace by PID with its CPU counted.
    Subclasses set the listen check (UDP for bench/tftp, TCP for bench/http)
    and the patterns."""
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
        rc = stop_in_lab(self.lab, self.proc, self.stop_timeout)
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


def rotations(servers: list, reps: int):
    """(repetition, server) for every trial: each repetition runs every
    server still alive, the order rotating, so slow drift of the machine is
    spread over all of them."""
    for rep in range(reps if servers else 0):
        k = rep % len(servers)
        for srv in servers[k:] + servers[:k]:
            if srv.alive():
                yield rep, srv


def runner_version(code: str) -> str:
    """netbootd's version as `code` (run by the venv's Python) prints it,
    with the work tree's git description."""
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    git = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return f"netbootd {r.stdout.strip() or '?'} ({git or 'no git'})"


def runner_counters(text: str) -> dict:
    """What a serve_netbootd.py runner's log says: its last "counters {...}"
    line and its "READY ..." line (empty when neither is there)."""
    found = re.findall(r"^counters (\{.*\})$", text, re.M)
    out = json.loads(found[-1]) if found else {}
    ready = re.findall(r"^READY .*$", text, re.M)
    if ready:
        out["ready"] = ready[-1]
    return out


# --------------------------------------------------------------------------
# py-spy
# --------------------------------------------------------------------------
def start_pyspy(pid: int, cpu: str | None, rate: int, seconds: float, dest: Path):
    """py-spy recording `pid` for `seconds` into `dest` (raw collapsed stacks),
    itself on `cpu`; returns once it has had a second to attach.
    --nonblocking: py-spy's pausing mode slows the server down several times."""
    spy = subprocess.Popen((["taskset", "-c", cpu] if cpu else []) +
                           [str(PYSPY), "record", "-f", "raw", "--nonblocking",
                            "-r", str(rate), "-d", str(int(seconds)), "-o", str(dest),
                            "-p", str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    return spy


def stop_pyspy(spy, seconds: float, dest: Path) -> dict:
    """Wait for start_pyspy()'s recording to end; its summary (or its error)."""
    try:
        spy.wait(seconds + 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(5)
    if dest.exists():
        return summarize_profile(dest)
    return {"error": (spy.stderr.read() if spy.stderr else "")[-500:]}


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
# the frame of a run (bench/tftp, bench/http; some of it bench/dhcp, bench/dns)
# --------------------------------------------------------------------------
def cannot_run(tag: str, root_for: str, tools) -> str | None:
    """Why a lab bench cannot run here (not root, no network namespaces, a
    (tool, Debian package) of `tools` missing), or None."""
    if os.geteuid() != 0:
        return f"{tag}: needs root ({root_for})"
    why = load_labnet().available()
    if why:
        return f"{tag}: cannot build a lab: {why}"
    for tool, pkg in tools:
        if not shutil.which(tool):
            return f"{tag}: {tool} not found (Debian: {pkg})"
    return None


def add_run_options(ap) -> None:
    """--start-timeout .. --profile-rate, as bench/tftp and bench/http take them."""
    ap.add_argument("--start-timeout", type=float, default=20.0)
    ap.add_argument("--wait-idle", type=float, default=20.0,
                    help="before a trial, wait up to this many seconds while other processes keep "
                         "the CPUs > 10%% busy (4x this in all; 0: never wait)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed runs, sample netbootd with py-spy in each scenario")
    ap.add_argument("--profile-seconds", type=float, default=10.0)
    ap.add_argument("--profile-rate", type=int, default=1000, help="py-spy samples per second")


def unwind_on_signals() -> None:
    """SIGTERM/SIGHUP unwind through the finally blocks (labs are torn down)."""
    def _sig(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _sig)
    signal.signal(signal.SIGHUP, _sig)


def make_root(work: Path, name: str, size: int) -> tuple[Path, str]:
    """work/root holding one file of `size` random bytes: (root, its sha256).
    World-readable: dnsmasq as root serves only such files, nginx workers
    run as nobody."""
    root = work / "root"
    root.mkdir()
    os.chmod(root, 0o755)
    data = os.urandom(size)
    (root / name).write_bytes(data)
    os.chmod(root / name, 0o644)
    return root, hashlib.sha256(data).hexdigest()


def start_servers(servers: list, make, names: list[str], lab, ns: str, cpu: str | None,
                  doc: dict, skipped: dict, errors: tuple = (BenchError,)) -> None:
    """Start every named server (`make(name)` builds it) on `cpu` and append
    it to `servers` (the caller stops them); one that has no binary or fails
    to start with one of `errors` is recorded in `skipped` and left out."""
    for n in names:
        srv = make(n)
        b = srv.binary()
        if not b or not os.access(b, os.X_OK):
            skipped[n] = "binary not found"
            log(f"!! {n}: binary not found, skipped")
            continue
        try:
            doc["versions"][n] = srv.version()
            srv.start(lab, ns, cpu)
        except errors as e:
            skipped[n] = str(e)
            log(f"!! {n}: {e}")
            continue
        servers.append(srv)
        doc["servers"].append(n)
        doc["labels"][n] = srv.label
        log(f"  {n}: {doc['versions'][n]} on :{srv.port} (pid {srv.proc.pid})")


def profile_netbootd(bench, servers: list, scenarios: list[str], args, started, doc: dict) -> None:
    """--profile: `bench.profile()` of the netbootd server in every scenario,
    raw stacks in <out>/<bench>-profile-<scenario>-<timestamp>.txt."""
    nb = next((s for s in servers if s.name == "netbootd"), None)
    if not args.profile or nb is None:
        return
    for scen in scenarios:
        dest = Path(args.out) / f"{doc['bench']}-profile-{scen}-{started.strftime('%Y%m%d-%H%M%S')}.txt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        log(f"== profile netbootd in {scen} ({args.profile_seconds:g}s py-spy)")
        doc["profiles"][scen] = bench.profile(nb, scen, args.profile_seconds, dest)


def stop_servers(servers: list, work: Path, keep: bool) -> None:
    """Whatever happened: every server still running stops, the work
    directory goes (unless kept)."""
    for srv in servers:
        if srv.proc is not None:
            try:
                srv.stop()
            except Exception:       # noqa: BLE001
                pass
    if not keep:
        shutil.rmtree(work, ignore_errors=True)


def fmt_ratio(x) -> str:
    return f"{x:.2f}x" if x else "-"


def print_goals(doc: dict) -> None:
    print()
    for g in doc["goals"]:
        status = "MET" if g["met"] else ("NOT MET" if g["met"] is not None else "n/a")
        print(f"goal {g['goal']}: {fmt_ratio(g['value'])} -> {status}")


def print_problems(doc: dict) -> None:
    """The first problems of every trial, and of every server's log."""
    for scen, per in doc["results"].items():
        for n, d in per.items():
            for p in d.get("problems", [])[:3]:
                print(f"! {n}/{scen}: {p.splitlines()[0]}")
    for n, probs in doc.get("server_log_problems", {}).items():
        if probs:
            print(f"! {n}: {len(probs)} problem lines in its log, first: {probs[0][:200]}")


def print_profiles(doc: dict, headline) -> None:
    """--profile: for each scenario `headline(scenario, summary)`, then the
    functions netbootd spent most of its busy time in."""
    if not doc.get("profiles"):
        return
    print()
    for scen, p in doc["profiles"].items():
        if not p.get("busy_samples"):
            continue
        print(headline(scen, p))
        for f, v in p["top_self"][:10]:
            print(f"    {v:5.1f}% of busy, self  {f}")


def save_json(doc: dict, out: str | Path, bench: str, started: _dt.datetime, quick: bool) -> Path:
    """`doc` as <out>/<bench>-<timestamp>[-quick].json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{bench}-{started.strftime('%Y%m%d-%H%M%S')}{'-quick' if quick else ''}.json"
    path.write_text(json.dumps(doc, indent=1, default=str))
    return path


def finish(doc: dict, args, started: _dt.datetime, elapsed: float, others: list[str],
           seen_during: set[str], compute, print_report) -> int:
    """The end of a bench/tftp or bench/http run: the other benchmarks seen,
    compute(doc), print_report(doc), the JSON file; the exit code (1 when a
    server was skipped or a trial had problems)."""
    seen = sorted(set(" ".join(l.split()[1:]) for l in others) | seen_during)
    doc["host"]["other_benchmarks_seen"] = seen
    compute(doc)
    print_report(doc)
    if seen:
        print("WARNING: another benchmark ran during this run (numbers perturbed): " + "; ".join(seen))
    print(f"\n(total {elapsed / 60:.1f} min)")
    path = save_json(doc, args.out, doc["bench"], started, args.quick)
    print(f"JSON: {path}")
    return 1 if doc["skipped"] or any(d.get("problems") for per in doc["results"].values()
                                      for d in per.values()) else 0


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# --------------------------------------------------------------------------
# the serve_netbootd.py runners (they import netbootd; this module does not)
# --------------------------------------------------------------------------
def tune_memory(skip: bool) -> str:
    """netbootd.runtime.memtune.tune_malloc(), as netbootd/__main__.py serve() does,
    before the reactor allocates; what came of it, for the READY line."""
    if skip:
        return "off"
    try:
        from netbootd.runtime.memtune import tune_malloc
        return "on" if tune_malloc() else "unavailable"
    except ImportError:
        return "absent"


def serve(reactor, ready, counters, stop=None) -> int:
    """Run the reactor: once running, print `ready()` ("READY <port> ...") on
    stdout; at shutdown, `stop()` then "counters <counters() as JSON>" on
    stderr (the harness reads both from the log)."""
    def _ready():
        print(ready(), flush=True)

    def _stop():
        if stop is not None:
            stop()
        print("counters " + json.dumps(counters(), sort_keys=True), file=sys.stderr, flush=True)

    reactor.callWhenRunning(_ready)
    reactor.addSystemEventTrigger("before", "shutdown", _stop)
    reactor.run()
    return 0
