"""DhcpProtocol + GroupCommitter on a fake transport and task.Clock.

Twisted's MemoryReactor has no UDP, so a small fake of our own stands in for
the socket: it records what would have been sent, and where.
"""
from __future__ import annotations

import pytest
from twisted.internet import defer, task

from netbootd.codec import dhcp
from netbootd.codec import dhcp_options as o
from netbootd.config import BootConfig
from netbootd.model import LeaseState
from netbootd.net.commit import GroupCommitter
from netbootd.net.dhcp import DhcpProtocol
from netbootd.policy.dhcp_engine import DhcpEngine, EngineSettings, Ingress
from netbootd.policy.leases import LeaseTable, ip2int, whole_subnet
from netbootd.registry.hosts import Registry
from netbootd.writes import HostWrite, LeaseWrite
from tests.dhcpkit import SERVER, client_packet, mac_bytes, wire


class FakeSocket:
    def __init__(self):
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data, dest):
        self.sent.append((data, dest))

    def fileno(self):
        return -1


class FakeTransport:
    def __init__(self):
        self.socket = FakeSocket()

    def fileno(self):
        return -1


class ManualThread:
    """Stands in for the commit thread: runs apply() only when told to."""

    def __init__(self):
        self.calls: list[tuple[list, defer.Deferred]] = []
        self.applied: list[list] = []

    def __call__(self, fn, batch):
        d = defer.Deferred()
        self.calls.append((batch, d))
        return d

    def finish(self, fail: bool = False):
        batch, d = self.calls.pop(0)
        if fail:
            d.errback(RuntimeError("disk full"))
        else:
            self.applied.append(batch)
            d.callback(None)


def make(window=0.002, mode="full", probe=False, prober=None, clock=None):
    clock = clock if clock is not None else task.Clock()
    clock.advance(1_700_000_000)
    net = whole_subnet("lab", SERVER, 24, relays=frozenset({ip2int("10.77.0.9")}))
    engine = DhcpEngine(EngineSettings(mode=mode, probe=probe), [net], LeaseTable([net]),
                        Registry(), BootConfig())
    thread = ManualThread()
    committer = GroupCommitter(clock, lambda b: None, window, run_in_thread=thread)
    proto = DhcpProtocol(engine, Ingress("eth1", SERVER, "lab"), committer, clock, prober,
                         arp=lambda *a: None)
    proto.transport = FakeTransport()
    return proto, clock, thread


def sent(proto):
    return [(dhcp.decode(d), dest) for d, dest in proto.transport.socket.sent]


def discover_request(proto, i):
    proto.datagramReceived(wire(client_packet(o.DISCOVER, mac_bytes(i), giaddr="10.77.0.9")),
                           ("10.77.0.9", 67))
    offer = sent(proto)[-1][0]
    proto.datagramReceived(wire(client_packet(o.REQUEST, mac_bytes(i), giaddr="10.77.0.9",
                                              requested=offer.yiaddr_ip, server_id=SERVER)),
                           ("10.77.0.9", 67))
    return offer


def test_offer_is_sent_at_once_but_ack_only_after_the_commit():
    proto, clock, thread = make()
    offer = discover_request(proto, 1)
    assert [p.msg_type for p, _ in sent(proto)] == [o.OFFER]
    clock.advance(0.002)                         # window closes: batch goes to the thread
    assert len(thread.calls) == 1
    assert [p.msg_type for p, _ in sent(proto)] == [o.OFFER], "ACK left before its commit"
    thread.finish()
    pkts = sent(proto)
    assert [p.msg_type for p, _ in pkts] == [o.OFFER, o.ACK]
    assert pkts[1][0].yiaddr == offer.yiaddr and pkts[1][1] == ("10.77.0.9", 67)
    stored = [w.lease for w in thread.applied[0] if type(w) is LeaseWrite]
    assert stored[0].state == LeaseState.ACTIVE and stored[0].address


def test_writes_arriving_during_a_commit_form_the_next_group():
    proto, clock, thread = make()
    for i in range(3):
        discover_request(proto, i)
    clock.advance(0.002)
    assert len(thread.calls) == 1
    for i in range(3, 50):                       # these arrive while batch 1 commits
        discover_request(proto, i)
    thread.finish()                              # batch 1 done -> batch 2 starts at once
    assert len(thread.calls) == 1
    acks = [p for p, _ in sent(proto) if p.msg_type == o.ACK]
    assert len(acks) == 3
    thread.finish()
    acks = [p for p, _ in sent(proto) if p.msg_type == o.ACK]
    assert len(acks) == 50 and len({a.yiaddr for a in acks}) == 50
    assert len(thread.applied) == 2, "47 ACKs should share one commit"


