"""Before its first ACK a read transfer is cheap and short-lived (issue "hostile
input on the wire", point 3): a forged RRQ (spoofed source, the reply goes to a
victim who never answers) gets at most two datagrams - the first DATA or OACK
and one retransmission - and ends after a short deadline, not the 5-timeout
ladder a transfer under way gets."""
from __future__ import annotations

import pytest

from netbootd.codec import tftp as t
from netbootd.policy.tftp_session import (
    FAILED, FIRST_LINGER, UNANSWERED, Limits, Negotiated, ReadSession, negotiate,
)

T0 = 1000.0


def run_unanswered(s: ReadSession, horizon: float = 600.0, step: float = 0.25):
    """Fire every timer up to ``horizon`` s; return every datagram sent and
    the time the transfer ended (bounded: horizon / step iterations)."""
    sent = list(s.start().send)
    now = T0
    for _ in range(int(horizon / step)):
        now += step
        st = s.timeout(now)
        sent += st.send
        if st.outcome is not None:
            return sent, now, st
    raise AssertionError("the transfer never ended")


@pytest.mark.parametrize("neg", [
    Negotiated(),                                                   # DATA 1 first
    negotiate([("blksize", "1468"), ("tsize", "0")], "octet", 5000),  # OACK first
    negotiate([("windowsize", "64")], "octet", 500_000),            # a window after ACK 0
    negotiate([("timeout", "255")], "octet", 5000),                 # the longest a client may ask
])
def test_a_transfer_nobody_answers_sends_at_most_two_datagrams_and_ends_within_4s(neg):
    s = ReadSession(b"x" * 500_000, neg, T0)
    sent, ended, step = run_unanswered(s)
    assert len(sent) <= 2 and len(sent) == s.packets
    assert ended - T0 <= 1.0 + FIRST_LINGER + 0.25
    assert step.outcome == UNANSWERED and not s.confirmed


def test_the_first_datagram_is_retransmitted_once_then_the_transfer_gives_up():
    s = ReadSession(b"r" * 3000, Negotiated(), T0, first_timeout=1.0, first_retries=1)
    assert [t.decode(p) for p in s.start().send] == [t.Data(1, b"r" * 512)]
    assert s.deadline == T0 + 1.0
    assert [t.decode(p) for p in s.timeout(T0 + 1.0).send] == [t.Data(1, b"r" * 512)]
    step = s.timeout(T0 + 1.0 + FIRST_LINGER)
    assert (step.outcome, step.send, s.retransmits) == (UNANSWERED, [], 1)
    assert s.ack(1, T0 + 5.0).outcome == UNANSWERED        # nothing revives it


def test_a_late_first_ack_after_the_resend_is_still_heard():
    """The client's ACK was lost twice (or its timer is 2-4 s): it comes while
    the session lingers after its last resend, and the transfer goes on."""
    s = ReadSession(b"r" * 3000, Negotiated(), T0, first_timeout=1.0, first_retries=1)
    s.start()
    s.timeout(T0 + 1.0)                                   # the one resend
    assert s.timeout(T0 + 2.0).outcome is None            # still listening
    step = s.ack(1, T0 + 3.5)
    assert step.outcome is None and s.confirmed and step.send


def test_the_first_ack_confirms_the_client_and_the_normal_ladder_applies_after_it():
    s = ReadSession(b"p" * 5000, Negotiated(), T0, max_retries=5)
    s.start()
    s.timeout(T0 + 1.0)                                  # one retransmission of DATA 1
    assert s.ack(1, T0 + 1.5).outcome is None and s.confirmed and s.retries == 0
    now = T0 + 1.5
    for i in range(5):                                   # five retransmissions of DATA 2
        now += 1.0
        assert [p.block for p in map(t.decode, s.timeout(now).send)] == [2], i
    step = s.timeout(now + 1.0)
    assert step.outcome == FAILED and step.error == "timeout"


def test_ack_0_of_the_oack_confirms_and_a_stray_ack_does_not():
    s = ReadSession(b"abc", negotiate([("blksize", "100")], "octet", 3), T0)
    s.start()
    s.ack(5, T0)                                          # not an answer to the OACK
    assert not s.confirmed
    s.ack(0, T0)
    assert s.confirmed


def test_a_duplicate_of_no_block_does_not_confirm():
    s = ReadSession(b"a" * 3000, Negotiated(), T0)
    s.start()
    s.ack(0, T0)                                          # ACK 0 without an OACK: no block
    s.ack(7, T0)                                          # a block never sent
    assert not s.confirmed


def test_the_lock_step_short_path_waits_for_the_confirming_ack():
    """ack_next() is the hot path; the first ACK goes through ack(), once,
    so confirming costs the hot path nothing."""
    s = ReadSession(b"z" * 5000, Negotiated(), T0)
    s.start()
    assert s.ack_next(1, T0) is None and not s.confirmed
    s.ack(1, T0)
    assert t.decode(s.ack_next(2, T0)) == t.Data(3, b"z" * 512)


def test_first_ack_limits_are_validated():
    with pytest.raises(ValueError):
        Limits(first_timeout=0)
    with pytest.raises(ValueError):
        Limits(first_retries=-1)
