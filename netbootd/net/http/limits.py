"""HTTP connection bounds: caps per source and in total, request deadlines.

The attack (issue "hostile input on the wire", point 5): ~1,000 connections
that each trickle one byte every 35 s.  twisted.web's only timer is an
inactivity timeout (``Site.timeOut``, 12 h by default) that every byte
resets, so such connections lived for ever and took every file descriptor.

* A connection must deliver a whole request (line, headers, body) within
  ``request_timeout`` of being accepted; after a response, the next request
  must be complete within ``idle_timeout``.  Deadlines are absolute: bytes
  arriving do not move them.  While a response is being written no deadline
  runs (a slow link downloading a kernel is legitimate; the caps bound it).
* At most ``per_source`` connections per client address: the next one is
  closed at accept, before any byte is read (counted).
* At most ``total`` in all (derived from the fd limit, netbootd/runtime/fdlimit.py).
  At the cap a new connection takes the place of the connection that has
  waited longest for its request (a slowloris or an idle keep-alive, never
  one being answered), so clients that send a request at once keep being
  served during a flood; with none waiting, the new one is closed.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict

from twisted.web import http

log = logging.getLogger("netbootd.http")


class ConnectionLimits:
    def __init__(self, clock, *, total: int, per_source: int, request_timeout: float,
                 idle_timeout: float, counters: Counter | None = None):
        self.clock = clock
        self.total = total
        self.per_source = per_source
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.counters = counters if counters is not None else Counter()
        self.open = 0
        self.by_source: Counter = Counter()
        # Channels waiting for a complete request, longest-waiting first.
        self.waiting: OrderedDict = OrderedDict()

    def admit(self, source: str | None) -> bool:
        """May a connection from `source` be accepted now?"""
        if self.by_source[source] >= self.per_source:
            self.counters["http.conn_refused_source"] += 1
            return False
        if self.open >= self.total:
            if not self.waiting:
                self.counters["http.conn_refused_total"] += 1
                return False
            oldest, _ = self.waiting.popitem(last=False)
            self.counters["http.conn_evicted"] += 1
            oldest.drop()
        self.open += 1
        self.by_source[source] += 1
        return True

    def release(self, source: str | None) -> None:
        self.open -= 1
        self.by_source[source] -= 1
        if self.by_source[source] <= 0:
            del self.by_source[source]


# The slowest sustained rate an admitted large body may arrive at (bytes/s):
# a 64 MiB capture chunk gets 10 s + 64 s.
MIN_BODY_RATE = 1 << 20


class LimitedChannel(http.HTTPChannel):
    """HTTPChannel with an absolute deadline for each request to arrive."""

    limits: ConnectionLimits
    source: str | None = None
    _deadline = None
    _released = False

    def connectionMade(self):
        super().connectionMade()
        self._arm(self.limits.request_timeout, "http.request_timeout")

    def allContentReceived(self):
        self._disarm()                      # the request is in; the response may take long
        super().allContentReceived()

    def requestDone(self, request):
        # Armed before super(): it may hand a pipelined request straight to
        # allContentReceived, which must find the timer to cancel.
        if self.persistent:
            self._arm(self.limits.idle_timeout, "http.idle_timeout")
        super().requestDone(request)

    def allow_body(self, length: int) -> None:
        """A large body a handler has admitted after checking its headers (a
        capture chunk, netbootd/net/http/api_capture.py): its deadline becomes
        request_timeout + length at MIN_BODY_RATE from now, and the connection
        is no longer one a flood may evict (it is not waiting: it is working)."""
        self._disarm()
        self._deadline = self.limits.clock.callLater(
            self.limits.request_timeout + length / MIN_BODY_RATE, self._expired,
            "http.body_timeout")

    def connectionLost(self, reason):
        self._disarm()
        self._release()
        super().connectionLost(reason)

    def drop(self) -> None:
        """Close at once, without waiting for buffered output (twisted's own
        timeout waits up to abortTimeout = 15 s more)."""
        self._disarm()
        self._release()
        if self.transport is not None:
            self.transport.abortConnection()

    def _arm(self, seconds: float, counter: str) -> None:
        self._disarm()
        self._deadline = self.limits.clock.callLater(seconds, self._expired, counter)
        self.limits.waiting[self] = None

    def _disarm(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
        self.limits.waiting.pop(self, None)

    def _expired(self, counter: str) -> None:
        self._deadline = None
        self.limits.counters[counter] += 1
        self.drop()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self.limits.release(self.source)


class LimitedSite:
    """Mixin for server.Site: the accept-time check and the channel class."""

    limits: ConnectionLimits

    def buildProtocol(self, addr):
        source = getattr(addr, "host", None)
        if not self.limits.admit(source):
            return None                     # tcp.Port closes the socket at once
        channel = super().buildProtocol(addr)
        channel.limits = self.limits
        channel.source = source
        return channel
