"""Which network a DHCP packet is served from (the engine's network selection).
Pure.

A ``NetworkSet`` is immutable once built; a live change (a network created,
changed or removed, an interface attached elsewhere) builds a new one and the
engine swaps it in with one assignment on the reactor, so a packet sees
either the old set or the new one, never half of each.
"""
from __future__ import annotations

from dataclasses import replace

from ..config import BootConfig
from .leases import Network

_ZERO = b"\0\0\0\0"


class NetworkSet:
    def __init__(self, networks: list[Network], attached: dict[str, str | None] | None = None):
        self.networks: dict[str, Network] = {n.name: n for n in networks}
        # giaddr -> the network it relays for (the first that lists it).
        self.relays: dict[int, Network] = {}
        for n in networks:
            for r in n.relays:
                self.relays.setdefault(r, n)
        # The same keyed by giaddr as it is on the wire (per packet: no int).
        self.relay_of: dict[bytes, Network] = {r.to_bytes(4, "big"): n
                                               for r, n in self.relays.items()}
        # interface -> network name; None: the Ingress's own (set at start).
        self.attached = attached

    def select(self, pkt, ing) -> Network | None:
        """A relayed packet: the network its (trusted) relay serves.  A client
        with an address on an interface with no network of its own: the
        network holding that address.  Else the interface's network."""
        if pkt.giaddr != _ZERO:
            return self.relay_of.get(pkt.giaddr)
        name = ing.network if self.attached is None else self.attached.get(ing.iface,
                                                                            ing.network)
        if pkt.ciaddr != _ZERO and name is None:
            ci = int.from_bytes(pkt.ciaddr, "big")
            for n in self.networks.values():
                if n.contains(ci):
                    return n
        return self.networks.get(name) if name else None


class BootByNetwork:
    """The boot config a network's clients get: the daemon's, with the
    network's boot server as the TFTP server when it names one (cached)."""

    def __init__(self, boot: BootConfig):
        self.boot = boot
        self._cache: dict[str, BootConfig] = {}

    def of(self, net: Network | None) -> BootConfig:
        if net is None or not net.boot_server:
            return self.boot
        cfg = self._cache.get(net.boot_server)
        if cfg is None:
            cfg = self._cache[net.boot_server] = replace(self.boot, tftp_server=net.boot_server)
        return cfg
