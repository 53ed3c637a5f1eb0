"""The one wiring module: config + reactor -> MultiService.

Everything that binds a socket or owns a thread is built here and started and
stopped by the service tree, so SIGTERM gives a clean shutdown: listeners
close first, then pending lease writes are committed, then the store closes.
One module per service beside this one; each registers what it exposes
(status rows, transfers, metric families) with the core as it starts.
"""
from __future__ import annotations

from twisted.application import service

from ...config import Config
from ...runtime.gcpace import GcPacer
from ...store import open_store
from ..hooks import Hooks
from ..metrics import Metrics, labelled_counter
from .core import Core
from .dhcp import DhcpService
from .dns import DnsService
from .gc import GcService
from .http import HttpService
from .netlink import NetlinkService
from .ready import Ready
from .storage import StorageService
from .tftp import TftpService


def makeService(cfg: Config, reactor) -> service.MultiService:
    top = service.MultiService()
    core = Core(cfg, reactor, open_store(cfg.state_dir, sync=cfg.dhcp.sync))
    core.setServiceParent(top)                  # first in, last out: commits pending writes
    DhcpService(core).setServiceParent(top)
    DnsService(core).setServiceParent(top)      # after DHCP: it loads the lease table
    http = HttpService(core)
    http.setServiceParent(top)
    TftpService(core).setServiceParent(top)
    NetlinkService(core).setServiceParent(top)  # after the sockets it follows; runs the RA quench
    StorageService(core, http).setServiceParent(top)    # off without [storage] pools
    hooks = Hooks(reactor, cfg.hooks)
    if hooks.enabled:
        hooks.setServiceParent(top)
        core.observe(hooks.observe)
        core.expose(metrics=lambda: [labelled_counter(
            "netbootd_hooks", "Event hook deliveries (webhook, mail)", "name", hooks.counters)])
    if cfg.metrics.enabled:
        http.metrics = Metrics(core.metric_families, boot_timeout=cfg.metrics.boot_timeout)
        core.observe(http.metrics.observe)
    GcService(core, GcPacer(reactor)).setServiceParent(top)
    Ready(cfg).setServiceParent(top)
    return top


__all__ = ["Core", "DhcpService", "DnsService", "GcService", "HttpService", "NetlinkService",
           "Ready",
           "StorageService", "TftpService", "makeService"]
