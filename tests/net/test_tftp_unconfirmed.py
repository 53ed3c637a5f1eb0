"""Unconfirmed transfers on fake sockets and a task.Clock (issue "hostile input
on the wire", point 3): a transfer whose client has not ACKed yet may be a
forged RRQ; it is budgeted on its own (per source: oldest evicted; in total:
the oldest evicted once spent, else the new one dropped unsent), sends at most
two datagrams, ends within ~4 s and leaves no event, so a flood of them never
costs a real client its transfer, and a storm never loses one it answered."""
from __future__ import annotations

from netbootd.codec import tftp as t
from tests.net.test_tftp_protocol import Harness, decoded, download

REAL = ("10.77.0.200", 2070)


def forged_flood(h, sources=60, per_source=5, name="f", gap=0.001):
    """RRQs from ``sources`` addresses, ``per_source`` ports each, ``gap``
    seconds apart (300 in 0.3 s, as in the issue); nobody ACKs."""
    addrs = [(f"10.66.{i // 200}.{i % 200 + 1}", 1024 + p)
             for p in range(per_source) for i in range(sources)]
    for a in addrs:
        h.rrq(name, addr=a)
        h.advance(gap)
    return addrs


def sent_to(h, addrs):
    """Datagrams each address got, from any socket (listener included)."""
    n = dict.fromkeys(addrs, 0)
    for sock in h.sockets:
        for _, dest in sock.sent:
            if dest in n:
                n[dest] += 1
    return n


def test_300_forged_rrqs_from_60_sources_do_not_lock_out_a_real_client(tmp_path):
    """Before: they filled the 256-transfer cap and the real client got
    ERROR 0 "server busy" for ~6 s.  Now they fit the default budget (512)."""
    h = Harness(tmp_path)                       # the daemon's defaults
    data = b"k" * 5000
    h.file("f", data)
    forged_flood(h)
    # 5 per source over a budget of 4 per source: one of each evicted.
    assert len(h.server.transfers) == 240 and h.server.counters["transfer.evicted"] == 60
    assert h.server.counters["drop.cap_total"] == h.server.counters["drop.unconfirmed_full"] == 0
    h.rrq("f", addr=REAL)
    assert download(h, h.transfer(REAL)) == data
    assert [e["outcome"] for e in h.events if e["client"] == REAL[0]] == ["finished"]


def test_a_flood_over_the_budget_costs_a_real_client_one_resend_of_its_rrq(tmp_path):
    """300 forged RRQs in 0.3 s against a budget of 64: the flood's newest
    are dropped unsent while the oldest have a resend to go; the real RRQ
    then hears nothing, and its resend (firmware: 1 s later) takes the
    place of a spent forged transfer."""
    h = Harness(tmp_path, first_total=64)
    data = b"k" * 5000
    h.file("f", data)
    forged_flood(h)
    c = h.server.counters
    assert len(h.loop.unconfirmed) == 64 and c["drop.unconfirmed_full"] == 300 - 64
    assert c["transfer.evicted"] == 0
    h.rrq("f", addr=REAL)                       # dropped: nothing sent to it
    c = h.server.counters
    assert sent_to(h, [REAL])[REAL] == 0 and c["drop.unconfirmed_full"] == 300 - 64 + 1
    h.advance(0.8)                              # the firmware's resend, 1.1 s later
    h.rrq("f", addr=REAL)
    assert h.server.counters["transfer.evicted"] == 1
    assert download(h, h.transfer(REAL)) == data
    assert [e["outcome"] for e in h.events if e["client"] == REAL[0]] == ["finished"]


def test_a_storm_over_the_budget_never_evicts_a_transfer_before_its_resend(tmp_path):
    """The storm bench's 24 lost hosts (issue 15): a transfer whose OACK
    went out was evicted 0.1 s later by newer RRQs, and its client's ACK
    hit a closed port.  Now RRQs over the budget are dropped unsent while
    every unconfirmed transfer is within its first timeout; the storm's
    clients resend and all of them download."""
    h = Harness(tmp_path, first_total=20)
    h.file("f", b"s" * 1500)
    addrs = [(f"10.77.{i // 200}.{i % 200 + 1}", 2070) for i in range(60)]
    for a in addrs:
        h.rrq("f", [("tsize", "0"), ("blksize", "1468")], addr=a)
        h.advance(0.01)                         # 0.6 s of RRQs, none ACKed yet
    c = h.server.counters
    assert c["transfer.evicted"] == 0 and c["drop.unconfirmed_full"] == 40
    assert h.lsock.sent == []
    admitted = [a for a in addrs if any(x.addr == a for x in h.server.transfers.values())]
    assert admitted == addrs[:20]
    for a in admitted:                          # late ACKs, within the timeout
        x = h.transfer(a)
        h.to_transfer(x, t.encode_ack(0))
        h.to_transfer(x, t.encode_ack(1))
        h.to_transfer(x, t.encode_ack(2))
    h.advance(1.0)
    for a in addrs[20:]:                        # the rest resend their RRQ
        h.rrq("f", addr=a)
        download(h, h.transfer(a))
    done = [e for e in h.events if e["outcome"] == "finished"]
    assert len(done) == 60 and h.server.counters["transfer.evicted"] == 0


