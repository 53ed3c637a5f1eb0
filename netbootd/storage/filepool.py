"""The ``file`` volume backend: sparse files in a directory (docs/storage.md, Volumes).

    <root>/volumes/<name>     writable volumes (0600)
    <root>/snapshots/<name>   read-only snapshots (0400; never opened for writing here)
    <root>/.tmp/              volumes being made: <name>.<pid>.<random>
    <root>/.lock              flock held while a finished volume takes its name

A volume is made in .tmp/, fsync'ed, and takes its name with link(2) (never replaces a
name: concurrent creates race safely); an error or interrupt removes the temporary file,
a killed process's is removed by the next open of the pool.  Snapshots and clones are
reflinks (FICLONE, copy-on-write) where a probe at open finds them (xfs reflink=1,
btrfs), else sparse-aware copies (SEEK_DATA/SEEK_HOLE: holes stay holes) with progress.
Origin and creation time are xattrs (user.netbootd.*) set before a volume is published.
The filesystem side (mount type, reflink probe, sparse copies, open holders) is
storage/filesystem.py.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from .filesystem import FICLONE, data_bytes, fs_type, holders, probe_reflink, sparse_copy
from .volumes import (Capabilities, Exists, InUse, NoSpace, NotFound, PoolUsage, Progress,
                      Thresholds, Unsupported, Volume, VolumeError, check_name, check_resize,
                      check_size, check_space, human)

XATTR_ORIGIN = "user.netbootd.origin"
XATTR_CREATED = "user.netbootd.created"
DIRS = {"volume": "volumes", "snapshot": "snapshots"}
MODES = {"volume": 0o600, "snapshot": 0o400}
NO_REFLINK = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS,
              errno.EPERM)


class FilePool:
    """A ``VolumeBackend`` over one directory.  ``reflink``: None probes the filesystem,
    False always copies, True refuses to open (``Unsupported``) where reflink fails."""

    kind = "file"

    def __init__(self, root: str, name: str = "default",
                 thresholds: Thresholds = Thresholds(), reflink: Optional[bool] = None):
        self.name = name
        self.thresholds = thresholds
        self.root = os.path.realpath(root)
        try:
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            for d in (*DIRS.values(), ".tmp"):
                os.makedirs(os.path.join(self.root, d), mode=0o700, exist_ok=True)
        except OSError as e:
            raise VolumeError(f"cannot use {self.root!r} as a pool directory: {e.strerror}",
                              "root", root) from None
        self._tmp = os.path.join(self.root, ".tmp")
        self._lock = threading.Lock()
        self.cleaned = self._clean_stale()
        self.fstype = fs_type(self.root)
        # copy_file_range may itself reflink (xfs, btrfs): a pool told not to share
        # blocks copies with pread/pwrite
        self._share_ok = reflink is not False
        if reflink is False:
            cow, why = False, "reflink turned off for this pool"
        else:
            cow, why = probe_reflink(self._tmp, self.fstype)
            if reflink and not cow:
                raise Unsupported(f"pool {name!r} wants reflink: {why}", "reflink", True)
        self.capabilities = Capabilities(cow_clones=cow, thin=True, reason=why)

    # ------------------------------------------------------------ interface

    def describe(self) -> str:
        how = (f"reflink clones on {self.fstype}" if self.capabilities.cow_clones
               else f"sparse copy clones: {self.capabilities.reason}")
        return f"file pool {self.name!r} in {self.root}: sparse files, {how}"

    def create(self, name: str, size_bytes: int,
               progress: Optional[Progress] = None) -> Volume:
        check_name(name)
        check_size(size_bytes)
        self._refuse_taken(name)
        check_space("create", name, self.usage(), self.thresholds, need=0,
                    grow=size_bytes, pool=self.name)

        def fill(fd: int) -> None:
            os.ftruncate(fd, size_bytes)           # sparse: allocates nothing
        vol = self._make("create", name, "volume", None, fill, size_bytes, 0)
        if progress:
            progress(size_bytes, size_bytes)
        return vol

    def snapshot(self, name: str, snap_name: str,
                 progress: Optional[Progress] = None) -> Volume:
        return self._copy(name, snap_name, "snapshot", progress, field="snap_name")

    def clone(self, source: str, new_name: str,
              progress: Optional[Progress] = None) -> Volume:
        return self._copy(source, new_name, "volume", progress, field="new_name")

    def resize(self, name: str, size_bytes: int, force: bool = False) -> Volume:
        kind, path = self._locate(name)
        if kind == "snapshot":
            raise VolumeError(f"{name!r} is a snapshot (read-only); clone it to get a "
                              "volume that can be resized", "name", name)
        cur = os.stat(path).st_size
        new = check_resize(cur, size_bytes, force)
        if new > cur:
            check_space("resize", name, self.usage(), self.thresholds, need=0,
                        grow=new - cur, pool=self.name)
        try:
            os.truncate(path, new)
        except OSError as e:
            raise self._os_error(e, "resize", name, new, 0) from None
        return self.get(name)

    def delete(self, name: str) -> None:
        kind, path = self._locate(name)
        users = holders(path)
        if users:
            raise InUse(f"{name!r} is in use: {', '.join(users)}", "name", name)
        os.unlink(path)
        _fsync_dir(os.path.dirname(path))

    def get(self, name: str) -> Volume:
        kind, path = self._locate(name)
        return self._volume(name, kind, path)

    def list(self) -> list[Volume]:
        out = []
        for kind, d in DIRS.items():
            for entry in os.scandir(os.path.join(self.root, d)):
                try:
                    check_name(entry.name)
                except VolumeError:
                    continue                   # not ours: never listed, never touched
                if entry.is_file(follow_symlinks=False):
                    try:
                        out.append(self._volume(entry.name, kind, entry.path))
                    except FileNotFoundError:
                        continue               # deleted while we looked
        return sorted(out, key=lambda v: v.name)

    def usage(self) -> PoolUsage:
        st = os.statvfs(self.root)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        used = total - st.f_bfree * st.f_frsize
        vols = self.list()
        return PoolUsage(total=total, used=used, free=free,
                         provisioned=sum(v.size for v in vols), volumes=len(vols))

    def path(self, name: str) -> str:
        return self._locate(name)[1]

    # ------------------------------------------------------------ the work

    def _copy(self, source: str, new: str, kind: str, progress: Optional[Progress],
              field: str) -> Volume:
        check_name(source, "source" if kind == "volume" else "name")
        check_name(new, field)
        _, src_path = self._locate(source, field="source" if kind == "volume" else "name")
        self._refuse_taken(new, field)
        src_fd = os.open(src_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            size = os.fstat(src_fd).st_size
            cow = self.capabilities.cow_clones
            need = 0 if cow else data_bytes(src_fd, size)
            what = "snapshot" if kind == "snapshot" else "clone"
            check_space(what, new, self.usage(), self.thresholds, need=need, grow=size,
                        pool=self.name)

            def fill(fd: int) -> None:
                if cow:
                    try:
                        fcntl.ioctl(fd, FICLONE, src_fd)
                        if progress:
                            progress(size, size)
                        return
                    except OSError as e:
                        if e.errno not in NO_REFLINK:
                            raise
                    # reflink failed after the probe said yes: copy, with the copy's space check
                    check_space(what, new, self.usage(), self.thresholds,
                                need=data_bytes(src_fd, size), grow=size, pool=self.name)
                sparse_copy(src_fd, fd, size, progress, in_kernel=self._share_ok)
            return self._make(what, new, kind, source, fill, size, need, field=field)
        finally:
            os.close(src_fd)

    def _make(self, op: str, name: str, kind: str, origin: Optional[str],
              fill: Callable[[int], None], size: int, need: int,
              field: str = "name") -> Volume:
        """Make a volume in .tmp/, ``fill`` it, then publish it under ``name``;
        on any error or interrupt the temporary file is removed."""
        tmp = os.path.join(self._tmp, f"{name}.{os.getpid()}.{secrets.token_hex(4)}")
        final = os.path.join(self.root, DIRS[kind], name)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            try:
                fill(fd)
                _set_meta(fd, origin, time.time())
                os.fchmod(fd, MODES[kind])
                os.fsync(fd)
            except OSError as e:
                raise self._os_error(e, op, name, size, need) from None
            finally:
                os.close(fd)
            with self._claim():
                self._refuse_taken(name, field)
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    raise Exists(f"{name!r} already exists in pool {self.name!r}",
                                 field, name) from None
            _fsync_dir(os.path.dirname(final))
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return self._volume(name, kind, final)

    # ------------------------------------------------------------ helpers

    def _locate(self, name: str, field: str = "name") -> tuple[str, str]:
        """(kind, path) of an existing volume: a regular file inside the pool."""
        check_name(name, field)
        for kind, d in DIRS.items():
            path = os.path.join(self.root, d, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode) or os.path.realpath(path) != path:
                raise VolumeError(f"{path!r} is not a regular file inside the pool "
                                  "(a symlink or a device put there by hand?)", field, name)
            return kind, path
        raise NotFound(f"no volume {name!r} in pool {self.name!r}", field, name)

    def _refuse_taken(self, name: str, field: str = "name") -> None:
        for d in DIRS.values():
            if os.path.lexists(os.path.join(self.root, d, name)):
                raise Exists(f"{name!r} already exists in pool {self.name!r}", field, name)

    def _claim(self):
        return _claim(self._lock, os.path.join(self.root, ".lock"))

    def _volume(self, name: str, kind: str, path: str) -> Volume:
        st = os.stat(path, follow_symlinks=False)
        origin, created = _get_meta(path)
        return Volume(name=name, size=st.st_size, used=st.st_blocks * 512, origin=origin,
                      kind=kind, created=created if created is not None else st.st_mtime)

    def _os_error(self, e: OSError, op: str, name: str, size: int, need: int) -> VolumeError:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            u = self.usage()
            floor = self.thresholds.floor(u.total)
            return NoSpace(f"{op} {name!r}: pool {self.name!r} ran out of space "
                           f"({u.free} bytes free of {u.total}, {need} needed); nothing "
                           "was kept", need=need, free=u.free, floor=floor, total=u.total,
                           field="size", value=size)
        if e.errno == errno.EFBIG:
            return VolumeError(f"{size} bytes ({human(size)}) is larger than a file on this "
                               f"{self.fstype} can be", "size", size)
        return VolumeError(f"{op} {name!r} failed: {e.strerror or e}", "name", name)

    def _clean_stale(self) -> int:
        """Remove temporaries whose maker is gone (a process killed mid-copy)."""
        n = 0
        for entry in os.scandir(self._tmp):
            pid = _pid_of(entry.name)
            if pid is not None and (pid == os.getpid() or _alive(pid)):
                continue                       # still being made (maybe by this process)
            try:
                os.unlink(entry.path)
                n += 1
            except OSError:
                pass
        return n


@contextmanager
def _claim(lock: threading.Lock, path: str) -> Iterator[None]:
    """The thread lock and the pool's flock, held while a name is claimed."""
    with lock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)                       # releases the flock


# ---------------------------------------------------------------- small helpers

def _set_meta(fd: int, origin: Optional[str], created: float) -> None:
    try:
        if origin:
            os.setxattr(fd, XATTR_ORIGIN, origin.encode())
        os.setxattr(fd, XATTR_CREATED, repr(created).encode())
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise                              # no user xattrs: origin unknown, mtime as time


def _get_meta(path: str) -> tuple[Optional[str], Optional[float]]:
    def get(key):
        try:
            return os.getxattr(path, key, follow_symlinks=False).decode()
        except (OSError, UnicodeDecodeError):
            return None
    origin = get(XATTR_ORIGIN)
    created = get(XATTR_CREATED)
    try:
        when = float(created) if created is not None else None
    except ValueError:
        when = None
    return origin, when


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_of(tmpname: str) -> Optional[int]:
    parts = tmpname.rsplit(".", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
