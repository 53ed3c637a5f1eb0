#!/usr/bin/env python3
"""One wrk run against one already-running, pinned server, with kernel
counters per GB served (the numbers of README.md "2026-12-04 (2)").

    NS=<netns> python3 bench/http/probe.py PID PORT WRK_THREADS CONNS SECONDS [FILE]

The caller sets up what run.py does itself: a network namespace with lo up
(NS, default nbh8), the server(s) started in it pinned to CPU 1 (`ip netns
exec NS taskset -c 1 ...`), the files under /files/.  Prints one JSON line:
MB/s, requests, user/sys CPU per GB of the process (all threads; per thread:
CPU, voluntary/involuntary context switches, schedstat run time per GB),
nstat deltas per GB of the namespace (TcpOutSegs, TcpExtTCPOrigDataSent =
data segments), syscall counts of the process (perf stat tracepoints:
sendfile64, epoll_wait, epoll_ctl, futex, write, newfstatat, openat, ...),
n_<syscall> raw counts.  REC=1 also records every sendfile's return
(bytes per call, EAGAINs); PROF=<file> a `perf record -g -F 2000` of the
process for the run.  Run it under the bench lock.
"""
import json, os, re, subprocess, sys, time
NS = os.environ.get("NS", "nbh8")
def nstat():
    out = subprocess.run(["ip", "netns", "exec", NS, "nstat", "-az", "--json"], capture_output=True, text=True).stdout
    d = json.loads(out)
    return d.get("kernel", d)
def threads(pid):
    res = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            st = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            s = open(f"/proc/{pid}/task/{tid}/status").read()
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
        except OSError:
            continue
        vol = int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", s).group(1))
        nvol = int(re.search(r"nonvoluntary_ctxt_switches:\s+(\d+)", s).group(1))
        rt = int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        res[tid] = (name, int(st[11]), int(st[12]), vol, nvol, rt)
    return res
LUA = os.path.join(os.environ.get("TMPDIR", "/tmp"), "probe-report.lua")
STAT = os.path.join(os.environ.get("TMPDIR", "/tmp"), "probe-pstat.txt")
SF = os.path.join(os.environ.get("TMPDIR", "/tmp"), "probe-sendfile.data")


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import WRK_LUA
    with open(LUA, "w") as f:
        f.write(WRK_LUA)
    pid, port, t, c, dur = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    path = sys.argv[6] if len(sys.argv) > 6 else "initrd.img"
    n0, th0 = nstat(), threads(pid)
    wrk = ["ip", "netns", "exec", NS]
    if t == "1":
        wrk += ["taskset", "-c", "0"]
    wrk += ["wrk", f"-t{t}", f"-c{c}", f"-d{dur}s", "--timeout", "60s", "-s", LUA,
            f"http://127.0.0.1:{port}/files/{path}"]
    EV = ["context-switches", "cpu-migrations", "syscalls:sys_enter_sendfile64", "syscalls:sys_enter_epoll_wait",
          "syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_epoll_ctl", "syscalls:sys_enter_futex",
          "syscalls:sys_enter_write", "syscalls:sys_enter_writev", "syscalls:sys_enter_newfstatat",
          "syscalls:sys_enter_openat", "syscalls:sys_enter_recvfrom", "syscalls:sys_enter_read"]
    ps = subprocess.Popen(["perf", "stat", "-x,", "-o", STAT, "-e", ",".join(EV), "-p", pid])
    rec = None
    if os.environ.get("REC"):
        rec = subprocess.Popen(["perf", "record", "-q", "-o", SF, "-e", "syscalls:sys_exit_sendfile64", "-p", pid],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prof = None
    if os.environ.get("PROF"):
        prof = subprocess.Popen(["perf", "record", "-q", "-F", "2000", "-g", "-o", os.environ["PROF"], "-p", pid],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    r = subprocess.run(wrk, capture_output=True, text=True)
    ps.send_signal(2); ps.wait()
    if rec:
        rec.send_signal(2); rec.wait()
    if prof:
        prof.send_signal(2); prof.wait()
    n1, th1 = nstat(), threads(pid)
    w = json.loads(re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M).group(1))
    gb = w["bytes"] / 1e9
    tick = os.sysconf("SC_CLK_TCK")
    out = {"MB/s": round(w["bytes"] / (w["duration_us"] / 1e6) / 1e6), "req": w["requests"], "GB": round(gb, 2)}
    ut = sum(th1[k][1] - th0.get(k, (0, 0, 0, 0, 0))[1] for k in th1) / tick
    stt = sum(th1[k][2] - th0.get(k, (0, 0, 0, 0, 0))[2] for k in th1) / tick
    out["user_s"] = ut; out["sys_s"] = stt
    out["user/GB"] = round(ut / gb, 4); out["sys/GB"] = round(stt / gb, 4); out["cpu/GB"] = round((ut + stt) / gb, 4)
    for k in ("TcpOutSegs", "IpExtOutOctets", "TcpInSegs", "TcpExtTCPAutoCorking", "TcpExtTCPOrigDataSent", "TcpExtTCPBacklogQueued", "TcpExtTCPDelivered"):
        if k in n1:
            out[k + "/GB"] = round((int(n1[k]) - int(n0.get(k, 0))) / gb)
    segs = int(n1["TcpOutSegs"]) - int(n0["TcpOutSegs"])
    out["bytes/seg"] = round(w["bytes"] / max(1, segs))
    for k, v in th1.items():
        o = th0.get(k, (v[0], 0, 0, 0, 0, 0))
        out[f"thr {v[0]} {k}"] = dict(user=round((v[1] - o[1]) / tick / gb, 4), sys=round((v[2] - o[2]) / tick / gb, 4),
                                  vcsw_per_GB=round((v[3] - o[3]) / gb), ivcsw_per_GB=round((v[4] - o[4]) / gb), run_s_per_GB=round((v[5] - o[5]) / 1e9 / gb, 4))
    out = {k: v for k, v in out.items() if not (k.startswith("thr") and v["user"] == 0 and v["sys"] == 0 and v["vcsw_per_GB"] == 0)}
    for line in open(STAT):
        p = line.strip().split(",")
        if len(p) > 3 and p[0].replace(".", "").isdigit():
            out[p[2].replace("syscalls:sys_enter_", "") + "/GB"] = round(float(p[0]) / gb)
            out["n_" + p[2].replace("syscalls:sys_enter_", "")] = int(float(p[0]))
    if rec:
        txt = subprocess.run(["perf", "script", "-i", SF], capture_output=True, text=True).stdout
        rets = [int(m, 16) if m.startswith("0x") else int(m) for m in re.findall(r"sys_exit_sendfile64: (\S+)", txt)]
        ok = [x for x in rets if 0 < x < 1 << 40]; out["sendfile_zero"] = rets.count(0)
        out["sendfile_calls"] = len(rets); out["sendfile_eagain"] = len(rets) - len(ok)
        out["sendfile_mean_bytes"] = round(sum(ok) / max(1, len(ok)))
        ok.sort(); out["sendfile_p50"] = ok[len(ok)//2] if ok else 0
    print(json.dumps(out))
main()