def test_a_failed_commit_withholds_its_acks():
    proto, clock, thread = make()
    discover_request(proto, 1)
    clock.advance(0.002)
    thread.finish(fail=True)
    assert [p.msg_type for p, _ in sent(proto)] == [o.OFFER]
    assert proto.committer.failures == 1
    # the client retransmits; this time the store works
    offer = sent(proto)[0][0]
    proto.datagramReceived(wire(client_packet(o.REQUEST, mac_bytes(1), giaddr="10.77.0.9",
                                              requested=offer.yiaddr_ip, server_id=SERVER)),
                           ("10.77.0.9", 67))
    clock.advance(0.002)
    thread.finish()
    assert [p.msg_type for p, _ in sent(proto)] == [o.OFFER, o.ACK]


def test_malformed_packets_are_counted_and_the_next_one_is_served():
    proto, clock, thread = make()
    good = wire(client_packet(o.DISCOVER, mac_bytes(1), giaddr="10.77.0.9"))
    for bad in (b"", b"\x01" * 100, good[:-1].rstrip(b"\0")[:-1], good[:236] + b"XXXX",
                good[:240] + b"\x35\x05\x01"):
        proto.datagramReceived(bad, ("10.77.0.9", 67))
    proto.datagramReceived(good, ("10.77.0.9", 67))
    c = proto.counters
    assert c["drop.short"] == 2 and c["drop.bad_cookie"] == 1
    assert c["drop.option_overrun"] + c["drop.no_end"] + c["drop.option_truncated"] == 2
    assert [p.msg_type for p, _ in sent(proto)] == [o.OFFER]


def test_an_internal_error_never_escapes_datagram_received():
    proto, clock, thread = make()

    def boom(*a):
        raise KeyError("bug")
    proto.engine.handle = boom
    proto.datagramReceived(wire(client_packet(o.DISCOVER, mac_bytes(1))), ("10.77.0.9", 67))
    assert proto.counters["drop.internal_error"] == 1


class FakeProber:
    def __init__(self):
        self.pending: dict[str, defer.Deferred] = {}

    def probe(self, ip):
        d = self.pending[ip] = defer.Deferred()
        return d


def test_probe_delays_only_its_own_offer_and_skips_an_address_in_use():
    prober = FakeProber()
    proto, clock, thread = make(probe=True, prober=prober)
    proto.datagramReceived(wire(client_packet(o.DISCOVER, mac_bytes(1), giaddr="10.77.0.9")),
                           ("10.77.0.9", 67))
    assert sent(proto) == [] and len(prober.pending) == 1
    # meanwhile another client is served (its probe is pending too, not blocking)
    proto.datagramReceived(wire(client_packet(o.DISCOVER, mac_bytes(2), giaddr="10.77.0.9")),
                           ("10.77.0.9", 67))
    first_ip, second_ip = list(prober.pending)
    prober.pending.pop(first_ip).callback(True)          # someone answered: in use
    (retry_ip,) = set(prober.pending) - {second_ip}      # client 1 probes another address
    assert proto.counters["probe.conflict"] == 1
    for ip, d in list(prober.pending.items()):
        prober.pending.pop(ip).callback(False)
    offers = [p for p, _ in sent(proto)]
    assert len(offers) == 2 and first_ip not in {p.yiaddr_ip for p in offers}
    assert retry_ip in {p.yiaddr_ip for p in offers}
    lease = proto.engine.leases.by_addr[int.from_bytes(bytes(map(int, first_ip.split("."))),
                                                       "big")]
    assert lease.state == LeaseState.DECLINED and lease.client_key == b""


def test_returning_client_is_not_probed_again():
    prober = FakeProber()
    proto, clock, thread = make(probe=True, prober=prober)
    proto.datagramReceived(wire(client_packet(o.DISCOVER, mac_bytes(1), giaddr="10.77.0.9")),
                           ("10.77.0.9", 67))
    prober.pending.popitem()[1].callback(False)
    offer = sent(proto)[0][0]
    proto.datagramReceived(wire(client_packet(o.REQUEST, mac_bytes(1), giaddr="10.77.0.9",
                                              requested=offer.yiaddr_ip, server_id=SERVER)),
                           ("10.77.0.9", 67))
    clock.advance(0.01)
    thread.finish()
    proto.datagramReceived(wire(client_packet(o.DISCOVER, mac_bytes(1), giaddr="10.77.0.9")),
                           ("10.77.0.9", 67))
    assert prober.pending == {} and sent(proto)[-1][0].yiaddr == offer.yiaddr


