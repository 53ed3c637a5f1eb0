"""Group commit: collect the writes of a few milliseconds, commit them once on
a dedicated thread, then release every reply that waited for them.

Nothing is acknowledged before it is stored (DESIGN.md): a caller hands its
writes and a callback that sends the reply; the callback runs on the reactor
thread only after the transaction holding those writes has committed.  While
one batch is committing, the next one fills up, so the commit rate adapts to
load by itself (one fsync can cover hundreds of leases).

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
from typing import Callable

from twisted.internet import defer
from twisted.python.threadpool import ThreadPool
from twisted.internet.threads import deferToThreadPool

from ..writes import HostWrite, LeaseWrite, event, write_mac

log = logging.getLogger("netbootd.commit")


def _no_fault(exc: BaseException) -> bool:
    return False


class GroupCommitter:
    def __init__(self, reactor, apply: Callable[[list], None], window: float = 0.002,
                 run_in_thread: Callable | None = None,
                 on_committed: Callable[[list], None] | None = None,
                 is_write_fault: Callable[[BaseException], bool] = _no_fault,
                 reread: Callable | None = None,
                 on_dropped: Callable[[list], None] | None = None):
        """`apply(batch)` writes a batch (blocking).  `run_in_thread(fn, arg)`
        returns a Deferred; by default a one-thread pool so commits keep
        their order.  Tests may pass a synchronous runner."""
        self.reactor = reactor
        self.apply = apply
        self.is_write_fault = is_write_fault
        self.reread = reread
        self.on_dropped = on_dropped
        self.window = window
        self._pool = None
        if run_in_thread is None:
            self._pool = ThreadPool(1, 1, name="netbootd-commit")
            self._pool.start()
            run_in_thread = lambda fn, arg: deferToThreadPool(reactor, self._pool, fn, arg)
        self._run = run_in_thread
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

    def submit(self, writes: list, on_commit: Callable[[], None] | None = None) -> None:
        first = len(self._writes)
        if writes:
            self._writes.extend(writes)
        if on_commit is not None:
            self._waiters.append((first, len(self._writes), on_commit))
        if not self._busy and self._timer is None and (self._writes or self._waiters):
            if self.window > 0:
                self._timer = self.reactor.callLater(self.window, self._flush)
            else:
                self._flush()

    @property
    def pending(self) -> int:
        return len(self._writes)

    def _flush(self) -> None:
        self._timer = None
        if self._busy:
            return
        writes, waiters = self._writes, self._waiters
        self._writes, self._waiters = [], []
        if not writes:
            self._release(waiters)
            self._maybe_idle()
            return
        self._busy = True
        d = self._run(self._apply_isolating, writes)
        d.addCallbacks(self._done, self._failed, callbackArgs=(writes, waiters),
                       errbackArgs=(writes, waiters))

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
        log.error("store: commit of %d writes failed, %d replies withheld: %s",
                  len(writes), len(waiters), failure.getErrorMessage())
        self._next()

    def _release(self, waiters) -> None:
        for _, _, cb in waiters:
            try:
                cb()
            except Exception:
                log.exception("reply after commit failed")

    def _next(self) -> None:
        if self._writes or self._waiters:
            self._flush()       # the next batch has been filling up meanwhile
        else:
            self._maybe_idle()

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
        if self._pool is not None:
            self._pool.stop()
            self._pool = None


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
