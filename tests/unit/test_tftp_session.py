"""The pure TFTP read-transfer machine: negotiation, windows, wrap, retransmission."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netbootd.codec import tftp as t
from netbootd.policy.tftp_session import (
    ABORTED, FAILED, FINISHED, Limits, Negotiated, NetasciiSource, ReadSession, negotiate,
)

T0 = 1000.0


def dec(step):
    return [t.decode(p) for p in step.send]


def blocks(step):
    return [(p.block, p.data) for p in dec(step)]


class CountingSource:
    """A file-like source that records every read."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)
        self.reads: list[tuple[int, int]] = []
        self.closed = False

    def read(self, offset, n):
        self.reads.append((offset, n))
        return self.data[offset:offset + n]

    def close(self):
        self.closed = True


# -- negotiation ------------------------------------------------------------------
def test_blksize_is_clamped_to_our_cap():
    n = negotiate([("blksize", "65464")], "octet", 10, Limits(max_blksize=1468))
    assert n.blksize == 1468 and n.oack == (("blksize", "1468"),)


def test_blksize_never_exceeds_what_the_client_asked():
    assert negotiate([("blksize", "1024")], "octet", 10).blksize == 1024


def test_blksize_above_the_rfc_maximum_is_clamped_not_refused():
    n = negotiate([("blksize", "70000")], "octet", 10, Limits(max_blksize=65464))
    assert n.blksize == 65464


@pytest.mark.parametrize("value", ["7", "0", "abc", "", "-5", "1e3", "99999999999"])
def test_invalid_blksize_is_ignored_and_not_echoed(value):
    n = negotiate([("blksize", value)], "octet", 10)
    assert n.blksize == 512 and n.oack == ()


def test_unknown_options_are_ignored_and_not_echoed():
    n = negotiate([("multicast", ""), ("rollover", "0"), ("tsize", "0")], "octet", 77)
    assert n.oack == (("tsize", "77"),)


def test_tsize_is_filled_in_with_the_real_size():
    n = negotiate([("tsize", "0")], "octet", 123456)
    assert n.tsize == 123456 and n.oack == (("tsize", "123456"),)


def test_tsize_is_omitted_for_netascii_because_the_converted_size_is_unknown():
    n = negotiate([("tsize", "0"), ("blksize", "1024")], "netascii", 100)
    assert n.tsize is None and n.oack == (("blksize", "1024"),)


@pytest.mark.parametrize("value, accepted", [("1", True), ("255", True), ("0", False),
                                             ("256", False)])
def test_timeout_1_to_255_is_echoed_unchanged_and_others_ignored(value, accepted):
    n = negotiate([("timeout", value)], "octet", 1, Limits(timeout=3.0))
    assert n.oack == ((("timeout", value),) if accepted else ())
    assert n.timeout == (float(value) if accepted else 3.0)


def test_windowsize_is_clamped_to_our_cap_and_zero_is_ignored():
    assert negotiate([("windowsize", "65535")], "octet", 1,
                     Limits(max_windowsize=64)).oack == (("windowsize", "64"),)
    assert negotiate([("windowsize", "16")], "octet", 1).windowsize == 16
    assert negotiate([("windowsize", "0")], "octet", 1).oack == ()


def test_option_names_are_case_insensitive_echoed_as_sent_and_first_wins():
    n = negotiate([("BLKSIZE", "1000"), ("blksize", "600")], "octet", 1)
    assert n.blksize == 1000 and n.oack == (("BLKSIZE", "1000"),)


def test_limits_outside_the_rfc_ranges_are_rejected():
    with pytest.raises(ValueError):
        Limits(max_blksize=70000)
    with pytest.raises(ValueError):
        Limits(max_windowsize=0)


# -- OACK / first packet -----------------------------------------------------------------
def test_without_accepted_options_data_1_goes_first():
    s = ReadSession(b"hello", negotiate([("foo", "1")], "octet", 5), T0)
    assert blocks(s.start()) == [(1, b"hello")]


