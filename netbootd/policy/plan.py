"""The serving plan: the frozen Config (+ the interface facts found at start)
-> the networks to serve, the network each interface is attached to, and the
boot config.  Pure and computed once, at start-up (Core), so DHCP, DNS and
the status page read one parse of the ranges instead of each its own.

Interface facts are anything with ``name``, ``ip`` and ``prefix``
(net/interfaces.IfAddr at run time): this module never asks the kernel.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Protocol

from ..config import BootConfig, Config, NetworkConfig
from ..model import Reservation, ip2int, normalize_mac
from .leases import Network, whole_subnet


class IfaceFact(Protocol):
    name: str
    ip: str
    prefix: int


@dataclass(frozen=True)
class Plan:
    networks: tuple[Network, ...]
    attached: dict[str, str | None]      # interface name -> network name (None: not served)
    boot: BootConfig


def parse_ranges(subnet: ipaddress.IPv4Network,
                 ranges: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """"lo-hi" strings (config-validated) -> inclusive int pairs; none given
    means every host address of the subnet."""
    out = []
    for r in ranges:
        lo, _, hi = r.partition("-")
        out.append((ip2int(lo.strip()), ip2int(hi.strip())))
    if not out:
        out.append((int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1))
    return tuple(out)


def network_from_config(nc: NetworkConfig, default_lease: int,
                        server_ips: Iterable[str]) -> Network:
    """One [[networks]] entry.  Never handed out: network and broadcast, our
    own addresses in the subnet and the router.  A relay's address is excluded
    by listing it (relays), never because a packet named it."""
    subnet = ipaddress.IPv4Network(nc.subnet)
    excluded = {int(subnet.network_address), int(subnet.broadcast_address)}
    excluded |= {ip2int(ip) for ip in server_ips if ipaddress.IPv4Address(ip) in subnet}
    if nc.router:
        excluded.add(ip2int(nc.router))
    return Network(
        name=nc.name, subnet=subnet, ranges=parse_ranges(subnet, nc.ranges), router=nc.router,
        dns=nc.dns, domain=nc.domain, lease_time=nc.lease_time or default_lease,
        reservations=tuple(Reservation(normalize_mac(r.mac), ip2int(r.ip), r.hostname)
                           for r in nc.reservations),
        interface=nc.interface, excluded=frozenset(excluded),
        relays=frozenset(ip2int(r) for r in nc.relays))


def plan_networks(cfg: Config, ifaces: Iterable[IfaceFact]) -> tuple[list[Network],
                                                                     dict[str, str | None]]:
    """Networks to serve, and which network each interface is attached to: the
    one naming the interface, else the first unbound one containing its
    address.  Full mode with no network for an interface serves that
    interface's whole subnet (every address but network, broadcast and our own)."""
    ifaces = list(ifaces)
    server_ips = [i.ip for i in ifaces]
    nets = [network_from_config(nc, cfg.dhcp.lease_time, server_ips) for nc in cfg.networks]
    attached: dict[str, str | None] = {}
    for ifa in ifaces:
        addr = ip2int(ifa.ip)
        match = next((n for n in nets if n.interface == ifa.name), None) or \
            next((n for n in nets if n.interface is None and n.contains(addr)), None)
        if match is None and cfg.mode == "full":
            match = whole_subnet(ifa.name, ifa.ip, ifa.prefix, lease_time=cfg.dhcp.lease_time,
                                 interface=ifa.name)
            nets.append(match)
        attached[ifa.name] = match.name if match else None
    return nets, attached


def make_plan(cfg: Config, ifaces: Iterable[IfaceFact]) -> Plan:
    nets, attached = plan_networks(cfg, ifaces)
    return Plan(tuple(nets), attached, cfg.boot)
