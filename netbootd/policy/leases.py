"""Networks, pools, reservations and the in-memory lease table.  Pure.

The table is the single authority for who holds which address; the store
only persists it (DESIGN.md durability promise).  Every method takes ``now``
explicitly.  An address is *held* by a lease that is ACTIVE and unexpired,
OFFERED within its hold time, or DECLINED within its probation; anything else
is free for another client.  A client's previous address is remembered after
release/expiry so it gets the same one back when it is still free.
"""
from __future__ import annotations

import bisect
import functools
import ipaddress
import random
from dataclasses import dataclass, field

from ..model import Lease, LeaseState, Reservation, int2ip, ip2int


@dataclass(frozen=True)
class Network:
    """A served IPv4 network: its pool ranges (inclusive ints) and options."""
    name: str
    subnet: ipaddress.IPv4Network
    ranges: tuple[tuple[int, int], ...]
    router: str | None = None
    dns: tuple[str, ...] = ()
    domain: str | None = None
    lease_time: int = 3600
    reservations: tuple[Reservation, ...] = ()
    interface: str | None = None
    excluded: frozenset[int] = frozenset()   # never handed out (server, network, broadcast)
    # Relay agents trusted for this network (Kea "relay ip-addresses", ISC
    # shared networks): a packet whose giaddr is one of these is served from
    # this network; any other giaddr is dropped by the engine.  A relay's own
    # address is never handed out: it is excluded here, by configuration,
    # never because a packet named it (a spoofed giaddr once took addresses
    # out of the pool for good).
    relays: frozenset[int] = frozenset()
    # How a fresh address is picked (_fresh): "lru" (never-used first, after
    # a cursor, then the one free longest), "sequential" (the lowest free),
    # "random".  kind: RANGED or FIXED (reservations only: policy/vnet.py).
    policy: str = "lru"
    kind: str = "RANGED"
    boot_server: str | None = None

    def __post_init__(self):
        if not self.relays <= self.excluded:
            object.__setattr__(self, "excluded", self.excluded | self.relays)

    def contains(self, addr: int) -> bool:
        lo, hi = self._span
        return lo <= addr <= hi

    @functools.cached_property
    def _span(self) -> tuple[int, int]:
        """(network, broadcast) address as ints: contains() runs per packet."""
        return int(self.subnet.network_address), int(self.subnet.broadcast_address)

    def in_pool(self, addr: int) -> bool:
        if addr in self.excluded:
            return False
        for lo, hi in self.ranges:      # a loop, not any(genexpr): per packet
            if lo <= addr <= hi:
                return True
        return False

    @functools.cached_property
    def reservation_of(self) -> dict[str, Reservation]:
        return {r.mac: r for r in self.reservations}

    @functools.cached_property
    def pool_size(self) -> int:
        """Addresses this network can hand out: its ranges less the excluded,
        plus reserved addresses outside the ranges (a FIXED network's leases)."""
        inside = sum(hi - lo + 1 for lo, hi in self.ranges) - sum(
            1 for a in self.excluded if any(lo <= a <= hi for lo, hi in self.ranges))
        return inside + len({r.address for r in self.reservations
                             if not any(lo <= r.address <= hi for lo, hi in self.ranges)})


def whole_subnet(name: str, iface_ip: str, prefix: int, **kw) -> Network:
    """The default pool of full mode: every address of the interface's subnet
    except network, broadcast and the server's own."""
    subnet = ipaddress.IPv4Network(f"{iface_ip}/{prefix}", strict=False)
    lo = int(subnet.network_address)
    hi = int(subnet.broadcast_address)
    if hi - lo < 2:
        raise ValueError(f"subnet {subnet} of {name} has no room for a pool")
    return Network(name=name, subnet=subnet, ranges=((lo + 1, hi - 1),),
                   excluded=frozenset({ip2int(iface_ip)}), **kw)


_BYTE = [bytes((i,)) for i in range(256)]
# States that hold an address until `ends` (a frozenset: held() runs per packet).
_HELD = frozenset((LeaseState.ACTIVE, LeaseState.OFFERED, LeaseState.DECLINED))


