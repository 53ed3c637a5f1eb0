"""Group commit: collect the writes of a few milliseconds, commit them once on
a dedicated thread, then release every reply that waited for them.

Nothing is acknowledged before it is stored (DESIGN.md): a caller hands its
writes and a callback that sends the reply; the callback runs on the reactor
thread only after the transaction holding those writes has committed.  While
one batch is committing, the next one fills up, so the commit rate adapts to
load by itself (one fsync can cover hundreds of leases).  When a commit ends
and the next batch is still small (fewer than `batch_min` writes), it goes
once its first write has waited `window`, as a batch does when the thread is
idle: a fast disk would otherwise commit a few writes at a time, thousands
of times a second, and each commit costs a transaction, an fsync and two
thread wake-ups (bench/dhcp: ~2,300 commits/s at 6,000 DORA/s, ~3 DORAs each).
Under load the window stretches: a batch that holds `fill` writes or more
when its window closes is filling fast, and waits on - until it holds
`target` writes at the rate it filled, at most `stretch` windows after its
first write - so a busy server commits fewer, larger batches (a commit's fixed
cost: an fsync, ~70 us of CPU here, the thread hand-offs, the reactor's
wake-up; bench/dhcp/README.md, 2026-12-04).  A slow flow (fewer than `fill`
writes in a window) commits as before.  No reply waits longer than `stretch`
windows plus the commit in progress.  A batch no reply waits on (events, the
renewals net/dhcp.py answers early) stretches further - to
`unawaited_target` writes, within `unawaited_stretch` windows - and goes
back to the awaited deadline when a reply joins it; the after-commit rule
(`batch_min`) is for awaited batches only.  ``submit`` numbers writes and
``stored(seq)`` says whether they are committed (and no later batch failed).

One unstorable write must not cost the others their replies: when a batch
fails with a *write fault* (a value the store cannot hold: an integer past
64 bits, a bad type; ``is_write_fault`` says which), the commit thread
bisects it, committing every half that stores and narrowing each failing half
down to the single write at fault (2*log2(n) extra transactions per bad
write).  That write is dropped; a reply whose own writes include a dropped one
is withheld (its client retransmits); every other reply leaves.  Any other
failure (disk full, I/O error) still withholds the whole batch, as bisecting
it would only fail n times.

Memory follows the store for a dropped write: ``reread(write)`` (on the
commit thread) returns what the store holds for that row, and
``on_dropped`` receives ``[(write, reason, stored)]`` on the reactor thread,
so the owner of the in-memory object (``restore_memory``) puts the stored
version back, or forgets an object the store never got.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from twisted.internet import defer

from ..writes import HostWrite, LeaseWrite, event, write_mac

log = logging.getLogger("netbootd.commit")


def _no_fault(exc: BaseException) -> bool:
    return False


class CommitThread:
    """The one thread that runs ``fn(batch)`` for every batch, in order, and
    hands each outcome back to the reactor with one ``callFromThread``.

    Twisted's ThreadPool + deferToThreadPool did the same with a Queue and a
    Condition per task, its team coordinator, context tracking and a Deferred
    per batch: a cost paid per batch, so per exchange at low rates (bench/dhcp
    cpu_at.py).  Here: a SimpleQueue get (one futex wake-up) on this side, one
    callFromThread (the reactor's waker) on the other.  ``done(batch, ok,
    value)`` runs on the reactor thread: value is ``fn``'s result when ok,
    else the exception it raised."""

    def __init__(self, reactor, fn: Callable, done: Callable, name: str = "netbootd-commit"):
        self.reactor, self.fn, self.done = reactor, fn, done
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, batch: list) -> None:
        self._q.put(batch)

    def _loop(self) -> None:
        get, fn, call = self._q.get, self.fn, self.reactor.callFromThread
        while True:
            batch = get()
            if batch is None:
                return
            try:
                ok, value = True, fn(batch)
            except BaseException as e:      # handed to the reactor, logged there
                ok, value = False, e
            call(self.done, batch, ok, value)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand, then end the thread (joined)."""
        self._q.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


