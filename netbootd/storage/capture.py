"""Disk capture, the blocking part (issue 13 item 4): the volume a capture writes
into, opened once with its path checked, and the chunk writes (in a worker
thread, never on the reactor).  The rules (offsets, digests) are
netbootd/policy/capture.py's.

* A file pool's volume must be a regular file under ``<root>/volumes/`` after
  resolving every link (no path leaves the pool root), opened with O_NOFOLLOW;
  any other pool's volume must be a block device.
* Sparse: a chunk of zeros past the highest offset written in this capture is
  not written (the volume is new or was empty, so it reads as zeros already: a
  file pool's volume stays sparse); one below it is written (it may hold an
  earlier attempt's data).
"""
from __future__ import annotations

import hashlib
import os
import stat
from ..policy.volumes import InUse, VolumeError

_ZERO = memoryview(bytes(64 << 20))     # compared against, never copied


class Target:
    """An open volume of ``size`` bytes (a file descriptor, read-write)."""

    def __init__(self, pool, name: str, size: int):
        path = pool.path(name)
        root = getattr(pool, "root", None)
        flags = os.O_RDWR | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        if root is not None:
            real = os.path.realpath(path)
            inside = os.path.join(os.path.realpath(root), "volumes") + os.sep
            if not real.startswith(inside) or real != os.path.abspath(path):
                raise VolumeError(f"volume {name!r}: its path leaves the pool's volumes "
                                  "directory", "name", name)
        else:
            # lvm: /dev/<vg>/<lv> is a link udev makes to /dev/dm-N; the device
            # it resolves to is what is opened (O_NOFOLLOW) and must stay in /dev
            path = os.path.realpath(path)
            if not path.startswith("/dev/"):
                raise VolumeError(f"volume {name!r}: {path} is not a device under /dev",
                                  "name", name)
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise VolumeError(f"volume {name!r}: cannot open it: {e.strerror}", "name",
                              name) from None
        st = os.fstat(fd)
        ok = stat.S_ISREG(st.st_mode) if root is not None else stat.S_ISBLK(st.st_mode)
        if not ok:
            os.close(fd)
            raise VolumeError(f"volume {name!r}: not a "
                              f"{'regular file' if root is not None else 'block device'}",
                              "name", name)
        self.fd, self.name, self.regular = fd, name, stat.S_ISREG(st.st_mode)
        have = st.st_size if self.regular else os.lseek(fd, 0, os.SEEK_END)
        if have < size:
            os.close(fd)
            raise VolumeError(f"volume {name!r} is {have} bytes, smaller than the disk's "
                              f"{size}", "volume", name)
        self.size = size
        self.allocated = st.st_blocks * 512 if self.regular else None
        self.high = 0            # past the highest offset written by this capture
        self.skipped = 0         # bytes of zero chunks not written

    def empty(self) -> bool:
        """Nothing allocated (a file pool's fresh or untouched volume)."""
        return self.allocated == 0

    def write(self, offset: int, data, sha: str) -> bool:
        """Check ``data`` against ``sha`` (hex), then write it at ``offset``; False
        (nothing written) when the hash does not match."""
        if hashlib.sha256(data).hexdigest() != sha:
            return False
        n = len(data)
        if offset >= self.high and data == _ZERO[:n]:
            self.skipped += n
            return True
        view, done = memoryview(data), 0
        while done < n:
            done += os.pwrite(self.fd, view[done:], offset + done)
        self.high = max(self.high, offset + n)
        return True

    def rehash(self, committed: int, chunk: int) -> list[str]:
        """The sha256 of every committed chunk, read back (after a restart lost them)."""
        out = []
        for off in range(0, committed, chunk):
            n = min(chunk, committed - off)
            out.append(hashlib.sha256(os.pread(self.fd, n, off)).hexdigest())
        self.high = committed
        return out

    def finish(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_target(pool, name: str, size: int, need_empty: bool) -> Target:
    """The volume opened for a capture; an existing one must be empty (nothing
    allocated: a file pool's volume; an lvm volume is only captured into when the
    capture created it)."""
    t = Target(pool, name, size)
    if need_empty and not t.empty():
        t.close()
        raise InUse(f"volume {name!r} holds data: a capture writes into a new or an "
                    "empty volume", "volume", name)
    return t
