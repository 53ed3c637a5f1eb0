"""Token buckets keyed by client or interface.  Pure: callers pass ``now``."""
from __future__ import annotations


class Buckets:
    """One token bucket per key (rate per second, burst = 2 x rate by
    default).  At most `max_keys` buckets are kept (least recently used go
    first), so a flood of random keys costs bounded memory.

    A plain dict in least-recently-used order (a key used is popped and put
    back at the end): cheaper per call than OrderedDict.move_to_end on the
    DHCP hot path (one call per packet)."""

    def __init__(self, rate: float, burst: float | None = None, max_keys: int = 65536):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self.max_keys = max_keys
        self._b: dict = {}

    def allow(self, key, now: float, cost: float = 1.0) -> bool:
        b = self._b.pop(key, None)
        if b is None:
            tokens = self.burst
            if len(self._b) >= self.max_keys:
                del self._b[next(iter(self._b))]
        else:
            tokens = b[0] + (now - b[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        if tokens < cost:
            self._b[key] = (tokens, now)
            return False
        self._b[key] = (tokens - cost, now)
        return True