def test_with_accepted_options_the_oack_goes_first_and_ack_0_starts_the_data():
    s = ReadSession(b"x" * 1000, negotiate([("tsize", "0"), ("blksize", "600")], "octet", 1000),
                    T0)
    first = dec(s.start())
    assert first == [t.OAck((("tsize", "1000"), ("blksize", "600")))]
    step = s.ack(0, T0 + 0.1)
    assert blocks(step) == [(1, b"x" * 600)] and step.deadline == pytest.approx(T0 + 1.1)


def test_an_ack_other_than_0_while_waiting_for_the_oack_ack_is_ignored():
    s = ReadSession(b"abc", negotiate([("tsize", "0")], "octet", 3), T0)
    s.start()
    assert s.ack(1, T0).send == [] and s.waiting_oack


def test_client_error_answering_the_oack_is_an_abort_not_a_failure():
    """PXE ROMs ask for tsize, then end the transfer with ERROR 8."""
    s = ReadSession(b"abc", negotiate([("tsize", "0")], "octet", 3), T0)
    s.start()
    step = s.error(T0, 8, "tsize query")
    assert step.outcome == ABORTED and step.send == [] and "8" in step.error


def test_client_error_during_data_fails_the_transfer_without_reply():
    s = ReadSession(b"a" * 2000, Negotiated(), T0)
    s.start()
    step = s.error(T0, 0, "disk full")
    assert step.outcome == FAILED and step.send == [] and s.deadline is None


# -- lock-step, final block ------------------------------------------------------------
def test_final_block_is_empty_when_the_size_is_a_multiple_of_blksize():
    s = ReadSession(b"z" * 1024, Negotiated(), T0)
    assert blocks(s.start()) == [(1, b"z" * 512)]
    assert blocks(s.ack(1, T0)) == [(2, b"z" * 512)]
    step = s.ack(2, T0)
    assert blocks(step) == [(3, b"")] and step.outcome is None
    done = s.ack(3, T0)
    assert done.outcome == FINISHED and done.send == [] and s.bytes_acked == 1024


def test_an_empty_file_is_one_empty_data_block():
    s = ReadSession(b"", Negotiated(), T0)
    assert blocks(s.start()) == [(1, b"")]
    assert s.ack(1, T0).outcome == FINISHED and s.bytes_acked == 0


def test_a_source_object_with_size_and_read_is_read_at_block_offsets():
    src = CountingSource(bytes(range(256)) * 8)         # 2048 bytes
    s = ReadSession(src, Negotiated(blksize=1000), T0)
    s.start()
    s.ack(1, T0)
    s.ack(2, T0)
    assert src.reads == [(0, 1000), (1000, 1000), (2000, 1000)]


def test_an_ack_for_a_block_not_yet_sent_is_ignored():
    s = ReadSession(b"q" * 5000, Negotiated(), T0)
    s.start()
    assert s.ack(3, T0).send == [] and s.base == 1


# -- Sorcerer's Apprentice and timeouts --------------------------------------------------
def test_a_duplicate_ack_never_triggers_a_retransmission():
    """RFC 1123 §4.2.3.1: answering duplicate ACKs doubles every later block."""
    s = ReadSession(b"d" * 3000, Negotiated(), T0)
    s.start()
    first = s.ack(1, T0 + 0.5)
    assert blocks(first)[0][0] == 2
    dup = s.ack(1, T0 + 0.6)
    assert dup.send == [] and dup.deadline == first.deadline and s.duplicate_acks == 1


def test_a_timeout_retransmits_the_unacknowledged_block():
    s = ReadSession(b"r" * 3000, Negotiated(), T0)
    s.start()
    s.ack(1, T0)
    step = s.timeout(T0 + 1.0)
    assert blocks(step) == [(2, b"r" * 512)] and step.deadline == T0 + 2.0
    assert s.retransmits == 1


def test_a_timer_that_fires_before_the_deadline_sends_nothing():
    s = ReadSession(b"r" * 3000, Negotiated(), T0)
    s.start()
    s.ack(1, T0 + 0.9)                                  # deadline moved to T0 + 1.9
    step = s.timeout(T0 + 1.0)
    assert step.send == [] and step.deadline == pytest.approx(T0 + 1.9)


