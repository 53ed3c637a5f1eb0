"""Group commit: collect the writes of a few milliseconds, commit them once on
a dedicated thread, then release every reply that waited for them.

Nothing is acknowledged before it is stored (DESIGN.md): a caller hands its
writes and a callback that sends the reply; the callback runs on the reactor
thread only after the transaction holding those writes has committed.  While
one batch is committing, the next one fills up, so the commit rate adapts to
load by itself (one fsync can cover hundreds of leases).
"""
from __future__ import annotations

import logging
from typing import Callable

from twisted.internet import defer
from twisted.python.threadpool import ThreadPool
from twisted.internet.threads import deferToThreadPool

log = logging.getLogger("netbootd.commit")


class GroupCommitter:
    def __init__(self, reactor, apply: Callable[[list], None], window: float = 0.002,
                 run_in_thread: Callable | None = None,
                 on_committed: Callable[[list], None] | None = None):
        """`apply(batch)` writes a batch (blocking).  `run_in_thread(fn, arg)`
        returns a Deferred; by default a one-thread pool so commits keep
        their order.  Tests may pass a synchronous runner."""
        self.reactor = reactor
        self.apply = apply
        self.window = window
        self._pool = None
        if run_in_thread is None:
            self._pool = ThreadPool(1, 1, name="netbootd-commit")
            self._pool.start()
            run_in_thread = lambda fn, arg: deferToThreadPool(reactor, self._pool, fn, arg)
        self._run = run_in_thread
        self.on_committed = on_committed
        self._writes: list = []
        self._waiters: list[Callable[[], None]] = []
        self._timer = None
        self._busy = False
        self._idle: list[defer.Deferred] = []
        self.commits = 0
        self.committed_writes = 0
        self.failures = 0

    def submit(self, writes: list, on_commit: Callable[[], None] | None = None) -> None:
        if writes:
            self._writes.extend(writes)
        if on_commit is not None:
            self._waiters.append(on_commit)
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
        d = self._run(self.apply, writes)
        d.addCallbacks(self._done, self._failed, callbackArgs=(writes, waiters),
                       errbackArgs=(writes, waiters))

    def _done(self, _, writes, waiters) -> None:
        self._busy = False
        self.commits += 1
        self.committed_writes += len(writes)
        self._release(waiters)
        if self.on_committed is not None:
            try:
                self.on_committed(writes)
            except Exception:
                log.exception("on_committed observer failed")
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
        for cb in waiters:
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
