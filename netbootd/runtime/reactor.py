"""The daemon's reactor: Twisted's epoll reactor without a logging context
per event.

Twisted's EPollReactor.doPoll hands every ready descriptor to its handler
through ``log.callWithLogger``, which asks the descriptor for its log prefix
and pushes a context (``{"system": prefix}``) for legacy twisted.python.log
messages - per event, ~1.6 us of Python per wake-up here (bench/dhcp/
loop_cost.py: 9.3 -> 7.7 us per datagram echoed through UdpEndpoint).  A
DHCP exchange costs the reactor about two wake-ups, and netbootd logs with
the standard logging module, which never reads that context.  Everything
else - the handler call, its errors (``_doReadOrWrite`` catches and reports
them, then drops the descriptor), the timers, the waker - is Twisted's own.
"""
from __future__ import annotations

import errno

from twisted.internet.epollreactor import EPollReactor


class LeanEPollReactor(EPollReactor):
    def doPoll(self, timeout):
        try:
            events = self._poller.poll(-1 if timeout is None else timeout,
                                       len(self._selectables))
        except OSError as e:
            if e.errno == errno.EINTR:
                return
            raise
        selectables, handle = self._selectables, self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)     # removed by an earlier event
            if selectable is not None:
                handle(selectable, fd, event)

    doIteration = doPoll


def install() -> LeanEPollReactor:
    """Install it as the global reactor (__main__, before anything imports
    twisted.internet.reactor)."""
    from twisted.internet.main import installReactor
    reactor = LeanEPollReactor()
    installReactor(reactor)
    return reactor
