"""DHCP on every served interface (ports 67 and 4011): the lease table,
the engine and one interface-bound socket per interface and port."""
from __future__ import annotations

import logging
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service

from ...codec.dhcp_options import PXE_PORT, SERVER_PORT
from ...policy.dhcp_engine import DhcpEngine, EngineSettings, Ingress
from ...policy.leases import LeaseTable, int2ip
from .. import interfaces
from ..dhcp import DhcpProtocol
from ..metrics import protocol_families
from ..probe import IcmpProber
from ..udp import UdpEndpoint
from .core import Core

log = logging.getLogger("netbootd")

# The DHCP message types (RFC 2132 §9.6) counted as rx.<TYPE> / tx.<TYPE>.
DHCP_TYPES = frozenset(("DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE",
                        "INFORM", "other"))

# Socket buffers of the DHCP sockets.  A boot storm arrives in bursts, and
# the reactor pauses now and then (a group commit's hand-off, a paced GC
# step, another process on the core): with 256 KiB (udp_socket's default)
# short pauses were drops (bench/dhcp: server-rcvbuf-drops at 5,600 DORA/s
# with the CPU not saturated).  1 MiB (Linux doubles it: ~1,500 requests,
# ~100 ms at 8,000 DORA/s) rides out such pauses and still keeps a queued
# request's wait far below a client's retransmission time when the server is
# behind (a deeper queue then only makes every answer later).  It does not
# raise the sustained rate.  Linux caps it at net.core.rmem_max / wmem_max.
DHCP_SOCKET_BUFFER = 1 << 20


class DhcpService(service.Service):
    name = "dhcp"

    def __init__(self, core: Core):
        self.core = core
        self.cfg = core.cfg
        self.reactor = core.reactor
        self.counters: Counter = Counter()
        self.ports = []
        self.prober = None
        self.engine = None

    def startService(self) -> None:
        cfg, core = self.cfg, self.core
        ifaces, plan = core.ifaces, core.plan
        leases = LeaseTable(list(plan.networks), cfg.dhcp.rate_limit.unknown_share)
        stored = core.store.load_leases()
        for lease in stored:
            leases.load(lease)
        core.leases = leases
        rl = cfg.dhcp.rate_limit
        settings = EngineSettings(cfg.mode, cfg.dhcp.lease_time, cfg.dhcp.offer_hold,
                                  cfg.dhcp.decline_probation, cfg.dhcp.authoritative,
                                  cfg.dhcp.probe, rl.per_mac_pps, rl.new_clients_per_interface_pps)
        self.engine = DhcpEngine(settings, list(plan.networks), leases, core.registry, plan.boot,
                                 self.counters)
        if cfg.dhcp.probe and cfg.mode == "full":
            self.prober = IcmpProber(self.reactor, cfg.dhcp.probe_timeout_ms / 1000.0)
        for ifa in ifaces:
            for port in (SERVER_PORT, PXE_PORT):
                ing = Ingress(ifa.name, ifa.ip, plan.attached[ifa.name], port)
                proto = DhcpProtocol(self.engine, ing, core.committer, self.reactor, self.prober)
                sock = interfaces.udp_socket(ifa.name, port, bufsize=DHCP_SOCKET_BUFFER)
                self.ports.append(UdpEndpoint(self.reactor, sock, proto))
        for n in plan.networks:
            log.info("dhcp: network %s %s pool=%d lease=%ss", n.name, n.subnet, n.pool_size,
                     n.lease_time)
        log.info("dhcp: %s mode on %s; loaded %d leases, %d hosts", cfg.mode,
                 ",".join(f"{i.name}={i.ip}/{i.prefix}" for i in ifaces), len(stored),
                 len(core.registry.hosts))
        core.expose(pools=lambda: pool_rows(leases, self.reactor.seconds(), core.plan),
                    metrics=lambda: [*metric_families(self.counters),
                                     *pool_families(leases, self.reactor.seconds())])
        core.follow_plan(self.apply_plan)
        super().startService()

    def apply_plan(self, plan) -> None:
        """A new plan (Core.replan): the lease table and the engine serve its
        networks from the next packet on (both assignments on the reactor, no
        packet in between).  Leases are kept (LeaseTable.set_networks says how)."""
        if self.engine is None:
            return
        self.core.leases.set_networks(list(plan.networks))
        self.engine.set_networks(list(plan.networks), dict(plan.attached))
        self.counters["plan.applied"] += 1
        log.info("dhcp: serving %s", ", ".join(f"{n.name} {n.subnet}" for n in plan.networks)
                 or "no network")

    def stopService(self):
        super().stopService()
        for p in self.ports:
            p.close()
            # Replies still waiting for a commit (drained when the core stops,
            # after this) are not sent on a closed socket.
            p.handler.transport = None
        self.ports = []
        if self.prober is not None:
            self.prober.close()
        log.info("dhcp stopped: %s", dict(sorted(self.counters.items())))

    # -- interfaces that come and go (net/services/netlink.py) -------------------
    def attach_interface(self, ifa) -> None:
        """Open ifa's sockets (ports 67 and 4011, bound to it), attached to
        the network the current plan gives it; sockets it had are closed first
        (an address change)."""
        self.detach_interface(ifa.name)
        network = self.core.plan.attached.get(ifa.name) if self.core.plan else None
        for port in (SERVER_PORT, PXE_PORT):
            proto = DhcpProtocol(self.engine, Ingress(ifa.name, ifa.ip, network, port),
                                 self.core.committer, self.reactor, self.prober)
            sock = interfaces.udp_socket(ifa.name, port, bufsize=DHCP_SOCKET_BUFFER)
            self.ports.append(UdpEndpoint(self.reactor, sock, proto))

    def detach_interface(self, name: str) -> None:
        """Close the sockets of interface `name` (gone, or lost its address)."""
        keep = []
        for p in self.ports:
            if p.handler.ingress.iface == name:
                p.close()
                p.handler.transport = None
            else:
                keep.append(p)
        self.ports = keep


