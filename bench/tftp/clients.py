#!/usr/bin/env python3
"""One TFTP client trial: N client processes (curl or atftp) started at once,
timed from here.  bench/tftp/run.py runs this inside its network namespace,
pinned with taskset (the clients inherit the CPU), so no `ip netns exec` nor
interpreter start-up is inside a measurement.

    clients.py --tool curl  --host 127.0.0.1 --port 1069 --file f8m.bin --blksize 1468
    clients.py --tool atftp --host 127.0.0.1 --port 1069 --file f8m.bin --blksize 1468 --windowsize 16
    clients.py --tool curl  ... --parallel 50 --src-base 127.0.0.10

Prints one JSON object: wall (s, first start to last exit) and, per client,
rc, seconds (curl: its own %{time_total}, which excludes its start-up;
atftp: the process's wall time) and bytes (curl only; atftp writes nothing
to check, so its sizes are checked by run.py's verification transfers).
With --parallel > 1 every curl binds its own source address (--src-base +
i: 127.0.0.10, .11, ...), as 50 machines booting would; atftp cannot bind
one.  --out writes the file there instead of /dev/null (one client only).
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time


def command(a, i: int) -> list[str]:
    out = a.out or "/dev/null"
    if a.tool == "curl":
        cmd = ["curl", "-s", "-S", "-o", out, "-w", "%{size_download} %{time_total}",
               "--max-time", str(a.timeout)]
        if a.blksize:
            cmd += ["--tftp-blksize", str(a.blksize)]
        if a.parallel > 1 or a.src_base:
            src = ipaddress.IPv4Address(a.src_base or "127.0.0.10") + i
            cmd += ["--interface", str(src)]
        return cmd + [f"tftp://{a.host}:{a.port}/{a.file}"]
    cmd = ["atftp", "--tftp-timeout", "1"]
    if a.blksize:
        cmd += ["--option", f"blksize {a.blksize}"]
    if a.windowsize:
        cmd += ["--option", f"windowsize {a.windowsize}"]
    return cmd + ["-g", "-r", a.file, "-l", out, a.host, str(a.port)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", choices=("curl", "atftp"), required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--blksize", type=int, default=1468)
    ap.add_argument("--windowsize", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--src-base", default=None)
    ap.add_argument("--timeout", type=float, default=120.0, help="per trial, seconds")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.out and a.parallel != 1:
        ap.error("--out needs --parallel 1")
    cmds = [command(a, i) for i in range(a.parallel)]
    procs, starts, ends = [], [], {}
    by_pid: dict[int, int] = {}
    status: dict[int, int] = {}
    cpu = 0.0
    usage = {"utime": 0.0, "stime": 0.0, "vcsw": 0, "ivcsw": 0}

    def expire(_sig, _frame):
        raise TimeoutError

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, a.timeout)
    timed_out = False
    t0 = time.perf_counter()
    try:
        for cmd in cmds:
            starts.append(time.perf_counter())
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            by_pid[p.pid] = len(procs)
            procs.append(p)
        spawned = time.perf_counter() - t0
        # Block in wait4(): no polling loop eats the CPU the server runs on.
        while len(ends) < len(procs):
            pid, st, ru = os.wait4(-1, 0)
            if pid in by_pid:
                ends[by_pid[pid]] = time.perf_counter()
                status[by_pid[pid]] = os.waitstatus_to_exitcode(st)
                cpu += ru.ru_utime + ru.ru_stime
                usage["utime"] += ru.ru_utime
                usage["stime"] += ru.ru_stime
                usage["vcsw"] += ru.ru_nvcsw
                usage["ivcsw"] += ru.ru_nivcsw
    except TimeoutError:
        timed_out = True
        spawned = time.perf_counter() - t0
        for i, p in enumerate(procs):
            if i not in ends:
                p.kill()                  # our own child, by its PID
                p.wait(5)
                ends[i] = time.perf_counter()
                status[i] = p.returncode
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    wall = max(ends.values()) - t0
    clients = []
    for i, p in enumerate(procs):
        out, err = p.stdout.read(), p.stderr.read()
        p.returncode = status[i]
        c = {"rc": status[i], "seconds": round(ends[i] - starts[i], 6)}
        if a.tool == "curl":
            parts = out.split()
            if len(parts) == 2:
                c["bytes"] = int(parts[0])
                c["seconds"] = float(parts[1])
        if status[i] != 0:
            c["stderr"] = (err or "").strip()[-300:]
        clients.append(c)
    json.dump({"wall": round(wall, 6), "spawn_s": round(spawned, 6),
               "client_cpu_s": round(cpu, 6),
               "client_usage": {k: round(v, 6) for k, v in usage.items()},
               "timed_out": timed_out, "cmd0": cmds[0], "clients": clients}, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
