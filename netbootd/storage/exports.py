"""The export backend interface (issue 13 item 2): one small Protocol, its values
and its errors.

An export makes one volume reachable over iSCSI by one host only: one target per
volume (its IQN from policy/iscsi.py), the volume as LUN 1 (tgtd keeps LUN 0 for
its controller; LIO is given LUN 1 too so the SAN URI is the same), an ACL naming
the host's initiator IQN and nothing else, CHAP for that host (and optionally
mutual CHAP).  Backends: ``tgt`` (storage/tgt.py, tgtadm), ``lio``
(storage/lio.py, rtslib-fb; needs configfs).

Every method blocks (tgtadm, rtslib): the daemon calls them off the reactor.

Contract (tests/interop/test_tgt_export.py):
* a target is never reachable without its ACL and CHAP, even when the process
  dies between two steps of an export: a target is made, CHAP bound, the ACL
  bound, and only then the LUN added;
* ``rebuild(desired)`` makes the backend's state equal the list (adds, repairs,
  removes the targets of this IQN base that are not desired) and is what runs at
  start and after a tgtd restart; it never touches targets outside the base;
* ``export`` of an already exported volume makes it match the arguments
  (idempotent); ``unexport`` of a volume that is not exported raises NotExported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

from ..policy.iscsi import Chap, IscsiNameError, check_pair, validate_iqn, validate_volume_name

__all__ = ["Chap", "Export", "ExportBackend", "ExportError", "ExportHealth", "ExportSpec",
           "ExportUnsupported", "IscsiNameError", "NotExported", "BackendFailed"]

SAN_LUN = 1


class ExportError(Exception):
    """Base of the export errors; the message names the volume or field."""


class NotExported(ExportError):
    def __init__(self, volume: str):
        super().__init__(f"volume {volume!r} is not exported")
        self.volume = volume


class ExportUnsupported(ExportError):
    """This backend cannot run here (one line saying why)."""


class BackendFailed(ExportError):
    """The target software refused or failed a step (its message, secrets removed)."""


@dataclass(frozen=True)
class ExportSpec:
    """What one export should be: the desired state the database keeps."""
    volume: str
    path: str
    initiator_iqn: str
    chap: Optional[Chap] = None
    mutual: Optional[Chap] = None

    def __post_init__(self) -> None:
        validate_volume_name(self.volume)
        validate_iqn(self.initiator_iqn, "initiator_iqn")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise IscsiNameError(f"path: {self.path!r} is not an absolute path")
        # tgtadm hands tgtd "path=...,bstype=..." and tgtd splits it on commas
        if any(c in self.path for c in ",\0\n\r"):
            raise IscsiNameError(f"path: {self.path!r} has a comma or a control character")
        check_pair(self.chap, self.mutual)


@dataclass(frozen=True)
class Export:
    """One export as the backend sees it (no secrets)."""
    volume: str
    target_iqn: str
    tid: int
    portal: str                     # "IP:port" the host logs in to
    lun: int = SAN_LUN
    path: Optional[str] = None      # the LUN's backing store (None: no LUN yet)
    initiators: tuple[str, ...] = ()
    chap_user: Optional[str] = None
    mutual_user: Optional[str] = None
    sessions: int = 0

    @property
    def complete(self) -> bool:
        return self.path is not None

    def san_uri(self) -> str:
        """iPXE's ``iscsi:<server>:<protocol>:<port>:<lun>:<iqn>``."""
        host, _, port = self.portal.rpartition(":")
        return f"iscsi:{host}::{'' if port == '3260' else port}:{self.lun}:{self.target_iqn}"


@dataclass(frozen=True)
class ExportHealth:
    ok: bool
    detail: str                     # one line
    targets: int = 0


@runtime_checkable
class ExportBackend(Protocol):
    kind: str                       # "tgt", "lio"

    def export(self, volume_name: str, path: str, initiator_iqn: str,
               chap: Optional[Chap], mutual: Optional[Chap] = None) -> Export: ...

    def unexport(self, volume_name: str) -> None: ...

    def list(self) -> list[Export]: ...

    def rebuild(self, desired: list[ExportSpec]) -> list[Export]: ...

    def health(self) -> ExportHealth: ...