class GroupCommitter:
    def __init__(self, reactor, apply: Callable[[list], None], window: float = 0.002,
                 run_in_thread: Callable | None = None,
                 on_committed: Callable[[list], None] | None = None,
                 is_write_fault: Callable[[BaseException], bool] = _no_fault,
                 reread: Callable | None = None,
                 on_dropped: Callable[[list], None] | None = None,
                 batch_min: int = 64, fill: int = 32, target: int = 256,
                 stretch: float = 4.0, unawaited_target: int = 1024,
                 unawaited_stretch: float = 10.0):
        """`apply(batch)` writes a batch (blocking).  By default it runs on
        one CommitThread, so commits keep their order.  Tests may pass
        `run_in_thread(fn, arg)` returning a Deferred (a synchronous or a
        manual runner) instead."""
        self.reactor = reactor
        self.apply = apply
        self.is_write_fault = is_write_fault
        self.reread = reread
        self.on_dropped = on_dropped
        self.window = window
        self.batch_min = batch_min
        self.fill = fill
        self.target = target
        self.max_wait = window * stretch
        # A batch no reply waits for (events, early renewals: net/dhcp.py)
        # stretches further: its size is what saves CPU, and no client sees
        # its latency.
        self.unawaited_target = unawaited_target
        self.unawaited_max_wait = window * unawaited_stretch
        self._since = 0.0               # when the pending batch got its first write
        # Sequence numbers (writes submitted before): stored(seq) is true for
        # _lost_seq <= seq < _done_seq.  No clock: a wall-clock step or two
        # reads of it cannot reorder them.
        self._seq = 0                   # writes submitted so far
        self._cut_seq = 0               # ... when the batch on the thread was cut
        self._done_seq = 0              # every write before this is committed,
        self._lost_seq = 0              # but those before this (a failed batch)
        self._thread = None
        if run_in_thread is None:
            self._thread = CommitThread(reactor, self._apply_isolating, self._outcome)
        self._run = run_in_thread
        self._inflight: list = []       # waiters of the batch on the commit thread
        self.on_committed = on_committed
        self._writes: list = []
        # (first, end, callback): the callback's own writes are _writes[first:end]
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []
        self._timer = None
        self._busy = False
        self._idle: list[defer.Deferred] = []
        self.commits = 0
        self.committed_writes = 0
        self.failures = 0
        self.dropped_writes = 0         # write faults isolated and dropped
        self.withheld = 0               # replies withheld for a dropped write of theirs

    def submit(self, writes: list, on_commit: Callable[[], None] | None = None) -> int:
        """Queue `writes` (and the reply that waits on them); returns their
        sequence number, for stored()."""
        first = len(self._writes)
        seq = self._seq
        waited = bool(self._waiters)
        if not first and not waited:
            self._since = self.reactor.seconds()
        if writes:
            self._writes.extend(writes)
            self._seq = seq + len(writes)
        if on_commit is not None:
            self._waiters.append((first, len(self._writes), on_commit))
        if self._busy:
            return seq
        if self._timer is None:
            if not (self._writes or self._waiters):
                return seq
            if self.window > 0:
                self._timer = self.reactor.callLater(self.window, self._flush)
            else:
                self._flush()
        elif on_commit is not None and not waited and first:
            # the first reply to wait on an unawaited batch: its (shorter)
            # deadline applies from now on
            self._flush()
        elif len(self._writes) >= (self.target if self._waiters else self.unawaited_target):
            # a stretched batch is full: it goes
            self._flush(now=True)
        return seq

    @property
    def pending(self) -> int:
        return len(self._writes)

    def stored(self, seq: int | None) -> bool:
        """Whether the writes submit() numbered `seq` are committed: a batch
        holding them committed, and no later batch failed (conservative: a
        failure makes every earlier write count as not stored).  A negative
        number is something read from the store; None was never submitted."""
        if seq is None:
            return False
        return seq < 0 or self._lost_seq <= seq < self._done_seq

    def _due(self, after_commit: bool = False) -> float:
        """Seconds until the pending batch goes (0: now).  Right after a
        commit, a batch of batch_min writes goes at once (the thread is the
        bottleneck: commits run back to back).  Else it waits its window,
        then, while it fills fast (fill writes or more), until it holds
        target writes at the rate it filled, within max_wait of its first
        write."""
        n = len(self._writes)
        if self._waiters:
            target, max_wait = self.target, self.max_wait
        else:
            target, max_wait = self.unawaited_target, self.unawaited_max_wait
        if self._idle or (after_commit and n >= self.batch_min and self._waiters):
            return 0.0
        age = self.reactor.seconds() - self._since
        if age < self.window:
            return self.window - age
        if n < self.fill or n >= target or age >= max_wait:
            return 0.0
        return min(max_wait - age, (target - n) * age / n)

    def _flush(self, now: bool = False) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()              # called early: the timer must not fire later
        if self._busy:
            return
        wait = 0.0 if now or not self._writes else self._due()
        if wait > 0:
            self._timer = self.reactor.callLater(wait, self._flush)
            return
        writes, waiters = self._writes, self._waiters
        self._writes, self._waiters = [], []
        if not writes:
            self._release(waiters)
            self._maybe_idle()
            return
        self._busy = True
        self._cut_seq = self._seq
        if self._thread is not None:
            self._inflight = waiters
            self._thread.put(writes)
            return
        d = self._run(self._apply_isolating, writes)
        d.addCallbacks(self._done, self._failed, callbackArgs=(writes, waiters),
                       errbackArgs=(writes, waiters))

    def _outcome(self, writes: list, ok: bool, value) -> None:
        """CommitThread's report (reactor thread)."""
        waiters, self._inflight = self._inflight, []
        if ok:
            self._done(value, writes, waiters)
        else:
            self._failed(value, writes, waiters)

    # -- commit thread ----------------------------------------------------
    def _apply_isolating(self, writes: list) -> list:
        """apply(writes); on a write fault, bisect.  Returns the dropped
        writes as [(index, reason, stored)]; raises on any other failure."""
        dropped: list = []
        self._isolate(writes, 0, len(writes), dropped)
        return dropped

    def _isolate(self, writes: list, lo: int, hi: int, dropped: list) -> None:
        try:
            self.apply(writes if lo == 0 and hi == len(writes) else writes[lo:hi])
            return
        except Exception as e:
            if not self.is_write_fault(e):
                raise
            if hi - lo == 1:
                dropped.append(self._dropped(writes, lo, e))
                return
        mid = (lo + hi) // 2
        self._isolate(writes, lo, mid, dropped)
        self._isolate(writes, mid, hi, dropped)

    def _dropped(self, writes: list, i: int, exc: BaseException) -> tuple:
        stored = None
        if self.reread is not None:
            try:
                stored = self.reread(writes[i])
            except Exception:
                log.exception("store: cannot re-read %s after a dropped write", getattr(writes[i], "name", writes[i]))
        return i, f"{type(exc).__name__}: {exc}"[:200], stored

    # -- reactor thread ---------------------------------------------------
    def _done(self, dropped, writes, waiters) -> None:
        self._busy = False
        self.commits += 1
        self._done_seq = self._cut_seq
        batch = writes
        if dropped:
            bad = {i for i, _, _ in dropped}
            self.dropped_writes += len(bad)
            kept = [w for w in waiters if not any(w[0] <= i < w[1] for i in bad)]
            self.withheld += len(waiters) - len(kept)
            log.error("store: %d of %d writes could not be stored and were dropped "
                      "(%d replies withheld); first: %s", len(bad), len(writes),
                      len(waiters) - len(kept), dropped[0][1])
            waiters = kept
            writes = [w for i, w in enumerate(writes) if i not in bad]
        self.committed_writes += len(writes)
        self._release(waiters)
        if self.on_committed is not None:
            try:
                self.on_committed(writes)
            except Exception:
                log.exception("on_committed observer failed")
        if dropped and self.on_dropped is not None:
            try:
                self.on_dropped([(batch[i], why, stored)
                                 for i, why, stored in dropped])
            except Exception:
                log.exception("on_dropped handler failed")
        self._next()

    def _failed(self, failure, writes, waiters) -> None:
        # The writes are not stored: their replies must not leave.  Clients
        # retransmit; the in-memory table still holds the addresses for them.
        self._busy = False
        self.failures += 1
        self._lost_seq = self._cut_seq
        why = failure.getErrorMessage() if hasattr(failure, "getErrorMessage") else \
            f"{type(failure).__name__}: {failure}"
        log.error("store: commit of %d writes failed, %d replies withheld: %s",
                  len(writes), len(waiters), why)
        self._next()

    def _release(self, waiters) -> None:
        for _, _, cb in waiters:
            try:
                cb()
            except Exception:
                log.exception("reply after commit failed")

    def _next(self) -> None:
        if not (self._writes or self._waiters):
            self._maybe_idle()
            return
        # The next batch has been filling up meanwhile: it goes now when it
        # is large, has waited its window (stretched while it fills fast:
        # _due), or someone drains.
        wait = self._due(after_commit=True) if self._writes else 0.0
        if wait <= 0:
            self._flush(now=True)
        elif self._timer is None:
            self._timer = self.reactor.callLater(wait, self._flush)

    def _maybe_idle(self) -> None:
        if not self._busy and not self._writes and not self._waiters:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def drain(self) -> defer.Deferred:
        """Fires once everything submitted so far is committed."""
        d = defer.Deferred()
        self._idle.append(d)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._flush()
        else:
            self._maybe_idle()
        return d

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None


def restore_memory(dropped: list, registry, leases) -> None:
    """After a dropped write, memory holds what the store holds: the stored
    host/lease goes back in place of the unstorable one, or the object is
    forgotten when the store never had it (its client retransmits, and is
    then served from clean values).  Only an object still current in memory
    is touched: a newer one has writes of its own on the way."""
    for write, _, stored in dropped:
        if type(write) is HostWrite and registry is not None:
            item = write.host
            if registry.hosts.get(item.mac) is item:
                if stored is None:
                    del registry.hosts[item.mac]
                else:
                    registry.hosts[item.mac] = stored
        elif type(write) is LeaseWrite and leases is not None:
            leases.restore(write.lease, stored)


def dropped_events(dropped: list, now: float) -> list:
    """One `store.write_dropped` event per dropped write, for a later batch
    (its values are ours and storable: a MAC string or none, a short reason)."""
    out = []
    for write, reason, _ in dropped:
        mac = write_mac(write)
        if not isinstance(mac, str) or len(mac) > 64:
            mac = None
        out.append(event(now, mac, "store.write_dropped", write=str(getattr(write, "name", type(write).__name__))[:32],
                         reason=reason))
    return out
