"""The DNS zone of the managed hosts: records from leases, reservations and hosts.  Pure.

One forward zone (the configured domain, e.g. ``netboot.lan``) and the
reverse zones (``in-addr.arpa``, RFC 1035 §3.5) of the served subnets.  The
zone follows the store writes the daemon already produces (``apply``), so an
answer changes the moment its lease or host is committed.

Records
  * apex: SOA and NS (``ns.<domain>``, whose A records are the server's
    addresses); every reverse zone has its own SOA and NS.
  * every MAC that owns an address gets one name, ``<label>.<domain>``, with
    an A record per owned address, and a PTR per address back to that name.
  * an address is owned by its ACTIVE, unexpired lease's MAC, else by the MAC
    it is reserved for in the config (so a reservation is in the zone even
    before its host asks for a lease).

Names (host-controlled text is data: RFC 1123 §2.1 labels only)
  * the label comes from, in this order: the reservation's hostname (config),
    the host's registered hostname (``Host.hostname``), the hostname its
    active lease carries (DHCP option 12, already sanitized); only the first
    label of an FQDN is used, lower-cased, anything but a-z 0-9 '-' replaced
    by '-', cut to 63.  Without one, the name is generated and stable:
    ``host-<12 hex digits of the MAC>``.
  * ``ns`` and the generated form ``host-<hex>`` are never given to a host
    that asks for them (a host gets its own generated name only).
  * collisions: when several MACs claim one label, it goes to the best claim
    by (source rank: config < registered < lease, then the MAC in ascending
    order); every other claimant is published under its generated name.  The
    winner depends only on the current claims, never on their order of
    arrival, so a restart rebuilds the same names.

Answers and the wire cache (``lookup``, ``entry``, NODATA vs NXDOMAIN): the
base class ``ZoneAnswers``, policy/zone_answers.py.  This module keeps the
records and, on every change, drops the cached answers it made stale.
"""
from __future__ import annotations

import heapq
import ipaddress
from collections import Counter
from typing import Iterable

from ..codec import dns as d
from ..model import Host, Lease, LeaseState, normalize_mac
from .zone_answers import NS_LABEL, ZoneAnswers
from .zone_names import _GENERATED, generated_label, reverse_name, reverse_zones, sanitize_label
from .zone_wire import Answer, RRec, encode
from ..writes import ADMIN_WRITES, EventWrite, HostDelete, HostWrite, LeaseWrite, TrimEvents

__all__ = ["Zone", "Answer", "RRec", "encode", "sanitize_label", "generated_label",
           "reverse_name", "reverse_zones"]


