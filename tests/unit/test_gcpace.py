"""GcPacer against CPython's real collector (the clock is Twisted's fake)."""
from __future__ import annotations

import gc
import weakref

import pytest
from twisted.internet import task

from netbootd.runtime.gcpace import GcPacer


class Node:
    def __init__(self):
        self.other = None


def _cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


def _tracked(obj) -> bool:
    """Is obj in a collected generation (0-2)?  Frozen objects are not."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture
def pacer():
    before = gc.get_threshold()
    clock = task.Clock()
    p = GcPacer(clock, tick=1.0, sweep=10.0)
    yield p, clock
    p.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_start_switches_off_automatic_full_collections_and_stop_restores(pacer):
    p, clock = pacer
    g0, g1, g2 = gc.get_threshold()
    p.start()
    assert p.running and p.sweeps == 1
    assert gc.get_threshold()[:2] == (g0, g1)
    assert gc.get_threshold()[2] > 2 ** 30
    assert gc.get_freeze_count() > 0          # start-up state frozen by the first sweep
    p.stop()
    assert not p.running
    assert gc.get_threshold() == (g0, g1, g2)
    assert gc.get_freeze_count() == 0
    assert not clock.getDelayedCalls()


def test_tick_freezes_survivors_and_collects_young_cycles(pacer):
    p, clock = pacer
    p.start()
    keep = Node()
    assert _tracked(keep)
    garbage, ref = _cycle()
    del garbage
    clock.advance(1.0)                         # a tick
    assert p.ticks == 1 and p.sweeps == 1
    assert ref() is None                       # young cyclic garbage: gone
    assert not _tracked(keep)                  # the survivor: frozen
    assert p.collected >= 2


def test_frozen_cycles_wait_for_the_sweep(pacer):
    p, clock = pacer
    p.start()
    held, ref = _cycle()
    clock.advance(1.0)                         # tick: the live cycle is frozen
    assert ref() is not None and not _tracked(held)
    del held                                   # now garbage, but frozen
    for _ in range(8):
        clock.advance(1.0)
    assert p.ticks == 9 and p.sweeps == 1
    assert ref() is not None                   # a tick never visits frozen objects
    clock.advance(1.0)                         # the 10th step (10 s / 1 s) sweeps
    assert p.sweeps == 2 and p.ticks == 9
    assert ref() is None
    for _ in range(10):
        clock.advance(1.0)
    assert p.sweeps == 3 and p.ticks == 18     # counted in steps, not read from a clock


def test_frozen_objects_without_cycles_are_freed_at_once(pacer):
    p, clock = pacer
    p.start()
    obj = Node()
    ref = weakref.ref(obj)
    clock.advance(1.0)
    assert not _tracked(obj)
    del obj                                    # reference counting, frozen or not
    assert ref() is None


def test_pauses_are_recorded(pacer):
    p, clock = pacer
    p.start()
    assert p.start_pause_ms > 0.0 and p.max_pause_ms == 0.0   # start-up kept apart
    for _ in range(3):
        clock.advance(1.0)
    assert p.ticks == 3
    assert p.max_pause_ms >= p.last_pause_ms > 0.0


def test_a_failing_step_does_not_end_the_pacing(pacer, monkeypatch, caplog):
    p, clock = pacer
    p.start()
    real = gc.collect
    calls = []

    def broken(*a):
        calls.append(a)
        if len(calls) == 1:
            raise RuntimeError("finalizer trouble")
        return real(*a)

    monkeypatch.setattr(gc, "collect", broken)
    clock.advance(1.0)
    assert "gc pacing step failed" in caplog.text
    clock.advance(1.0)
    assert len(calls) == 2 and p.ticks == 2
    assert clock.getDelayedCalls()


@pytest.mark.parametrize("tick,sweep", [(0, 10), (-1, 10), (5, 1)])
def test_bad_intervals_are_refused(tick, sweep):
    with pytest.raises(ValueError):
        GcPacer(task.Clock(), tick=tick, sweep=sweep)


def test_a_storm_raises_the_young_threshold_and_calm_restores_it(pacer):
    from netbootd.runtime.gcpace import STORM_ALLOCS_PER_S, STORM_YOUNG
    p, clock = pacer
    g0, g1, _ = gc.get_threshold()
    p.start()
    clock.advance(1.0)                         # start-up's own allocations counted off
    assert not p.storm and gc.get_threshold()[0] == g0
    held = [[i] for i in range(2 * STORM_ALLOCS_PER_S)]    # a second's worth, twice over
    clock.advance(1.0)
    assert p.storm
    assert gc.get_threshold()[:2] == (STORM_YOUNG, g1)
    assert gc.get_threshold()[2] > 2 ** 30     # still no automatic full collection
    del held
    clock.advance(1.0)                         # a quiet second: back to CPython's threshold
    assert not p.storm
    assert gc.get_threshold()[:2] == (g0, g1)


def test_a_slow_flow_keeps_the_young_threshold(pacer):
    p, clock = pacer
    g0 = gc.get_threshold()[0]
    p.start()
    clock.advance(1.0)
    for _ in range(5):
        held = [[i] for i in range(g0 * 3)]   # a few young collections a second
        clock.advance(1.0)
        assert not p.storm and gc.get_threshold()[0] == g0
    del held
