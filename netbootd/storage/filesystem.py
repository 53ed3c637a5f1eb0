"""What the file pool asks of the filesystem under it (storage/filepool.py).

* ``fs_type``: the type of the mount holding a path (/proc/self/mountinfo);
* ``probe_reflink``: whether FICLONE (copy-on-write clones) works in a directory;
* ``data_segments``, ``data_bytes``, ``sparse_copy``: the data of a sparse file
  (SEEK_DATA/SEEK_HOLE) and its copy with holes kept, in the kernel
  (copy_file_range) or through pread/pwrite, with progress;
* ``holders``: who holds a file open (processes, loop devices), before a delete.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from typing import Iterator, Optional

from .volumes import Progress

FICLONE = 0x40049409               # _IOW(0x94, 9, int): linux/fs.h
CHUNK = 8 << 20                    # bytes per copy_file_range call (progress granularity)


def fs_type(path: str) -> str:
    """The filesystem type of the mount holding ``path`` (from /proc/self/mountinfo)."""
    real = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mnt = _unescape(fields[4])
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, kind = mnt, right.split()[0]
    except OSError:
        pass
    return kind


def probe_reflink(directory: str, fstype: str = "") -> tuple[bool, str]:
    """(True, "") if FICLONE works in ``directory``, else (False, why in a few words)."""
    base = os.path.join(directory, f"probe-{secrets.token_hex(4)}.{os.getpid()}.")
    a = b = -1
    try:
        a = os.open(base + "a", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.write(a, b"\0netbootd reflink probe" * 200)
        os.fsync(a)
        b = os.open(base + "b", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.ioctl(b, FICLONE, a)
        return True, ""
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, str(e.errno))
        return False, f"reflink not supported on {fstype or 'this filesystem'} ({name})"
    finally:
        for fd in (a, b):
            if fd >= 0:
                os.close(fd)
        for p in (base + "a", base + "b"):
            try:
                os.unlink(p)
            except OSError:
                pass


def data_segments(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each data segment of a file (SEEK_DATA/SEEK_HOLE); a filesystem
    without them reports the whole file as data."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:         # no data after pos
                return
            if e.errno == errno.EINVAL:        # no SEEK_DATA here: all data
                yield pos, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start:
            return
        yield start, end
        pos = end


def data_bytes(fd: int, size: int) -> int:
    return sum(e - s for s, e in data_segments(fd, size))


def sparse_copy(src: int, dst: int, size: int, progress: Optional[Progress] = None,
                chunk: int = CHUNK, in_kernel: bool = True) -> int:
    """Copy the data segments of ``src`` into ``dst`` at the same offsets (holes stay
    holes), size ``dst`` to ``size``; returns the bytes copied.  ``progress(done,
    total)`` runs before the first and after every chunk; it may raise to cancel.
    ``in_kernel``: copy_file_range (no copy through user space; on xfs/btrfs it may
    share blocks), else pread/pwrite."""
    segments = list(data_segments(src, size))
    total = sum(e - s for s, e in segments)
    done = 0
    os.ftruncate(dst, size)
    if progress:
        progress(0, total)
    use_cfr = in_kernel and hasattr(os, "copy_file_range")
    for start, end in segments:
        pos = start
        while pos < end:
            n = min(chunk, end - pos)
            if use_cfr:
                try:
                    got = os.copy_file_range(src, dst, n, pos, pos)
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL,
                                       errno.EOPNOTSUPP):
                        raise
                    use_cfr = False
                    continue
            else:
                buf = os.pread(src, n, pos)
                got = os.pwrite(dst, buf, pos) if buf else 0
            if got <= 0:                       # the source shrank under us: stop there
                end = pos
                break
            pos += got
            done += got
            if progress:
                progress(done, total)
    return done


def holders(path: str) -> list[str]:
    """Who holds ``path`` open: processes ("tgtd (pid 812)") and loop devices."""
    try:
        st = os.stat(path)
    except OSError:
        return []
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        for link in links:
            try:
                if os.readlink(link) == path and _same(os.stat(link), st):
                    out.append(f"{_comm(pid)} (pid {pid})")
                    break
            except OSError:
                continue
    for dev in (os.listdir("/sys/block") if os.path.isdir("/sys/block") else []):
        try:
            with open(f"/sys/block/{dev}/loop/backing_file") as f:
                if f.read().strip() == path:
                    out.append(f"/dev/{dev}")
        except OSError:
            continue
    return out


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "process"


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