def test_a_backlog_is_served_requests_first():
    """Under overload the batch holds many datagrams: REQUESTs (exchanges under
    way) are answered before DISCOVERs (new exchanges); arrival order otherwise."""
    proto, clock, thread = make(window=0)
    offers = []
    for i in range(3):
        proto.datagramReceived(wire(client_packet(o.DISCOVER, mac_bytes(i), giaddr="10.77.0.9")),
                               ("10.77.0.9", 67))
        offers.append(sent(proto)[-1][0])
    while thread.calls:                      # let the OFFERs' event writes commit
        thread.finish()
    proto.transport.socket.sent.clear()
    batch = [(wire(client_packet(o.DISCOVER, mac_bytes(10 + i), giaddr="10.77.0.9")),
              ("10.77.0.9", 67)) for i in range(3)]
    batch.insert(1, (wire(client_packet(o.REQUEST, mac_bytes(0), giaddr="10.77.0.9",
                                        requested=offers[0].yiaddr_ip, server_id=SERVER)),
                     ("10.77.0.9", 67)))
    proto.datagramsReceived(batch)
    assert proto.counters["rx.REQUEST"] == 1 and proto.counters["rx.batched"] == 4
    # the REQUEST was handled first: its commit was submitted before any new OFFER left
    assert thread.calls and [w.lease.mac for w in thread.calls[0][0] if type(w) is LeaseWrite] == \
        [mac_bytes(0).hex(":")]
    assert [p.chaddr for p, _ in sent(proto)] == [mac_bytes(10 + i) for i in range(3)]


# -- one unstorable write among good ones (real SQLite store) --------------------

from netbootd.model import Host, HostState, Lease  # noqa: E402
from netbootd.net.commit import dropped_events, restore_memory  # noqa: E402
from netbootd.writes import event  # noqa: E402
from netbootd.store.sqlite import Store, is_write_fault  # noqa: E402


def real_committer(tmp_path, dropped):
    store = Store(str(tmp_path / "state"))
    clock = task.Clock()
    committer = GroupCommitter(clock, store.apply, 0,
                               run_in_thread=lambda fn, arg: defer.maybeDeferred(fn, arg),
                               is_write_fault=is_write_fault, reread=store.stored,
                               on_dropped=dropped.extend)
    return store, committer


def _lease(i, mac):
    return Lease(ip2int("10.77.0.10") + i, "lab", b"\x01" + bytes(6) + bytes([i]), mac,
                 LeaseState.ACTIVE, 1.0, 3601.0)


def test_one_unstorable_write_is_dropped_and_every_other_write_commits_and_replies(tmp_path):
    """A batch of 10 exchanges, one carrying a host whose arch overflows
    SQLite INTEGER (the poisoned DISCOVER of the issue): the 9 others are
    stored and their replies leave; the bad write alone is dropped, counted
    and reported, and the reply that depended on it is withheld."""
    dropped: list = []
    store, committer = real_committer(tmp_path, dropped)
    sent_for: list[int] = []
    committer.window = 1.0                         # collect all 10 into one batch
    bad = Host("52:54:00:00:00:05", HostState.DISCOVERED, arch=99999999999999999999,
               first_seen=1.0, last_seen=1.0)
    for i in range(10):
        mac = f"52:54:00:00:00:{i:02x}"
        writes = [LeaseWrite(_lease(i, mac)), event(1.0, mac, "dhcp.ack", ip=str(i))]
        if i == 5:
            writes.insert(0, HostWrite(bad))
        committer.submit(writes, lambda i=i: sent_for.append(i))
    assert sent_for == []
    committer.reactor.advance(1.0)
    assert sent_for == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert committer.dropped_writes == 1 and committer.withheld == 1
    assert committer.failures == 0
    assert len(store.load_leases()) == 10, "the good writes of every exchange are stored"
    assert store.load_hosts() == []
    assert len(store.events(None, 100)) == 10
    assert [(w, stored) for w, _, stored in dropped] == [(HostWrite(bad), None)]
    assert "too large" in dropped[0][1]
    # The drop is an event of a later, good batch.
    committer.submit(dropped_events(dropped, 2.0))
    committer.reactor.advance(1.0)
    kinds = [e["kind"] for e in store.events(None, 100)]
    assert kinds.count("store.write_dropped") == 1


def test_after_a_dropped_write_memory_holds_what_the_store_holds(tmp_path):
    """The in-memory objects of dropped writes are set back to the stored
    rows (or forgotten when the store never had them), so memory and store
    agree: a host updated with an unstorable value keeps its stored facts;
    a lease the store never got is not held in the table."""
    dropped: list = []
    store, committer = real_committer(tmp_path, dropped)
    reg = Registry()
    h = Host("52:54:00:00:00:01", HostState.DISCOVERED, arch=7, first_seen=1.0, last_seen=1.0)
    reg.hosts[h.mac] = h
    committer.submit([HostWrite(h)])
    assert store.load_hosts()[0].arch == 7
    h.arch = 2 ** 64                                 # an unstorable update in memory
    net = whole_subnet("lab", SERVER, 24)
    table = LeaseTable([net])
    good = table.bind("lab", ip2int("10.77.0.20"), b"\x01a", "52:54:00:00:00:02", 1.0, 3600)
    poisoned = table.bind("lab", ip2int("10.77.0.21"), b"\x01b", "52:54:00:00:00:03", 1.0, 3600)
    poisoned.hostname = object()                     # a value SQLite cannot bind
    committer.submit([HostWrite(h), LeaseWrite(good), LeaseWrite(poisoned)])
    assert committer.dropped_writes == 2
    restore_memory(dropped, reg, table)
    assert reg.get(h.mac).arch == 7 and reg.get(h.mac) == store.load_hosts()[0]
    assert table.holder(ip2int("10.77.0.21"), 2.0) is None
    assert table.lease_of("lab", b"\x01b") is None
    assert table.holder(ip2int("10.77.0.20"), 2.0) is good
    assert {int(lz.address) for lz in store.load_leases()} == {ip2int("10.77.0.20")}


