"""TFTP read transfers, sans I/O: option negotiation, the per-transfer state
machine, netascii, and which file a request names.  No sockets, no clock, no
file system: the caller passes times in and sends what comes out.

Decisions (each also in the docstring where it is made):

* netascii + tsize: tsize is left out of the OACK (RFC 2349 lets a server
  ignore an option).  The converted size is only known after a pass over the
  whole file, and netascii is a text mode no boot firmware uses.
* blksize: values below 8 are ignored; above 65464 they are clamped, as
  tftp-hpa does; the result never exceeds our cap nor what the client asked.
* A leading '/' names a file relative to the roots ("/undionly.kpxe" is
  "undionly.kpxe"), as tftp-hpa does with --secure: iPXE and some firmware send
  the URI path.  Nothing outside the roots is reachable by any name.
* Block numbers wrap from 65535 to 0 (what tftp-hpa and most clients do).
* Until its first ACK a transfer is "unconfirmed": an RRQ's source address
  is unauthenticated UDP, and a forged one aims our replies at a victim who
  never answers.  So before the first ACK the session sends at most
  1 + ``first_retries`` datagrams (the first DATA or OACK, one resend),
  ``first_timeout`` apart, then listens FIRST_LINGER (3 s) more for a late
  first ACK and ends as UNANSWERED: a 16-byte forged RRQ buys two datagrams
  and ~4 s of a socket, not six datagrams over ~6 s (the client's timeout
  option, up to 255 s, does not stretch this).  The linger is for a real
  client whose ACK 0 was lost twice or came late: it resends after 1, 2, 4 s,
  and the storm bench at 2% loss lost a host when the session ended at 2 s.  The first ACK (ACK 0
  of the OACK, or of a block sent) proves the client hears us, as a TCP
  handshake does; from then on the normal ladder (``max_retries``) applies.
* The last ACK may be lost (RFC 1350 §6: the sender of the final ACK
  "dallies", and firmware does not): a transfer whose final block went out,
  whose client ACKed everything before that window and never complained
  after it (no duplicate ACK asking for it again), and which then ends by
  the retry limit or the client's port closing (ICMP), is FINISHED with
  ``final_ack = False``, not FAILED: the client has every byte and left.
  A client that missed the final block re-ACKs the block before it when
  its own timer fires; that is a complaint, and such a transfer still fails.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..codec.tftp import (
    BLKSIZE_MAX, BLKSIZE_MIN, DEFAULT_BLKSIZE, MODE_NETASCII, MODE_OCTET, OPT_BLKSIZE, OPT_TIMEOUT, OPT_TSIZE, OPT_WINDOWSIZE,
    TIMEOUT_MAX, TIMEOUT_MIN, WINDOWSIZE_MAX, WINDOWSIZE_MIN, encode_data, encode_oack,
)

# Outcomes.  ABORTED: the client answered our OACK with an ERROR (RFC 2347
# §2, code 8), as PXE ROMs do after a tsize-only query; not a failure.
RUNNING, FINISHED, FAILED, ABORTED = None, "finished", "failed", "aborted"
# UNANSWERED: no ACK ever came, within the first-ACK budget (see module doc).
UNANSWERED = "unanswered"


# -- negotiation (RFC 2347, 2348, 2349, 7440) -----------------------------
FIRST_LINGER = 3.0      # s after the last unconfirmed resend (module doc)


@dataclass(frozen=True)
class Limits:
    max_blksize: int = 1468         # 1500 MTU - IP 20 - UDP 8 - TFTP 4
    max_windowsize: int = 64
    timeout: float = 1.0            # retransmission timeout when the client names none
    max_retries: int = 5            # timeouts in a row before the transfer fails
    first_timeout: float = 1.0      # before the first ACK: resend after at most this
    first_retries: int = 1          # ... this many times, then the transfer is UNANSWERED

    def __post_init__(self):
        if not BLKSIZE_MIN <= self.max_blksize <= BLKSIZE_MAX:
            raise ValueError(f"max_blksize must be {BLKSIZE_MIN}..{BLKSIZE_MAX}")
        if not WINDOWSIZE_MIN <= self.max_windowsize <= WINDOWSIZE_MAX:
            raise ValueError(f"max_windowsize must be {WINDOWSIZE_MIN}..{WINDOWSIZE_MAX}")
        if self.timeout <= 0 or self.max_retries < 0:
            raise ValueError("timeout must be > 0 and max_retries >= 0")
        if self.first_timeout <= 0 or self.first_retries < 0:
            raise ValueError("first_timeout must be > 0 and first_retries >= 0")


@dataclass(frozen=True)
class Negotiated:
    mode: str = MODE_OCTET
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    timeout: float = 1.0
    tsize: int | None = None
    oack: tuple[tuple[str, str], ...] = ()   # accepted options, client's spelling and order


def _number(value: str) -> int | None:
    if value.isascii() and value.isdigit() and len(value) <= 10:
        return int(value)
    return None


def negotiate(options: Sequence[tuple[str, str]], mode: str, size: int | None,
              limits: Limits = Limits()) -> Negotiated:
    """What we accept of a read request's options.  Unknown or invalid
    options are ignored and not echoed (RFC 2347); repeated names: the
    first counts.  With nothing accepted there is no OACK and DATA 1 goes
    first (RFC 2347)."""
    blksize, windowsize, timeout, tsize = DEFAULT_BLKSIZE, 1, limits.timeout, None
    oack: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in options:
        key = name.lower()
        if key in seen:
            continue
        seen.add(key)
        v = _number(value)
        if v is None:
            continue
        if key == OPT_BLKSIZE:
            # RFC 2348: 8..65464; the server may answer with a smaller value.
            if v < BLKSIZE_MIN:
                continue
            blksize = min(v, BLKSIZE_MAX, limits.max_blksize)
            oack.append((name, str(blksize)))
        elif key == OPT_TIMEOUT:
            # RFC 2349 (timeout): 1..255 s, echoed unchanged or not at all.
            if not TIMEOUT_MIN <= v <= TIMEOUT_MAX:
                continue
            timeout = float(v)
            oack.append((name, value))
        elif key == OPT_TSIZE:
            # RFC 2349 (tsize): in a RRQ the server fills in the size.  Not for
            # netascii, whose converted size we do not compute (see module doc).
            if size is None or mode != MODE_OCTET:
                continue
            tsize = size
            oack.append((name, str(size)))
        elif key == OPT_WINDOWSIZE:
            # RFC 7440: 1..65535; the server may answer with a smaller value.
            if not WINDOWSIZE_MIN <= v <= WINDOWSIZE_MAX:
                continue
            windowsize = min(v, limits.max_windowsize)
            oack.append((name, str(windowsize)))
    return Negotiated(mode, blksize, windowsize, timeout, tsize, tuple(oack))


# -- data sources ----------------------------------------------------------
class BytesSource:
    """A source over bytes in memory; reads are zero-copy memoryview slices."""

    __slots__ = ("view", "size")

    def __init__(self, data):
        self.view = memoryview(data).cast("B")
        self.size = len(self.view)

    def read(self, offset: int, n: int):
        return self.view[offset:offset + n]

    def close(self) -> None:
        pass


class NetasciiSource:
    """The netascii view of a source (RFC 1350 §1 refers to RFC 764): LF is
    sent as CR LF, CR as CR NUL.  Converted forward on demand; bytes before
    ``release(offset)`` are dropped, which is safe because a transfer only ever
    goes back to its first unacknowledged block."""

    CHUNK = 64 << 10

    def __init__(self, source):
        self.source = source
        self.size = None               # unknown without a full pass
        self.base = 0                  # output offset of buf[0]
        self.buf = bytearray()
        self.src_pos = 0
        self.eof = False

    def read(self, offset: int, n: int) -> bytes:
        if offset < self.base:
            raise ValueError("netascii: read before the released offset")
        while not self.eof and self.base + len(self.buf) < offset + n:
            chunk = bytes(self.source.read(self.src_pos, self.CHUNK))
            if not chunk:
                self.eof = True
                break
            self.src_pos += len(chunk)
            # CR first: the CRs that LF -> CR LF adds must not become CR NUL.
            self.buf += chunk.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
        start = offset - self.base
        return bytes(self.buf[start:start + n])

    def release(self, offset: int) -> None:
        if offset > self.base:
            del self.buf[:offset - self.base]
            self.base = offset

    def close(self) -> None:
        self.source.close()


# -- the transfer ------------------------------------------------------------
@dataclass(slots=True)
class Step:
    """What to do after an event: send these datagrams (in order), be woken
    at ``deadline`` (None: no timer), and whether the transfer has ended."""
    send: list
    deadline: float | None
    outcome: str | None = RUNNING
    error: str | None = None


class ReadSession:
    """One RRQ transfer (RFC 1350 §2 lock-step, RFC 7440 windows).

    Blocks are tracked by absolute number (1, 2, ... without bound); the wire
    carries it modulo 65536, so a transfer may pass block 65535 and wrap to 0.
    Retransmission happens on ``timeout`` only: a duplicate ACK is ignored,
    never answered with data (RFC 1123 §4.2.3.1, the Sorcerer's Apprentice).
    With a window, an ACK for a block inside the window moves the window to
    just after that block (RFC 7440, traffic flow): what followed it is sent again.
    """

    def __init__(self, source, negotiated: Negotiated, now: float, *, max_retries: int = 5,
                 first_timeout: float = 1.0, first_retries: int = 1):
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = BytesSource(source)
        if negotiated.mode == MODE_NETASCII:
            source = NetasciiSource(source)
        self.source = source
        self._release = getattr(source, "release", None)
        self.neg = negotiated
        self.blksize = negotiated.blksize
        self.window = negotiated.windowsize
        self.lockstep = self.window == 1    # ack_next() may be used
        self._expect = -1       # ack_next(): the wire number of the block in flight, or -1
        self.timeout_s = negotiated.timeout
        self.max_retries = max_retries
        # Before the first ACK (see module doc): a short timer, one resend.
        self.first_timeout = min(first_timeout, self.timeout_s)
        self.first_retries = first_retries
        self.confirmed = False         # an ACK has come: the client hears us
        self.started = now
        self.waiting_oack = bool(negotiated.oack)
        self.base = 1                  # first unacknowledged block
        self.next = 1                  # next block to send
        self.last: int | None = None   # the final (short) block, once read
        self.last_len = 0
        self.retries = 0
        self.deadline: float | None = None
        self.outcome: str | None = RUNNING
        self.reason: str | None = None      # why it failed or was aborted
        self.packets = 0
        self.retransmits = 0
        self.duplicate_acks = 0
        self.final_ack = True           # False: FINISHED without the last ACK (module doc)
        self._complaints = 0            # duplicate ACKs since the final window went out

    @property
    def bytes_acked(self) -> int:
        """File bytes the client has acknowledged (as sent: netascii-converted)."""
        if self.outcome == FINISHED:
            return (self.last - 1) * self.blksize + self.last_len
        return (self.base - 1) * self.blksize

    def start(self) -> Step:
        """The first datagrams: the OACK if any option was accepted, else the
        first window of DATA."""
        if self.waiting_oack:
            return self._arm([encode_oack(self.neg.oack)], self.started)
        return self._arm(self._window(), self.started)

    def ack(self, block: int, now: float) -> Step:
        if self.outcome is not RUNNING:
            return Step([], None, self.outcome, self.reason)
        if self.waiting_oack:
            if block != 0:                 # RFC 2347: the OACK is answered by ACK 0
                return Step([], self.deadline)
            self.waiting_oack = False
            self.confirmed = True
            self.retries = 0
            return self._arm(self._window(), now)
        done = self.base - 1
        n = done + ((block - done) & 0xFFFF)   # the one candidate in [done, done + 65535]
        if n <= done or n >= self.next:
            if n == done:
                self.duplicate_acks += 1       # Sorcerer's Apprentice: not a reason to send
                self._complaints += 1
            return Step([], self.deadline)
        self.base = n + 1
        self.retries = 0
        self.confirmed = True
        self._complaints = 0
        if n == self.last:
            self.outcome = FINISHED
            self._expect = -1
            self.deadline = None
            return Step([], None, FINISHED)
        if self._release is not None:
            self._release(n * self.blksize)
        return self._arm(self._window(), now)

    def ack_next(self, block: int, now: float):
        """Lock-step's common case, without a Step: ``block`` acknowledges the
        block in flight and the transfer goes on -> the DATA datagram for the
        next block (the caller sends it; the deadline moves as in ack()).
        Anything else -> None, and nothing changed: the caller calls ack().
        tests/unit/test_tftp_session.py drives this and ack() side by side."""
        if block != self._expect:
            return None
        n = self.next                          # the block to send now
        self.base = n
        self.retries = 0
        self._complaints = 0
        size = self.blksize
        if self._release is not None:
            self._release((n - 1) * size)
        data = self.source.read((n - 1) * size, size)
        self.next = n + 1
        self.packets += 1
        self.deadline = now + self.timeout_s
        if len(data) < size:                   # the short block ends the file
            self.last = n
            self.last_len = len(data)
            self._expect = -1                  # its ACK is ack()'s: the end
        else:
            self._expect = n & 0xFFFF
        return encode_data(n, data)

    def timeout(self, now: float) -> Step:
        if self.outcome is not RUNNING:
            return Step([], None, self.outcome, self.reason)
        if self.deadline is None or now < self.deadline:
            return Step([], self.deadline)     # a stale timer
        self.retries += 1
        if not self.confirmed:
            if self.retries > self.first_retries:
                # A forged RRQ (or a client that cannot hear us): no more sends.
                self.outcome, self.reason, self.deadline = UNANSWERED, "no ACK", None
                return Step([], None, UNANSWERED, "no ACK")
        elif self.retries > self.max_retries:
            if self.final_sent():
                return self.finish_unacked("timeout")
            return self._fail("timeout")
        self.retransmits += 1
        if self.waiting_oack:
            return self._arm([encode_oack(self.neg.oack)], now)
        return self._arm(self._window(), now)

    def error(self, now: float, code: int = 0, message: str = "") -> Step:
        """The client sent an ERROR (e.g. code 8 refusing our OACK): the
        transfer ends, and nothing is sent back (RFC 1350 §7)."""
        if self.outcome is not RUNNING:
            return Step([], None, self.outcome, self.reason)
        why = f"client error {code}: {message}" if message else f"client error {code}"
        if self.waiting_oack:
            self.outcome, self.reason, self.deadline = ABORTED, why, None
            self._expect = -1
            return Step([], None, ABORTED, why)
        return self._fail(why)

    def spent(self) -> bool:
        """Unconfirmed, and its last resend has gone out: nothing more will
        be sent before it ends UNANSWERED (module doc)."""
        return not self.confirmed and self.retries >= self.first_retries

    def final_sent(self) -> bool:
        """The final block went out, every block before its window was
        ACKed, and the client has not asked for any again since (module
        doc: the last ACK may be lost)."""
        return (self.outcome is RUNNING and self.confirmed and self.last is not None
                and self.next > self.last and self.last < self.base + self.window
                and self._complaints == 0)

    def finish_unacked(self, why: str) -> Step:
        """End as FINISHED without the final ACK (module doc); ``why`` (the
        retry limit, the client's port closing) is kept in ``reason``."""
        self.outcome, self.deadline, self._expect = FINISHED, None, -1
        self.final_ack = False
        self.reason = f"final ACK not received ({why})"
        self.base = self.last + 1
        return Step([], None, FINISHED)

    # ------------------------------------------------------------------------
    def _fail(self, why: str) -> Step:
        self.outcome, self.reason, self.deadline = FAILED, why, None
        self._expect = -1
        return Step([], None, FAILED, why)

    def _arm(self, packets: list, now: float) -> Step:
        self.packets += len(packets)
        if not self.confirmed:
            # Unconfirmed: the short timer, and the first ACK goes through
            # ack() (which confirms), never ack_next() - the hot path stays as is.
            # after the last resend, linger: a client whose ACK was lost resends
            # it after its own timeout (firmware: 1, 2, 4 s), and must find us
            self.deadline = now + (self.first_timeout if self.retries < self.first_retries
                                   else FIRST_LINGER)
            self._expect = -1
            return Step(packets, self.deadline)
        self.deadline = now + self.timeout_s
        n = self.next - 1                      # the (last) block in flight
        self._expect = (n & 0xFFFF if self.lockstep and not self.waiting_oack
                        and self.base <= n != self.last else -1)
        return Step(packets, self.deadline)

    def _window(self) -> list:
        """Blocks base .. base+window-1 (not past the final one)."""
        out = []
        n, end, size = self.base, self.base + self.window, self.blksize
        read = self.source.read
        last = self.last
        while n < end and (last is None or n <= last):
            data = read((n - 1) * size, size)
            if len(data) < size:           # the short block ends the file (may be empty)
                last = self.last = n
                self.last_len = len(data)
            out.append(encode_data(n, data))
            n += 1
        self.next = n
        return out


# -- which file a name means --------------------------------------------------
class Refused(Exception):
    """A request we answer with an ERROR: ``code`` for the wire, ``reason``
    as a counter label."""

    def __init__(self, reason: str, code: int, message: str):
        self.reason = reason
        self.code = code
        self.message = message
        super().__init__(f"{reason}: {message}")
