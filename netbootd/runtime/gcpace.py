"""Paced garbage collection: no reactor stall that grows with the host count.

CPython runs a full (generation 2) collection whenever the objects that
survived young collections have grown by a quarter since the last one, and a
full collection visits every tracked object the process holds.  netbootd
keeps two per host (its Host and its Lease), and on this machine a full pass
costs ~0.6 us per object: ~60 ms at 20,000 hosts, ~150 ms at 50,000.  In a
boot storm of new clients - exactly when the heap grows - that is longer than
the DHCP socket's 256 KiB receive buffer lasts (~25 ms at 8,000 packets/s),
so each such pass dropped requests (bench/dhcp: drops from 4,000 DORA/s on,
a worst reply delay of ~100 ms; with collection paced, no drop below the CPU
limit).

Policy (CPython 3.11-3.13 semantics of gc.set_threshold; 3.14 collects
incrementally and is left alone):
* young collections (generations 0 and 1) run automatically as usual; the
  automatic full collection is switched off;
* every `tick` seconds the pacer runs a full collection and then freezes the
  survivors (gc.freeze): they move to the permanent generation, which no
  collection visits.  A tick's cost follows what survived since the last
  tick, not the size of the heap;
* frozen objects are still freed by reference counting the moment nothing
  refers to them.  Only reference cycles among them wait, for a *sweep*
  every `sweep` seconds (counted in ticks): unfreeze, one full collection of
  everything, freeze again.  That is the one pass that costs as much as CPython's own, and it
  runs at a known, rare time instead of on every 25% of growth.

* while a storm runs (the process allocates more than STORM_ALLOCS_PER_S
  container objects a second, counted per tick from the young collections
  CPython ran), the young threshold goes up to STORM_YOUNG: fewer young
  collections, and more short-lived objects freed by reference counting
  before any collection visits them.  In-process (bench/dhcp/inproc.py
  --part unique) young collections were ~10% of the CPU per new client at
  CPython's 700 and ~1% at 10,000; the extra memory is bounded by the
  threshold (~10,000 small objects).  The threshold goes back when the rate
  falls under half of that.

What waits for a sweep is small: a daemon serving 200 HTTP file downloads,
200 boot scripts and 40 TFTP transfers held 114 unreachable objects in cycles
after 20 s of it (Twisted breaks most of its cycles itself), RSS unchanged;
60,000 DORAs from 40,000 clients in 20 s left 556.  The sweep itself took
160-210 ms with those 40,000 hosts (185,000 objects) on this machine.
"""
from __future__ import annotations

import gc
import logging
import sys
import time

log = logging.getLogger("netbootd.gc")

# count[2] (generation 1 collections since the last full one) never reaches
# this, so CPython never starts a full collection by itself.
_NO_AUTO_FULL = 2 ** 31 - 1

# From 3.14 CPython's collector is incremental (the third threshold is
# ignored): its own pauses no longer grow with the heap, so it is left alone.
INCREMENTAL = sys.version_info >= (3, 14)

# ~23 net container allocations per new-client DORA: 50,000/s is ~2,000 DORA/s.
STORM_ALLOCS_PER_S = 50_000
STORM_YOUNG = 10_000


def _young_collections() -> int:
    return gc.get_stats()[0]["collections"]


class GcPacer:
    def __init__(self, clock, tick: float = 0.5, sweep: float = 900.0):
        if tick <= 0 or sweep < tick:
            raise ValueError("gc pacing needs 0 < tick <= sweep")
        self.clock = clock
        self.tick_s = tick
        # Sweeps are counted in ticks, not read from the clock: a wall clock
        # stepped back must not postpone them.
        self.ticks_per_sweep = max(1, round(sweep / tick))
        self.ticks = 0
        self.sweeps = 0
        self.collected = 0          # unreachable objects found by ticks and sweeps
        self.start_pause_ms = 0.0   # the start-up sweep (before the daemon says ready)
        self.last_pause_ms = 0.0
        self.max_pause_ms = 0.0     # the longest tick or sweep since, a reactor stall
        self._saved: tuple[int, int, int] | None = None
        self._call = None
        self._since_sweep = 0
        self.storm = False          # young threshold raised (STORM_YOUNG)
        self._young_seen = 0

    @property
    def running(self) -> bool:
        return self._saved is not None

    def start(self) -> None:
        if self.running:
            return
        if INCREMENTAL:
            log.info("gc: CPython %d.%d collects incrementally; no pacing",
                     *sys.version_info[:2])
            return
        self._saved = gc.get_threshold()
        g0, g1, _ = self._saved
        gc.set_threshold(g0, g1, _NO_AUTO_FULL)
        self.storm = False
        self._young_seen = _young_collections()
        self.sweep()                # what the start-up loaded is long-lived
        self.start_pause_ms, self.max_pause_ms = self.last_pause_ms, 0.0
        self._schedule()

    def stop(self) -> None:
        """Give collection back to CPython: everything unfrozen, its own
        thresholds restored."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._saved is not None:
            gc.unfreeze()
            gc.set_threshold(*self._saved)
            self._saved = None
            self.storm = False

    def _schedule(self) -> None:
        self._call = self.clock.callLater(self.tick_s, self._run)

    def _run(self) -> None:
        self._call = None
        try:
            self.pace_young()
            if self._since_sweep + 1 >= self.ticks_per_sweep:
                self.sweep()
            else:
                self.tick()
        except Exception:       # never lose the pacing over a bad finalizer
            log.exception("gc pacing step failed")
        if self.running:
            self._schedule()

    def pace_young(self) -> bool:
        """Raise or restore the young threshold from the allocation rate
        since the last step (young collections x the threshold in force).
        Returns whether a storm runs."""
        if self._saved is None:
            return False
        seen = _young_collections()
        g0 = gc.get_threshold()[0]
        rate = (seen - self._young_seen) * g0 / self.tick_s
        self._young_seen = seen
        base, g1, _ = self._saved
        if not self.storm and rate > STORM_ALLOCS_PER_S and base < STORM_YOUNG:
            gc.set_threshold(STORM_YOUNG, g1, _NO_AUTO_FULL)
            self.storm = True
        elif self.storm and rate < STORM_ALLOCS_PER_S / 2:
            gc.set_threshold(base, g1, _NO_AUTO_FULL)
            self.storm = False
        return self.storm

    def _timed(self, fn) -> int:
        t0 = time.perf_counter()
        n = fn()
        ms = (time.perf_counter() - t0) * 1000.0
        self.last_pause_ms = ms
        self.max_pause_ms = max(self.max_pause_ms, ms)
        self.collected += n
        return n

    def tick(self) -> int:
        """Collect what is not frozen, then freeze the survivors."""
        def step():
            n = gc.collect()
            gc.freeze()
            return n
        self.ticks += 1
        self._since_sweep += 1
        return self._timed(step)

    def sweep(self) -> int:
        """Collect everything, cycles among frozen objects included."""
        def step():
            gc.unfreeze()
            n = gc.collect()
            gc.freeze()
            return n
        self.sweeps += 1
        self._since_sweep = 0
        n = self._timed(step)
        log.debug("gc sweep: %d unreachable, %.1f ms, %d frozen",
                  n, self.last_pause_ms, gc.get_freeze_count())
        return n
