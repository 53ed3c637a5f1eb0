"""The TFTP transfer thread (``TransferLoop``): every transfer socket in one epoll
set, every retransmission deadline in one heap, the budget of unconfirmed
transfers, and the hand-offs to and from the reactor.  net/tftp.py accepts
requests on the reactor and submits each transfer here; one transfer
(``Transfer``) is net/tftp_transfer.py's.  See TransferLoop for where the two
threads meet."""
from __future__ import annotations

import heapq
import logging
import os
import select
import threading
import time
from collections import Counter, OrderedDict, deque

from .tftp_transfer import Transfer

log = logging.getLogger("netbootd.tftp")


_RX_SIZE = 1024          # an ACK is 4 bytes, an ERROR's text may be cut short
CONFIRMED = "confirmed"  # not an outcome: the hand-off of a transfer's first ACK
EVICTED = "evicted"      # an unconfirmed transfer ended to make room (see _make_room)
DROPPED = "dropped"      # a new one ended unsent: the budget was full (see _make_room)


class TransferLoop:
    """The transfer thread: every transfer socket in one epoll set, every
    retransmission deadline in one heap, and the only code that changes a
    transfer once it has started (the reactor reads a few attributes: the
    duplicate-RRQ check reads ``closed`` and ``session.base``, the status
    page the progress; single reads, atomic under the GIL).

    Why a thread of its own: a block of a lock-step transfer is an ACK in and
    a DATA out, a few microseconds of work; dispatched by the reactor it also
    paid a reactor iteration, and it shared that thread with DHCP and HTTP.
    Here a wake-up is one ``epoll.poll`` (the GIL released while it blocks)
    and a call per ready socket; the reactor keeps DHCP, HTTP and DNS, and a
    cold file read (``os.pread``) blocks only this thread.

    Hand-offs, the only points where the threads meet:
      * ``submit(xfer)`` (reactor) -> inbox + eventfd -> the thread registers
        the socket and sends the first datagram;
      * an ended transfer -> ``ended`` + one ``callFromThread`` -> the reactor
        runs ``on_ended`` (caps, counters, the event that lands in SQLite);
      * a transfer's first ACK -> the same queue -> the reactor runs
        ``on_confirmed`` (it moves the transfer under the normal caps);
      * counters of rare events (drops, errors, timeouts) live in
        ``counters``, written by this thread only; ``TftpServer.counters``
        reads a copy (one C-level dict copy under the GIL).

    Unconfirmed transfers (no ACK yet: maybe a forged RRQ, whose replies go
    to a victim who never answers) are budgeted here, apart from the
    reactor's caps: at most ``first_per_client`` per source address and
    ``first_total`` in all (an unconfirmed transfer lives ~4 s and sends two
    datagrams: policy/tftp_session.py).

    * Over its source's budget, a new one ends the oldest of that source
      older than ``first_grace`` (0.1 s, many LAN round trips) as EVICTED:
      a victim whose address is forged still gets its own transfer, and a
      real host has no 5 RRQs of its own unanswered at once (a resent RRQ
      from the same port is not a new transfer: net/tftp.py).
    * Over the total budget (memory pressure: a flood, or a storm larger
      than the budget), the oldest of all is EVICTED only once it is
      *spent* - it has sent its last resend (``first_timeout``, 1 s, after
      its first datagram), so a client that is answering normally had a
      whole timeout to do so.  While the oldest is not spent, the new one
      is DROPPED before it sends anything: its client hears nothing and
      resends its RRQ (firmware does, after 1-4 s), which costs it a retry,
      not its boot.  An evicted transfer's client would lose its boot: its
      ACK hits a closed port (the storm bench, issue 15: 24 of 1,000 hosts
      when the oldest was evicted after 0.1 s).  A flood of forged RRQs
      still turns the budget over (every forged transfer is spent after
      1 s) without filling the caps real clients need (the issue before:
      300 forged RRQs from 60 sources in 0.3 s filled the 256-transfer cap;
      real clients got "busy" for ~6 s).

    ``threaded=False`` runs the same code on the caller's thread, for tests
    with fake sockets and a fake clock: ``submit`` admits at once, endings
    are reported at once and ``fire_due()`` is called by the test.
    """

    def __init__(self, reactor, on_ended, *, now=time.monotonic, threaded: bool = True,
                 epoll=select.epoll, name: str = "tftp-transfers"):
        self.reactor = reactor
        self.on_ended = on_ended
        self.now = now
        self.threaded = threaded
        self.name = name
        self.ep = epoll()
        self.efd = -1                                   # the inbox's bell (threaded only)
        if threaded:
            self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.ep.register(self.efd, select.EPOLLIN)
        self.handlers: dict[int, Transfer] = {}       # fd -> transfer (this thread)
        self.heap: list = []                            # (deadline, seq, transfer)
        self.seq = 0
        self.inbox: deque = deque()                     # submitted, not yet started
        self.ended: deque = deque()                     # (transfer, outcome, error)
        self._report_pending = False
        self.counters: Counter = Counter()              # written by this thread only
        self.on_confirmed = None                        # reactor: a transfer's first ACK
        self.first_per_client = 4                       # unconfirmed budget (class doc)
        self.first_total = 512
        self.first_grace = 0.1
        # The server's per-client cap, held again when a client confirms (its
        # first ACK): the RRQ-time check counts confirmed transfers only, so
        # RRQs sent together by one host would all pass it.  This thread's
        # own counts (the total is not held here: see confirm).
        self.per_client = 1 << 30
        self.confirmed_by_ip: Counter = Counter()
        self.confirmed_total = 0
        self.unconfirmed: OrderedDict = OrderedDict()   # transfer -> None, oldest first
        self.unconfirmed_by_ip: dict[str, OrderedDict] = {}
        self.rxbuf = bytearray(_RX_SIZE)                # this thread's receive buffer
        self.thread: threading.Thread | None = None
        self.stopping = False

    # -- the reactor's side ---------------------------------------------------------
    def submit(self, xfer: Transfer) -> None:
        """Start a transfer (its socket open, its session made).  After
        stop() it ends at once as "stopped"."""
        if self.stopping:
            xfer.finish("stopped", "server stopping", self.now())   # reported here
            return
        if not self.threaded:
            self._start(xfer)
            return
        self.inbox.append(xfer)
        if self.thread is None:
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            thread.start()                     # may raise: then the next submit tries again
            self.thread = thread
        os.eventfd_write(self.efd, 1)

    def stop(self, timeout: float = 5.0) -> None:
        """End every transfer ("stopped") and the thread; report them all
        before returning.  Once; later calls do nothing."""
        if self.stopping:
            return
        self.stopping = True
        if self.thread is not None:
            os.eventfd_write(self.efd, 1)
            self.thread.join(timeout)
            if self.thread.is_alive():
                # Stuck in a read of a dead file system: leave its transfers
                # to it rather than race it; they are not reported (the
                # process is ending anyway).
                log.warning("tftp: the transfer thread did not stop within %.0fs", timeout)
                return
        now = self.now()
        while self.inbox:
            self.inbox.popleft().finish("stopped", "server stopping", now)
        for xfer in list(self.handlers.values()):
            xfer.finish("stopped", "server stopping", now)
        self.heap.clear()
        self._drain()
        self.ep.close()
        if self.efd >= 0:
            os.close(self.efd)
            self.efd = -1

    def _drain(self) -> None:
        self._report_pending = False           # first: a later ending schedules again
        ended = self.ended
        while ended:
            xfer, outcome, error = ended.popleft()
            if outcome is CONFIRMED:
                if self.on_confirmed is not None:
                    self.on_confirmed(xfer)
            else:
                self.on_ended(xfer, outcome, error)

    # -- this thread's side -------------------------------------------------------
    def _run(self) -> None:
        poll = self.ep.poll
        handlers = self.handlers
        heap = self.heap
        now = self.now
        efd = self.efd
        t = now()
        while not self.stopping:
            try:
                # Until the first deadline, from the clock read at the last
                # wake-up (late by at most that wake-up's work).
                timeout = -1
                if heap:
                    timeout = heap[0][0] - t
                    if timeout < 0:
                        timeout = 0
                # maxevents: CPython allocates room for that many per call
                # (default 1023: 12 KiB each wake-up); what is left waits
                # for the next call (level-triggered).
                ready = poll(timeout, 64)
                t = now()
                for fd, _ev in ready:
                    xfer = handlers.get(fd)
                    if xfer is not None:
                        xfer.readable(t)
                    elif fd == efd:
                        self._wake()
                if heap and heap[0][0] <= t:
                    self.fire_due(t)
            except Exception:
                self.counters["drop.internal_error"] += 1
                log.exception("tftp: internal error in the transfer thread")
                time.sleep(0.01)               # a bug that repeats must not spin

    def _wake(self) -> None:
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass
        while self.inbox and not self.stopping:
            self._start(self.inbox.popleft())

    def _start(self, xfer: Transfer) -> None:
        try:
            self._admit(xfer)
        except Exception:
            xfer.internal_error(self.now())   # e.g. the first read failed (EIO)

    def _admit(self, xfer: Transfer) -> None:
        if xfer.closed:
            return                             # ended before it started (stop)
        if not self._make_room(xfer):
            self.counters["drop.unconfirmed_full"] += 1
            xfer.finish(DROPPED, "unconfirmed budget full", self.now())
            return
        self._hold(xfer)
        fd = xfer.sock.fileno()
        self.handlers[fd] = xfer
        try:
            self.ep.register(fd, select.EPOLLIN)
        except OSError as e:
            del self.handlers[fd]
            log.warning("tftp: cannot watch the transfer socket for %s: %s", xfer.addr, e)
            xfer.finish("failed", "server cannot watch the transfer socket", self.now())
            return
        xfer.start(self.now())

    def arm(self, xfer: Transfer, deadline: float) -> None:
        """Be woken for ``xfer`` at ``deadline``.  Lazy: one entry per
        transfer; when it comes due and the session's deadline has moved on
        (ACKs came), it is pushed again instead of a push per ACK."""
        xfer.armed = True
        self.seq += 1
        heapq.heappush(self.heap, (deadline, self.seq, xfer))

    def fire_due(self, now: float | None = None) -> None:
        """Call every transfer whose wake-up time has come."""
        if now is None:
            now = self.now()
        heap = self.heap
        while heap and heap[0][0] <= now:
            xfer = heapq.heappop(heap)[2]
            xfer.armed = False
            xfer.deadline_due(now)

    # -- the unconfirmed budget (class doc) ---------------------------------------
    def _make_room(self, xfer: Transfer) -> bool:
        """Before ``xfer`` joins the unconfirmed (class doc): end the oldest
        of its source (older than the grace) while that source is at its
        budget, then the oldest spent one of all while all are at theirs.
        False: no room, ``xfer`` is to be dropped unsent."""
        now = self.now()
        old = now - self.first_grace
        mine = self.unconfirmed_by_ip.get(xfer.addr[0])
        while mine and len(mine) >= self.first_per_client:
            victim = next(iter(mine))
            if victim.session.started > old:
                break                          # too young to have been answered
            victim.finish(EVICTED, "no ACK yet; room made for a newer request", now)
        pool = self.unconfirmed
        while len(pool) >= self.first_total:
            victim = next(iter(pool))
            if not victim.session.spent():
                return False
            victim.finish(EVICTED, "no ACK after its last resend; room made for a newer "
                          "request", now)
        return True

    def _hold(self, xfer: Transfer) -> None:
        self.unconfirmed[xfer] = None
        self.unconfirmed_by_ip.setdefault(xfer.addr[0], OrderedDict())[xfer] = None

    def _unhold(self, xfer: Transfer) -> None:
        if xfer in self.unconfirmed:
            del self.unconfirmed[xfer]
            ip = xfer.addr[0]
            mine = self.unconfirmed_by_ip[ip]
            del mine[xfer]
            if not mine:
                del self.unconfirmed_by_ip[ip]

    def confirm(self, xfer: Transfer) -> bool:
        """``xfer``'s client sent its first ACK: out of the unconfirmed
        budget and, if the caps allow, under them (the reactor is told, in
        order with endings).  False: over a cap, the caller refuses it."""
        self._unhold(xfer)
        ip = xfer.addr[0]
        # The total cap is not held here: a client that ACKed is never
        # refused for the others (an ERROR ends its boot).  The confirmed
        # may go over ``total`` by what was unconfirmed at the time, which
        # the reactor's bound on sockets (total + first_total) holds.
        if self.confirmed_by_ip[ip] >= self.per_client:
            self.counters["drop.cap_at_confirm"] += 1
            return False
        self.confirmed_by_ip[ip] += 1
        self.confirmed_total += 1
        xfer.capped = True
        self.report(xfer, CONFIRMED, None)
        return True

    def _uncap(self, xfer: Transfer) -> None:
        if xfer.capped:
            xfer.capped = False
            ip = xfer.addr[0]
            self.confirmed_total -= 1
            self.confirmed_by_ip[ip] -= 1
            if self.confirmed_by_ip[ip] <= 0:
                del self.confirmed_by_ip[ip]

    def release(self, xfer: Transfer) -> None:
        """Stop watching ``xfer``'s socket and close it."""
        self._unhold(xfer)
        sock = xfer.sock
        fd = sock.fileno()
        if fd >= 0:
            if self.handlers.pop(fd, None) is not None:
                try:
                    self.ep.unregister(fd)
                except OSError:
                    pass
            sock.close()

    def report(self, xfer: Transfer, outcome: str, error: str | None) -> None:
        self.ended.append((xfer, outcome, error))
        if threading.current_thread() is not self.thread:
            self._drain()                      # not threaded, or the thread has ended
        elif not self._report_pending:
            self._report_pending = True
            self.reactor.callFromThread(self._drain)
