"""Hosts known to netbootd, in memory, with their writes for the store.

The registry answers "is this MAC known?" on the DHCP hot path from a dict;
every change it makes is returned as a write for the store's group commit.
"""
from __future__ import annotations

import json

from .model import KNOWN_STATES, Host, HostState


def event(ts: float, mac: str | None, kind: str, **detail) -> tuple:
    """A store write for one event (`detail` is JSON; host data stays data)."""
    return ("event", (ts, mac, kind, json.dumps(detail, separators=(",", ":"),
                                                sort_keys=True, default=str)))


def event_json(ts: float, mac: str | None, kind: str, detail: str) -> tuple:
    """An event whose detail the caller already serialized as JSON (hot path)."""
    return ("event", (ts, mac, kind, detail))


class Registry:
    def __init__(self, hosts: list[Host] | None = None):
        self.hosts: dict[str, Host] = {h.mac: h for h in hosts or ()}

    def get(self, mac: str) -> Host | None:
        return self.hosts.get(mac)

    def is_known(self, mac: str) -> bool:
        h = self.hosts.get(mac)
        return h is not None and h.state in KNOWN_STATES

    def observe(self, mac: str, now: float, iface: str, arch: int | None,
                vendor_class: str | None, uuid: str | None, writes: list) -> Host:
        """Record a DHCP contact.  A MAC never seen before becomes a
        `discovered` host (its first contact is an event); a known host's
        facts are refreshed when they change."""
        h = self.hosts.get(mac)
        if h is None:
            h = Host(mac, HostState.DISCOVERED, arch, vendor_class, uuid, None, iface, now, now)
            self.hosts[mac] = h
            writes.append(("host", h))
            writes.append(event(now, mac, "host.discovered", arch=arch, interface=iface,
                                vendor_class=vendor_class, uuid=uuid))
            return h
        if (h.arch, h.vendor_class, h.uuid, h.interface) == (arch, vendor_class, uuid, iface) \
                and now - h.last_seen <= 60:
            return h     # the common case: nothing new
        changed = False
        for attr, val in (("arch", arch), ("vendor_class", vendor_class), ("uuid", uuid),
                          ("interface", iface)):
            if val is not None and getattr(h, attr) != val:
                setattr(h, attr, val)
                changed = True
        # last_seen is refreshed in the store at most once a minute per host,
        # so a chatty client does not cost a write per packet.
        if changed or now - h.last_seen > 60:
            h.last_seen = now
            writes.append(("host", h))
        return h
