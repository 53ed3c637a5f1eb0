"""Storage jobs and refusals (issue 13): ``Job``, one volume or export operation as
the API shows it (GET /api/v1/jobs/{id}), and ``Refused``, a request refused with an
HTTP status and a reason; ``refusal`` maps a backend error (VolumeError,
ExportError...) to one.  net/storage.py runs the jobs; net/capture.py runs capture
jobs; net/http/api_storage.py and api_capture.py answer with the refusals.
"""
from __future__ import annotations

import logging
import secrets
from typing import Optional

from twisted.internet import defer

from ..policy import iscsi
from ..policy.volumes import VolumeError

log = logging.getLogger("netbootd")

JOBS_KEPT = 200                # finished jobs kept for GET /api/v1/jobs/{id}


class Refused(Exception):
    """A storage request refused with an HTTP status and a reason (the API maps it)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


# Operations on volumes alone (no host): a daemon event when they succeed.
VOLUME_OPS = frozenset({"create", "resize", "snapshot", "clone", "delete"})


def refusal(e: BaseException, in_job: bool = False) -> Refused:
    """The status and reason of a backend error (VolumeError, ExportError...).  In a
    job the request's names and sizes were already checked, so an "invalid" from
    the backend is about the volume's state (a snapshot is read-only...): 409."""
    from ..storage.exports import BackendFailed, ExportUnsupported, NotExported
    if isinstance(e, Refused):
        return e
    if isinstance(e, VolumeError):
        if in_job and e.code == "invalid" or e.field == "size" and "shrinking" in e.reason:
            return Refused(409, str(e))         # the volume's state, not the request
        status = {"not_found": 404, "exists": 409, "in_use": 409, "no_space": 409}.get(e.code, 400)
        return Refused(status, str(e))
    if isinstance(e, NotExported):
        return Refused(404, str(e))
    if isinstance(e, iscsi.IscsiNameError):
        return Refused(400, str(e))
    if isinstance(e, ExportUnsupported):
        return Refused(409, f"exports are not available: {e}")
    if isinstance(e, BackendFailed):
        return Refused(502, str(e))
    log.error("storage: unexpected error: %r", e)
    return Refused(500, "internal error (see the daemon log)")


class Job:
    """One storage operation; ``done``/``total`` in bytes while a copy runs."""

    def __init__(self, op: str, target: str, now: float):
        self.id = secrets.token_hex(6)
        self.op, self.target, self.started = op, target, now
        self.state = "running"
        self.done = self.total = 0
        self.result: Optional[dict] = None
        self.error: Optional[Refused] = None
        self.ended: Optional[float] = None
        self.finished = defer.Deferred()

    def progress(self, done: int, total: int) -> None:      # called from a worker thread
        self.done, self.total = done, total

    def view(self) -> dict:
        return {"id": self.id, "op": self.op, "target": self.target, "state": self.state,
                "done": self.done, "total": self.total, "result": self.result,
                "error": None if self.error is None else
                {"error": self.error.reason, "status": self.error.status},
                "started": self.started, "ended": self.ended}
