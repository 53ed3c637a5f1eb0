"""Authoritative DNS for the hosts netbootd serves (policy/zone.py),
following every committed lease/host write (Core.observe)."""
from __future__ import annotations

import ipaddress
import logging

from twisted.application import service
from twisted.internet.error import CannotListenError

from ...policy.zone import Zone
from ..dns import DnsServer
from .core import Core

log = logging.getLogger("netbootd")


class DnsService(service.Service):
    """Started after DHCP: the zone loads the lease table's leases."""
    name = "dns"

    def __init__(self, core: Core):
        self.core = core
        self.server = None
        self.by_iface: dict = {}        # interface name -> (UDP endpoint, TCP port)

    def startService(self) -> None:
        core, dc = self.core, self.core.cfg.dns
        if not dc.enabled:
            return super().startService()
        nets = core.plan.networks
        ifnets = [ipaddress.IPv4Network(f"{i.ip}/{i.prefix}", strict=False) for i in core.ifaces]
        ips = [i.ip for i in core.ifaces] if dc.listen == "interfaces" else [dc.listen]
        now = core.reactor.seconds()
        zone = Zone(dc.domain, [n.subnet for n in nets], ips, ttl=dc.ttl, serial=int(now),
                    reservations=[r for n in nets for r in n.reservations])
        zone.load(core.leases.by_addr.values() if core.leases else (),
                  core.registry.hosts.values(), now)
        core.observe(lambda writes: zone.apply(writes, core.reactor.seconds()))
        self.server = DnsServer(core.reactor, zone,
                                served_subnets={*ifnets, *(n.subnet for n in nets)},
                                forwarders=dc.forwarders, rate_limit=dc.rate_limit_qps)
        core.follow_plan(self.follow_plan)
        if dc.listen == "interfaces":
            for ifa in core.ifaces:
                self.attach_interface(ifa)
        else:
            self._listen(dc.listen)
        log.info("dns: %s on %s port %d, %d names", dc.domain, ",".join(ips), dc.port,
                 len(zone.names()))
        super().startService()

    def follow_plan(self, plan) -> None:
        """A network or interface changed (Core.replan): the reverse zones,
        the reservations' names and the subnets allowed to forward follow."""
        nets, core = plan.networks, self.core
        self.server.zone.set_networks([n.subnet for n in nets],
                                      [r for n in nets for r in n.reservations])
        ifnets = [ipaddress.IPv4Network(f"{i.ip}/{i.prefix}", strict=False) for i in core.ifaces]
        self.server.engine.set_served({*ifnets, *(n.subnet for n in nets)})

    def _listen(self, ip: str):
        try:
            return self.server.listen(self.core.cfg.dns.port, ip)
        except (OSError, CannotListenError) as e:
            log.error("dns: cannot listen on %s:%d (%s); no DNS there", ip,
                      self.core.cfg.dns.port, e)
            return None

    def attach_interface(self, ifa) -> None:
        """UDP+TCP on ifa's address when DNS listens on the interfaces (moved
        on an address change); the zone follows the plan (follow_plan)."""
        if self.server is None or self.core.cfg.dns.listen != "interfaces":
            return
        self.detach_interface(ifa.name)
        got = self._listen(ifa.ip)
        if got is not None:
            self.by_iface[ifa.name] = got

    def detach_interface(self, name: str) -> None:
        got = self.by_iface.pop(name, None)
        if got is None:
            return
        ep, tcp = got
        ep.close()
        self.server.udp.remove(ep)
        self.server.tcp.remove(tcp)
        tcp.stopListening()

    def stopService(self):
        super().stopService()
        if self.server is not None:
            log.info("dns stopped: %s", dict(sorted(self.server.counters.items())))
            return self.server.stop()