def pool_rows(leases: LeaseTable, now: float, plan=None) -> list[dict]:
    """Every served network with its pool usage (API / status page): one
    pass over the leases for all networks (usage_all)."""
    out = []
    usage = leases.usage_all(now)
    attached: dict[str, list[str]] = {}
    for iface, name in (plan.attached.items() if plan is not None else ()):
        if name is not None:
            attached.setdefault(name, []).append(iface)
    for name, st in leases.nets.items():
        n = st.network
        used, size = usage[name]
        out.append({"name": name, "subnet": str(n.subnet),
                    "ranges": [f"{int2ip(lo)}-{int2ip(hi)}" for lo, hi in n.ranges],
                    "router": n.router, "dns": list(n.dns), "domain": n.domain,
                    "lease_time": n.lease_time, "interface": n.interface,
                    "size": size, "used": used, "type": n.kind, "policy": n.policy,
                    "relays": sorted(int2ip(r) for r in n.relays),
                    "attached": sorted(attached.get(name, ()))})
    return out


def metric_families(counters: Counter):
    """The engine's counters: rx/tx.<message type>, drop.*, ignored.*, the rest."""
    ignored = CounterMetricFamily(
        "netbootd_dhcp_ignored", "DHCP packets deliberately not answered, by reason",
        labels=["reason"])
    return protocol_families("dhcp", counters, {"ignored": ignored}, packet_types=DHCP_TYPES)


def pool_families(leases: LeaseTable, now: float):
    used = GaugeMetricFamily("netbootd_pool_used", "Addresses held (offered, leased, "
                             "declined) per network", labels=["network"])
    size = GaugeMetricFamily("netbootd_pool_size", "Pool addresses per network",
                             labels=["network"])
    usage = leases.usage_all(now)
    for name in sorted(leases.nets):
        u, s = usage[name]
        used.add_metric([name], u)
        size.add_metric([name], s)
    return [used, size]
