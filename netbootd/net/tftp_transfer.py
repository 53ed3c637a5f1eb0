"""One TFTP read transfer on its own socket (``Transfer``): the client's datagrams
in, the session's (policy/tftp_session.py) out, its deadlines and its end.  It
runs on the transfer thread (``TransferLoop``, net/tftp_loop.py); net/tftp.py
makes it on the reactor and submits it there."""
from __future__ import annotations

import logging

from ..codec import tftp as w
from ..policy.tftp_session import UNANSWERED, ReadSession

log = logging.getLogger("netbootd.tftp")

_OP_ACK = w.OP_ACK


class Transfer:
    """One read transfer on its own socket (its TID), connected to the client.
    Made on the reactor thread; from ``start`` on, run by ``loop`` (the
    TransferLoop, net/tftp_loop.py, which imports this module)."""

    def __init__(self, loop, addr, filename: str, options,
                 session: ReadSession, sock, started_at: float):
        self.loop = loop
        self.addr = addr
        self.filename = filename
        self.options = options
        self.session = session
        self.sock = sock
        self.started_at = started_at    # wall clock, for the status page
        self.armed = False              # an entry in the loop's heap
        self.counted = False            # under the server's caps (reactor thread's)
        self.capped = False             # counted by the loop's caps (its thread's)
        self.closed = False
        self.duration = 0.0

    def start(self, now: float) -> None:
        self.apply(self.session.start(), now)

    def readable(self, now: float) -> None:
        """The loop saw a datagram: read one (the next wake-up reads more),
        into the loop's buffer (no bytes object per ACK).  The ACK of the
        block in flight - nearly every datagram of a lock-step transfer -
        is answered here; anything else goes through _received."""
        buf = self.loop.rxbuf
        try:
            n = self.sock.recv_into(buf)
        except BlockingIOError:
            return
        except ConnectionRefusedError:
            self._unreachable(now)
            return
        except OSError as e:
            self.loop.counters["rx.error"] += 1
            log.debug("tftp: read error on the transfer to %s: %s", self.addr, e)
            return
        if n == 4 and buf[1] == _OP_ACK and buf[0] == 0 and not self.closed:
            try:
                pkt = self.session.ack_next((buf[2] << 8) | buf[3], now)
            except Exception:
                self.internal_error(now)       # e.g. a read of the file failed
                return
            if pkt is not None:
                try:
                    self.sock.send(pkt)
                except OSError as e:
                    self._send_failed(e, now)
                return                         # armed: a running transfer always is
        self._received(buf, n, now)

    def _received(self, data, n: int, now: float) -> None:
        """``data[:n]`` came from the client and is not the ACK of the block
        in flight (readable answered that): the general path."""
        try:
            if self.closed:
                return
            if n == 4 and data[1] == _OP_ACK and data[0] == 0:
                # An ACK, decoded in place (w.decode is the oracle:
                # tests/unit/test_tftp_codec.py).
                self._ack((data[2] << 8) | data[3], now)
            else:
                self._other(bytes(data[:n]), now)
        except Exception:
            self.internal_error(now)

    def _ack(self, block: int, now: float) -> None:
        """An ACK off the lock-step short path (which never sees the first
        ACK: the session keeps it for ack()).  The first one that counts
        confirms the transfer."""
        session = self.session
        if session.confirmed:
            self.apply(session.ack(block, now), now)
            return
        step = session.ack(block, now)
        if session.confirmed and not self.loop.confirm(self):   # before any ending it causes
            try:
                self.sock.send(w.encode_error(w.ERR_NOT_DEFINED, "server busy, too many transfers"))
            except OSError:
                pass
            self.finish("refused", "server busy, too many transfers", now)
            return
        self.apply(step, now)

    def internal_error(self, now: float) -> None:
        """An exception escaped the protocol work (a bug, a failed read):
        logged, counted, and the transfer ends as failed; never the thread."""
        self.loop.counters["drop.internal_error"] += 1
        log.exception("tftp: internal error in the transfer to %s", self.addr)
        if not self.closed:
            self.finish("failed", "internal error", now)

    def _other(self, data: bytes, now: float) -> None:
        c = self.loop.counters
        try:
            pkt = w.decode(data)
        except w.DecodeError as e:
            c["drop." + e.reason] += 1
            return
        if type(pkt) is w.Ack:
            self._ack(pkt.block, now)
        elif type(pkt) is w.Error:
            c["rx.client_error"] += 1
            self.apply(self.session.error(now, pkt.code, pkt.message), now)
        else:
            c["drop.unexpected_opcode"] += 1

    def _unreachable(self, now: float) -> None:
        # ICMP port unreachable for an earlier datagram: nobody is listening.
        self.loop.counters["rx.unreachable"] += 1
        if not self.closed:
            # Before any ACK, an ICMP error is what a forged RRQ naming a
            # live host earns: unanswered (no event), not a failed transfer.
            session = self.session
            if session.final_sent():
                # It has every byte and left; its last ACK was lost (the
                # session's module doc): finished, final_ack False.
                self.apply(session.finish_unacked("client port unreachable"), now)
                return
            outcome = "failed" if session.confirmed else UNANSWERED
            self.finish(outcome, "client port unreachable", now)

    def apply(self, step, now: float) -> None:
        send = self.sock.send
        for pkt in step.send:
            try:
                send(pkt)
            except OSError as e:
                if self._send_failed(e, now):
                    return
        if step.outcome is not None:
            self.finish(step.outcome, step.error, now)
        elif step.deadline is not None and not self.armed:
            self.loop.arm(self, step.deadline)

    def _send_failed(self, e: OSError, now: float) -> bool:
        """Count a failed send; True if it ended the transfer."""
        if isinstance(e, BlockingIOError):
            self.loop.counters["tx.dropped_buffer_full"] += 1   # the timeout resends it
            return False
        if isinstance(e, ConnectionRefusedError):
            self._unreachable(now)
            return True
        self.loop.counters["tx.error"] += 1
        log.debug("tftp: cannot send to %s: %s", self.addr, e)
        return False

    def deadline_due(self, now: float) -> None:
        """The loop's wake-up for this transfer (maybe early: see arm)."""
        try:
            if self.closed:
                return
            deadline = self.session.deadline
            if deadline is None:
                return
            if now < deadline:
                self.loop.arm(self, deadline)
                return
            self.loop.counters["tx.timeout"] += 1
            self.apply(self.session.timeout(now), now)
        except Exception:
            self.internal_error(now)

    def finish(self, outcome: str, error: str | None, now: float) -> None:
        self.closed = True
        self.loop._uncap(self)
        self.duration = max(0.0, now - self.session.started)
        self.loop.release(self)
        try:
            self.session.source.close()
        finally:
            self.loop.report(self, outcome, error)
