"""Storage at run time (issue 13): what the API, the boot scripts, the status page
and /metrics use - volume operations as jobs (every backend call off the reactor,
``deferToThread``), exports kept in memory as the store's rows (the store is their
journal, as for hosts), the usage of each pool.  net/services/storage.py opens
the pools and the export backend and hands this object over.  A job and a
refusal (``Job``, ``Refused``, ``refusal``) are net/storage_jobs.py's.

Rules that hold across the backends (docs/storage.md, Wiring):
* a volume name is unique across pools (its target IQN is made from it alone);
* a volume that is exported or that a host boots from is not deleted, resized or
  unexported (409 naming the host); a snapshot is read-only and never exported;
* a host's CHAP secret lives in the 0600 database and in that host's own boot
  script only: views, events, logs and metrics say ``chap: true``;
* a multi-step operation (deploy: clone, export, assign) undoes what it did when
  a later step fails: nothing half-done.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable, Optional

from twisted.internet import defer, threads

from ..policy import iscsi
from ..policy.volumes import Exists, NotFound, VolumeError, check_name
from ..writes import ExportDelete, ExportWrite, event
from .storage_jobs import JOBS_KEPT, VOLUME_OPS, Job, Refused, refusal  # noqa: F401 (re-exported)

log = logging.getLogger("netbootd")


class Storage:
    """The pools, the export backend and the exports, for the reactor thread."""

    def __init__(self, cfg, registry, submit: Callable, clock, portal: Optional[str],
                 run=threads.deferToThread):
        self.cfg, self.registry, self.submit, self.clock = cfg, registry, submit, clock
        self.base = cfg.iscsi.iqn_base
        self.port = cfg.iscsi.port
        self.portal = portal
        self.run = run
        self.ready = False
        self.pools: dict = {}                       # name -> VolumeBackend (opened)
        self.pool_errors: dict[str, str] = {}       # name -> why it could not open
        self.exporter = None                        # an ExportBackend, or None
        self.export_problem: Optional[str] = "exports are starting"
        self.exports: dict[str, ExportWrite] = {}   # volume -> its stored export
        self._rows: tuple = ()                      # the same, for threads (replaced whole)
        self.usage: dict = {}                       # pool -> PoolUsage (cached)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = defer.DeferredLock()            # one mutating operation at a time
        self.busy: dict[str, str] = {}              # volume -> why (a capture into it)
        self.running: dict[str, Job] = {}           # volume -> its capture job (net/capture.py)

    # -- exports in memory (reactor) ------------------------------------------
    def load(self, rows: list[ExportWrite]) -> None:
        self.exports = {r.volume: r for r in rows}
        self._rows = tuple(self.exports.values())

    def _stored(self, w) -> None:
        if isinstance(w, ExportWrite):
            self.exports[w.volume] = w
        else:
            self.exports.pop(w.volume, None)
        self._rows = tuple(self.exports.values())

    def commit(self, writes: list) -> defer.Deferred:
        d = defer.Deferred()
        self.submit(writes, lambda: d.callback(None))
        return d

    def specs(self) -> list:
        """The desired exports (blocking: asks the pools for each volume's path)."""
        from ..storage.exports import ExportSpec
        out = []
        for r in self._rows:
            pool = self.pools.get(r.pool)
            try:
                path = pool.path(r.volume) if pool is not None else None
            except VolumeError as e:
                path, why = None, str(e)
            else:
                why = f"pool {r.pool!r} is not open"
            if path is None:
                log.error("storage: export of %r to %s not rebuilt: %s", r.volume, r.mac, why)
                continue
            out.append(ExportSpec(r.volume, path, r.initiator_iqn, _chap(r.chap_user,
                                  r.chap_secret), _chap(r.mutual_user, r.mutual_secret)))
        return out

    def rebuild(self, forget: bool = True) -> None:
        """Blocking: the backend made equal to the stored exports (start, tgtd restart:
        ``forget`` the secrets it set, its accounts are gone or unknown)."""
        if self.exporter is None:
            return
        if forget and hasattr(self.exporter, "forget_secrets"):
            self.exporter.forget_secrets()
        done = self.exporter.rebuild(self.specs())
        log.info("storage: %d exports rebuilt", len(done))

    def chap_for(self, mac: str) -> Optional[dict]:
        """The CHAP values of a host's boot script (its own exports only)."""
        for r in self._rows:
            if r.mac == mac and r.chap_user:
                return {"username": r.chap_user, "password": r.chap_secret,
                        "reverse_username": r.mutual_user, "reverse_password": r.mutual_secret}
        return None

    def booting(self) -> dict[str, list[str]]:
        """target IQN -> the MACs of hosts assigned to sanboot from it (one pass
        over the hosts, for a whole listing)."""
        out: dict[str, list[str]] = {}
        for h in self.registry.hosts.values():
            if h.profile == "sanboot":
                # iscsi:<server>:<protocol>:<port>:<lun>:<target> (ipxe.org/sanuri)
                parts = (h.profile_args or {}).get("san_uri", "").split(":", 5)
                if len(parts) == 6 and parts[0] == "iscsi":
                    out.setdefault(parts[5], []).append(h.mac)
        return out

    def users(self, volume: str, booting: Optional[dict] = None) -> list[str]:
        """Why a volume is in use: its export's host, hosts booting from it."""
        why = [self.busy[volume]] if volume in self.busy else []
        e = self.exports.get(volume)
        if e is not None:
            why.append(f"exported to host {e.mac}")
        booting = self.booting() if booting is None else booting
        for mac in booting.get(iscsi.target_iqn(self.base, volume), ()):
            why.append(f"host {mac} boots from it (profile sanboot)")
        return why

    def refuse_in_use(self, volume: str, what: str) -> None:
        why = self.users(volume)
        if why:
            raise Refused(409, f"volume {volume!r} is in use ({'; '.join(why)}): not {what}")

    def export_view(self, r: ExportWrite) -> dict:
        tiqn = r.target_iqn
        return {"volume": r.volume, "pool": r.pool, "host": r.mac,
                "initiator_iqn": r.initiator_iqn, "target_iqn": tiqn,
                "san_uri": self.san_uri(tiqn), "chap": r.chap_user is not None,
                "mutual_chap": r.mutual_user is not None, "created": r.created}

    def san_uri(self, target_iqn: str) -> str:
        port = "" if self.port == 3260 else str(self.port)
        return f"iscsi:{self.portal or ''}::{port}:1:{target_iqn}"

    # -- jobs ------------------------------------------------------------------
    def start(self, op: str, target: str, work: Callable[[Job], defer.Deferred]) -> Job:
        """Run ``work(job)`` under the lock; its result (a dict) or refusal ends the job."""
        job = Job(op, target, self.clock.seconds())
        self.jobs[job.id] = job
        while len(self.jobs) > JOBS_KEPT:
            old = next(iter(self.jobs.values()))
            if old.state == "running":
                break
            self.jobs.popitem(last=False)

        def ok(result):
            job.state, job.result = "done", result
            job.done = job.total = job.total or job.done
            if op in VOLUME_OPS:
                self.submit([event(self.clock.seconds(), None, "storage.volume", op=op,
                                   volume=target)])

        def failed(f):
            job.state, job.error = "failed", refusal(f.value, in_job=True)
            self.submit([event(self.clock.seconds(), None, "storage.failed", op=op,
                               volume=target, status=job.error.status,
                               reason=job.error.reason)])

        def ended(_):
            job.ended = self.clock.seconds()
            self.refresh_usage()
            job.finished.callback(job)
        d = self.lock.run(lambda: defer.maybeDeferred(work, job))
        d.addCallbacks(ok, failed).addBoth(ended)
        return job

    # -- operations (each a job; refusals known at once are raised here) ---------
    def _pool(self, name: Optional[str]):
        if name is None:
            if len(self.cfg.pools) == 1:
                name = self.cfg.pools[0].name
            else:
                raise Refused(400, "pool: required (pools: "
                              f"{', '.join(p.name for p in self.cfg.pools)})")
        if name in self.pool_errors:
            raise Refused(409, f"pool {name!r} is not available: {self.pool_errors[name]}")
        if name not in self.pools:
            raise Refused(404, f"no pool {name!r}")
        return self.pools[name]

    def _refuse_taken(self, name: str, field: str = "name") -> None:
        """Blocking: a volume name is unique across pools (its target IQN)."""
        for pool in self.pools.values():
            try:
                pool.get(name)
            except NotFound:
                continue
            raise Exists(f"volume {name!r} already exists (pool {pool.name!r})", field, name)

    def _need_exports(self) -> None:
        if self.exporter is None:
            raise Refused(409, f"exports are not available: {self.export_problem}")

    def _volume_job(self, op: str, name: str, call: Callable, new: Optional[str] = None,
                    field: str = "name", guard: Optional[Callable] = None) -> Job:
        """``call(pool, job)`` on the pool holding ``name`` (blocking, in a thread); a
        ``new`` name must be free in every pool first; ``guard()`` runs again under the
        lock (a job queued behind a sanboot sees its export)."""
        if guard is not None:
            guard()

        def blocking(job):
            if new is not None:
                self._refuse_taken(new, field)
            pool, _ = self._find(name)
            return pool, call(pool, job)

        def work(job):
            if guard is not None:
                guard()
            return self.run(blocking, job).addCallback(
                lambda r: self.annotate(dict(r[1].as_dict(), pool=r[0].name)))
        return self.start(op, name, work)

    def create(self, pool: Optional[str], name: str, size: int) -> Job:
        p = self._pool(pool)
        check_name(name)

        def work(job):
            def blocking():
                self._refuse_taken(name)
                return p.create(name, size, job.progress)
            return self.run(blocking).addCallback(
                lambda v: self.annotate(dict(v.as_dict(), pool=p.name)))
        return self.start("create", name, work)

    def resize(self, name: str, size: int, force: bool) -> Job:
        check_name(name)
        return self._volume_job("resize", name, lambda pool, job: pool.resize(name, size, force),
                                guard=lambda: self.refuse_in_use(name, "resized"))

    def snapshot(self, name: str, snap: str) -> Job:
        check_name(name)
        check_name(snap, "name")
        return self._volume_job("snapshot", name,
                                lambda pool, job: pool.snapshot(name, snap, job.progress), snap)

    def clone(self, name: str, new: str) -> Job:
        check_name(name)
        check_name(new, "name")
        return self._volume_job("clone", name,
                                lambda pool, job: pool.clone(name, new, job.progress), new)

    def delete(self, name: str) -> Job:
        check_name(name)
        self.refuse_in_use(name, "deleted")

        def work(job):
            self.refuse_in_use(name, "deleted")         # again, under the lock

            def blocking():
                pool, _ = self._find(name)
                pool.delete(name)
            return self.run(blocking).addCallback(lambda _: {"deleted": name})
        return self.start("delete", name, work)

    def unexport(self, name: str) -> Job:
        check_name(name)
        if name not in self.exports:
            raise Refused(404, f"volume {name!r} is not exported")
        booting = [w for w in self.users(name) if w.startswith("host ") and "boots" in w]
        if booting:
            raise Refused(409, f"volume {name!r}: {booting[0]}: assign that host another "
                          "profile first")

        @defer.inlineCallbacks
        def work(job):
            from ..storage.exports import NotExported
            if self.exporter is not None:
                try:
                    yield self.run(self.exporter.unexport, name)
                except NotExported:
                    pass
            host = self.exports[name].mac if name in self.exports else None
            yield self.commit([ExportDelete(name),
                               event(self.clock.seconds(), host, "storage.unexported",
                                     volume=name)])
            self._stored(ExportDelete(name))
            return {"unexported": name}
        return self.start("unexport", name, work)

    def rotate_chap(self, mac: str) -> Job:
        """A new CHAP secret for a host's exports (its next boot script carries it;
        sessions already logged in stay up: CHAP is checked at login)."""
        self._need_exports()
        if not any(r.mac == mac and r.chap_user for r in self.exports.values()):
            raise Refused(404, f"host {mac} has no export with CHAP")

        @defer.inlineCallbacks
        def work(job):
            old = [r for r in self._rows if r.mac == mac and r.chap_user]
            secret = iscsi.generate_secret()
            new = [ExportWrite(**{**{k: getattr(r, k) for k in r.__slots__},
                                  "chap_secret": secret}) for r in old]
            for r in new:
                self._stored(r)
            try:
                yield self.run(self.rebuild, False)
                yield self.commit(new + [event(self.clock.seconds(), mac,
                                               "storage.chap_rotated",
                                               volumes=[r.volume for r in new])])
            except BaseException:
                for r in old:
                    self._stored(r)
                yield self.run(self.rebuild, False).addErrback(lambda f: None)
                raise
            return {"host": mac, "exports": [r.volume for r in new], "chap": True}
        return self.start("rotate-chap", mac, work)

    def sanboot(self, mac: str, volume: str, efi_filename: Optional[str] = None) -> Job:
        check_name(volume, "volume")
        self._need_exports()
        self._refuse_other_host(mac, volume)
        return self.start("sanboot", volume,
                          lambda job: self._export_and_assign(mac, volume, None, efi_filename))

    def deploy(self, mac: str, source: str, name: Optional[str],
               efi_filename: Optional[str] = None) -> Job:
        check_name(source, "from")
        name = name or f"{source[:50]}-{mac.replace(':', '')}"
        check_name(name, "name")
        self._need_exports()
        self._refuse_other_host(mac, name)

        @defer.inlineCallbacks
        def work(job):
            def blocking():
                self._refuse_taken(name)
                pool, _ = self._find(source)
                return pool.clone(source, name, job.progress)
            yield self.run(blocking)
            try:
                result = yield self._export_and_assign(mac, name, source, efi_filename)
            except BaseException:
                yield self.run(self._undo_clone, name)
                raise
            return dict(result, cloned_from=source)
        return self.start("deploy", name, work)

    def _undo_clone(self, name: str) -> None:
        try:
            pool, _ = self._find(name)
            pool.delete(name)
        except VolumeError as e:
            log.error("storage: deploy failed and its clone %r could not be removed: %s", name, e)

    def _refuse_other_host(self, mac: str, volume: str) -> None:
        e = self.exports.get(volume)
        if e is not None and e.mac != mac:
            raise Refused(409, f"volume {volume!r} is exported to host {e.mac}: unexport it "
                          "first (a volume is exported to one host)")

    def _credentials(self, mac: str):
        """The host's CHAP (one user per host, shared by its exports), or a new one."""
        if not self.cfg.iscsi.chap:
            return None, None
        known = next((r for r in self._rows if r.mac == mac and r.chap_user), None)
        if known is not None:
            return _chap(known.chap_user, known.chap_secret), \
                _chap(known.mutual_user, known.mutual_secret)
        return iscsi.Chap(iscsi.host_chap_user(mac), iscsi.generate_secret()), None

    @defer.inlineCallbacks
    def _export_and_assign(self, mac: str, volume: str, cloned_from: Optional[str] = None,
                           efi_filename: Optional[str] = None):
        """Export ``volume`` to ``mac`` only, store it, assign the host sanboot; an
        export that cannot be stored is taken down again."""
        from ..policy.boot import validate_args
        pool, vol = yield self.find(volume)
        if vol.kind == "snapshot":
            raise Refused(409, f"volume {volume!r} is a read-only snapshot: clone it to boot "
                          "from it")
        self._refuse_other_host(mac, volume)
        iqn = iscsi.host_iqn(self.base, mac)
        chap, mutual = self._credentials(mac)
        path = yield self.run(pool.path, volume)
        exported = yield self.run(self.exporter.export, volume, path, iqn, chap, mutual)
        now = self.clock.seconds()
        row = ExportWrite(volume, pool.name, mac, iqn, exported.target_iqn,
                          chap.user if chap else None, chap.secret if chap else None,
                          mutual.user if mutual else None, mutual.secret if mutual else None,
                          now)
        try:
            args = validate_args("sanboot", {"san_uri": self.san_uri(exported.target_iqn),
                                             "initiator_iqn": iqn,
                                             **({"efi_filename": efi_filename}
                                                if efi_filename else {})})
            self._stored(row)           # the boot script finds it from now on
            host, writes = self.registry.assign(mac, "sanboot", args, now)
            # the host's timeline says which volume it boots (never the secret)
            yield self.commit([row, *writes, event(now, mac, "storage.exported", volume=volume,
                                                   target=exported.target_iqn,
                                                   chap=chap is not None,
                                                   cloned_from=cloned_from)])
        except BaseException:
            self._stored(ExportDelete(volume))
            yield self.run(self.exporter.unexport, volume)
            raise
        return self.export_view(row)

    # -- reads -----------------------------------------------------------------
    def _find(self, name: str):
        """Blocking: (pool, Volume) holding ``name``, else NotFound."""
        for pool in self.pools.values():
            try:
                return pool, pool.get(name)
            except NotFound:
                continue
        raise NotFound(f"no volume {name!r} in any pool", "name", name)

    def find(self, name: str) -> defer.Deferred:
        return self.run(self._find, name)

    def _listing(self) -> dict:
        pools, vols = [], []
        for name, pool in self.pools.items():
            u = pool.usage()
            self.usage[name] = u
            pools.append({"name": name, "backend": pool.kind, "describe": pool.describe(),
                          "cow_clones": pool.capabilities.cow_clones, **u.as_dict(),
                          "error": None})
            vols += [dict(v.as_dict(), pool=name) for v in pool.list()]
        pools += [{"name": n, "backend": None, "describe": None, "cow_clones": False,
                   "total": 0, "used": 0, "free": 0, "provisioned": 0, "volumes": 0,
                   "error": why} for n, why in self.pool_errors.items()]
        return {"pools": pools, "volumes": sorted(vols, key=lambda v: v["name"])}

    def listing(self) -> defer.Deferred:
        """{"pools": [usage...], "volumes": [...]}, each volume with its export."""
        return self.run(self._listing).addCallback(self._annotate)

    def _annotate(self, listing: dict) -> dict:
        booting = self.booting()
        for v in listing["volumes"]:
            self.annotate(v, booting)
        return listing

    def annotate(self, v: dict, booting: Optional[dict] = None) -> dict:
        e = self.exports.get(v["name"])
        v["exported_to"] = e.mac if e is not None else None
        v["in_use"] = self.users(v["name"], booting)
        j = self.running.get(v["name"])
        v["job"] = None if j is None else {"id": j.id, "op": j.op, "done": j.done,
                                           "total": j.total}
        return v

    def refresh_usage(self) -> None:
        def read():
            return {n: p.usage() for n, p in list(self.pools.items())}

        def keep(u):
            self.usage.update(u)

        self.run(read).addCallbacks(keep, lambda f: log.warning(
            "storage: usage read failed: %s", f.getErrorMessage()))


def _chap(user, secret):
    return iscsi.Chap(user, secret) if user and secret else None
