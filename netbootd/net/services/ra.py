"""The IPv6 router-advertisement quench (net/ra.py) on each served interface
whose network wants it (`ipv6_ra_quench`, on by default; docs/networks-interfaces.md).

Which interfaces: a served interface attached to a network follows that
network's `ipv6_ra_quench`; one with no network gets it in full mode only
(netbootd is then the segment's DHCP server; in proxy mode another server
owns the segment and we say nothing).  An interface without an IPv6
link-local address (IPv6 off there) is skipped and logged.
"""
from __future__ import annotations

import logging
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service

from ...writes import event
from .. import interfaces
from ..metrics import protocol_families
from ..ra import RaResponder
from .core import Core

log = logging.getLogger("netbootd")


def quench_wanted(core: Core, iface: str) -> bool:
    plan = core.plan
    network = plan.attached.get(iface) if plan is not None else None
    if network is not None:
        for n in (plan.networks if plan is not None else ()):
            if n.name == network and hasattr(n, "ipv6_ra_quench"):
                return bool(n.ipv6_ra_quench)
        for nc in core.cfg.networks:
            if nc.name == network:
                return nc.ipv6_ra_quench
    return core.cfg.mode == "full"


class RaService(service.Service):
    name = "ra"

    def __init__(self, core: Core, learn: float = 1.0):
        self.core = core
        self.learn = learn
        self.counters: Counter = Counter()
        self.responders: dict[str, RaResponder] = {}
        self.skipped: dict[str, str] = {}          # iface -> why no quench there

    def startService(self) -> None:
        try:
            have = interfaces.links() if self.core.ifaces else {}
        except Exception as e:          # no netlink here: serve on, without the quench
            log.error("ra: cannot read the interfaces (%s): no RA quench", e)
            have = None
        for ifa in self.core.ifaces if have is not None else ():
            self.attach_interface(ifa, have)
        self.core.expose(metrics=lambda: metric_families(self))
        super().startService()

    def attach_interface(self, ifa, have: dict | None = None) -> None:
        """Start the quench on `ifa` (an IfAddr) if its network wants it."""
        name = ifa.name
        self.detach_interface(name)
        if not quench_wanted(self.core, name):
            self.skipped[name] = "off for this network"
            return
        link = (have if have is not None else interfaces.links()).get(name)
        if link is None or not link.ipv6_linklocal:
            self.skipped[name] = "no IPv6 link-local address"
            log.info("ra: %s has no IPv6 link-local address: no RA quench there", name)
            return
        mac = bytes.fromhex(link.mac.replace(":", "")) if link.mac else None
        try:
            self.responders[name] = RaResponder(self.core.reactor, name, link.index,
                                                link.ipv6_linklocal, mac, self.counters,
                                                on_event=self._event, learn=self.learn)
        except OSError as e:
            self.skipped[name] = f"cannot open the ICMPv6 socket: {e}"
            log.error("ra: %s: cannot open the ICMPv6 socket (%s): no RA quench there", name, e)
            return
        self.skipped.pop(name, None)
        log.info("ra: answering router solicitations on %s from %s (lifetime 0, no prefix)",
                 name, link.ipv6_linklocal)

    def detach_interface(self, name: str) -> None:
        r = self.responders.pop(name, None)
        if r is not None:
            r.close()
        self.skipped.pop(name, None)

    def state(self, name: str) -> str:
        """For `net show`: quench, router_seen, or why not."""
        r = self.responders.get(name)
        if r is not None:
            return f"router seen ({r.router_seen})" if r.router_seen else "quench"
        return self.skipped.get(name, "-")

    def _event(self, kind: str, **detail) -> None:
        c = self.core.committer
        if c is not None:
            c.submit([event(self.core.reactor.seconds(), None, kind, **detail)])

    def stopService(self):
        super().stopService()
        for name in list(self.responders):
            self.detach_interface(name)


def metric_families(svc: RaService):
    ignored = CounterMetricFamily("netbootd_ra_ignored", "Router solicitations not answered, "
                                  "by reason", labels=["reason"])
    return [*protocol_families("ra", svc.counters, {"ignored": ignored}),
            GaugeMetricFamily("netbootd_ra_interfaces", "Interfaces answering router "
                              "solicitations with the quench", value=len(svc.responders))]