def test_a_lost_oack_is_resent_on_timeout():
    s = ReadSession(b"abc", negotiate([("blksize", "100")], "octet", 3), T0)
    s.start()
    assert dec(s.timeout(T0 + 1.0)) == [t.OAck((("blksize", "100"),))]


def test_the_negotiated_timeout_sets_the_retransmission_deadline_once_the_client_acks():
    # Before the first ACK the short first-ACK timer applies (test_tftp_first_ack.py).
    s = ReadSession(b"abc", negotiate([("timeout", "7")], "octet", 3), T0)
    s.start()
    assert s.ack(0, T0).deadline == T0 + 7.0
    assert s.timeout(T0 + 6.9).send == []


def test_after_the_retry_limit_the_transfer_fails_with_timeout():
    s = ReadSession(b"f" * 1100, Negotiated(), T0, max_retries=5)
    now = T0
    s.start()
    s.ack(1, now)                                            # the client hears us
    for i in range(5):
        now += 1.0
        assert blocks(s.timeout(now)) == [(2, b"f" * 512)], f"retry {i + 1}"
    step = s.timeout(now + 1.0)
    assert step.outcome == FAILED and step.error == "timeout" and step.send == []
    assert s.ack(2, now + 1.0).outcome == FAILED            # nothing revives it


# -- the lost last ACK (RFC 1350 §6) ---------------------------------------------
def test_silence_after_the_final_block_is_a_finish_without_the_final_ack():
    """Every block before the final one ACKed, the final one sent (and
    resent) and then nothing: the client has it all and left."""
    s = ReadSession(b"f" * 600, Negotiated(), T0, max_retries=2)
    s.start()
    s.ack(1, T0)
    assert s.final_sent()
    s.timeout(T0 + 1.0)
    s.timeout(T0 + 2.0)
    step = s.timeout(T0 + 3.0)
    assert step.outcome == FINISHED and step.send == [] and not s.final_ack
    assert s.bytes_acked == 600 and "final ACK not received (timeout)" == s.reason


def test_a_client_asking_again_for_the_final_block_fails_as_before():
    """A duplicate ACK of the block before the final one: the client lacks
    the final block (its own timer fired) - a failure, not a lost last ACK."""
    s = ReadSession(b"f" * 600, Negotiated(), T0, max_retries=1)
    s.start()
    s.ack(1, T0)
    s.ack(1, T0 + 0.5)                                       # "I still want block 2"
    assert not s.final_sent()
    s.timeout(T0 + 1.5)
    assert s.timeout(T0 + 2.5).outcome == FAILED and s.final_ack


def test_a_window_counts_as_final_only_once_everything_before_it_is_acked():
    neg = negotiate([("windowsize", "4")], "octet", 3000)   # 6 blocks, the last short
    s = ReadSession(b"w" * 3000, neg, T0)
    s.start()
    s.ack(0, T0)                                             # blocks 1-4 out
    assert not s.final_sent()
    s.ack(4, T0)                                             # blocks 5, 6 (final) out
    assert s.final_sent()
    s.ack(4, T0 + 0.5)                                       # a gap: it asks again
    assert not s.final_sent()
    s.ack(5, T0 + 0.6)                                       # progress: 6 resent, no complaint
    assert s.final_sent()


def test_a_finished_transfer_has_its_final_ack():
    s = ReadSession(b"f" * 600, Negotiated(), T0)
    s.start()
    s.ack(1, T0)
    assert s.ack(2, T0).outcome == FINISHED and s.final_ack and not s.final_sent()


def test_progress_resets_the_retry_count():
    s = ReadSession(b"p" * 5000, Negotiated(), T0, max_retries=2)
    s.start()
    now = T0
    s.ack(1, now)                                        # confirmed: the normal ladder
    for blk in range(2, 6):
        now += 1.0
        s.timeout(now)
        now += 1.0
        s.timeout(now)                                   # two retries, at the limit
        assert s.ack(blk, now).outcome is None
    assert s.base == 6