class Zone(ZoneAnswers):
    # False: every lease write takes the general path (tests compare the two).
    renewal_fast_path = True

    def __init__(self, domain: str, subnets: Iterable, server_ip, *,
                 reservations: Iterable = (), ttl: int = 60, serial: int = 1,
                 max_cached: int = 20000):
        self.domain = domain.strip().rstrip(".").lower()
        self.ttl = ttl
        self.serial = serial & 0xFFFFFFFF
        self.max_cached = max_cached
        self.server_ips = tuple([server_ip] if isinstance(server_ip, str) else server_ip)
        self._dl = tuple(p.encode() for p in self.domain.split("."))
        self._rev = self._reverse_zones(subnets)
        # Sources.
        self._leases: dict[int, tuple[str, float, tuple]] = {}   # addr -> (mac, ends, client)
        self._lease_at: dict[tuple, int] = {}                    # (network, client key) -> addr
        self._heap: list[tuple[float, int]] = []
        self._lease_count: Counter = Counter()                   # mac -> active leases
        self._reserved: dict[int, str] = {}                      # addr -> mac
        self._res_name: dict[str, str] = {}                      # mac -> label (rank 0)
        self._host_name: dict[str, str] = {}                     # rank 1
        self._lease_name: dict[str, str] = {}                    # rank 2
        # Derived.
        self._owner: dict[int, str] = {}
        self._addrs: dict[str, set[int]] = {}
        self._claim: dict[str, tuple[int, str]] = {}
        self._claimants: dict[str, set[tuple[int, str]]] = {}
        self._pub: dict[str, tuple[str, tuple[int, ...]]] = {}
        self._fwd: dict[bytes, tuple[int, ...]] = {}
        self._ptr: dict[int, str] = {}
        self._ent: Counter = Counter()                           # (octets, prefix) -> PTR count
        self._dirty: set[str] = set()
        # Names whose cached answers must go (wire names built only when
        # there are cached answers at all: a DHCP storm rarely has any).
        self._changed_labels: set[str] = set()
        self._changed_addrs: set[int] = set()
        # Wire cache: key = lower-case wire qname + type/class bytes.
        self.pos: dict[bytes, tuple] = {}
        self.neg: dict[bytes, tuple] = {}
        self._shapes: dict[tuple, tuple] = {}                     # negative answers by shape
        self._pos_keys: dict[bytes, list[bytes]] = {}
        self._reserved, self._res_name = self._parse_reservations(reservations)
        for a in self._reserved:
            self._refresh_owner(a)
        self._settle()

    @staticmethod
    def _reverse_zones(subnets: Iterable) -> list:
        zones = {z for s in subnets for z in reverse_zones(ipaddress.IPv4Network(s, strict=False))}
        # A zone inside another one we serve is part of it (no delegation here).
        return sorted((z for z in zones if not any(z[-len(o):] == o and z != o for o in zones)),
                      key=len, reverse=True)

    def _parse_reservations(self, reservations: Iterable) -> tuple[dict, dict]:
        """(addr -> mac, mac -> label) of Reservations or (mac, ip, hostname)."""
        reserved: dict[int, str] = {}
        names: dict[str, str] = {}
        for r in reservations:
            mac, ip, hostname = (r.mac, r.address, r.hostname) if hasattr(r, "address") else r
            mac = normalize_mac(mac)
            a = ip if isinstance(ip, int) else int(ipaddress.IPv4Address(ip))
            if a in reserved and reserved[a] < mac:
                continue                  # one address reserved twice: the lower MAC keeps it
            reserved[a] = mac
            lab = self._acceptable(mac, sanitize_label(hostname))
            if lab:
                names[mac] = lab
        return reserved, names

    def set_networks(self, subnets: Iterable, reservations: Iterable = ()) -> None:
        """Follow a live change of the served networks (net/networks.py ->
        Core.replan): their reverse zones and their reservations' names.
        Every cached answer goes: this is rare, and reverse names change
        owners wholesale."""
        self._rev = self._reverse_zones(subnets)
        reserved, names = self._parse_reservations(reservations)
        old_reserved, old_names = self._reserved, self._res_name
        self._reserved, self._res_name = reserved, names
        for mac in set(old_names) | set(names):
            if old_names.get(mac) != names.get(mac):
                self._dirty.add(mac)
        for a in set(old_reserved) | set(reserved):
            if old_reserved.get(a) != reserved.get(a):
                self._refresh_owner(a)
        self._settle()
        self.serial = (self.serial + 1) & 0xFFFFFFFF
        self.pos, self.neg, self._shapes, self._pos_keys = {}, {}, {}, {}

    # -- changes -----------------------------------------------------------------
    # Writes that do not change names or addresses (tests/unit/test_writes.py
    # checks every write type is either followed below or listed here).
    IGNORED_WRITES = (EventWrite, TrimEvents) + ADMIN_WRITES

    def apply(self, writes: Iterable, now: float | None = None) -> bool:
        """Follow a batch of store writes (leases, hosts, host deletions).
        With ``now``, an ACTIVE lease that already ended counts as expired.
        Returns whether the zone changed."""
        for w in writes:
            t = type(w)
            if t is LeaseWrite:
                self._lease(w.lease, now)
            elif t is HostWrite:
                self._host(w.host)
            elif t is HostDelete:
                self._host_deleted(w.mac)
        return self._settle()

    def load(self, leases: Iterable[Lease], hosts: Iterable[Host], now: float) -> bool:
        """Start-up: the stored leases and hosts."""
        return self.apply([HostWrite(h) for h in hosts] + [LeaseWrite(x) for x in leases], now)

    def expire(self, now: float) -> int:
        """Drop the records of leases that ended by ``now``; returns how many."""
        n, heap = 0, self._heap
        while heap and heap[0][0] <= now:
            _, a = heapq.heappop(heap)
            cur = self._leases.get(a)
            if cur is not None and cur[1] <= now:
                self._drop_lease(a)
                n += 1
        if len(heap) > 4 * len(self._leases) + 1024:      # renewals leave stale entries
            self._heap = [(v[1], a) for a, v in self._leases.items()]
            heapq.heapify(self._heap)
        if n:
            self._settle()
        return n

    def _lease(self, lease: Lease, now: float | None) -> None:
        a = lease.address
        client = (lease.network, lease.client_key)
        live = lease.state == LeaseState.ACTIVE and lease.mac and \
            (now is None or lease.ends > now)
        if not live:
            if lease.state != LeaseState.OFFERED:      # offers are never stored, never named
                self._drop_lease(a)
            return
        mac = lease.mac
        cur = self._leases.get(a)
        if cur is not None and cur[2] == client and cur[0] == mac and self.renewal_fast_path:
            # A renewal (the same client on the same address, the common
            # write of returning clients): only its end moves.
            self._leases[a] = (mac, lease.ends, client)
        else:
            prev = self._lease_at.get(client)
            if prev is not None and prev != a:
                self._drop_lease(prev)                   # the client moved (LeaseTable.bind)
            if cur is not None:
                self._drop_lease(a)
            self._leases[a] = (mac, lease.ends, client)
            self._lease_count[mac] += 1
            self._lease_at[client] = a
        heapq.heappush(self._heap, (lease.ends, a))
        # No hostname (most clients of a storm): no label, without the calls.
        lab = self._acceptable(mac, sanitize_label(lease.hostname)) if lease.hostname else None
        if self._lease_name.get(mac) != lab:
            if lab:
                self._lease_name[mac] = lab
            else:
                self._lease_name.pop(mac, None)
            self._dirty.add(mac)
        self._refresh_owner(a)

    def _drop_lease(self, a: int) -> None:
        cur = self._leases.pop(a, None)
        if cur is None:
            return
        mac, _, client = cur
        if self._lease_at.get(client) == a:
            del self._lease_at[client]
        self._refresh_owner(a)
        self._lease_count[mac] -= 1
        if self._lease_count[mac] <= 0:
            del self._lease_count[mac]
            if self._lease_name.pop(mac, None) is not None:
                self._dirty.add(mac)     # its last lease is gone, and the name it carried

    def _host(self, h: Host) -> None:
        lab = self._acceptable(h.mac, sanitize_label(h.hostname)) if h.hostname else None
        if self._host_name.get(h.mac) != lab:
            if lab:
                self._host_name[h.mac] = lab
            else:
                self._host_name.pop(h.mac, None)
            self._dirty.add(h.mac)

    def _host_deleted(self, mac: str) -> None:
        # The registered name goes with the host, as it would at the next
        # start (its leases stay: they are the store's history, and named).
        if self._host_name.pop(mac, None) is not None:
            self._dirty.add(mac)

    @staticmethod
    def _acceptable(mac: str, lab: str | None) -> str | None:
        if lab is None or lab == NS_LABEL:
            return None
        if _GENERATED.fullmatch(lab) and lab != generated_label(mac):
            return None
        return lab

    def _refresh_owner(self, a: int) -> None:
        cur = self._leases.get(a)
        new = cur[0] if cur is not None else self._reserved.get(a)
        old = self._owner.get(a)
        if new == old:
            return
        if old is not None:
            self._addrs[old].discard(a)
            if not self._addrs[old]:
                del self._addrs[old]
            self._dirty.add(old)
            del self._owner[a]
        if new is not None:
            self._owner[a] = new
            self._addrs.setdefault(new, set()).add(a)
            self._dirty.add(new)

    def _desired(self, mac: str) -> tuple[int, str] | None:
        for rank, src in enumerate((self._res_name, self._host_name, self._lease_name)):
            lab = src.get(mac)
            if lab:
                return rank, lab
        return None

    def _winner(self, lab: str) -> str | None:
        c = self._claimants.get(lab)
        return min(c)[1] if c else None

    def _settle(self) -> bool:
        """Re-derive the names of the MACs whose claims or addresses changed
        (and of those who won or lost a label because of it), then publish."""
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return False
        affected = set(dirty)
        before: dict[str, str | None] = {}
        for mac in dirty:
            new = self._desired(mac) if mac in self._addrs else None
            old = self._claim.get(mac)
            if new == old:
                continue
            for c in (old, new):
                if c is not None and c[1] not in before:
                    before[c[1]] = self._winner(c[1])
            if old is not None:
                s = self._claimants[old[1]]
                s.discard((old[0], mac))
                if not s:
                    del self._claimants[old[1]]
            if new is not None:
                self._claimants.setdefault(new[1], set()).add((new[0], mac))
                self._claim[mac] = new
            else:
                self._claim.pop(mac, None)
        for lab, w in before.items():
            affected.update((w, self._winner(lab)))
        affected.discard(None)
        targets = {}
        for mac in affected:
            addrs = tuple(sorted(self._addrs.get(mac, ())))
            target = None
            if addrs:
                c = self._claim.get(mac)
                lab = c[1] if c is not None and self._winner(c[1]) == mac else generated_label(mac)
                target = (lab, addrs)
            if target != self._pub.get(mac):
                targets[mac] = target
        for mac in targets:               # unpublish all first: a label may change hands
            self._unpublish(mac)
        for mac, t in targets.items():
            if t is not None:
                self._publish(mac, t)
        if not targets:
            return False
        self.serial = (self.serial + 1) & 0xFFFFFFFF      # RFC 1982 arithmetic
        self.neg = {}
        self._shapes = {}
        if self._pos_keys:
            wires = [self._fwd_wire(lab) for lab in self._changed_labels]
            wires += [d.name_wire(reverse_name(a)) for a in self._changed_addrs]
            for wire in wires:
                for k in self._pos_keys.pop(wire, ()):
                    self.pos.pop(k, None)
        self._changed_labels.clear()
        self._changed_addrs.clear()
        return True

    def _unpublish(self, mac: str) -> None:
        pub = self._pub.pop(mac, None)
        if pub is None:
            return
        lab, addrs = pub
        self._fwd.pop(lab.encode(), None)
        self._changed_labels.add(lab)
        for a in addrs:
            if self._ptr.get(a) == lab:
                del self._ptr[a]
                self._ent_update(a, -1)
            self._changed_addrs.add(a)

    def _publish(self, mac: str, target: tuple[str, tuple[int, ...]]) -> None:
        lab, addrs = target
        self._pub[mac] = target
        self._fwd[lab.encode()] = addrs
        self._changed_labels.add(lab)
        for a in addrs:
            self._ptr[a] = lab
            self._ent_update(a, 1)
            self._changed_addrs.add(a)

    def _ent_update(self, a: int, delta: int) -> None:
        ent = self._ent
        for key in ((1, a >> 24), (2, a >> 16), (3, a >> 8)):
            n = ent.get(key, 0) + delta
            if n <= 0:
                ent.pop(key, None)
            else:
                ent[key] = n

    def _fwd_wire(self, lab: str) -> bytes:
        return d.labels_wire((lab.encode(),) + self._dl)
