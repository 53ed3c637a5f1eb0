"""Held connections must not starve the daemon (issue "hostile input on the
wire", point 5): `netbootd serve --mode full` in a namespace under a 1,024
open-files limit (systemd's default soft limit, here also the hard limit),
1,100 slow HTTP connections from 40 loopback addresses trickling a byte every
2 s, re-opened whenever the server closes one; meanwhile a real client on the
wire fetches a boot script, a file, an API route (curl) and a TFTP download.
Before the bounds, the flood took every descriptor (Errno 24) and the real
client's requests failed."""
from __future__ import annotations

import json
import sys
import time

import pytest

from .harness import HELPERS, Netbootd, build_pair, require_bin

MAC = "52-54-00-aa-00-05"
FLOOD_SECONDS = 25.0


class LimitedNetbootd(Netbootd):
    """netbootd under `prlimit --nofile=1024:1024`."""

    def command(self) -> list[str]:
        return ["prlimit", "--nofile=1024:1024", *super().command()]


@pytest.mark.interop
def test_real_clients_are_served_during_a_slow_connection_flood(lab, tmp_path):
    require_bin("curl", "prlimit")
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    srv, cli, srv_if = lan.ns["srv"], lan.ns["cli"], lan.ifs["srv"]
    state = tmp_path / "state"
    (state / "files").mkdir(parents=True)
    payload = bytes(range(256)) * 4096                        # 1 MiB
    (state / "files" / "payload.bin").write_bytes(payload)
    nb = LimitedNetbootd(lab, srv, state, ["--mode", "full", "--interface", srv_if],
                         tmp_path / "netbootd.log").start()
    try:
        flood = lab.popen(srv, [sys.executable, str(HELPERS / "slow_http.py"), "127.0.0.1",
                                "8080", "--conns", "1100", "--sources", "40", "--trickle", "2",
                                "--seconds", str(FLOOD_SECONDS)])
        time.sleep(4.0)                       # the flood is at its full size
        base = "http://10.77.0.1:8080"
        urls = {"script": f"{base}/boot/{MAC}.ipxe", "file": f"{base}/files/payload.bin",
                "api": f"{base}/api/v1/status", "tftp": "tftp://10.77.0.1/payload.bin"}
        results: dict[str, list] = {k: [] for k in urls}
        rounds = 0
        end = time.monotonic() + FLOOD_SECONDS - 8
        while time.monotonic() < end and rounds < 20:
            rounds += 1
            for what, url in urls.items():
                t0 = time.monotonic()
                r = lab.ns_exec(cli, "curl", "-sS", "-o", "/dev/null", "--max-time", "10",
                                "-w", "%{http_code} %{size_download}", url,
                                check=False, timeout=20)
                code, _, size = r.stdout.strip().partition(" ")
                ok = r.returncode == 0 and (what == "tftp" or code == "200")
                if what in ("file", "tftp"):
                    ok = ok and size == str(len(payload))
                results[what].append((ok, time.monotonic() - t0, r.stderr.strip()[:200]))
            time.sleep(0.5)
        out, _ = flood.communicate(timeout=FLOOD_SECONDS + 30)
        stats = json.loads(out.decode().strip().splitlines()[-1])
        metrics = lab.ns_exec(srv, "curl", "-sS", f"{base}/metrics", check=False,
                              timeout=20).stdout
        closed = {ln.split('reason="')[1].split('"')[0]: float(ln.rsplit(" ", 1)[1])
                  for ln in metrics.splitlines()
                  if ln.startswith("netbootd_http_connections_closed_total{")}
        summary = {k: {"ok": sum(1 for x in v if x[0]), "of": len(v),
                       "max_s": round(max((x[1] for x in v), default=0), 3)}
                   for k, v in results.items()}
        print(f"\nflood: {json.dumps(stats)}\nserver closed: {json.dumps(closed)}\n"
              f"real client during the flood: {json.dumps(summary)}")
        assert stats["max_open"] >= 1000, stats        # the flood really held ~1,000
        for what, v in results.items():
            failed = [x for x in v if not x[0]]
            assert v and not failed, f"{what}: {failed[:3]} ({summary})"
        assert nb.alive()
        log = nb.log_path.read_text(errors="replace")
        assert "Too many open files" not in log and "Errno 24" not in log
        assert sum(closed.values()) > 0
    finally:
        nb.stop()