def client_key(options: dict[int, bytes], htype: int, chaddr: bytes) -> bytes:
    """RFC 2131 §4.2: option 61 identifies the client when present, else
    chaddr.  A client id that *is* htype + chaddr (RFC 2132 §9.14's
    recommended form, sent by iPXE but not by the EDK2 or PXE ROM before it)
    names the same client as chaddr alone, so one machine keeps one address
    across its boot stages."""
    cid = options.get(61)
    hw = _BYTE[htype] + chaddr
    if cid and cid != hw:
        return b"\x00" + cid
    return b"\x01" + hw


class PoolExhausted(Exception):
    pass


@dataclass
class _NetState:
    network: Network
    reserved_by_mac: dict[str, Reservation]
    reserved_addrs: frozenset[int]
    cursor_range: int = 0
    cursor: int = -1
    unknown_held: set[int] = field(default_factory=set)


class LeaseTable:
    def __init__(self, networks: list[Network], unknown_share: float = 1.0,
                 rng: random.Random | None = None):
        self.by_addr: dict[int, Lease] = {}
        self.by_client: dict[tuple[str, bytes], Lease] = {}
        self.unknown_share = unknown_share
        self.rng = rng or random.Random()
        self.nets: dict[str, _NetState] = {}
        self.set_networks(networks)

    def set_networks(self, networks: list[Network]) -> None:
        """Serve this set of networks from now on (a live change, on the
        reactor: one assignment).  Every lease stays in the table: one whose
        address a network still serves is renewed as before; one of a removed
        network or range keeps its address held until it ends (nobody else
        gets it) and is not renewed.  A network kept under its name keeps its
        allocation cursor."""
        nets: dict[str, _NetState] = {}
        for n in networks:
            old = self.nets.get(n.name)
            st = _NetState(n, {r.mac: r for r in n.reservations},
                           frozenset(r.address for r in n.reservations))
            if old is not None and old.network.ranges == n.ranges:
                st.cursor_range, st.cursor = old.cursor_range, old.cursor
                st.unknown_held = old.unknown_held
            nets[n.name] = st
        self.nets = nets

    # -- queries --------------------------------------------------------
    @staticmethod
    def held(lease: Lease, now: float) -> bool:
        return lease.state in _HELD and lease.ends > now

    def holder(self, addr: int, now: float) -> Lease | None:
        lease = self.by_addr.get(addr)
        return lease if lease is not None and self.held(lease, now) else None

    def lease_of(self, net: str, key: bytes) -> Lease | None:
        return self.by_client.get((net, key))

    def free_for(self, net: str, addr: int, key: bytes, mac: str, now: float) -> bool:
        """May `addr` go to this client?  In the pool (or reserved for its
        MAC), not reserved for another MAC, not held by another client."""
        st = self.nets[net]
        res = st.reserved_by_mac.get(mac)
        if res is not None and res.address == addr:
            pass
        elif addr in st.reserved_addrs or not st.network.in_pool(addr):
            return False
        h = self.by_addr.get(addr)       # holder(), inlined: runs per packet
        if h is None or not self.held(h, now):
            return True
        return h.client_key == key and h.state != LeaseState.DECLINED

    def usage(self, net: str, now: float) -> tuple[int, int]:
        """(addresses held, pool size) of one network."""
        st = self.nets[net]
        held = sum(1 for a, lease in self.by_addr.items()
                   if self.held(lease, now) and st.network.contains(a))
        return held, st.network.pool_size

    def usage_all(self, now: float) -> dict[str, tuple[int, int]]:
        """usage() of every network in one pass over the leases (a lease
        counts for the network whose subnet holds its address)."""
        held = dict.fromkeys(self.nets, 0)
        spans = sorted((st.network._span, name) for name, st in self.nets.items())
        starts = [s[0][0] for s in spans]
        for a, lease in self.by_addr.items():
            if self.held(lease, now):
                i = bisect.bisect_right(starts, a) - 1
                if i >= 0 and a <= spans[i][0][1]:
                    held[spans[i][1]] += 1
        return {name: (held[name], st.network.pool_size) for name, st in self.nets.items()}

    # -- allocation -----------------------------------------------------
    def choose(self, net: str, key: bytes, mac: str, requested: int | None, now: float,
               known: bool = True) -> int:
        """The address to offer this client (RFC 2131 §4.3.1 order: its
        reservation, its current or previous address, the one it asks for,
        then a fresh one).  Raises PoolExhausted."""
        st = self.nets[net]
        res = st.reserved_by_mac.get(mac)
        if res is not None:
            if self.free_for(net, res.address, key, mac, now):
                return res.address
            raise PoolExhausted(f"reserved address {int2ip(res.address)} is in use")
        prev = self.by_client.get((net, key))
        if prev is not None and prev.state != LeaseState.DECLINED and \
                self.free_for(net, prev.address, key, mac, now):
            return prev.address
        if not known:
            self._check_unknown_share(st, now)
        if requested is not None and self.free_for(net, requested, key, mac, now):
            return requested
        return self._fresh(st, key, mac, now)

    def _check_unknown_share(self, st: _NetState, now: float) -> None:
        cap = int(st.network.pool_size * self.unknown_share)
        if len(st.unknown_held) < cap:
            return
        # Purge addresses no longer held before refusing.
        st.unknown_held = {a for a in st.unknown_held
                           if (lease := self.by_addr.get(a)) is not None and self.held(lease, now)}
        if len(st.unknown_held) >= cap:
            raise PoolExhausted(
                f"unknown clients hold {len(st.unknown_held)} of {st.network.pool_size} "
                f"addresses (share {self.unknown_share:.0%}); the rest is kept for known hosts")

    def _fresh(self, st: _NetState, key: bytes, mac: str, now: float) -> int:
        """A free address by the network's policy (lru, sequential, random)."""
        policy = st.network.policy
        if policy == "sequential":
            return self._lowest_free(st, now)
        if policy == "random":
            a = self._random_free(st, now)
            if a is not None:
                return a
        return self._lru(st, now)

    def _usable(self, st: _NetState, a: int, now: float) -> bool:
        if a in st.reserved_addrs or a in st.network.excluded:
            return False
        lease = self.by_addr.get(a)
        return lease is None or not self.held(lease, now)

    def _lowest_free(self, st: _NetState, now: float) -> int:
        for lo, hi in st.network.ranges:
            for a in range(lo, hi + 1):
                if self._usable(st, a, now):
                    return a
        raise PoolExhausted(f"pool of {st.network.name} is exhausted "
                            f"({st.network.pool_size} addresses)")

    def _random_free(self, st: _NetState, now: float) -> int | None:
        """Up to 32 random picks; None when all were taken (then lru finds
        one if any is left)."""
        ranges = st.network.ranges
        total = sum(hi - lo + 1 for lo, hi in ranges)
        for _ in range(32 if total else 0):
            i = self.rng.randrange(total)
            for lo, hi in ranges:
                if i <= hi - lo:
                    a = lo + i
                    break
                i -= hi - lo + 1
            if self._usable(st, a, now):
                return a
        return None

    def _lru(self, st: _NetState, now: float) -> int:
        """Next never-used address after the cursor; when the pool has none,
        the free address whose lease ended longest ago."""
        net = st.network
        ranges = net.ranges
        total = sum(hi - lo + 1 for lo, hi in ranges)
        by_addr = self.by_addr
        ri, a = st.cursor_range, st.cursor
        for _ in range(total):
            lo, hi = ranges[ri]
            a = lo if a < lo else a + 1
            if a > hi:
                ri = (ri + 1) % len(ranges)
                a = ranges[ri][0]
            if a not in by_addr and a not in st.reserved_addrs and a not in net.excluded:
                st.cursor_range, st.cursor = ri, a
                return a
        # No never-used address: reuse the longest-free one (LRU, like dhcpd).
        best = None
        for addr, lease in by_addr.items():
            if not self.held(lease, now) and net.in_pool(addr) \
                    and addr not in st.reserved_addrs and (best is None or lease.ends < best.ends):
                best = lease
        if best is None:
            raise PoolExhausted(f"pool of {net.name} is exhausted ({net.pool_size} addresses)")
        return best.address

    # -- transitions (each returns the lease to persist, if any) ---------
    def _put(self, lease: Lease, known: bool = True) -> Lease:
        old = self.by_addr.get(lease.address)
        if old is not None and old.client_key != lease.client_key:
            cur = self.by_client.get((old.network, old.client_key))
            if cur is old:
                del self.by_client[(old.network, old.client_key)]
        self.by_addr[lease.address] = lease
        if lease.client_key:
            self.by_client[(lease.network, lease.client_key)] = lease
        st = self.nets.get(lease.network)
        if st is not None:
            if known or lease.state == LeaseState.DECLINED:
                st.unknown_held.discard(lease.address)
            else:
                st.unknown_held.add(lease.address)
        return lease

    def offer(self, net: str, addr: int, key: bytes, mac: str, now: float, hold: float,
              known: bool = True) -> Lease:
        cur = self.by_addr.get(addr)
        if cur is not None and cur.client_key == key and cur.state == LeaseState.ACTIVE \
                and cur.ends > now:
            return cur   # renewing client re-discovering: keep its active lease
        return self._put(Lease(addr, net, key, mac, LeaseState.OFFERED, now, now + hold,
                               cur.hostname if cur is not None and cur.client_key == key
                               else None), known)

    def bind(self, net: str, addr: int, key: bytes, mac: str, now: float, lease_time: int,
             hostname: str | None = None, known: bool = True) -> Lease:
        """Make `addr` this client's ACTIVE lease; the caller persists it
        before the ACK leaves."""
        prev = self.by_client.get((net, key))
        if prev is not None and prev.address != addr and self.by_addr.get(prev.address) is prev \
                and prev.state in (LeaseState.OFFERED, LeaseState.ACTIVE):
            # The client moved to another address: its old one is free now.
            prev.state = LeaseState.RELEASED
            prev.ends = now
        return self._put(Lease(addr, net, key, mac, LeaseState.ACTIVE, now, now + lease_time,
                               hostname, seq=None), known)

    def release(self, net: str, key: bytes, addr: int, now: float) -> Lease | None:
        lease = self.by_addr.get(addr)
        if lease is None or lease.client_key != key or lease.network != net or \
                lease.state not in (LeaseState.ACTIVE, LeaseState.OFFERED):
            return None
        lease.state = LeaseState.RELEASED
        lease.ends = now
        self.nets[net].unknown_held.discard(addr)
        return lease

    def decline(self, net: str, key: bytes, addr: int, now: float,
                probation: float) -> Lease | None:
        """RFC 2131 §4.3.3: the address is in use by someone else.  It goes on
        probation (not lost for ever) and belongs to no client."""
        lease = self.by_addr.get(addr)
        if lease is None or lease.client_key != key or lease.network != net:
            return None
        if self.by_client.get((net, key)) is lease:
            del self.by_client[(net, key)]
        return self._put(Lease(addr, net, b"", "", LeaseState.DECLINED, now, now + probation))

    def conflict(self, net: str, addr: int, now: float, probation: float) -> Lease:
        """An address found in use (ICMP probe answered): probation, no client."""
        cur = self.by_addr.get(addr)
        if cur is not None and cur.client_key and \
                self.by_client.get((cur.network, cur.client_key)) is cur:
            del self.by_client[(cur.network, cur.client_key)]
        return self._put(Lease(addr, net, b"", "", LeaseState.DECLINED, now, now + probation))

    def forget_offer(self, net: str, key: bytes) -> None:
        """The client chose another server (RFC 2131 §4.3.2): free our offer."""
        lease = self.by_client.get((net, key))
        if lease is not None and lease.state == LeaseState.OFFERED:
            lease.ends = 0.0

    def restore(self, lease: Lease, stored: Lease | None) -> None:
        """`lease` could not be stored: put back the stored version of its
        address (or forget the address when nothing is stored), unless a
        newer lease replaced it in memory meanwhile."""
        if self.by_addr.get(lease.address) is not lease:
            return
        if self.by_client.get((lease.network, lease.client_key)) is lease:
            del self.by_client[(lease.network, lease.client_key)]
        st = self.nets.get(lease.network)
        if st is not None:
            st.unknown_held.discard(lease.address)
        if stored is None:
            del self.by_addr[lease.address]
        else:
            self._put(stored)

    def load(self, lease: Lease) -> None:
        """Restore a stored lease at start-up (offers are never stored)."""
        self._put(lease, known=True)
