"""The serving plan: the networks (policy/vnet.py Vnets: stored, seeded from
the config's [[networks]]) x the interface facts -> the lease table's networks,
the network each interface is attached to, and the boot config.  Pure.

Computed at start-up and again on every change (Core.replan: a network
created, changed or deleted; an interface that appeared or went away), so
DHCP, DNS and the status page read one parse of the ranges.

Interface facts are anything with ``name``, ``ip`` and ``prefix``
(net/interfaces.IfAddr at run time): this module never asks the kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from ..config import BootConfig, Config
from ..model import ip2int
from .leases import Network, whole_subnet
from .vnet import Vnet, check_set, from_config, to_network


class IfaceFact(Protocol):
    name: str
    ip: str
    prefix: int


@dataclass(frozen=True)
class Plan:
    networks: tuple[Network, ...]
    attached: dict[str, str | None]      # interface name -> network name (None: not served)
    boot: BootConfig
    vnets: tuple[Vnet, ...] = ()         # the definitions the networks came from


def plan_networks(vnets: Iterable[Vnet], ifaces: Iterable[IfaceFact], mode: str,
                  lease_time: int) -> tuple[list[Network], dict[str, str | None]]:
    """Networks to serve, and which network each interface is attached to: the
    one naming the interface, else the first unbound one containing its
    address.  Full mode with no network at all (a zero-config start) serves
    each interface's whole subnet (every address but network, broadcast and
    our own); once any network exists, an interface none names or contains
    serves nothing (the engine drops its requests with a dhcp.no_network event)."""
    ifaces = list(ifaces)
    vnets = list(vnets)
    check_set(vnets)
    server_ips = [i.ip for i in ifaces]
    nets = [to_network(v, server_ips, lease_time) for v in vnets]
    attached: dict[str, str | None] = {}
    for ifa in ifaces:
        addr = ip2int(ifa.ip)
        match = next((n for n in nets if n.interface == ifa.name), None) or \
            next((n for n in nets if n.interface is None and n.contains(addr)), None)
        if match is None and mode == "full" and not vnets:
            match = whole_subnet(ifa.name, ifa.ip, ifa.prefix, lease_time=lease_time,
                                 interface=ifa.name)
            nets.append(match)
        attached[ifa.name] = match.name if match else None
    return nets, attached


def make_plan(cfg: Config, ifaces: Iterable[IfaceFact],
              vnets: Iterable[Vnet] | None = None) -> Plan:
    """The plan for these networks (default: the config's [[networks]])."""
    vnets = tuple(from_config(nc) for nc in cfg.networks) if vnets is None else tuple(vnets)
    nets, attached = plan_networks(vnets, ifaces, cfg.mode, cfg.dhcp.lease_time)
    return Plan(tuple(nets), attached, cfg.boot, vnets)
