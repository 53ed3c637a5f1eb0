"""GroupCommitter on its own CommitThread (the default, no run_in_thread):
batches applied in order on one real thread, outcomes handed back through
callFromThread, failures and write faults handled as with a Deferred runner,
and the spacing of commits under load (a small next batch waits its window;
a large one, or a drain, goes at once)."""
from __future__ import annotations

import queue
import threading

from twisted.internet import task

from netbootd.net.commit import CommitThread, GroupCommitter


class ThreadReactor(task.Clock):
    """task.Clock plus callFromThread: calls from the commit thread queue up
    here and run on the test's thread in run_thread_calls (as the reactor
    runs them on its own thread)."""

    def __init__(self):
        super().__init__()
        self.from_thread: queue.SimpleQueue = queue.SimpleQueue()

    def callFromThread(self, fn, *args):
        self.from_thread.put((fn, args))

    def run_thread_calls(self, n: int = 1, timeout: float = 10.0) -> None:
        for _ in range(n):
            fn, args = self.from_thread.get(timeout=timeout)
            fn(*args)


class Fault(ValueError):
    pass


def make(apply, window=0.002, **kw):
    reactor = ThreadReactor()
    c = GroupCommitter(reactor, apply, window, is_write_fault=lambda e: isinstance(e, Fault), **kw)
    return reactor, c


def test_batches_commit_on_one_thread_in_order_and_replies_follow():
    threads, applied = set(), []

    def apply(batch):
        threads.add(threading.current_thread().name)
        applied.append(list(batch))
    reactor, c = make(apply)
    try:
        sent = []
        c.submit(["a1", "a2"], lambda: sent.append("a"))
        c.submit(["b1"], lambda: sent.append("b"))
        assert sent == [] and applied == []
        reactor.advance(0.002)                     # the window closes: to the thread
        reactor.run_thread_calls()
        assert applied == [["a1", "a2", "b1"]] and sent == ["a", "b"]
        assert threads == {"netbootd-commit"}
        assert c.commits == 1 and c.committed_writes == 3
    finally:
        c.stop()


def test_a_failed_commit_withholds_its_replies_and_the_next_batch_still_commits():
    calls = []

    def apply(batch):
        calls.append(list(batch))
        if len(calls) == 1:
            raise OSError("disk full")
    reactor, c = make(apply)
    try:
        sent = []
        c.submit(["x"], lambda: sent.append("x"))
        reactor.advance(0.002)
        reactor.run_thread_calls()
        assert sent == [] and c.failures == 1
        c.submit(["y"], lambda: sent.append("y"))
        reactor.advance(0.002)
        reactor.run_thread_calls()
        assert sent == ["y"] and c.commits == 1
    finally:
        c.stop()


def test_a_write_fault_is_bisected_on_the_thread_and_only_its_reply_is_withheld():
    def apply(batch):
        if "bad" in batch:
            raise Fault("value too large")
    dropped = []
    reactor, c = make(apply, reread=lambda w: "stored", on_dropped=dropped.extend)
    try:
        sent = []
        for i in range(8):
            writes = [f"w{i}", "bad"] if i == 5 else [f"w{i}"]
            c.submit(writes, lambda i=i: sent.append(i))
        reactor.advance(0.002)
        reactor.run_thread_calls()
        assert sent == [0, 1, 2, 3, 4, 6, 7]
        assert c.dropped_writes == 1 and c.withheld == 1 and c.failures == 0
        assert [(w, stored) for w, _, stored in dropped] == [("bad", "stored")]
        assert "value too large" in dropped[0][1]
    finally:
        c.stop()


def _reply() -> None:
    """A reply waiting on its writes: the batch follows the awaited policy."""


def test_a_small_next_batch_waits_its_window_a_large_one_goes_at_once():
    applied = []
    reactor, c = make(lambda batch: applied.append(len(batch)), window=0.002, batch_min=10)
    try:
        c.submit(["a"], _reply)
        reactor.advance(0.002)                     # batch 1 on the thread
        c.submit(["b"], _reply)                            # arrives during the commit
        reactor.advance(0.0005)
        reactor.run_thread_calls()                 # batch 1 done
        assert applied == [1]
        assert reactor.from_thread.empty()
        assert c.pending == 1, "a one-write batch waits for its window"
        reactor.advance(0.0015)                    # 'b' has waited 2 ms now
        reactor.run_thread_calls()
        assert applied == [1, 1]
        c.submit(["c"], _reply)
        reactor.advance(0.002)
        c.submit([f"d{i}" for i in range(10)], _reply)     # a large batch meanwhile
        reactor.run_thread_calls()                 # batch 3 done: the next goes at once
        reactor.run_thread_calls()
        assert applied == [1, 1, 1, 10]
    finally:
        c.stop()


