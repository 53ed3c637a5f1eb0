"""Lease table: allocation order and the one invariant that matters most."""
from __future__ import annotations

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from netbootd.model import Reservation
from netbootd.policy.leases import LeaseTable, PoolExhausted, ip2int, whole_subnet

NOW = 1_000_000.0


def key(i: int) -> bytes:
    return b"\x01\x01" + bytes([0, 0, 0, 0, 0, i])


def mac(i: int) -> str:
    return f"00:00:00:00:00:{i:02x}"


def test_whole_subnet_excludes_network_broadcast_and_self():
    net = whole_subnet("n", "10.0.0.1", 29)
    t = LeaseTable([net])
    got = []
    for i in range(10):
        try:
            a = t.choose("n", key(i), mac(i), None, NOW)
        except PoolExhausted:
            break
        t.bind("n", a, key(i), mac(i), NOW, 60)
        got.append(a)
    assert sorted(got) == [ip2int(f"10.0.0.{k}") for k in (2, 3, 4, 5, 6)]


def test_choose_prefers_reservation_then_previous_then_requested():
    res = Reservation(mac(9), ip2int("10.0.0.50"))
    net = whole_subnet("n", "10.0.0.1", 24, reservations=(res,))
    t = LeaseTable([net])
    assert t.choose("n", key(9), mac(9), ip2int("10.0.0.20"), NOW) == ip2int("10.0.0.50")
    t.bind("n", ip2int("10.0.0.30"), key(1), mac(1), NOW, 60)
    assert t.choose("n", key(1), mac(1), ip2int("10.0.0.20"), NOW) == ip2int("10.0.0.30")
    assert t.choose("n", key(2), mac(2), ip2int("10.0.0.20"), NOW) == ip2int("10.0.0.20")
    # a requested address reserved for someone else is not given
    assert t.choose("n", key(3), mac(3), ip2int("10.0.0.50"), NOW) != ip2int("10.0.0.50")


def test_expired_leases_are_reused_longest_free_first():
    net = whole_subnet("n", "10.0.0.1", 30)    # pool: 10.0.0.2 only
    t = LeaseTable([net])
    a = t.choose("n", key(1), mac(1), None, NOW)
    t.bind("n", a, key(1), mac(1), NOW, 60)
    try:
        t.choose("n", key(2), mac(2), None, NOW + 10)
        raise AssertionError("pool should be exhausted")
    except PoolExhausted:
        pass
    assert t.choose("n", key(2), mac(2), None, NOW + 61) == a


def test_loaded_leases_hold_their_addresses_after_restart():
    net = whole_subnet("n", "10.0.0.1", 24)
    t = LeaseTable([net])
    a = t.choose("n", key(1), mac(1), None, NOW)
    stored = t.bind("n", a, key(1), mac(1), NOW, 600)
    t2 = LeaseTable([net])
    t2.load(stored)
    assert t2.choose("n", key(2), mac(2), a, NOW + 1) != a
    assert t2.choose("n", key(1), mac(1), None, NOW + 1) == a


class NoDoubleAllocation(RuleBasedStateMachine):
    """Whatever clients do, in whatever order, with time passing and the
    table reloaded from its stored leases: no address is ever granted (ACKed,
    unexpired, not released) to two clients at once.  The grants are tracked
    here, outside the table, from what each ACK promised."""

    def __init__(self):
        super().__init__()
        self.net = whole_subnet("n", "10.0.0.1", 28)     # 13 addresses: lots of contention
        self.t = LeaseTable([self.net])
        self.now = NOW
        self.stored = {}
        self.granted: dict[int, tuple[int, float]] = {}  # client -> (address, ends)

    clients = st.integers(0, 20)

    def _store(self, lease):
        if lease is not None:
            self.stored[lease.address] = lease

    @rule(c=clients, req=st.none() | st.integers(0, 15))
    def discover(self, c, req):
        try:
            a = self.t.choose("n", key(c), mac(c), None if req is None else
                              ip2int("10.0.0.0") + req, self.now)
        except PoolExhausted:
            return
        assert a not in self.net.excluded
        self.t.offer("n", a, key(c), mac(c), self.now, 30)

    @rule(c=clients, req=st.integers(0, 15))
    def request(self, c, req):
        """The engine ACKs exactly when free_for() says yes."""
        a = ip2int("10.0.0.0") + req
        if self.net.contains(a) and self.t.free_for("n", a, key(c), mac(c), self.now):
            lease = self.t.bind("n", a, key(c), mac(c), self.now, 60)
            self._store(lease)
            self.granted[c] = (a, lease.ends)

    @rule(c=clients)
    def release(self, c):
        if c in self.granted:
            r = self.t.release("n", key(c), self.granted[c][0], self.now)
            self._store(r)
            if r is not None:
                del self.granted[c]

    @rule(c=clients)
    def decline(self, c):
        if c in self.granted:
            r = self.t.decline("n", key(c), self.granted[c][0], self.now, 100)
            self._store(r)
            if r is not None:
                del self.granted[c]

    @rule(dt=st.floats(0, 120))
    def tick(self, dt):
        self.now += dt

    @rule()
    def restart(self):
        """Crash + restart: only stored (ACKed) leases survive, offers vanish."""
        self.t = LeaseTable([self.net])
        for lease in sorted(self.stored.values(), key=lambda x: x.starts):
            self.t.load(lease)

    @invariant()
    def no_address_granted_twice(self):
        live = [(a, c) for c, (a, ends) in self.granted.items() if ends > self.now]
        addrs = [a for a, _ in live]
        assert len(addrs) == len(set(addrs)), live

    @invariant()
    def table_agrees_with_every_live_grant(self):
        for c, (a, ends) in self.granted.items():
            if ends > self.now:
                h = self.t.holder(a, self.now)
                assert h is not None and h.client_key == key(c)


TestNoDoubleAllocation = NoDoubleAllocation.TestCase
TestNoDoubleAllocation.settings = settings(max_examples=200, stateful_step_count=50,
                                           deadline=None)