def request_again(proto, i, addr):
    proto.datagramReceived(wire(client_packet(o.REQUEST, mac_bytes(i), giaddr="10.77.0.9",
                                              requested=addr, server_id=SERVER)),
                           ("10.77.0.9", 67))


def acks(proto):
    return [p for p, _ in sent(proto) if p.msg_type == o.ACK]


def test_a_renewal_of_a_stored_binding_is_acked_at_once_and_still_committed():
    proto, clock, thread = make()
    offer = discover_request(proto, 1)
    clock.advance(0.002)
    thread.finish()                              # the binding is stored
    assert len(acks(proto)) == 1
    clock.advance(1)
    request_again(proto, 1, offer.yiaddr_ip)
    assert len(acks(proto)) == 2, "a renewal of a stored binding waited for a commit"
    assert proto.counters["ack.renewal_early"] == 1
    clock.advance(0.002)
    thread.finish()
    lease = [w.lease for w in thread.applied[1] if type(w) is LeaseWrite][0]
    assert lease.starts == clock.seconds() - 0.002 and lease.state == LeaseState.ACTIVE


class MovingClock(task.Clock):
    """Wall-clock-like: every read is a little later than the one before, as
    the engine's `now` and the committer's own reads are in the daemon."""

    def seconds(self):
        self.rightNow += 1e-6
        return self.rightNow


@pytest.mark.parametrize("clock_type", [task.Clock, MovingClock])
@pytest.mark.parametrize("on_thread", [False, True])
def test_a_repeated_request_for_a_binding_still_committing_waits(clock_type, on_thread):
    """A relay's duplicate or a retransmission of the first REQUEST: its
    binding is pending (or on the commit thread), so nothing is stored yet."""
    proto, clock, thread = make(clock=clock_type())
    offer = discover_request(proto, 1)
    if on_thread:
        clock.advance(0.002)
        assert len(thread.calls) == 1
    clock.advance(0.0001)
    request_again(proto, 1, offer.yiaddr_ip)
    assert acks(proto) == [], "an ACK left before its binding was stored"
    assert proto.counters["ack.renewal_early"] == 0
    if not on_thread:
        clock.advance(0.002)
    thread.finish(fail=True)                     # and that commit fails
    clock.advance(0.01)
    while thread.calls:
        thread.finish(fail=True)
    assert acks(proto) == [], "no ACK for a binding the store never got"


def test_a_renewal_of_a_binding_not_yet_stored_waits_for_the_commit():
    proto, clock, thread = make()
    offer = discover_request(proto, 1)
    clock.advance(0.002)                         # batch 1 is on the commit thread
    clock.advance(0.0005)
    request_again(proto, 1, offer.yiaddr_ip)     # its binding is in that batch
    assert acks(proto) == []
    thread.finish()                              # batch 1 stored: ACK 1 leaves
    assert len(acks(proto)) == 1
    clock.advance(0.002)
    thread.finish()
    assert len(acks(proto)) == 2 and proto.counters["ack.renewal_early"] == 0


def test_after_a_failed_commit_a_renewal_waits_until_its_binding_is_stored_again():
    proto, clock, thread = make()
    offer = discover_request(proto, 1)
    clock.advance(0.002)
    thread.finish()
    clock.advance(1)
    request_again(proto, 1, offer.yiaddr_ip)     # early ACK; its extension is in batch 2
    clock.advance(0.002)
    thread.finish(fail=True)                     # ... which is lost
    assert len(acks(proto)) == 2
    clock.advance(1)
    request_again(proto, 1, offer.yiaddr_ip)     # memory holds the lost extension: wait
    assert len(acks(proto)) == 2
    clock.advance(0.002)
    thread.finish()
    assert len(acks(proto)) == 3
    clock.advance(1)
    request_again(proto, 1, offer.yiaddr_ip)     # stored again: at once
    assert len(acks(proto)) == 4 and proto.counters["ack.renewal_early"] == 2