def test_drain_does_not_wait_for_the_window():
    applied = []
    reactor, c = make(lambda batch: applied.append(len(batch)), window=1.0)
    try:
        c.submit(["a"])
        reactor.advance(1.0)
        c.submit(["b"])
        done = []
        c.drain().addCallback(done.append)
        reactor.run_thread_calls()                 # batch 1 done: 'b' goes at once
        reactor.run_thread_calls()
        assert applied == [1, 1] and done == [None]
    finally:
        c.stop()


def test_stop_ends_the_thread():
    t = CommitThread(ThreadReactor(), lambda batch: None, lambda *a: None)
    t.stop()
    assert not t._thread.is_alive()


def test_a_batch_filling_fast_waits_on_until_its_target_within_the_stretch():
    applied = []
    reactor, c = make(lambda batch: applied.append(len(batch)), window=0.002, fill=4,
                      target=16, stretch=4.0)
    try:
        for _ in range(8):                         # 8 writes in 2 ms: 4 per ms
            c.submit(["w"], _reply)
            reactor.advance(0.00025)
        assert applied == [] and c.pending == 8, "filling fast: waits past its window"
        for _ in range(7):
            c.submit(["w"], _reply)
            reactor.advance(0.00025)
        assert applied == [] and c.pending == 15
        c.submit(["w"], _reply)                            # the target: the timer set for it
        reactor.advance(0.00025)
        reactor.run_thread_calls()
        assert applied == [16]
        # A batch that keeps filling below its target goes after 4 windows.
        for _ in range(4):
            c.submit(["w"], _reply)
        reactor.advance(0.002)
        assert c.pending == 4
        reactor.advance(0.0055)
        assert c.pending == 4
        reactor.advance(0.001)                     # 8.5 ms: past 4 windows
        reactor.run_thread_calls()
        assert applied == [16, 4]
        # A slow flow (fewer than `fill` writes in a window) keeps its window.
        c.submit(["w"], _reply)
        reactor.advance(0.002)
        reactor.run_thread_calls()
        assert applied == [16, 4, 1]
    finally:
        c.stop()


def test_a_batch_no_reply_waits_for_stretches_further_until_a_reply_joins():
    applied = []
    reactor, c = make(lambda batch: applied.append(len(batch)), window=0.002, fill=4,
                      target=16, stretch=4.0, unawaited_target=64, unawaited_stretch=10.0)
    try:
        for _ in range(40):                        # 40 unawaited writes in 10 ms
            c.submit(["e"])
            reactor.advance(0.00025)
        assert applied == [] and c.pending == 40, "unawaited: past 4 windows, below 64"
        for _ in range(24):                        # its own target: goes at once
            c.submit(["e"])
            reactor.advance(0.00025)
        reactor.run_thread_calls()
        assert applied == [64]
        for _ in range(8):                         # a new unawaited batch fills fast...
            c.submit(["e"])
            reactor.advance(0.00025)
        reactor.advance(0.004)                     # 6 ms old: an awaited one would be due
        assert c.pending == 8
        c.submit(["ack"], _reply)                  # ...until a reply waits on it:
        assert c.pending == 9                      # the awaited stretch (8 ms) applies
        reactor.advance(0.002)
        reactor.run_thread_calls()
        assert applied == [64, 9], "the reply's batch went by the awaited deadline"
        # Unawaited and slow: it keeps the plain window.
        c.submit(["e"])
        reactor.advance(0.002)
        reactor.run_thread_calls()
        assert applied == [64, 9, 1]
    finally:
        c.stop()


def test_stored_follows_the_commits_and_forgets_everything_before_a_failure():
    fail = []

    def apply(batch):
        if fail:
            raise OSError("disk full")

    reactor, c = make(apply, window=0.002)
    try:
        assert c.stored(-1) and not c.stored(None)      # read from the store; never submitted
        a = c.submit(["a1", "a2"], _reply)
        b = c.submit(["b"])
        assert (a, b) == (0, 2) and not c.stored(a) and not c.stored(b)
        reactor.advance(0.002)                          # on the thread: not yet
        assert not c.stored(a)
        d = c.submit(["d"])                             # pending behind it
        reactor.run_thread_calls()
        assert c.stored(a) and c.stored(b) and not c.stored(d)
        fail.append(1)
        reactor.advance(0.02)
        reactor.run_thread_calls()                      # d's batch fails
        assert c.failures == 1 and not c.stored(d) and not c.stored(a), \
            "after a failure nothing before it counts as stored"
        fail.clear()
        e = c.submit(["e"], _reply)
        reactor.advance(0.002)
        reactor.run_thread_calls()
        assert c.stored(e) and not c.stored(d)
    finally:
        c.stop()
