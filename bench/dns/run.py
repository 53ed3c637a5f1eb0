#!/usr/bin/env python3
"""DNS query rate: netbootd vs dnsmasq serving the same 10,000-host zone, driven by dnsperf.

Everything runs on 127.0.0.1 (high ports): no query leaves the machine, and
neither server has an upstream (dnsmasq --no-resolv; netbootd without
forwarders).

Zone: N hosts (default 10,000) host00000..host09999.netboot.lan at
10.77.1.0 upward, one hosts file for both: dnsmasq reads it with
--addn-hosts (plus --local for the forward and reverse zones, so names it
does not know are NXDOMAIN); netbootd's DNS server (bench/dns/serve_netbootd.py)
turns each line into a reservation of its zone.

Query files (fixed seed): "mix" = 40% A of existing hosts, 40% PTR of their
addresses, 20% A of names that do not exist (NXDOMAIN, drawn from N
distinct names); "a", "ptr", "nx" = one kind only.  Before measuring, each
server answers every name of the files once (warm-up: netbootd encodes an
answer on first use; dnsmasq loads its hosts file at start).

For each repetition, each server (order alternating between repetitions) is
started, checked with dig (A, PTR, NXDOMAIN must be right), warmed up, then
dnsperf runs every query file for --duration seconds (dnsperf's defaults: one
UDP socket, at most 100 queries outstanding).  dnsperf is pinned to CPU 0
and the server to CPU 1 (taskset; --no-pin to disable).  The reported rate
is the median of the repetitions; the ratio is netbootd / dnsmasq.

Usage (as any user; root not needed):  .venv/bin/python bench/dns/run.py [--quick]
Results: a table on stdout, JSON in bench/results/dns-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402
from common import BUSY_WARN, REPO, RESULTS, log  # noqa: E402

HERE = Path(__file__).resolve().parent
PY = str(REPO / ".venv" / "bin" / "python")
DNSPERF = shutil.which("dnsperf") or "/usr/bin/dnsperf"
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
DIG = shutil.which("dig") or "/usr/bin/dig"
IP = "127.0.0.1"
DOMAIN = "netboot.lan"
FIRST = (10 << 24) | (77 << 16) | (1 << 8)        # 10.77.1.0
MIXES = {"mix": (0.4, 0.4, 0.2), "a": (1, 0, 0), "ptr": (0, 1, 0), "nx": (0, 0, 1)}
QUERIES_PER_FILE = 200_000
LOSS_LIMIT = 1.0                                   # percent


def ipstr(a: int) -> str:
    return socket.inet_ntoa(a.to_bytes(4, "big"))


def rev(a: int) -> str:
    return ".".join(str((a >> s) & 255) for s in (0, 8, 16, 24)) + ".in-addr.arpa"


def make_data(work: Path, n: int) -> dict[str, Path]:
    hosts = work / "hosts"
    with hosts.open("w") as f:
        for i in range(n):
            f.write(f"{ipstr(FIRST + i)} host{i:05d}.{DOMAIN} host{i:05d}\n")
    files = {"hosts": hosts}
    for mix, (pa, pp, _) in MIXES.items():
        rnd = random.Random(f"dns-bench-{mix}")
        path = work / f"queries-{mix}"
        with path.open("w") as f:
            for _ in range(QUERIES_PER_FILE):
                r, i = rnd.random(), rnd.randrange(n)
                if r < pa:
                    f.write(f"host{i:05d}.{DOMAIN} A\n")
                elif r < pa + pp:
                    f.write(f"{rev(FIRST + i)} PTR\n")
                else:
                    f.write(f"nx{rnd.randrange(n):05d}.{DOMAIN} A\n")
        files[mix] = path
    warm = work / "warm"
    with warm.open("w") as f:
        for i in range(n):
            f.write(f"host{i:05d}.{DOMAIN} A\n{rev(FIRST + i)} PTR\nnx{i:05d}.{DOMAIN} A\n")
    files["warm"] = warm
    return files


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((IP, 0))
        port = u.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
        t.bind((IP, port))                      # both protocols free on this port
    return port


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(cpu: int, argv: list[str], args) -> list[str]:
    return argv if args.no_pin else ["taskset", "-c", str(cpu), *argv]


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------
class Server:
    name = "?"

    def __init__(self, args, files, work: Path):
        self.args, self.files, self.work = args, files, work
        self.proc = None
        self.port = 0
        self.log = work / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.port = free_port()
        self.logf = self.log.open("a")
        self.proc = subprocess.Popen(pin(1, self.argv(), self.args), stdout=subprocess.PIPE,
                                     stderr=self.logf, text=True)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            if dig(self.port, "host00001." + DOMAIN, "A", timeout=1)[0] == "NOERROR":
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within 30 s")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p.stdout:
            p.stdout.close()
        self.logf.close()
        return p.returncode


class Netbootd(Server):
    name = "netbootd"

    def argv(self):
        return [PY, str(HERE / "serve_netbootd.py"), "--hosts", str(self.files["hosts"]),
                "--port", str(self.port), "--ip", IP, "--rate", str(self.args.netbootd_rate)]


class Dnsmasq(Server):
    name = "dnsmasq"

    def argv(self):
        return [DNSMASQ, "--no-daemon", "--conf-file=/dev/null", f"--port={self.port}",
                f"--listen-address={IP}", "--bind-interfaces", "--no-resolv", "--no-hosts",
                f"--addn-hosts={self.files['hosts']}", f"--domain={DOMAIN}",
                f"--local=/{DOMAIN}/", "--local=/77.10.in-addr.arpa/", "--pid-file=",
                f"--cache-size={self.args.dnsmasq_cache}", "--user=" + self.args.dnsmasq_user]


SERVERS = {"netbootd": Netbootd, "dnsmasq": Dnsmasq}


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------
def dig(port: int, name: str, qtype: str, timeout: float = 2) -> tuple[str | None, str]:
    try:
        r = subprocess.run([DIG, "-p", str(port), f"@{IP}", "+tries=1", f"+time={int(timeout)}",
                            name, qtype], capture_output=True, text=True, timeout=timeout + 5)
    except subprocess.TimeoutExpired:
        return None, ""
    m = re.search(r"status: (\w+)", r.stdout)
    ans = re.findall(r"^\S+\s+\d+\s+IN\s+\S+\s+(\S+)$", r.stdout, re.M)
    return (m.group(1) if m else None), (ans[0] if ans else "")


def sanity(server: Server) -> list[str]:
    p = server.port
    problems = []
    checks = [(f"host00042.{DOMAIN}", "A", "NOERROR", ipstr(FIRST + 42)),
              (rev(FIRST + 42), "PTR", "NOERROR", f"host00042.{DOMAIN}."),
              (f"nx00001.{DOMAIN}", "A", "NXDOMAIN", "")]
    for name, qt, status, value in checks:
        got = dig(p, name, qt)
        if got != (status, value):
            problems.append(f"{server.name}: {qt} {name} -> {got}, expected {(status, value)}")
    return problems


def dnsperf(port: int, datafile: Path, args, duration: float | None, once: bool = False) -> dict:
    argv = [DNSPERF, "-s", IP, "-p", str(port), "-d", str(datafile), "-q", str(args.outstanding),
            "-t", "2"]
    argv += ["-n", "1"] if once else ["-l", str(duration)]
    r = subprocess.run(pin(0, argv, args), capture_output=True, text=True,
                       timeout=(duration or 60) + 60)
    out = r.stdout

    def num(label):
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        return float(m.group(1)) if m else None
    codes = dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+) \([\d.]+%\)",
                                                   (re.search(r"Response codes:(.*)", out)
                                                    or [None, ""])[1]))
    return {"qps": num("Queries per second"), "sent": num("Queries sent"),
            "completed": num("Queries completed"), "lost": num("Queries lost"),
            "latency_avg_s": num("Average Latency \\(s\\)"), "codes": codes,
            "rc": r.returncode, "stderr": r.stderr[-500:]}


# --------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per dnsperf run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mixes", default="mix,a,ptr,nx")
    ap.add_argument("--servers", default="netbootd,dnsmasq")
    ap.add_argument("--outstanding", type=int, default=100, help="dnsperf -q")
    ap.add_argument("--netbootd-rate", type=float, default=1e9,
                    help="netbootd's per-source limit (default: out of reach; the daemon's is 200)")
    ap.add_argument("--dnsmasq-cache", type=int, default=10_000)
    ap.add_argument("--dnsmasq-user", default="root" if os.geteuid() == 0 else os.environ.get(
        "USER", "nobody"))
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--quick", action="store_true", help="3 s runs, 1 repetition")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.reps = 3.0, 1
    for tool in (DNSPERF, DNSMASQ, DIG):
        if not os.path.exists(tool):
            print(f"missing {tool} (Debian: dnsperf, dnsmasq-base, bind9-dnsutils)",
                  file=sys.stderr)
            return 2
    mixes = args.mixes.split(",")
    names = args.servers.split(",")
    # Anything under bench/ but this bench (runners and clients included).
    others = common.other_benchmarks("bench/", skip="bench/dns/")
    if others:
        log("WARNING: other benchmarks are running; numbers will be perturbed:\n  "
            + "\n  ".join(others))
    work = Path(tempfile.mkdtemp(prefix="bench-dns-", dir="/var/tmp"))
    files = make_data(work, args.hosts)
    trials: list[dict] = []
    problems: list[str] = []
    t_start = time.time()
    try:
        for rep in range(args.reps):
            order = names if rep % 2 == 0 else list(reversed(names))
            for sname in order:
                srv = SERVERS[sname](args, files, work)
                log(f"rep {rep + 1}/{args.reps}: starting {sname}")
                srv.start()
                try:
                    problems += sanity(srv)
                    warm = dnsperf(srv.port, files["warm"], args, None, once=True)
                    log(f"  warm-up: {warm['completed']} answers, lost {warm['lost']}")
                    for mix in mixes:
                        busy = common.cpu_busy(1.0)
                        c0 = proc_cpu(srv.proc.pid)
                        res = dnsperf(srv.port, files[mix], args, args.duration)
                        cpu = proc_cpu(srv.proc.pid) - c0
                        done = res["completed"] or 0
                        res.update(server=sname, mix=mix, rep=rep, bg_cpu=round(busy, 1),
                                   server_cpu_s=round(cpu, 3),
                                   server_cpu_util=round(cpu / args.duration, 3),
                                   us_per_query=round(1e6 * cpu / done, 2) if done else None,
                                   capacity_qps=round(done / cpu) if cpu > 0 else None)
                        trials.append(res)
                        loss = 100.0 * (res["lost"] or 0) / max(1.0, res["sent"] or 0)
                        log(f"  {mix:4s} {res['qps'] or 0:10.0f} q/s  server cpu "
                            f"{100 * res['server_cpu_util']:3.0f}% = "
                            f"{res['us_per_query'] or 0:5.2f} us/query  lost {loss:.2f}%  "
                            f"codes {res['codes']}  bg cpu {busy:.0f}%")
                        if res["qps"] is None:
                            problems.append(f"{sname} {mix}: dnsperf failed: {res['stderr']}")
                        if loss > LOSS_LIMIT:
                            problems.append(f"{sname} {mix} rep {rep}: {loss:.2f}% lost")
                        if busy > BUSY_WARN:
                            problems.append(f"{sname} {mix} rep {rep}: machine {busy:.0f}% busy "
                                            "before the run")
                finally:
                    rc = srv.stop()
                    if rc not in (0, -signal.SIGTERM, None):
                        problems.append(f"{sname} exited {rc}")
                    errors = [ln for ln in srv.log.read_text(errors="replace").splitlines()
                              if re.search(r"\b(ERROR|Traceback|CRITICAL)\b", ln)]
                    problems += [f"{sname} log: {ln}" for ln in errors[:5]]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = {}
    for mix in mixes:
        row = {}
        for sname in names:
            mine = [t for t in trials if t["server"] == sname and t["mix"] == mix]
            qs = [t["qps"] for t in mine if t["qps"]]
            us = [t["us_per_query"] for t in mine if t["us_per_query"]]
            row[sname] = statistics.median(qs) if qs else None
            row[sname + "_us"] = statistics.median(us) if us else None
        nb, dm = row.get("netbootd"), row.get("dnsmasq")
        row["ratio"] = round(nb / dm, 3) if nb and dm else None
        nbu, dmu = row.get("netbootd_us"), row.get("dnsmasq_us")
        row["cpu_ratio"] = round(dmu / nbu, 3) if nbu and dmu else None
        table[mix] = row
    print(f"\nDNS queries/s and server CPU per answered query (median of {args.reps}, "
          f"{args.duration:g} s runs, {args.hosts} hosts, dnsperf -q {args.outstanding})")
    print(f"{'mix':6s}" + "".join(f"{s + ' q/s':>14s}{'us/q':>7s}" for s in names)
          + f"{'q/s ratio':>11s}{'cpu ratio':>11s}")
    for mix, row in table.items():
        print(f"{mix:6s}" + "".join(f"{(row[s] or 0):14.0f}{(row[s + '_us'] or 0):7.2f}"
                                    for s in names)
              + f"{(row['ratio'] or 0):11.2f}{(row['cpu_ratio'] or 0):11.2f}")
    print("ratio = netbootd / dnsmasq queries/s; cpu ratio = dnsmasq / netbootd CPU per "
          "query (what each could answer with the client out of the way).\n"
          "A server below ~95% CPU was waiting for dnsperf (one client thread on one core).")
    if problems:
        print("\nproblems:\n  " + "\n  ".join(problems))
    if others:
        print("\nother benchmarks were running: numbers are perturbed")
    out = common.save_json({
        "args": vars(args), "table": table, "trials": trials, "problems": problems,
        "other_benchmarks": others, "host": platform.node(), "cpus": os.cpu_count(),
        "kernel": platform.release(), "seconds": round(time.time() - t_start, 1),
    }, RESULTS, "dns", _dt.datetime.now(), args.quick)
    print(f"\nJSON: {out}")
    return 1 if any("exited" in p or "->" in p for p in problems) else 0


if __name__ == "__main__":
    sys.exit(main())
