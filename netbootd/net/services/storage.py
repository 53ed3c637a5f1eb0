"""The storage service (issue 13): opens the configured pools (storage.open_pool)
and the export backend (tgt with its own supervised tgtd, or an external one; lio
where configfs exists), rebuilds the exports from the database at start and after
a tgtd restart, stops tgtd at shutdown, and hands the run-time object
(net/storage.py ``Storage``) to the HTTP side and /metrics.  Off without
[storage] pools: the API then answers 503 "storage is not configured"."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from typing import Optional

from prometheus_client.core import GaugeMetricFamily
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
        core.expose(metrics=lambda: metric_families(st))
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
                take_over_orphan(sup)
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
        self._hold_restarted_captures()
        self._usage = task.LoopingCall(self._periodic)
        self._usage.clock = self.core.reactor
        self._usage.start(USAGE_EVERY, now=False)
        log.info("storage: %d pools, %d exports (%s)", len(st.pools), len(st.exports),
                 st.export_problem or f"{st.exporter.kind} on {st.portal}:{st.port}")

    def _periodic(self) -> None:
        self.storage.refresh_usage()
        self._release_holds()

    def _hold_restarted_captures(self) -> None:
        """Captures the last stop cut short resume when their agent calls back
        (net/capture.py _restore); until then nobody may delete, export or
        recreate their volume, or the resumed agent would write into another."""
        now = self.core.reactor.seconds()
        self.holds: dict = {}
        for h in self.core.registry.hosts.values():
            act = h.action or {}
            if act.get("action") == "capture" and act.get("volume") and act.get("job"):
                vol = act["volume"]
                self.storage.busy.setdefault(
                    vol, f"host {h.mac}'s capture resumes into it when its agent calls")
                self.holds[vol] = (h.mac, act["job"], now)

    def _release_holds(self) -> None:
        """A hold ends when its capture resumed (running), its host's action was
        replaced, or its agent stayed silent for capture.IDLE."""
        from ..capture import IDLE
        st, now = self.storage, self.core.reactor.seconds()
        for vol, (mac, job, since) in list(getattr(self, "holds", {}).items()):
            h = self.core.registry.hosts.get(mac)
            act = (h.action or {}) if h is not None else {}
            if vol in st.running:
                del self.holds[vol]
            elif act.get("job") != job or now - since > IDLE:
                del self.holds[vol]
                if "resumes into it" in st.busy.get(vol, ""):
                    del st.busy[vol]

    def stopService(self):
        super().stopService()
        if self._usage is not None and self._usage.running:
            self._usage.stop()
        sup, self.supervisor = self.supervisor, None
        if sup is not None:
            return threads.deferToThread(sup.stop).addErrback(
                lambda f: log.error("storage: tgtd stop failed: %s", f.getErrorMessage()))
        return None


def metric_families(st):
    """Pool space and volumes (from the cached usage), exports, running jobs."""
    fam = GaugeMetricFamily("netbootd_storage_pool_bytes", "Volume pool space in bytes "
                            "(total, used, free, provisioned: the sum of virtual sizes)",
                            labels=["pool", "kind"])
    vols = GaugeMetricFamily("netbootd_storage_volumes", "Volumes and snapshots per pool",
                             labels=["pool"])
    for name, u in sorted(st.usage.items()):
        for kind in ("total", "used", "free", "provisioned"):
            fam.add_metric([name, kind], getattr(u, kind))
        vols.add_metric([name], u.volumes)
    running = sum(1 for j in st.jobs.values() if j.state == "running")
    return [fam, vols,
            GaugeMetricFamily("netbootd_storage_exports", "iSCSI exports (volume to host)",
                              value=len(st.exports)),
            GaugeMetricFamily("netbootd_storage_exports_available", "1 when the export "
                              "backend serves, 0 when it cannot",
                              value=0 if st.exporter is None else 1),
            GaugeMetricFamily("netbootd_storage_jobs_running", "Storage jobs under way",
                              value=running)]


def orphan_tgtd(control: int, proc: str = "/proc") -> Optional[int]:
    """The pid of a ``tgtd -f -C <control>`` whose netbootd is gone (its parent is
    no netbootd: it was reparented after a SIGKILL or a crash), else None."""
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv or os.path.basename(argv[0]) != b"tgtd" \
                    or b"-C" not in argv or argv[argv.index(b"-C") + 1:][:1] != [b"%d" % control]:
                continue
            with open(f"{proc}/{pid}/stat", "rb") as f:
                ppid = f.read().rsplit(b")", 1)[1].split()[1].decode()
            with open(f"{proc}/{ppid}/cmdline", "rb") as f:
                parent = f.read()
        except (OSError, IndexError):
            continue
        if b"netbootd" not in parent:
            return int(pid)
    return None


def take_over_orphan(sup, wait: float = 10.0) -> None:
    """A tgtd on our control number left by a netbootd that died (SIGKILL, crash) is
    ours: stopped (offline, targets deleted, system deleted; SIGKILL after ``wait``)
    so the supervisor starts and watches its own; the exports are rebuilt next.
    A tgtd whose netbootd still runs is left alone (start then refuses)."""
    from ...storage.tgtd import answers
    pid = orphan_tgtd(sup.control)
    if pid is None or not answers(sup.tgtadm, sup.control):
        return
    log.warning("storage: tgtd -C %d (pid %d) was left by a netbootd that is gone: "
                "stopping it to start a supervised one (logged-in hosts reconnect)",
                sup.control, pid)
    deadline = time.monotonic() + wait
    try:
        sup._offline_and_empty(deadline)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("storage: tgtd -C %d did not stop cleanly: %s", sup.control, e)
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    if os.path.exists(f"/proc/{pid}"):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def portal_of(cfg, core) -> Optional[str]:
    """[storage.iscsi] portal, else the address of the first served interface."""
    if cfg.iscsi.portal:
        return cfg.iscsi.portal
    attached = core.plan.attached if core.plan is not None else {}
    served = [i.ip for i in core.ifaces if attached.get(i.name)]
    return (served or [i.ip for i in core.ifaces] or [None])[0]


__all__ = ["StorageService", "metric_families", "portal_of"]
