"""Hosts known to netbootd, in memory, with their writes for the store.

The registry answers "is this MAC known?" on the DHCP hot path from a dict;
every change it makes is returned as a write for the store's group commit.

A MAC that only sent DHCP (DISCOVER, an OFFER back) is *seen*, not a host:
it lives in a bounded, expiring LRU set with no row and no event, because
anyone on the segment can send DISCOVERs from random MACs (20,000 of them
made 20,000 rows and a 10 MB host list).  It becomes a host (row +
`host.discovered`) when it does something that matters: an ACKed lease, a
boot script, an agent call, an admin action.
"""
from __future__ import annotations

import heapq
import re
from collections import Counter, OrderedDict

from ..model import KNOWN_STATES, Host, HostState
from ..policy.ratelimit import Buckets
from json.encoder import encode_basestring_ascii as _json_str

from ..writes import EventWrite, HostDelete, HostWrite, event, event_json

STATES = tuple(s.value for s in HostState)


# Exchange events held per seen MAC (module doc of Registry.exchange_event).
PENDING_EVENTS = 4


class Registry:
    def __init__(self, hosts: list[Host] | None = None, *, seen_max: int = 10000,
                 seen_ttl: float = 3600.0, new_per_source_pps: float = 1.0,
                 new_total_pps: float = 20.0):
        self.hosts: dict[str, Host] = {h.mac: h for h in hosts or ()}
        # MAC -> Host (state discovered, never stored), least recently seen first.
        self.seen: OrderedDict[str, Host] = OrderedDict()
        # A seen MAC's latest exchange events (its OFFERs; proxy OFFER/ACKs of
        # the firmware and iPXE stages), stored only if it becomes a host: a
        # random-MAC flood must not cost a row per packet, and a real host's
        # timeline still starts at the exchanges that led to it.
        self._pending: dict[str, list] = {}
        self.seen_max = seen_max
        self.seen_ttl = seen_ttl
        # Host creation by an unauthenticated HTTP call (boot script, agent):
        # per source address, and in total for MACs DHCP never saw.
        self._new_by_source = Buckets(new_per_source_pps, max(10.0, 2 * new_per_source_pps),
                                      max_keys=4096)
        self._new_total = Buckets(new_total_pps, max(100.0, 5 * new_total_pps), max_keys=1)
        self.counters: Counter = Counter()
        # Identifier (kind, value) -> the MAC (key) of the host that reported
        # it (policy/identity.py): a host that boots from another NIC, or
        # from USB, is the same host.  ("mac", m) entries of other NICs are
        # aliases: DHCP and boot scripts of such a MAC land on the host.
        self.ids: dict[tuple[str, str], str] = {}
        for h in self.hosts.values():
            self.index(h)

    def get(self, mac: str) -> Host | None:
        """A host (by any of its MACs), or a MAC only seen on DHCP (state
        discovered, not stored)."""
        h = self.hosts.get(mac)
        if h is not None:
            return h
        h = self.aliased(mac)
        return h if h is not None else self.seen.get(mac)

    def aliased(self, mac: str) -> Host | None:
        """The host that reported `mac` as one of its other NICs."""
        key = self.ids.get(("mac", mac)) if self.ids else None
        return self.hosts.get(key) if key is not None and key != mac else None

    def index(self, h: Host) -> None:
        """Index a host's identifiers; one already owned by another host stays
        that host's (the first owner keeps it: nobody takes over a host by
        reporting its UUID or MACs)."""
        for kind, value in h.ids:
            self.ids.setdefault((kind, value), h.mac)

    def claim(self, h: Host, found, keep: int) -> list:
        """Add identifiers to a host: those no other host owns; at most `keep`
        kept (the newest), trimmed ones leave the index.  Returns the
        identifiers refused because another host owns them."""
        have = [tuple(i) for i in h.ids]
        refused = []
        for ident in map(tuple, found):
            owner = self.ids.get(ident)
            if owner is None and ident[0] == "mac" and ident[1] in self.hosts:
                owner = ident[1]            # a host's own MAC is that host's
            if owner is not None and owner != h.mac and owner in self.hosts:
                refused.append(list(ident))
            elif ident not in have:
                have.append(ident)
        for ident in have[:-keep]:
            if self.ids.get(ident) == h.mac:
                del self.ids[ident]
        h.ids = [list(i) for i in have[-keep:]]
        for ident in have[-keep:]:
            self.ids[ident] = h.mac
        return refused

    def unindex(self, h: Host) -> None:
        for ident in map(tuple, h.ids):
            if self.ids.get(ident) == h.mac:
                del self.ids[ident]

    def match(self, found: list[tuple[str, str]]) -> list[Host]:
        """Hosts that reported any of these identifiers, strongest first
        (the order of `found`: policy.identity lists MACs, then UUID, serials)."""
        out: list[Host] = []
        for ident in found:
            key = self.ids.get(tuple(ident))
            if key is None and ident[0] == "mac":
                key = ident[1] if ident[1] in self.hosts else None
            h = self.hosts.get(key) if key else None
            if h is not None and h not in out:
                out.append(h)
        return out

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
            h = self.aliased(mac) if self.ids else None
            if h is None:
                return self._see(mac, now, iface, arch, vendor_class, uuid)
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
            writes.append(HostWrite(h))
        return h

    # -- seen MACs: bounded, expiring, in memory only ------------------------
    def _see(self, mac, now, iface, arch, vendor_class, uuid) -> Host:
        self.expire(now)
        h = self.seen.get(mac)
        if h is None:
            if len(self.seen) >= self.seen_max:
                old, _ = self.seen.popitem(last=False)
                self._pending.pop(old, None)
                self.counters["seen.evicted"] += 1
            h = Host(mac, HostState.DISCOVERED, arch, vendor_class, uuid, None, iface, now, now)
            self.seen[mac] = h
            self.counters["seen.added"] += 1
            return h
        # The DISCOVER's MAC asking again (its REQUEST): facts it sent refresh.
        if arch is not None:
            h.arch = arch
        if vendor_class is not None:
            h.vendor_class = vendor_class
        if uuid is not None:
            h.uuid = uuid
        if iface is not None:
            h.interface = iface
        h.last_seen = now
        self.seen.move_to_end(mac)
        return h

    def expire(self, now: float) -> None:
        """Forget seen MACs silent for longer than seen_ttl (the oldest are first)."""
        seen, cutoff = self.seen, now - self.seen_ttl
        while seen:
            mac, h = next(iter(seen.items()))
            if h.last_seen >= cutoff:
                break
            del seen[mac]
            self._pending.pop(mac, None)
            self.counters["seen.expired"] += 1

    def exchange_event(self, mac: str, ev: EventWrite, writes: list) -> None:
        """A DHCP exchange's event: written now for a host, held (the latest
        PENDING_EVENTS) for a MAC that is only seen, written if it becomes a host."""
        if mac in self.seen and mac not in self.hosts:
            held = self._pending.setdefault(mac, [])
            if len(held) >= PENDING_EVENTS:
                del held[0]
            held.append(ev)
        else:
            writes.append(ev)

    def promote(self, mac: str, now: float, writes: list) -> Host | None:
        """A seen MAC did something that matters (an ACKed lease): it becomes a
        host, stored with the ACK's writes.  A host is returned as it is."""
        h = self.hosts.get(mac) or self.aliased(mac)
        if h is not None:
            return h
        h = self.seen.pop(mac, None)
        if h is None:
            return None
        detail = _discovered_json(h)
        if detail is None:
            self._adopt(h, now, writes, arch=h.arch, interface=h.interface,
                        vendor_class=h.vendor_class, uuid=h.uuid)
        else:
            self._adopt_json(h, now, writes, detail)
        writes.append(HostWrite(h))
        return h

    def _adopt(self, h: Host, now: float, writes: list, **detail) -> None:
        self._adopt_json(h, now, writes, None, detail)

    def _adopt_json(self, h: Host, now: float, writes: list, detail_json: str | None,
                    detail: dict | None = None) -> None:
        self.hosts[h.mac] = h
        writes += self._pending.pop(h.mac, ())
        self.counters["hosts.created"] += 1
        writes.append(event(now, h.mac, "host.discovered", **detail) if detail_json is None
                      else event_json(now, h.mac, "host.discovered", detail_json))

    def admit_http(self, mac: str, source: str | None, now: float) -> str | None:
        """May an unauthenticated HTTP call (boot script, agent) make `mac` a
        host?  None if so (or if it already is one), else why not.  Per
        source always; in total for MACs DHCP never saw, so a flood of random
        MACs in URLs costs a bounded number of rows, while a rack of real
        hosts (seen on DHCP first) is only limited per address."""
        if mac in self.hosts:
            return None
        if not self._new_by_source.allow(source, now):
            self.counters["http.new_host_refused_source"] += 1
            return "too many new hosts from this address; try again later"
        if mac not in self.seen and not self._new_total.allow(None, now):
            self.counters["http.new_host_refused_total"] += 1
            return "too many new hosts; try again later"
        return None

    # -- lifecycle (boot path, agent, admin) -------------------------------
    def _get_or_new(self, mac: str, now: float, writes: list) -> Host:
        h = self.hosts.get(mac) or self.aliased(mac)
        if h is not None:
            return h
        h = self.seen.pop(mac, None)
        if h is None:
            h = Host(mac, HostState.DISCOVERED, first_seen=now, last_seen=now)
        self._adopt(h, now, writes, via="http")
        writes.append(HostWrite(h))
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
        writes.append(HostWrite(h))
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
        writes.append(HostWrite(h))
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
            writes.append(HostWrite(h))
        if h.state == HostState.ASSIGNED:
            return "reboot", writes
        return "wait", writes

    def assign(self, mac: str, profile: str, args: dict, now: float) -> tuple[Host, list]:
        """Admin assignment (args already validated by policy.boot)."""
        writes: list = []
        h = self._get_or_new(mac, now, writes)
        h.profile, h.profile_args = profile, dict(args)
        self._set_state(h, HostState.ASSIGNED, now, writes, f"assigned {profile}")
        writes.append(HostWrite(h))
        writes.append(event(now, mac, "host.assign", profile=profile, args=args))
        return h, writes

    def approve(self, mac: str, now: float) -> tuple[Host | None, list]:
        """Admin approval of a discovered host (as if its agent registered)."""
        writes: list = []
        if self.get(mac) is None:
            return None, writes
        h = self._get_or_new(mac, now, writes)
        if h.state not in (HostState.DISCOVERED, HostState.ERROR, HostState.PENDING):
            return h, writes
        self._set_state(h, HostState.REGISTERED, now, writes, "approved by admin")
        writes.append(HostWrite(h))
        return h, writes

    def retire(self, mac: str, now: float) -> tuple[Host | None, list]:
        writes: list = []
        if self.get(mac) is None:
            return None, writes
        h = self._get_or_new(mac, now, writes)
        self._set_state(h, HostState.RETIRED, now, writes, "retired by admin")
        writes.append(HostWrite(h))
        return h, writes

    def set_hostname(self, mac: str, hostname: str | None, now: float) -> tuple[Host | None, list]:
        writes: list = []
        if self.get(mac) is None:
            return None, writes
        h = self._get_or_new(mac, now, writes)
        if h.hostname != hostname:
            writes.append(event(now, mac, "host.hostname", old=h.hostname, new=hostname))
            h.hostname = hostname
            writes.append(HostWrite(h))
        return h, writes

    def delete(self, mac: str, now: float) -> list:
        """Forget a host (its leases stay: an address is never reused early)."""
        if self.seen.pop(mac, None) is not None:
            self._pending.pop(mac, None)
            return [HostDelete(mac)]         # never stored: nothing else to undo
        h = self.hosts.pop(mac, None)
        if h is None:
            return []
        self.unindex(h)
        return [HostDelete(mac), event(now, mac, "host.deleted")]


