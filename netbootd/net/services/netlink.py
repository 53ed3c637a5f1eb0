"""Interfaces that come, change and go while the daemon runs (net/netlink.py).

After each settled burst of netlink changes, the served set is recomputed
(interfaces.served: the config's names and patterns, up, with IPv4) and
compared with the one being served; for each interface that appeared, lost
its address or changed it, the plan is recomputed (Core.replan, when the
core has it) and the DHCP (67, 4011), TFTP, DNS sockets and the RA quench
follow: opened on a new interface, closed on a removed one, moved on an
address change.  Each is an event (iface.up / iface.down / iface.changed).

Started after the protocol services (they open the start-up sockets) and
owns the RA service (net/services/ra.py), which follows the same changes.
"""
from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily
from twisted.application import service

from ...policy.plan import make_plan
from ...writes import event
from .. import interfaces
from ..netlink import NetlinkWatcher
from .core import Core
from .ra import RaService

log = logging.getLogger("netbootd")


def diff(old: list, new: list) -> tuple[list, list, list]:
    """(added, removed, changed) between two lists of IfAddr, by name."""
    was = {i.name: i for i in old}
    now = {i.name: i for i in new}
    added = [now[n] for n in now if n not in was]
    removed = [was[n] for n in was if n not in now]
    changed = [now[n] for n in now if n in was and now[n] != was[n]]
    return added, removed, changed


class NetlinkService(service.Service):
    name = "netlink"

    def __init__(self, core: Core, settle: float = 0.1, ra_learn: float = 1.0):
        self.core = core
        self.settle = settle
        self.ra = RaService(core, learn=ra_learn)
        self.watcher: NetlinkWatcher | None = None
        self.links: dict = {}
        self.changes = 0

    def _sibling(self, name: str):
        try:
            return self.parent.getServiceNamed(name) if self.parent is not None else None
        except KeyError:
            return None

    def startService(self) -> None:
        self.ra.startService()
        try:
            self.watcher = NetlinkWatcher(self.core.reactor, self.changed, settle=self.settle)
        except OSError as e:
            log.error("netlink: cannot follow interface changes (%s): served as at start", e)
        self.core.expose(metrics=self._metrics)
        http = self._sibling("http")
        if http is not None and getattr(http, "app", None) is not None:
            http.app.interfaces = self.rows       # GET /api/v1/net/interfaces
        super().startService()

    def stopService(self):
        super().stopService()
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        self.ra.stopService()

    # -- changes -------------------------------------------------------------------
    def changed(self, have: dict) -> None:
        self.links = have
        core = self.core
        new = interfaces.served(core.cfg.interfaces, have)
        added, removed, moved = diff(core.ifaces, new)
        if not (added or removed or moved):
            return
        replan = getattr(core, "replan", None)
        try:
            if replan is not None:
                replan(ifaces=new)          # sets core.ifaces and core.plan
            else:
                core.ifaces, core.plan = new, make_plan(core.cfg, new)
        except Exception as e:
            log.error("netlink: interfaces %s do not fit the networks (%s): still serving %s",
                      ",".join(i.name for i in new), e, ",".join(i.name for i in core.ifaces))
            return
        self.changes += 1
        services = [s for s in (self._sibling("dhcp"), self._sibling("tftp"),
                                self._sibling("dns"), self.ra)
                    if s is not None and hasattr(s, "attach_interface")]
        now = core.reactor.seconds()
        evs = []
        for ifa in removed:
            for s in services:
                self._safely(s.detach_interface, ifa.name)
            log.info("netlink: %s (%s) is gone: no longer served", ifa.name, ifa.ip)
            evs.append(event(now, None, "iface.down", iface=ifa.name, ip=ifa.ip))
        for ifa in moved + added:
            for s in services:
                self._safely(s.attach_interface, ifa)
            network = core.plan.attached.get(ifa.name) if core.plan else None
            log.info("netlink: serving %s %s/%d (network %s)", ifa.name, ifa.ip, ifa.prefix,
                     network)
            detail = dict(iface=ifa.name, ip=ifa.ip, prefix=ifa.prefix, network=network)
            evs.append(event(now, None, "iface.changed", **detail) if ifa in moved
                       else event(now, None, "iface.up", **detail))
        if core.committer is not None and evs:
            core.committer.submit(evs)

    @staticmethod
    def _safely(fn, arg) -> None:
        try:
            fn(arg)
        except Exception as e:
            log.error("netlink: %s(%s) failed: %s", fn.__qualname__,
                      getattr(arg, "name", arg), e)

    # -- readers -------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """Every interface: addresses, state, served, network, RA quench (net show)."""
        have = self.links or interfaces.links()
        self.links = have
        return interface_rows(have, self.core, self.ra)

    def _metrics(self):
        fam = CounterMetricFamily("netbootd_netlink", "Netlink notifications and interface "
                                  "changes applied", labels=["event"])
        counters = dict(self.watcher.counters) if self.watcher is not None else {}
        counters["applied"] = self.changes
        for key, n in sorted(counters.items()):
            fam.add_metric([key], n)
        return [fam]


def interface_rows(have: dict, core, ra=None) -> list[dict]:
    served = {i.name: i for i in core.ifaces}
    plan = core.plan
    out = []
    for row in interfaces.link_rows(have):
        ifa = served.get(row["name"])
        out.append({**row, "served": ifa is not None, "served_ip": ifa.ip if ifa else None,
                    "network": plan.attached.get(row["name"]) if (plan and ifa) else None,
                    "ra": ra.state(row["name"]) if (ra is not None and ifa) else None})
    return out
