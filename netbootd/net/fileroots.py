"""Opening files under served roots, for TFTP and HTTP alike (I/O side of
policy/paths.py)."""
from __future__ import annotations

import errno
import os
import stat

from ..policy.paths import PathRefused, within

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


def open_in_root(root: str, rel: str, realpath=os.path.realpath) -> tuple[int, os.stat_result, str]:
    """Open root/rel read-only if it is a regular file inside root after
    following symlinks -> (fd, stat, real path), else ``PathRefused``.  The
    containment check runs before opening (nothing outside is even opened)
    and again on the opened descriptor (/proc/self/fd), which a symlink
    swapped in between cannot fool."""
    root_real = realpath(root)
    target = realpath(os.path.join(root, rel))
    if not within(root_real, target):
        raise PathRefused("outside_root", "access violation")
    try:
        fd = os.open(target, _OPEN_FLAGS)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise PathRefused("not_found", "file not found") from None
        raise PathRefused("open_failed", "access violation") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused("not_regular", "not a regular file")
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened = target
        if not within(root_real, opened):
            raise PathRefused("outside_root", "access violation")
    except BaseException:
        os.close(fd)
        raise
    return fd, st, target