# -- windowsize (RFC 7440) ----------------------------------------------------------------
def window_session(size=20 * 100, window=4):
    data = bytes(i % 251 for i in range(size))
    s = ReadSession(data, Negotiated(blksize=100, windowsize=window, oack=(("windowsize",
                                                                           str(window)),)), T0)
    s.start()
    return s, data


def test_a_window_sends_windowsize_blocks_after_ack_0():
    s, data = window_session()
    assert [b for b, _ in blocks(s.ack(0, T0))] == [1, 2, 3, 4]


def test_an_ack_for_the_last_block_of_the_window_sends_the_next_window():
    s, _ = window_session()
    s.ack(0, T0)
    assert [b for b, _ in blocks(s.ack(4, T0))] == [5, 6, 7, 8]


def test_an_ack_inside_the_window_restarts_the_window_after_that_block():
    s, data = window_session()
    s.ack(0, T0)
    s.ack(4, T0)                                         # 5..8 sent; client got 5, 6 only
    got = blocks(s.ack(6, T0))
    assert [b for b, _ in got] == [7, 8, 9, 10]
    assert got[0][1] == data[600:700]


def test_a_timeout_resends_the_whole_window_from_the_first_unacknowledged_block():
    s, _ = window_session()
    s.ack(0, T0)
    s.ack(2, T0)                                         # 3..6 sent
    assert [b for b, _ in blocks(s.timeout(T0 + 1.0))] == [3, 4, 5, 6]


def test_a_window_stops_at_the_final_block_and_its_ack_finishes():
    s, data = window_session(size=650, window=4)          # blocks 1..7, block 7 is 50 bytes
    s.ack(0, T0)
    assert [b for b, _ in blocks(s.ack(4, T0))] == [5, 6, 7]
    assert s.ack(6, T0).send != []                         # gap: 7 again
    step = s.ack(7, T0)
    assert step.outcome == FINISHED and s.bytes_acked == 650


def test_a_stale_ack_from_before_the_window_is_ignored():
    s, _ = window_session()
    s.ack(0, T0)
    s.ack(4, T0)
    assert s.ack(3, T0).send == [] and s.base == 5


# -- 16-bit block numbers -------------------------------------------------------------------
def test_a_transfer_past_65535_blocks_wraps_the_block_number_to_0_and_completes():
    nblocks = 70_000
    data = bytes(i % 256 for i in range(8 * nblocks - 3))   # last block short (5 bytes)
    s = ReadSession(data, Negotiated(blksize=8), T0)
    step = s.start()
    received = bytearray()
    seen = []
    for _ in range(nblocks + 1):                            # bounded
        (pkt,) = dec(step)
        seen.append(pkt.block)
        received += pkt.data
        step = s.ack(pkt.block, T0)
        if step.outcome is not None:
            break
    assert step.outcome == FINISHED
    assert bytes(received) == data and s.bytes_acked == len(data)
    assert seen[65534:65538] == [65535, 0, 1, 2]
    assert len(seen) == nblocks


def test_a_window_spanning_the_wrap_is_acknowledged_by_its_wrapped_number():
    data = b"w" * (8 * 65540)
    s = ReadSession(data, Negotiated(blksize=8, windowsize=8), T0)
    s.start()
    for blk in range(8, 65528, 8):
        s.ack(blk, T0)
    step = s.ack(65528, T0)                                 # window 65529..65536
    assert [p.block for p in dec(step)] == [65529, 65530, 65531, 65532, 65533, 65534, 65535, 0]
    nxt = s.ack(0, T0)                                      # ACK of block 65536, sent as 0
    assert [p.block for p in dec(nxt)][:2] == [1, 2] and s.base == 65537


# -- netascii -----------------------------------------------------------------------------
def test_netascii_sends_lf_as_cr_lf_and_cr_as_cr_nul():
    s = ReadSession(b"a\nb\rc\r\n", Negotiated(mode="netascii"), T0)
    assert blocks(s.start()) == [(1, b"a\r\nb\r\0c\r\0\r\n")]


