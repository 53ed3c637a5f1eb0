"""One process owns a state directory: an exclusive flock on <state_dir>/netbootd.lock.

The daemon takes the lock at start-up and keeps it for its whole life; the
kernel drops it when the process dies, however it dies (kill -9 included), so
there is no stale-PID-file problem.  `netbootd state restore` takes the same
lock, which both refuses a restore under a running daemon and keeps a daemon
from starting in the middle of a restore.

The holder's PID is written into the file only so that a refusal can name it;
the lock itself, not the file's content, is the authority.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

LOCK_FILE = "netbootd.lock"
_PID_WIDTH = 11   # fixed-width record: rewritten in place, never truncated first


class StateLocked(RuntimeError):
    """The state directory is locked by another process (`pid`, or None if
    the holder has not written its PID yet)."""

    def __init__(self, path: str, pid: int | None):
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{path} is locked by {holder} (a running netbootd?); stop it first")


class LockHandle:
    """An acquired lock.  Keep a reference for as long as the lock must be
    held; release() (or process exit) drops it."""

    def __init__(self, fd: int, path: str):
        self.fd = fd
        self.path = path

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.pwrite(fd, b" " * (_PID_WIDTH - 1) + b"\n", 0)   # no stale PID left
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> "LockHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):   # pragma: no cover - safety net, release() is the API
        try:
            self.release()
        except Exception:
            pass


def lock_path(state_dir: str) -> str:
    return os.path.join(state_dir, LOCK_FILE)


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 64, 0)
    except OSError:
        return None
    try:
        pid = int(raw.decode("ascii", "replace").strip() or "0")
    except ValueError:
        return None
    return pid if pid > 0 else None


def acquire(state_dir: str, wait: float = 0.0) -> LockHandle:
    """Take the exclusive lock of `state_dir` without blocking (or retrying
    for up to `wait` seconds).  Raises StateLocked naming the holder's PID.

    The fd is close-on-exec, so children (tgtadm, qemu ...) never inherit the
    lock and cannot keep it alive after the daemon is gone."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    path = lock_path(state_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise StateLocked(path, _read_pid(fd)) from None
                time.sleep(0.02)
        os.pwrite(fd, f"{os.getpid():<{_PID_WIDTH - 1}}\n".encode("ascii"), 0)
        os.ftruncate(fd, _PID_WIDTH)
    except BaseException:
        os.close(fd)
        raise
    return LockHandle(fd, path)


def is_locked(state_dir: str) -> int | None:
    """The PID holding the lock, or None when nobody holds it.  A holder that
    has not written its PID yet (a start-up in progress) is reported as -1.

    The probe takes a shared lock for an instant; an acquire() racing with it
    in that instant fails as if the lock were held (pass wait= to ride it out)."""
    path = lock_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            for _ in range(10):   # the holder writes its PID right after locking
                pid = _read_pid(fd)
                if pid:
                    return pid
                time.sleep(0.01)
            return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
