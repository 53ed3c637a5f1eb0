"""Token buckets keyed by client or interface.  Pure: callers pass ``now``."""
from __future__ import annotations

from collections import OrderedDict


class Buckets:
    """One token bucket per key (rate per second, burst = 2 x rate by
    default).  At most `max_keys` buckets are kept (least recently used go
    first), so a flood of random keys costs bounded memory."""

    def __init__(self, rate: float, burst: float | None = None, max_keys: int = 65536):
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self.max_keys = max_keys
        self._b: OrderedDict = OrderedDict()

    def allow(self, key, now: float, cost: float = 1.0) -> bool:
        b = self._b.get(key)
        if b is None:
            tokens = self.burst
            if len(self._b) >= self.max_keys:
                self._b.popitem(last=False)
        else:
            tokens, last = b
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            self._b.move_to_end(key)
        if tokens < cost:
            self._b[key] = (tokens, now)
            return False
        self._b[key] = (tokens - cost, now)
        return True
