"""Write a boot image to a USB stick (`netbootd media write`): the safety checks,
then write with progress, fsync, read back and compare the SHA-256.

Refused (MediaWriteError, one line): not a block device, a partition (write the
whole disk), a device that is mounted or used as swap (itself, a partition of it,
or a device built on it), the disk holding the running system (/), smaller than
the image, and - unless force - a disk the kernel does not call removable
(/sys/block/X/removable; loop devices are not)."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Callable

CHUNK = 4 << 20


class MediaWriteError(RuntimeError):
    pass


def _disk_name(dev: Path, sys_root: Path) -> str:
    st = os.stat(dev)
    if not stat.S_ISBLK(st.st_mode):
        raise MediaWriteError(f"{dev} is not a block device")
    link = sys_root / "dev" / "block" / f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    real = Path(os.path.realpath(link))
    if (real / "partition").exists():
        raise MediaWriteError(f"{dev} is a partition: give the whole disk "
                              f"(/dev/{real.parent.name})")
    return real.name


def _family(name: str, sys_root: Path) -> set[str]:
    """The disk, its partitions and the devices stacked on them (holders)."""
    out, todo = set(), [name]
    while todo:
        n = todo.pop()
        if n in out:
            continue
        out.add(n)
        d = sys_root / "class" / "block" / n
        for sub in ("holders",):
            if (d / sub).is_dir():
                todo += [p.name for p in (d / sub).iterdir()]
        if (d / "partition").exists():
            continue
        if d.is_dir():
            todo += [p.name for p in d.iterdir() if p.name.startswith(n)
                     and (p / "partition").exists()]
    return out


def _dev_names_in(path: Path, field: int) -> set[str]:
    names = set()
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) > field and parts[field].startswith("/dev/"):
                names.add(os.path.realpath(parts[field]).rsplit("/", 1)[-1])
    except OSError:
        pass
    return names


def _root_disk_names(proc_root: Path) -> set[str]:
    """Device names of the mount on / (as /proc/self/mounts says)."""
    names = set()
    try:
        for line in (proc_root / "self" / "mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 1 and parts[1] == "/" and parts[0].startswith("/dev/"):
                names.add(os.path.realpath(parts[0]).rsplit("/", 1)[-1])
    except OSError:
        pass
    return names


def check_device(dev, image_size: int, *, force: bool = False, sys_root: Path = Path("/sys"),
                 proc_root: Path = Path("/proc")) -> dict:
    """The device's facts if it may be written, else MediaWriteError naming why not."""
    dev = Path(dev)
    if not dev.exists():
        raise MediaWriteError(f"{dev} does not exist")
    name = _disk_name(dev, sys_root)
    family = _family(name, sys_root)
    if family & _root_disk_names(proc_root):
        raise MediaWriteError(f"{dev} holds the running system (/)")
    mounted = family & _dev_names_in(proc_root / "self" / "mounts", 0)
    if mounted:
        raise MediaWriteError(f"{dev} is mounted ({', '.join(sorted(mounted))}): unmount it first")
    swap = family & _dev_names_in(proc_root / "swaps", 0)
    if swap:
        raise MediaWriteError(f"{dev} is in use as swap ({', '.join(sorted(swap))})")
    blk = sys_root / "class" / "block" / name
    size = int((blk / "size").read_text()) * 512
    if size < image_size:
        raise MediaWriteError(f"{dev} holds {size} bytes, the image needs {image_size}")
    removable = (blk / "removable").read_text().strip() == "1"
    if not removable and not force:
        raise MediaWriteError(f"{dev} ({name}) is not a removable disk: --force to write it "
                              "anyway")
    model = ""
    try:
        model = (blk / "device" / "model").read_text().strip()
    except OSError:
        pass
    return {"device": str(dev), "name": name, "bytes": size, "removable": removable,
            "model": model}


def write_image(image, dev, *, progress: Callable[[int, int], None] | None = None) -> dict:
    """Copy image to dev, fsync, read the same length back; sha256 of both must match."""
    image, dev = Path(image), Path(dev)
    total = image.stat().st_size
    step = progress or (lambda done, total: None)
    h_in = hashlib.sha256()
    done = 0
    fd = os.open(dev, os.O_WRONLY | getattr(os, "O_EXCL", 0))
    try:
        with open(image, "rb") as src:
            while True:
                buf = src.read(CHUNK)
                if not buf:
                    break
                h_in.update(buf)
                view = memoryview(buf)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                done += len(buf)
                step(done, total)
        os.fsync(fd)
    finally:
        os.close(fd)
    # read back past the page cache where the kernel allows it
    h_out = hashlib.sha256()
    with open(dev, "rb") as f:
        try:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        except (AttributeError, OSError):
            pass
        left = total
        while left:
            buf = f.read(min(CHUNK, left))
            if not buf:
                break
            h_out.update(buf)
            left -= len(buf)
    if left or h_out.hexdigest() != h_in.hexdigest():
        raise MediaWriteError(f"{dev}: read back differs from the image (sha256 "
                              f"{h_out.hexdigest()[:16]} != {h_in.hexdigest()[:16]})")
    return {"device": str(dev), "bytes": total, "sha256": h_in.hexdigest(), "verified": True}
