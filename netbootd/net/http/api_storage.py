"""/api/v1/volumes, /exports, /deploy, /jobs and hosts/{mac}/sanboot (issue 13).

The logic is net/storage.py's (``Storage``); this module only speaks
HTTP.  A mutating call starts a job and answers once it has ended or after
``WAIT`` seconds, whichever comes first: with the job's view (``state`` "done"
and its ``result``, or "running": poll GET /api/v1/jobs/{job}), or with the
refusal's own status when it failed in that time (400 bad name or size, 404,
409 in use / exists / no space, with the numbers).  A job that fails later
keeps its error in its view.  Without [storage] pools every route answers
503 "storage is not configured"."""
from __future__ import annotations

from twisted.internet import defer

from ...policy.volumes import check_size
from . import validate as v
from .common import read_json
from .errors import ApiError, BadRequest, NotFound, Refusal, Unavailable

WAIT = 1.0            # seconds a mutating call waits for its job before answering "running"


def _fields(body: dict, allowed: set, required: set, what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a field of {what}")
    missing = sorted(required - set(body))
    if missing:
        raise BadRequest(f"{missing[0]}: required")


def _text(body: dict, key: str, optional: bool = False):
    val = body.get(key)
    if val is None and optional:
        return None
    if not isinstance(val, str):
        raise BadRequest(f"{key}: a string" + (" or null" if optional else ""))
    return val


def _size(body: dict) -> int:
    size = body.get("size")
    if type(size) is not int:
        raise BadRequest("size: a whole number of bytes (the CLI reads 10G, 512M)")
    return check_size(size)


def _efi(body: dict) -> str | None:
    """The optional UEFI loader path of a sanboot (policy/boot.py checks it)."""
    from ...policy.boot import ProfileError, validate_args
    efi = body.get("efi_filename")
    if efi is None:
        return None
    try:
        validate_args("sanboot", {"san_uri": "iscsi:0.0.0.0:::1:iqn.2000-01.x:y",
                                  "efi_filename": efi})
    except ProfileError as e:
        raise BadRequest(str(e)) from None
    return efi


class StorageApi:
    def __init__(self, storage, clock, wait: float | None = None):
        self.storage = storage          # () -> net/storage.Storage, or None
        self.clock, self.wait = clock, WAIT if wait is None else wait

    def _st(self):
        st = self.storage()
        if st is None:
            raise Unavailable("storage is not configured (no [[storage.pools]])")
        if not st.ready:
            raise Unavailable("storage is starting")
        return st

    def _job(self, start):
        """Start a job (a refusal known at once is answered at once) and wait for it."""
        from ..storage import refusal
        try:
            job = start()
        except ApiError:
            raise
        except Exception as e:
            r = refusal(e)
            raise Refusal(r.status, r.reason) from None
        out = defer.Deferred()

        def fire(result=None):
            if not out.called:
                if timer.active():
                    timer.cancel()
                if job.state == "failed":
                    out.errback(Refusal(job.error.status, job.error.reason))
                else:
                    out.callback(job.view())
            return result
        timer = self.clock.callLater(self.wait, fire)
        job.finished.addBoth(fire)
        return out

    # reads
    def list(self, request):
        return self._st().listing()

    def get(self, request, name):
        from ..storage import refusal
        st = self._st()

        def failed(f):
            r = refusal(f.value)
            raise Refusal(r.status, r.reason)
        return st.find(name).addCallbacks(
            lambda pv: st.annotate(dict(pv[1].as_dict(), pool=pv[0].name)), failed)

    def exports(self, request):
        st = self._st()
        return {"available": st.exporter is not None, "problem": st.export_problem,
                "portal": st.portal, "exports": [st.export_view(r)
                                                  for r in st.exports.values()]}

    def job(self, request, job):
        st = self._st()
        j = st.jobs.get(job)
        if j is None:
            raise NotFound(f"no job {job!r}")
        return j.view()

    # writes
    def create(self, request):
        body = read_json(request)
        _fields(body, {"pool", "name", "size"}, {"name", "size"}, "a new volume")
        st = self._st()
        pool, name = _text(body, "pool", True), _text(body, "name")
        return self._job(lambda: st.create(pool, name, _size(body)))

    def resize(self, request, name):
        body = read_json(request)
        _fields(body, {"size", "force"}, {"size"}, "a resize")
        force = body.get("force", False)
        if type(force) is not bool:
            raise BadRequest("force: true or false")
        st = self._st()
        return self._job(lambda: st.resize(name, _size(body), force))

    def snapshot(self, request, name):
        body = read_json(request)
        _fields(body, {"name"}, {"name"}, "a snapshot")
        st = self._st()
        return self._job(lambda: st.snapshot(name, _text(body, "name")))

    def clone(self, request, name):
        body = read_json(request)
        _fields(body, {"name"}, {"name"}, "a clone")
        st = self._st()
        return self._job(lambda: st.clone(name, _text(body, "name")))

    def delete(self, request, name):
        st = self._st()
        return self._job(lambda: st.delete(name))

    def unexport(self, request, name):
        st = self._st()
        return self._job(lambda: st.unexport(name))

    def sanboot(self, request, mac):
        mac = v.mac(mac)
        body = read_json(request)
        _fields(body, {"volume", "efi_filename"}, {"volume"}, "a sanboot assignment")
        efi = _efi(body)
        st = self._st()
        return self._job(lambda: st.sanboot(mac, _text(body, "volume"), efi))

    def rotate_chap(self, request, mac):
        mac = v.mac(mac)
        st = self._st()
        return self._job(lambda: st.rotate_chap(mac))

    def deploy(self, request):
        body = read_json(request)
        _fields(body, {"mac", "from", "name", "efi_filename"}, {"mac", "from"}, "a deployment")
        mac = v.mac(_text(body, "mac"))
        efi = _efi(body)
        st = self._st()
        return self._job(lambda: st.deploy(mac, _text(body, "from"), _text(body, "name", True),
                                           efi))
