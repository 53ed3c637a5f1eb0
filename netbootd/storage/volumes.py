"""The volume backend interface: one small Protocol, its values and its errors.

A pool is one backend instance (``file``: a directory of sparse files, storage/filepool.py;
``lvm``: a thin pool in a volume group, storage/lvm.py), chosen per pool in the config.
Every method blocks (file copies, lvm2 commands): the daemon calls them off the reactor
(``deferToThread``), and nothing here imports Twisted.

The values (``Volume``, ``PoolUsage``, ``Thresholds``), the errors and the name/size
rules are pure and live in netbootd/policy/volumes.py; they are re-exported here so a
caller imports one module.

Contract every backend keeps (tests/interop/test_filepool.py, test_lvm.py):
* names and sizes are checked by the policy's rules before anything is touched;
* a volume appears whole or not at all (an error or an interrupt leaves no part of it);
* ``snapshot`` makes a read-only volume, ``clone`` a writable one; both are
  copy-on-write where ``capabilities.cow_clones`` says so;
* a create, snapshot or clone that would cross the pool's free-space thresholds is
  refused before it starts, with the numbers (``NoSpace``);
* errors are the typed ones below, each naming the bad value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

from ..policy.volumes import (Exists, InUse, Kind, NoSpace, NotFound, PoolUsage, Progress,
                              Thresholds, Unsupported, Volume, VolumeError, check_name,
                              check_resize, check_size, check_space, human, parse_size)

__all__ = ["Capabilities", "Exists", "InUse", "Kind", "NoSpace", "NotFound", "PoolUsage",
           "Progress", "Thresholds", "Unsupported", "Volume", "VolumeBackend", "VolumeError",
           "check_name", "check_resize", "check_size", "check_space", "human", "parse_size"]


@dataclass(frozen=True)
class Capabilities:
    """What a pool does, decided once when it is opened."""
    cow_clones: bool               # snapshot/clone share blocks with their source
    thin: bool = True              # a new volume allocates nothing until written
    reason: str = ""               # why not cow_clones, when it is not (one line)


@runtime_checkable
class VolumeBackend(Protocol):
    """A pool of volumes.  ``progress(done, total)`` is called with bytes as a long
    copy proceeds (and may raise to cancel it: the partial copy is removed)."""

    name: str                      # the pool's name (config), used in messages
    kind: str                      # "file", "lvm"
    capabilities: Capabilities

    def describe(self) -> str:
        """One line: what this pool does ("reflink clones on xfs", ...)."""

    def create(self, name: str, size_bytes: int,
               progress: Optional[Progress] = None) -> Volume: ...

    def resize(self, name: str, size_bytes: int, force: bool = False) -> Volume: ...

    def snapshot(self, name: str, snap_name: str,
                 progress: Optional[Progress] = None) -> Volume: ...

    def clone(self, source: str, new_name: str,
              progress: Optional[Progress] = None) -> Volume: ...

    def delete(self, name: str) -> None: ...

    def get(self, name: str) -> Volume: ...

    def list(self) -> list[Volume]: ...

    def usage(self) -> PoolUsage: ...

    def path(self, name: str) -> str:
        """The file or block device to export (exists only while the volume does)."""
