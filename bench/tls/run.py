#!/usr/bin/env python3
"""Daemon CPU per request, plain http vs https (a fresh TLS 1.3 handshake each time, as
the agent's curl makes one per call), `netbootd serve` in a network namespace, curl
clients in another; N sequential GET /api/v1/status per scheme, two interleaved rounds.

    .venv/bin/python bench/tls/run.py [N]        (root; N defaults to 200)

Prints JSON: daemon CPU ms per request (utime+stime from /proc, clock ticks of 10 ms,
so keep N >= 100; minus the idle daemon's CPU over the same time, measured for 10 s
first) and wall ms per request, and the https/http CPU ratio.  The box is
shared: compare the two schemes within one run only.
"""
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from netbootd.auth import tls  # noqa: E402
from netbootd.lab import netns  # noqa: E402


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    if (why := netns.available()):
        print(f"bench/tls: {why}", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-tls."))
    nb = str(Path(sys.executable).with_name("netbootd"))
    with netns.Lab() as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        a, _ = lab.link(srv, "10.79.0.1/24", cli, "10.79.0.2/24")
        pair = tls.make_selfsigned(str(tmp / "c.pem"), str(tmp / "k.pem"), cn="10.79.0.1")
        (tmp / "nb.toml").write_text(f'[http]\ntls_cert = "{pair["cert"]}"\n'
                                     f'tls_key = "{pair["key"]}"\n')
        log = open(tmp / "log", "wb")
        p = lab.popen(srv, [nb, "serve", "--mode", "full", "--interface", a, "--config",
                            str(tmp / "nb.toml"), "--state-dir", str(tmp / "state")],
                      stdout=log, stderr=log)
        end = time.monotonic() + 60
        while b"netbootd ready" not in (tmp / "log").read_bytes():
            assert p.poll() is None and time.monotonic() < end, (tmp / "log").read_text()
            time.sleep(0.2)

        def cpu() -> float:   # `ip netns exec` execs netbootd: p.pid is the daemon
            f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        schemes = {"http": "http://10.79.0.1:8080/api/v1/status",
                   "https": f"-k --pinnedpubkey {pair['pin']} https://10.79.0.1:8443/api/v1/status"}
        res = {k: [0.0, 0.0] for k in schemes}
        # Settle first: right after "ready" a thread builds the discover initrd.
        end = time.monotonic() + 120
        while time.monotonic() < end:
            c0 = cpu()
            time.sleep(2)
            if cpu() - c0 <= 0.04:
                break
        c0, t0 = cpu(), time.monotonic()
        time.sleep(10)
        idle = (cpu() - c0) / (time.monotonic() - t0)   # background CPU s/s (timers, GC)
        for _ in range(2):
            for k, args in schemes.items():
                c0, t0 = cpu(), time.monotonic()
                r = lab.ns_exec(cli, "sh", "-c", f"for i in $(seq {n}); do curl -s -o /dev/null "
                                f"{args} || echo FAIL; done", timeout=900)
                assert "FAIL" not in r.stdout, r.stdout
                wall = time.monotonic() - t0
                res[k][0] += cpu() - c0 - idle * wall
                res[k][1] += wall
        out = {k: {"requests": 2 * n, "daemon_cpu_ms_per_request": round(1000 * c / (2 * n), 3),
                   "wall_ms_per_request": round(1000 * w / (2 * n), 2)} for k, (c, w) in res.items()}
        out["idle_cpu_ms_per_s"] = round(1000 * idle, 2)
        out["cpu_ratio_https_http"] = round(res["https"][0] / max(res["http"][0], 1e-9), 2)
        print(json.dumps(out, indent=1))
        lab.stop(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