def test_a_forged_rrq_gets_at_most_two_datagrams_and_leaves_no_event(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"x" * 5000)
    addrs = forged_flood(h, sources=10, per_source=2)
    for _ in range(40):                         # 10 s of timers, in steps
        h.advance(0.25)
    assert h.server.transfers == {} and all(s.closed for s in h.sockets[1:])
    assert max(sent_to(h, addrs).values()) <= 2
    c = h.server.counters
    assert c["transfer.unanswered"] == 20 and c["tx.retransmit"] == 20
    assert h.events == [], "a forged request must not write an event per datagram"


def test_unconfirmed_transfers_end_within_4s_under_the_negotiated_timeout(tmp_path):
    from netbootd.policy.tftp_session import FIRST_LINGER
    h = Harness(tmp_path)
    h.file("f", b"x" * 5000)
    h.rrq("f", [("timeout", "255"), ("blksize", "1468")])
    xfer = h.transfer()
    h.advance(1.0)
    assert len(xfer.sock.sent) == 2 and not xfer.closed     # the OACK, once more
    h.advance(FIRST_LINGER - 0.5)
    assert not xfer.closed and len(xfer.sock.sent) == 2     # listening for a late ACK
    h.advance(0.5)
    assert xfer.closed and len(xfer.sock.sent) == 2


def test_a_source_over_its_unconfirmed_budget_loses_its_oldest_not_its_newest(tmp_path):
    h = Harness(tmp_path, first_per_client=3)
    h.file("f", b"x" * 5000)
    ports = [(REAL[0], 3000 + i) for i in range(5)]
    for a in ports:
        h.rrq("f", addr=a)
        h.advance(0.1)                          # each older than the grace
    alive = sorted(x.addr for x in h.server.transfers.values())
    assert alive == ports[2:], "the newest request is served"
    assert h.server.counters["transfer.evicted"] == 2 and h.lsock.sent == []
    assert h.events == []
    assert download(h, h.transfer(ports[-1])) == b"x" * 5000


def test_a_boot_storm_started_in_one_batch_is_not_evicted_by_itself(tmp_path):
    """150 real clients' RRQs admitted before any ACK is read (one batch):
    younger than the grace, none is evicted; all download."""
    h = Harness(tmp_path)
    h.file("f", b"s" * 1500)
    addrs = [(f"10.77.{i // 200}.{i % 200 + 1}", 2070) for i in range(150)]
    for a in addrs:
        h.rrq("f", addr=a)
    assert h.server.counters["transfer.evicted"] == 0 and h.lsock.sent == []
    assert all(download(h, h.transfer(a)) == b"s" * 1500 for a in addrs)
    assert h.loop.unconfirmed == {} and h.server.confirmed == 0


def test_over_the_budget_a_new_request_is_dropped_without_an_answer(tmp_path):
    h = Harness(tmp_path, total=4, first_total=2)
    h.file("f", b"x" * 5000)
    for i in range(8):                          # all at once: none spent
        h.rrq("f", addr=(f"10.66.0.{i + 1}", 1000))
    assert len(h.server.transfers) == 2 and h.lsock.sent == []
    assert h.server.counters["drop.unconfirmed_full"] == 6
    dropped = h.sockets[3:]                     # listener, the two admitted, then these
    assert len(dropped) == 6 and all(s.closed and s.sent == [] for s in dropped)
    assert h.events == []


def test_the_total_unconfirmed_budget_evicts_the_oldest_once_spent(tmp_path):
    h = Harness(tmp_path, first_total=8, first_grace=0)
    h.file("f", b"x" * 5000)
    addrs = [(f"10.66.0.{i}", 1000) for i in range(1, 13)]
    for a in addrs[:10]:
        h.rrq("f", addr=a)
    assert sorted(x.addr for x in h.server.transfers.values()) == sorted(addrs[:8])
    assert h.server.counters["transfer.evicted"] == 0
    h.advance(1.0)                              # all resent once: spent
    for a in addrs[10:]:
        h.rrq("f", addr=a)
    assert sorted(x.addr for x in h.server.transfers.values()) == sorted(addrs[2:8] + addrs[10:])
    assert len(h.loop.unconfirmed) == 8 and h.server.counters["transfer.evicted"] == 2


