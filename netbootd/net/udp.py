"""A UDP socket served by the reactor, read in batches.

Twisted's udp.Port hands datagrams over one by one as it reads them.  Under
a boot storm we want to see what is queued first: ``UdpEndpoint`` drains up
to ``batch`` datagrams per readiness event and passes them together to
``handler.datagramsReceived(batch)``, so the handler can order its work
(DHCP serves REQUESTs, which complete exchanges, before DISCOVERs, which
start new ones).  When the server keeps up, batches hold one datagram and
nothing changes.
"""
from __future__ import annotations

import errno
import logging
import socket

log = logging.getLogger("netbootd.udp")

_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)
# ICMP errors reported on the socket for earlier sends: not fatal.
_IGNORE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EMSGSIZE)


class SockReader:
    """The IReadDescriptor methods shared by the readers on a socket of their own
    (``self.sock``: probe.py, ra.py, netlink.py); they add ``doRead``.  The log
    prefix is the class name (Twisted asks for it on every event)."""
    sock: socket.socket

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return type(self).__name__

    def connectionLost(self, reason) -> None:
        pass


class UdpEndpoint:
    """IReadDescriptor over an already-bound non-blocking UDP socket."""

    def __init__(self, reactor, sock: socket.socket, handler, batch: int = 64,
                 max_size: int = 65535):
        self.reactor = reactor
        self.socket = sock
        self.handler = handler
        self.batch = batch
        self.max_size = max_size
        self.read_errors = 0
        self._prefix = f"UdpEndpoint({sock.getsockname()[1]})"
        handler.transport = self
        reactor.addReader(self)

    # IReadDescriptor -----------------------------------------------------
    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        # Twisted calls this on every event: no getsockname() syscall here.
        return self._prefix

    def connectionLost(self, reason) -> None:
        pass

    def doRead(self) -> None:
        recv = self.socket.recvfrom
        got = []
        for _ in range(self.batch):
            try:
                got.append(recv(self.max_size))
            except OSError as e:
                if e.errno in _AGAIN:
                    break
                if e.errno in _IGNORE:
                    continue
                self.read_errors += 1
                log.warning("udp: read error: %s", e)
                break
        if got:
            self.handler.datagramsReceived(got)

    # --------------------------------------------------------------------
    def close(self) -> None:
        if self.socket.fileno() >= 0:
            self.reactor.removeReader(self)
            self.socket.close()
