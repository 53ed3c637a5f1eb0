#!/usr/bin/env python3
"""Boot media benchmark (issue 12): image sizes, cold and cached build times of
both flavours, and power-on to "idle" for each firmware path (PXE, net medium,
full medium) under qemu (TCG).

Parts (--parts):
  build   iso_builder.mediabuild.build_image for `full` and `net`: cold (every part
          built: cache=None; for full that includes the agent initrd) and
          cached (--reps builds against a warm cache); wall seconds and this
          process's CPU seconds (self + children: xorriso, mkfs.fat, ...) each.
          Goals: net < 5 MiB and < 1 s cached; full < 10 s cached.
  boot    one real `netbootd serve --mode full` in lab namespaces (the e2e World of
          tests/e2e/test_media_qemu.py, imported: 10.82.0.0/24 exists only there),
          the network's default account "acme" (so PXE-booted hosts join it like
          the media's token does), then for each firmware (SeaBIOS, OVMF) and path:
            pxe    NIC first in the boot order (SeaBIOS: the NIC's iPXE ROM;
                   OVMF: its own PXE client -> ipxe.efi -> boot script)
            net    the net medium as a CD (SeaBIOS) / USB stick (OVMF)
            full   the full medium, the same
          one VM at a time (--reps each), the time from qemu's start to the host
          being idle with an inventory (API polled every 0.25 s), and the host's
          timeline from the daemon (first DHCP, registration) relative to it.
          Goal: via a medium no slower than via PXE.

Usage (as root):  .venv/bin/python bench/media/run.py [--parts build,boot] [--reps 3]
Results: a report on stdout, JSON in bench/results/media-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from iso_builder import mediabuild  # noqa: E402

URL = "http://10.82.0.1:8080"
TOKEN = "nbt1.benchbenchbenchbench.signaturesignaturesig"


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _timed(fn):
    w0, c0 = time.monotonic(), _cpu()
    out = fn()
    return out, round(time.monotonic() - w0, 3), round(_cpu() - c0, 3)


def bench_build(reps: int) -> dict:
    res = {}
    with tempfile.TemporaryDirectory(prefix="bench-media.") as td:
        td = Path(td)
        for flavour in ("net", "full"):
            out = td / f"{flavour}.img"
            info, wall, cpu = _timed(lambda: mediabuild.build_image(
                out, flavour=flavour, server_url=URL, token=TOKEN, account="acme", cache=None))
            cache = td / f"cache-{flavour}"
            mediabuild.build_image(out, flavour=flavour, server_url=URL, token=TOKEN,
                              account="acme", cache=cache)     # warms the cache
            cached = []
            for i in range(reps):
                ci, cw, cc = _timed(lambda: mediabuild.build_image(
                    out, flavour=flavour, server_url=URL, token=TOKEN + str(i),
                    account="acme", cache=cache))
                assert ci["parts_reused"], ci
                cached.append((cw, cc))
            res[flavour] = {"bytes": info["size"], "mib": round(info["size"] / 2**20, 2),
                            "cold_s": wall, "cold_cpu_s": cpu,
                            "cached_s": [c[0] for c in cached],
                            "cached_cpu_s": [c[1] for c in cached],
                            "cached_median_s": statistics.median(c[0] for c in cached)}
            print(f"{flavour:>4}: {res[flavour]['mib']} MiB; cold {wall} s ({cpu} CPU s); "
                  f"cached median {res[flavour]['cached_median_s']} s of "
                  f"{res[flavour]['cached_s']} (CPU {res[flavour]['cached_cpu_s']})", flush=True)
    return res


PATHS = ("pxe", "net", "full")
FIRMWARES = ("bios", "uefi")


def bench_boot(reps: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from e2e import test_media_qemu as t   # the e2e World: namespaces, daemon, VMs

    macs = {f"{fw}-{p}-{r}": f"52:54:00:83:{i:02x}:{r:02x}"
            for i, (fw, p) in enumerate((fw, p) for fw in FIRMWARES for p in PATHS)
            for r in range(reps)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-media-boot."))
    w = t.World(tmp, macs=macs, network_extra='account = "acme"\n')
    res: dict = {}
    try:
        w.start_daemon()
        w.ok("POST", "/api/v1/accounts", {"name": "acme", "approval": "auto"})
        for flavour in ("full", "net"):
            r = w.cli("media", "build", "--account", "acme", "--flavour", flavour,
                      "--cmdline", t.SERIAL, "-o", str(tmp / f"{flavour}.img"), "--json")
            assert r.returncode == 0, r.stderr
        for r_ in range(reps):
            for fw in FIRMWARES:
                for path in PATHS:
                    name = f"{fw}-{path}-{r_}"
                    firmware = [] if fw == "bios" else t._ovmf(tmp, name, False)
                    if path == "pxe":
                        w.start_vm(name, firmware, [], nic_bootindex=0, nic_rom=fw == "bios")
                    else:
                        img = tmp / f"{path}.img"
                        medium = t._cdrom(img) if fw == "bios" else t._usb(img)
                        w.start_vm(name, firmware, medium,
                                   nic_bootindex=None if fw == "bios" else 5)
                    t0_wall = time.time() - (time.monotonic() - w.started[name])
                    h = w.wait_enrolled(name, poll=0.25)
                    w.stop_vm(name)
                    assert h["account"] == "acme", h
                    marks = _marks(w.ok("GET", f"/api/v1/hosts/{macs[name]}").get(
                        "timeline") or [], t0_wall)
                    res.setdefault(f"{fw}-{path}", []).append(
                        {"idle_s": w.timings[name], **marks})
                    print(f"{fw:>4} {path:>4} #{r_}: power-on to idle {w.timings[name]} s "
                          f"{marks}", flush=True)
    finally:
        w.close()
    summary = {k: statistics.median(x["idle_s"] for x in v) for k, v in res.items()}
    return {"runs": res, "median_idle_s": summary}


def _marks(tl, t0_wall: float) -> dict:
    """Seconds from power-on to the first DHCP event and to the registration."""
    out = {}
    for row in tl:
        kind, ts = str(row.get("kind", "")), row.get("ts")
        if ts is None:
            continue
        key = ("first_dhcp_s" if kind.startswith("dhcp") else
               "registered_s" if "regist" in kind else None)
        if key and key not in out:
            out[key] = round(ts - t0_wall, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="build,boot")
    ap.add_argument("--reps", type=int, default=3, help="cached builds / boots per path")
    args = ap.parse_args()
    parts = args.parts.split(",")
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load": os.getloadavg()}
    if "build" in parts:
        out["build"] = bench_build(args.reps)
    if "boot" in parts:
        out["boot"] = bench_boot(max(1, min(args.reps, 3)))
        print("median power-on to idle:", out["boot"]["median_idle_s"], flush=True)
    out["load_end"] = os.getloadavg()
    res = ROOT / "bench" / "results"
    res.mkdir(exist_ok=True)
    path = res / f"media-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