def test_a_confirmed_transfer_leaves_the_budget_and_is_never_evicted(tmp_path):
    h = Harness(tmp_path, first_per_client=1, first_total=2, first_grace=0)
    h.file("f", b"x" * 5000)
    h.rrq("f", addr=REAL)
    real = h.transfer(REAL)
    h.to_transfer(real, t.encode_ack(1))        # the client hears us: confirmed
    assert h.loop.unconfirmed == {} and h.server.confirmed == 1
    assert h.server.per_ip == {REAL[0]: 1}
    forged_flood(h, sources=5, per_source=3)
    h.rrq("f", addr=(REAL[0], 9999))            # its own address, forged
    assert not real.closed and len(h.loop.unconfirmed) == 2
    assert download(h, real) == b"x" * 5000
    assert h.server.confirmed == 0 and h.server.per_ip == {}


def test_the_caps_count_confirmed_transfers_only(tmp_path):
    """per_client / total hold real load; unconfirmed ones are not real load yet."""
    h = Harness(tmp_path, per_client=1, total=1)
    h.file("f", b"x" * 5000)
    for port in (1, 2, 3):
        h.rrq("f", addr=(REAL[0], port))        # three unconfirmed: all admitted
    assert len(h.server.transfers) == 3 and h.lsock.sent == []
    h.to_transfer(h.transfer((REAL[0], 3)), t.encode_ack(1))
    h.rrq("f", addr=(REAL[0], 4))
    assert h.lsock.sent == [] and h.server.counters["drop.cap_total"] == 1


def test_unconfirmed_counters_reach_metrics(tmp_path):
    """Evicted, dropped and unanswered transfers are netbootd_tftp_transfers{outcome=...}."""
    from netbootd.net.metrics import Metrics
    from netbootd.net.services.tftp import metric_families
    from tests.unit.test_metrics import scrape
    h = Harness(tmp_path, first_total=1, first_grace=0)
    h.file("f", b"x")
    h.rrq("f", addr=("10.66.0.1", 1))
    h.advance(1.0)                              # spent
    h.rrq("f", addr=("10.66.0.2", 1))           # evicts the first
    h.rrq("f", addr=("10.66.0.3", 1))           # dropped: the second is not spent
    h.advance(1.0)
    h.advance(3.0)                              # the second goes unanswered (its linger)
    m = Metrics(lambda: metric_families(h.server))     # what TftpService registers
    got = scrape(m)
    for outcome in ("evicted", "unanswered", "dropped"):
        assert got[("netbootd_tftp_transfers_total", frozenset({("outcome", outcome)}))] == 1


def test_a_host_that_sends_many_rrqs_at_once_still_gets_only_per_client_transfers(tmp_path):
    """The RRQ-time caps count confirmed transfers only, so 30 RRQs one host
    sends together all pass them; the per-client cap holds again when each
    confirms: the first per_client go on, the rest are refused (ERROR 0 on
    their TID).  The total cap is not held at confirm (a host that ACKed is
    never refused for the others): it holds at the next RRQs."""
    h = Harness(tmp_path, per_client=2, total=4)
    h.file("f", b"x" * 5000)
    for port in range(1, 31):
        h.rrq("f", addr=(REAL[0], port))
    for port in range(1, 31):
        x = h.transfer((REAL[0], port))
        h.to_transfer(x, t.encode_ack(1))
    assert h.server.confirmed == 2 and h.server.per_ip[REAL[0]] == 2
    assert len(h.server.transfers) == 2
    refused = [e for e in h.events if e["outcome"] == "refused"]
    assert len(refused) == 28 and refused[0]["error"] == "server busy, too many transfers"
    # Across hosts: 3 more hosts x 2, admitted while 2 < total = 4 were
    # confirmed, all go on (bounded by the sockets: total + first_total).
    for i in range(3):
        for port in (1, 2):
            h.rrq("f", addr=(f"10.77.1.{i}", port))
    for i in range(3):
        for port in (1, 2):
            h.to_transfer(h.transfer((f"10.77.1.{i}", port)), t.encode_ack(1))
    assert h.server.confirmed == 8 and h.server.counters["drop.cap_at_confirm"] == 28
    h.rrq("f", addr=("10.77.2.1", 1))           # over the total now: silence
    assert h.server.counters["drop.cap_total"] == 1
    assert not any(x.addr[0] == "10.77.2.1" for x in h.server.transfers.values())
    # Ending confirmed transfers frees places for the next host.
    for x in [x for x in h.server.transfers.values() if x.addr[0] != REAL[0]][:5]:
        download(h, x)
    h.rrq("f", addr=("10.77.2.1", 1))
    h.to_transfer(h.transfer(("10.77.2.1", 1)), t.encode_ack(1))
    assert h.server.confirmed == 4 and h.server.per_ip["10.77.2.1"] == 1
