"""Hosts known to netbootd, in memory, with their writes for the store.

The registry answers "is this MAC known?" on the DHCP hot path from a dict;
every change it makes is returned as a write for the store's group commit.
"""
from __future__ import annotations

import json

from .model import KNOWN_STATES, Host, HostState


# One encoder for every event: json.dumps() with options builds a new one per call.
_EVENT_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str).encode


def event(ts: float, mac: str | None, kind: str, **detail) -> tuple:
    """A store write for one event (`detail` is JSON; host data stays data)."""
    return ("event", (ts, mac, kind, _EVENT_JSON(detail)))


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

    # -- lifecycle (boot path, agent, admin) -------------------------------
    def _get_or_new(self, mac: str, now: float, writes: list) -> Host:
        h = self.hosts.get(mac)
        if h is None:
            h = Host(mac, HostState.DISCOVERED, first_seen=now, last_seen=now)
            self.hosts[mac] = h
            writes.append(event(now, mac, "host.discovered", via="http"))
        return h

    def _set_state(self, h: Host, state: HostState, now: float, writes: list,
                   why: str) -> None:
        if h.state != state:
            writes.append(event(now, h.mac, "host.state", old=h.state.value, new=state.value,
                                why=why))
            h.state = state

    def script_served(self, mac: str, ip: str | None, profile: str, nbytes: int,
                      now: float) -> list:
        """A boot script went out: the host's timeline gets the HTTP step; an
        assigned host is now booting its assignment."""
        writes: list = []
        h = self._get_or_new(mac, now, writes)
        if ip:
            h.ip = ip
        h.last_seen = now
        if h.state == HostState.ASSIGNED and profile == h.profile:
            self._set_state(h, HostState.BOOTING, now, writes, "boot script served")
        writes.append(("host", h))
        writes.append(event(now, mac, "http.script", profile=profile, bytes=nbytes, ip=ip))
        return writes

    def agent_register(self, mac: str, ip: str | None, uuid: str | None,
                       now: float) -> tuple[Host, list]:
        """The agent (or a booted OS) called back.  discovered -> registered;
        booting -> active (the assignment came up)."""
        writes: list = []
        h = self._get_or_new(mac, now, writes)
        if ip:
            h.ip = ip
        if uuid:
            h.uuid = uuid
        h.last_seen = now
        if h.state in (HostState.DISCOVERED, HostState.ERROR):
            self._set_state(h, HostState.REGISTERED, now, writes, "agent registered")
        elif h.state == HostState.BOOTING:
            self._set_state(h, HostState.ACTIVE, now, writes, "booted system called back")
        writes.append(("host", h))
        writes.append(event(now, mac, "agent.register", ip=ip, uuid=uuid))
        return h, writes

    def agent_next(self, mac: str, now: float) -> tuple[str, list]:
        """What the waiting agent should do: 'wait' as an idle resource, or
        'reboot' into its assignment."""
        writes: list = []
        h = self.hosts.get(mac)
        if h is None:
            return "register", writes
        if h.state == HostState.REGISTERED:
            self._set_state(h, HostState.IDLE, now, writes, "agent waiting for assignment")
            writes.append(("host", h))
        if h.state == HostState.ASSIGNED:
            return "reboot", writes
        return "wait", writes

    def assign(self, mac: str, profile: str, args: dict, now: float) -> tuple[Host, list]:
        """Admin assignment (args already validated by policy.boot)."""
        writes: list = []
        h = self._get_or_new(mac, now, writes)
        h.profile, h.profile_args = profile, dict(args)
        self._set_state(h, HostState.ASSIGNED, now, writes, f"assigned {profile}")
        writes.append(("host", h))
        writes.append(event(now, mac, "host.assign", profile=profile, args=args))
        return h, writes

    def approve(self, mac: str, now: float) -> tuple[Host | None, list]:
        """Admin approval of a discovered host (as if its agent registered)."""
        writes: list = []
        h = self.hosts.get(mac)
        if h is None or h.state not in (HostState.DISCOVERED, HostState.ERROR):
            return h, writes
        self._set_state(h, HostState.REGISTERED, now, writes, "approved by admin")
        writes.append(("host", h))
        return h, writes

    def retire(self, mac: str, now: float) -> tuple[Host | None, list]:
        writes: list = []
        h = self.hosts.get(mac)
        if h is None:
            return None, writes
        self._set_state(h, HostState.RETIRED, now, writes, "retired by admin")
        writes.append(("host", h))
        return h, writes

    def set_hostname(self, mac: str, hostname: str | None, now: float) -> tuple[Host | None, list]:
        writes: list = []
        h = self.hosts.get(mac)
        if h is None:
            return None, writes
        if h.hostname != hostname:
            writes.append(event(now, mac, "host.hostname", old=h.hostname, new=hostname))
            h.hostname = hostname
            writes.append(("host", h))
        return h, writes

    def delete(self, mac: str, now: float) -> list:
        """Forget a host (its leases stay: an address is never reused early)."""
        if self.hosts.pop(mac, None) is None:
            return []
        return [("host_delete", mac), event(now, mac, "host.deleted")]
