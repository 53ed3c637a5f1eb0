#!/usr/bin/env python3
"""Power-on to marker: sanboot vs the same disk image booted locally (issue 13 item 6).

The hybrid GRUB image of the sanboot e2e test (tests/e2e/diskimage.py) is booted
under qemu (TCG) with SeaBIOS and with OVMF, two ways each:
  local    qemu -drive file=IMAGE (virtio, read-only), no NIC;
  sanboot  PXE from netbootd (full DHCP mode, in private namespaces), the sanboot
           script from the daemon's storage API (file pool, netbootd's own tgtd,
           CHAP), iPXE logs in over iSCSI and boots the volume.
Timed: from starting qemu until the image's "<marker>-DONE" line is on the serial
console (GRUB has echoed its marker and printed a file from the disk).  Trials
alternate the ways; one VM at a time.  Everything (qemu, netbootd + its tgtd,
namespaces) is torn down on every exit path.

Usage (root):  .venv/bin/python bench/storage/sanboot.py [--trials 3] [--firmware bios,uefi]
Results: a report on stdout, JSON in bench/results/storage-sanboot-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e import diskimage                                       # noqa: E402
from tests.e2e.test_sanboot_qemu import (BIOS_MAC, UEFI_MAC, Site,     # noqa: E402
                                         check_booted, local_boot)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--firmware", default="bios,uefi")
    ap.add_argument("--timeout", type=float, default=240, help="per boot, seconds")
    args = ap.parse_args()
    firmwares = [f for f in args.firmware.split(",") if f]
    if not set(firmwares) <= {"bios", "uefi"} or not 1 <= args.trials <= 50:
        ap.error("--firmware: bios and/or uefi; --trials 1..50")
    why = diskimage.missing_tools()
    if why:
        print(f"sanboot bench: cannot run here: {why}", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="nbsan-bench-") as tmpd:
        tmp = Path(tmpd)
        image = diskimage.build(str(tmp / "golden.img"), f"NBSAN{random.randrange(16**8):08X}")
        site = Site(tmp)
        try:
            site.start()
            site.import_image(image)
            for fw in firmwares:
                mac = BIOS_MAC if fw == "bios" else UEFI_MAC
                site.sanboot("golden", mac)
                marker = image.bios_marker if fw == "bios" else image.efi_marker
                for t in range(args.trials):
                    order = ("local", "sanboot") if t % 2 == 0 else ("sanboot", "local")
                    for way in order:
                        if way == "local":
                            s = local_boot(fw, image, tmp)
                        else:
                            con = site.power_on(f"bench-{fw}-{t}", fw, site.taps[0], mac)
                            try:
                                # stages, in the order they show on the console
                                script = con.wait(f"{mac.replace(':', '-')}.ipxe... ok",
                                                  args.timeout)
                                san = con.wait("Registered SAN device 0x80", args.timeout)
                                s = check_booted(con, marker, image.volume_text)
                            finally:
                                site.power_off(con)
                            for stage, v in (("script fetched", script),
                                             ("SAN registered", san)):
                                times.setdefault(f"sanboot {fw}: {stage}", []).append(v)
                        times.setdefault(f"{way} {fw}", []).append(s)
                        print(f"  trial {t + 1}: {way:<7} {fw:<4} {s:6.1f} s", flush=True)
        finally:
            site.close()
    print("\nseconds from power-on to the marker (median, min-max):")
    summary = {}
    for key in sorted(times):
        v = times[key]
        summary[key] = {"median": statistics.median(v), "min": min(v), "max": max(v), "runs": v}
        print(f"  {key:<30} {statistics.median(v):6.1f}  ({min(v):.1f}-{max(v):.1f})")
    for fw in firmwares:
        if f"local {fw}" in summary and f"sanboot {fw}" in summary:
            extra = summary[f"sanboot {fw}"]["median"] - summary[f"local {fw}"]["median"]
            summary[f"sanboot {fw} extra"] = extra
            print(f"  sanboot {fw} adds {extra:.1f} s (PXE, DHCP, iPXE, iSCSI login, reads)")
    out = REPO / "bench" / "results" / \
        f"storage-sanboot-{_dt.datetime.now(_dt.timezone.utc):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"trials": args.trials, "image_bytes": diskimage.IMAGE_BYTES,
                               "results": summary}, indent=2) + "\n")
    print(f"\n{out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