# -- host lists, a page at a time ---------------------------------------------------
class BadCursor(ValueError):
    pass


# Opaque to clients, but every string of this shape is a cursor, so a client
# (or schemathesis) following the documented pattern is never refused.
CURSOR_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,20})?(e[-+]?[0-9]{1,3})?~[0-9a-f]{2,32}$"
_CURSOR_RE = re.compile(CURSOR_PATTERN)


def encode_cursor(h: Host) -> str:
    """The sort key (first_seen, mac) of the last host shown.  Keyset paging:
    hosts added or deleted meanwhile never shift a page."""
    return f"{float(h.first_seen)!r}~{h.mac.replace(':', '')}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    if not _CURSOR_RE.match(cursor):
        raise BadCursor("cursor: not a cursor this server gave out")
    ts, _, hexmac = cursor.partition("~")
    return float(ts), ":".join(hexmac[i:i + 2] for i in range(0, len(hexmac), 2))


def page(hosts, limit: int, cursor: str | None = None, match=None) -> tuple[list, str | None,
                                                                              int]:
    """(up to `limit` hosts after `cursor` in (first_seen, mac) order, the
    cursor of the next page or None, how many hosts match in all).  One pass
    and a heap of `limit`: O(n log limit), never a sorted copy of every host."""
    after = decode_cursor(cursor) if cursor is not None else None
    total = 0
    cand = []
    for h in hosts:
        if match is not None and not match(h):
            continue
        total += 1
        if after is None or (h.first_seen, h.mac) > after:
            cand.append(h)
    out = heapq.nsmallest(limit + 1, cand, key=lambda h: (h.first_seen, h.mac))
    more = len(out) > limit
    out = out[:limit]
    return out, (encode_cursor(out[-1]) if more and out else None), total


def state_counts(hosts) -> dict[str, int]:
    return dict(Counter(h.state.value for h in hosts))


def _discovered_json(h: Host) -> str | None:
    """host.discovered's detail from DHCP, as writes.event() encodes it (keys
    sorted, compact, ASCII), built with one format (a new client's hot path:
    ~0.3 us, the encoder ~1.6); None for a value of another type (then
    event() encodes it)."""
    arch, iface, vc, uuid = h.arch, h.interface, h.vendor_class, h.uuid
    if not ((arch is None or type(arch) is int) and (iface is None or type(iface) is str)
            and (vc is None or type(vc) is str) and (uuid is None or type(uuid) is str)):
        return None
    return '{"arch":%s,"interface":%s,"uuid":%s,"vendor_class":%s}' % (
        "null" if arch is None else int.__repr__(arch),
        "null" if iface is None else _json_str(iface),
        "null" if uuid is None else _json_str(uuid),
        "null" if vc is None else _json_str(vc))
