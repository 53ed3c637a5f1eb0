"""The storage service (issue 13): opens the configured pools (storage.open_pool)
and the export backend (tgt with its own supervised tgtd, or an external one; lio
where configfs exists), rebuilds the exports from the database at start and after
a tgtd restart, stops tgtd at shutdown, and hands the run-time object
(net/storage.py ``Storage``) to the HTTP side and /metrics.  Off without
[storage] pools: the API then answers 503 "storage is not configured"."""
from __future__ import annotations

import logging
from typing import Optional

from twisted.application import service
from twisted.internet import task, threads

from ...policy.volumes import VolumeError
from ..storage import Storage
from .core import Core

log = logging.getLogger("netbootd")

USAGE_EVERY = 30.0             # seconds between pool usage refreshes (metrics, status)


class StorageService(service.Service):
    """Off without [storage] pools (the API answers 503 "storage is not configured")."""
    name = "storage"

    def __init__(self, core: Core, http=None):
        self.core, self.http = core, http
        self.storage: Optional[Storage] = None
        self.supervisor = None
        self._usage = None

    def startService(self) -> None:
        super().startService()
        cfg = self.core.cfg.storage
        if not cfg.enabled:
            return
        core = self.core
        self.storage = st = Storage(cfg, core.registry, core.committer.submit, core.reactor,
                                    portal_of(cfg, core))
        if self.http is not None and self.http.app is not None:
            self.http.app.storage = st
        core.expose(metrics=st.metric_families)
        st.load(core.store.load_exports())
        threads.deferToThread(self._open).addCallbacks(
            self._opened, lambda f: log.error("storage: start failed: %s", f.getErrorMessage()))

    def _open(self) -> None:
        """Blocking, in a thread: pools, then the export backend and its rebuild."""
        from ...storage import open_pool
        st, cfg = self.storage, self.storage.cfg
        for p in cfg.pools:
            opts = {"root": p.root, "reflink": None if p.reflink == "auto" else p.reflink} \
                if p.backend == "file" else {"vg": p.vg, "thin_pool": p.thin_pool,
                                             "devices": list(p.devices)}
            try:
                pool = open_pool(p.backend, p.name, p.thresholds(), **opts)
            except VolumeError as e:
                st.pool_errors[p.name] = str(e)
                log.error("storage: pool %r cannot open: %s", p.name, e)
                continue
            st.pools[p.name] = pool
            st.usage[p.name] = pool.usage()
            log.info("storage: pool %r: %s", p.name, pool.describe())
        st.exporter = None
        st.export_problem = self._exporter(cfg.iscsi)     # sets st.exporter
        if st.export_problem:
            log.error("storage: no exports: %s", st.export_problem)
        else:
            st.rebuild()

    def _exporter(self, ic) -> Optional[str]:
        """Start the export backend; returns why there is none (or None)."""
        from ...storage.exports import ExportError
        from ...storage.tgtd import TgtdError
        st = self.storage
        if ic.backend == "none":
            return "exports are off ([storage.iscsi] backend = \"none\")"
        if not st.portal:
            return "no portal address: set [storage.iscsi] portal (no served interface)"
        portal = f"{st.portal}:{ic.port}"
        try:
            if ic.backend == "lio":
                from ...storage.lio import LioBackend, detect
                detect()
                st.exporter = LioBackend(portal, ic.iqn_base)
                return None
            from ...storage.tgt import TgtBackend
            from ...storage.tgtd import ExternalTgtd, TgtdSupervisor
            if ic.tgtd == "managed":
                sup = TgtdSupervisor(ic.tgtd_control, portal, on_restart=st.rebuild)
            else:
                sup = ExternalTgtd(ic.tgtd_control)
            sup.start()
            self.supervisor = sup
            st.exporter = TgtBackend(ic.tgtd_control, portal, ic.iqn_base)
        except (ExportError, TgtdError, OSError) as e:
            return str(e).splitlines()[0] if str(e) else type(e).__name__
        return None

    def _opened(self, _) -> None:
        st = self.storage
        st.ready = True
        self._usage = task.LoopingCall(st.refresh_usage)
        self._usage.clock = self.core.reactor
        self._usage.start(USAGE_EVERY, now=False)
        log.info("storage: %d pools, %d exports (%s)", len(st.pools), len(st.exports),
                 st.export_problem or f"{st.exporter.kind} on {st.portal}:{st.port}")

    def stopService(self):
        super().stopService()
        if self._usage is not None and self._usage.running:
            self._usage.stop()
        sup, self.supervisor = self.supervisor, None
        if sup is not None:
            return threads.deferToThread(sup.stop).addErrback(
                lambda f: log.error("storage: tgtd stop failed: %s", f.getErrorMessage()))
        return None


def portal_of(cfg, core) -> Optional[str]:
    """[storage.iscsi] portal, else the address of the first served interface."""
    if cfg.iscsi.portal:
        return cfg.iscsi.portal
    attached = core.plan.attached if core.plan is not None else {}
    served = [i.ip for i in core.ifaces if attached.get(i.name)]
    return (served or [i.ip for i in core.ifaces] or [None])[0]


__all__ = ["StorageService", "portal_of"]