def test_netascii_conversion_across_blocks_and_a_retransmission_after_release():
    text = b"line\n" * 300                                  # 1500 bytes -> 1800 converted
    want = text.replace(b"\n", b"\r\n")
    s = ReadSession(text, Negotiated(mode="netascii", blksize=512), T0)
    got = bytearray()
    step = s.start()
    for _ in range(10):
        (pkt,) = dec(step)
        retry = dec(s.timeout(s.deadline))                   # the same block again
        assert retry == [pkt]
        got += pkt.data
        step = s.ack(pkt.block, s.deadline)
        if step.outcome:
            break
    assert bytes(got) == want and s.bytes_acked == len(want)


def test_netascii_source_refuses_to_go_back_before_its_release_point():
    src = NetasciiSource(CountingSource(b"x\n" * 100))
    src.read(0, 50)
    src.release(40)
    assert src.read(40, 10) == (b"x\r\n" * 100)[40:50]
    with pytest.raises(ValueError):
        src.read(0, 10)


# -- the lock-step short path --------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 200), blksize=st.integers(8, 40), oack=st.booleans(),
       events=st.lists(st.one_of(st.tuples(st.just("ack"), st.integers(-2, 12)),
                                 st.tuples(st.just("timeout"), st.floats(0, 3)),
                                 *[st.tuples(st.just("next"), st.just(0))] * 4,
                                 st.tuples(st.just("error"), st.just(0))), max_size=60))
def test_ack_next_is_ack_without_the_step(size, blksize, oack, events):
    """The transfer tries ack_next() first and falls back to ack() when it
    says None: that pair must do exactly what ack() alone does, for every
    ACK (in order, duplicate, stale, ahead, before and after the OACK),
    timeout and end - every datagram, deadline, outcome and counter."""
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    neg = Negotiated(blksize=blksize, oack=(("blksize", str(blksize)),) if oack else ())
    fast, slow = ReadSession(data, neg, T0), ReadSession(data, neg, T0)
    now = T0
    assert fast.start() == slow.start()
    shortcuts = 0
    for kind, arg in events:
        if kind == "timeout":
            now += arg
            a, b = fast.timeout(now), slow.timeout(now)
            sent_a = [bytes(p) for p in a.send]
        elif kind == "error":
            a, b = fast.error(now, 0, "x"), slow.error(now, 0, "x")
            sent_a = []
        else:
            # "next": the ACK a correct client sends; "ack": one near it.
            block = fast.next - 1 if kind == "next" else fast.base - 1 + arg
            if fast.waiting_oack:
                block = 0 if kind == "next" else arg
            pkt = fast.ack_next(block & 0xFFFF, now)
            b = slow.ack(block & 0xFFFF, now)
            if pkt is not None:
                shortcuts += 1
                sent_a, a = [bytes(pkt)], None
                assert b.outcome is None and b.deadline == fast.deadline
            else:
                a = fast.ack(block & 0xFFFF, now)
                sent_a = [bytes(p) for p in a.send]
        assert sent_a == [bytes(p) for p in b.send]
        if a is not None:
            assert (a.deadline, a.outcome, a.error) == (b.deadline, b.outcome, b.error)
        for attr in ("base", "next", "last", "last_len", "retries", "deadline", "outcome",
                     "packets", "retransmits", "duplicate_acks", "bytes_acked"):
            assert getattr(fast, attr) == getattr(slow, attr), attr


def test_ack_next_declines_windows_and_the_last_block():
    s = ReadSession(b"z" * 20, Negotiated(blksize=8, windowsize=2), T0)
    s.start()
    assert s.ack_next(1, T0) is None and s.base == 1
    s = ReadSession(b"z" * 28, Negotiated(blksize=8), T0)
    s.start()
    assert s.ack_next(1, T0) is None, "the first ACK confirms the client: ack()'s work"
    assert blocks(s.ack(1, T0)) == [(2, b"z" * 8)]
    assert t.decode(s.ack_next(2, T0)) == t.Data(3, b"z" * 8)
    assert t.decode(s.ack_next(3, T0)) == t.Data(4, b"z" * 4)
    assert s.ack_next(4, T0) is None, "the final ACK ends the transfer: ack()'s work"
    assert s.ack(4, T0).outcome == FINISHED
