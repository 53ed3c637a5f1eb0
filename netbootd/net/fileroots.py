"""Opening files under served roots, for TFTP and HTTP alike (I/O side of
policy/paths.py).

Two ways to the same answer:
* the fast path, one openat2(2) with RESOLVE_BENEATH from the root's
  directory: the kernel follows symlinks while it walks and refuses (EXDEV)
  any step that would leave the root, so the file opened is inside the root
  at the moment it is opened -- no window between a check and the open, and
  2 path walks instead of ~13 stat calls (realpath twice, lexists);
* the checked path, whenever the fast one cannot say (EXDEV: an absolute
  symlink may still point inside the root; ELOOP; no openat2 on this kernel):
  realpath checked before the open and again on the opened descriptor
  (/proc/self/fd), which a symlink swapped in between cannot fool.
Nothing is cached: every request resolves the name afresh, so a file or a
symlink replaced on disk is seen at the next request.
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat

from ..policy.paths import PathRefused, within

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = getattr(os, "O_PATH", 0) | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)

_SYS_OPENAT2 = 437                     # the same number on every Linux architecture
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_AT_FDCWD = -100


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_HOW_FILE = _OpenHow(_OPEN_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
_HOW_DIR = _OpenHow(_DIR_FLAGS, 0, 0)
_HOW_SIZE = ctypes.sizeof(_OpenHow)
try:
    _syscall = ctypes.CDLL(None, use_errno=True).syscall
    _syscall.restype = ctypes.c_long
    _syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p,
                         ctypes.POINTER(_OpenHow), ctypes.c_size_t]
except (OSError, AttributeError):      # no libc syscall(): the checked path only
    _syscall = None
# False once the kernel said openat2 is missing or forbidden (ENOSYS, EPERM).
FAST = _syscall is not None


def _openat2(dirfd: int, path: str, how) -> int:
    """fd, or -errno."""
    fd = _syscall(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), _HOW_SIZE)
    return fd if fd >= 0 else -ctypes.get_errno()


def _open_beneath(root: str, rel: str) -> int | None:
    """The fast path: fd of root/rel opened beneath root, -errno, or None
    when openat2 is unavailable."""
    global FAST
    dfd = _openat2(_AT_FDCWD, root, _HOW_DIR)
    if dfd < 0:
        if -dfd in (errno.ENOSYS, errno.EPERM):
            FAST = False
            return None
        return dfd
    try:
        return _openat2(dfd, rel, _HOW_FILE)
    finally:
        os.close(dfd)


def open_in_root(root: str, rel: str, realpath=os.path.realpath) -> tuple[int, os.stat_result, str]:
    """Open root/rel read-only if it is a regular file inside root after
    following symlinks -> (fd, stat, real path), else ``PathRefused``
    (module docstring: openat2 beneath the root, else realpath checks)."""
    fd = _open_beneath(root, rel) if FAST and realpath is os.path.realpath else None
    if fd is not None and fd < 0:
        if -fd in (errno.ENOENT, errno.ENOTDIR):
            raise PathRefused("not_found", "file not found")
        if -fd not in (errno.EXDEV, errno.ELOOP, errno.EAGAIN, errno.EINTR):
            raise PathRefused("open_failed", "access violation")
        fd = None                        # leaves the root, or may: the checked path decides
    if fd is None:
        return _open_checked(root, rel, realpath)
    st, real = _regular(fd, os.path.join(root, rel))
    return fd, st, real


def _regular(fd: int, path: str) -> tuple[os.stat_result, str]:
    """(stat, path) of an opened descriptor, the path as /proc/self/fd names
    it (`path` if it cannot be read); not a regular file: refused and closed."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused("not_regular", "not a regular file")
        try:
            return st, os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return st, path
    except BaseException:
        os.close(fd)
        raise


def _open_checked(root: str, rel: str, realpath) -> tuple[int, os.stat_result, str]:
    """The containment check runs before opening (nothing outside is even
    opened) and again on the opened descriptor."""
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
    st, opened = _regular(fd, target)
    if not within(root_real, opened):
        os.close(fd)
        raise PathRefused("outside_root", "access violation")
    return fd, st, target


def open_in_roots(roots, rel: str) -> tuple[int, os.stat_result, str]:
    """The first root that has ``rel`` (a name normalized by
    policy/paths.normalize), opened by open_in_root.  A name present in a
    root (even a dangling or escaping symlink) is answered from that root,
    never skipped in favour of a later one; only a name absent from a root
    (no lexists) moves on to the next."""
    for root in roots:
        try:
            return open_in_root(root, rel)
        except PathRefused as e:
            if e.reason != "not_found" or os.path.lexists(os.path.join(root, rel)):
                raise
    raise PathRefused("not_found", "file not found")
