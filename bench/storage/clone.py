#!/usr/bin/env python3
"""Clone time of a golden volume: a reflink pool vs a copy pool (issue 13 item 6).

Two ``file`` pools (netbootd/storage/filepool.py), the same golden volume in each:
  reflink  on an xfs made with reflink=1 in a sparse image loop-mounted by this script;
  copy     on the host's filesystem under --work (ext4 here: sparse-aware copy; on a
           filesystem with reflink the pool is opened with reflink off, and says so).
The golden is --size-gib (10) of virtual size holding --data-gib (1) of random bytes in
64 extents spread evenly over the disk (a used filesystem's shape), the rest sparse.
Each trial clones the golden (its page cache dropped first with POSIX_FADV_DONTNEED on
that one file: a cold read, nothing else on the machine is touched), times clone() -
which ends with fsync - and deletes the clone; the pools alternate.  Reported: median
seconds per pool, the ratio copy/reflink, bytes each clone added to its filesystem.

Bounded: every clone stops after --max-seconds (the progress callback raises; the pool
removes the partial copy).  Everything is removed on every exit path (umount, losetup -d,
the work directory), SIGTERM included.

Usage (root):  .venv/bin/python bench/storage/clone.py [--quick] [--trials N]
Results: a report on stdout, JSON in bench/results/storage-clone-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
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
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

from common import RESULTS, check_machine, cpu_model, log, save_json  # noqa: E402

from netbootd.storage.filepool import FilePool  # noqa: E402
from netbootd.storage.filesystem import fs_type  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
EXTENTS = 64


class TooSlow(Exception):
    pass


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True,
                          timeout=300).stdout.strip()


def fill_golden(pools: list[FilePool], size: int, data: int) -> None:
    """The same golden in every pool: ``data`` random bytes in EXTENTS pieces spread
    evenly over ``size``, the rest holes."""
    for p in pools:
        p.create("golden", size)
    fds = [os.open(p.path("golden"), os.O_WRONLY) for p in pools]
    try:
        piece = data // EXTENTS
        step = size // EXTENTS
        for i in range(EXTENTS):
            block = os.urandom(piece)
            for fd in fds:
                os.pwrite(fd, block, i * step)
        for fd in fds:
            os.fsync(fd)
    finally:
        for fd in fds:
            os.close(fd)


def drop_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def one_clone(pool: FilePool, name: str, max_seconds: float) -> dict:
    drop_cache(pool.path("golden"))
    before = pool.usage().used
    start = time.monotonic()

    def progress(done: int, total: int) -> None:
        if time.monotonic() - start > max_seconds:
            raise TooSlow(f"clone took over {max_seconds:.0f} s at {done} of {total} bytes")
    pool.clone("golden", name, progress=progress)
    took = time.monotonic() - start
    grew = pool.usage().used - before
    pool.delete(name)
    return {"seconds": took, "fs_bytes_added": grew}


def run(args) -> dict:
    size, data = int(args.size_gib * GiB), int(args.data_gib * GiB)
    work = tempfile.mkdtemp(prefix="nbt-bench-storage-", dir=args.work)
    img, mnt = os.path.join(work, "xfs.img"), os.path.join(work, "xfs")
    os.mkdir(mnt)
    dev, mounted = None, False
    try:
        with open(img, "wb") as f:
            f.truncate(size + data * 2 + 2 * GiB)      # sparse: uses what xfs writes
        sh("mkfs.xfs", "-q", "-m", "reflink=1", img)
        dev = sh("losetup", "--find", "--show", img)
        sh("mount", dev, mnt)
        mounted = True
        fast = FilePool(os.path.join(mnt, "pool"), "reflink")
        slow = FilePool(os.path.join(work, "copy-pool"), "copy")
        if slow.capabilities.cow_clones:
            slow = FilePool(os.path.join(work, "copy-pool"), "copy", reflink=False)
        if not fast.capabilities.cow_clones:
            raise SystemExit(f"the xfs pool cannot reflink: {fast.capabilities.reason}")
        log(fast.describe())
        log(slow.describe())
        log(f"golden: {args.size_gib:g} GiB virtual, {args.data_gib:g} GiB random data in "
            f"{EXTENTS} extents, the rest sparse")
        t = time.monotonic()
        fill_golden([fast, slow], size, data)
        log(f"goldens written in {time.monotonic() - t:.1f} s")
        trials: dict[str, list[dict]] = {"reflink": [], "copy": []}
        for i in range(args.trials):
            order = [("reflink", fast), ("copy", slow)]
            for label, pool in (order if i % 2 == 0 else order[::-1]):
                r = one_clone(pool, f"clone{i}", args.max_seconds)
                trials[label].append(r)
                log(f"trial {i + 1}/{args.trials} {label}: {r['seconds']:.3f} s, "
                    f"+{r['fs_bytes_added'] / MiB:.1f} MiB on its filesystem")
        return {
            "pools": {"reflink": {"describe": fast.describe(), "fs": fs_type(fast.root)},
                      "copy": {"describe": slow.describe(), "fs": fs_type(slow.root)}},
            "trials": trials,
        }
    finally:
        for d in (os.path.join(mnt, "pool"), os.path.join(work, "copy-pool")):
            shutil.rmtree(d, ignore_errors=True)
        if mounted:
            subprocess.run(["umount", mnt], capture_output=True, timeout=120)
        if dev:
            subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def compute(doc: dict) -> None:
    med = {k: statistics.median(t["seconds"] for t in v) for k, v in doc["trials"].items()}
    added = {k: statistics.median(t["fs_bytes_added"] for t in v)
             for k, v in doc["trials"].items()}
    doc["median_seconds"] = med
    doc["median_fs_bytes_added"] = added
    doc["ratio_copy_over_reflink"] = med["copy"] / med["reflink"] if med["reflink"] else None
    doc["copy_data_mib_per_s"] = (doc["args"]["data_gib"] * 1024 / med["copy"]
                                  if med["copy"] else None)


def report(doc: dict) -> None:
    a = doc["args"]
    print(f"\nClone of a {a['size_gib']:g} GiB golden volume ({a['data_gib']:g} GiB random "
          f"data in {EXTENTS} extents, the rest sparse), {a['trials']} trials, cold cache")
    print(f"  {'pool':8} {'median s':>10} {'min s':>9} {'max s':>9} {'fs MiB added':>13}  how")
    for k in ("reflink", "copy"):
        s = [t["seconds"] for t in doc["trials"][k]]
        print(f"  {k:8} {doc['median_seconds'][k]:10.4f} {min(s):9.4f} {max(s):9.4f} "
              f"{doc['median_fs_bytes_added'][k] / MiB:13.1f}  {doc['pools'][k]['describe']}")
    r = doc["ratio_copy_over_reflink"]
    print(f"  ratio copy/reflink: {r:.0f}x" if r else "  ratio: n/a")
    if doc["copy_data_mib_per_s"]:
        print(f"  copy pool: {doc['copy_data_mib_per_s']:.0f} MiB/s of data (holes skipped)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gib", type=float, default=10)
    ap.add_argument("--data-gib", type=float, default=1)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=300, help="per clone")
    ap.add_argument("--work", default="/var/tmp", help="copy pool's filesystem")
    ap.add_argument("--quick", action="store_true", help="2 GiB golden, 256 MiB data")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.quick:
        args.size_gib, args.data_gib = 2, 0.25
    if os.geteuid() != 0:
        print("bench/storage: needs root (loop device, mount)", file=sys.stderr)
        return 2
    for tool in ("mkfs.xfs", "losetup", "mount"):
        if shutil.which(tool) is None:
            print(f"bench/storage: {tool} missing (scripts/setup.sh test)", file=sys.stderr)
            return 2
    free = shutil.disk_usage(args.work).free
    if free < (args.data_gib * 3 + 1) * GiB:
        print(f"bench/storage: {args.work} has {free / GiB:.1f} GiB free, needs "
              f"{args.data_gib * 3 + 1:g}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))      # run the cleanups
    started = _dt.datetime.now()
    others, busy = check_machine()
    doc = {"bench": "storage-clone", "started": started.isoformat(),
           "args": {k: v for k, v in vars(args).items() if k != "out"},
           "host": {"cpu": cpu_model(), "cpus": os.cpu_count(), "busy_before_pct": busy,
                    "other_benchmarks": others}}
    doc.update(run(args))
    compute(doc)
    report(doc)
    path = save_json(doc, args.out, "storage-clone", started, args.quick)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
