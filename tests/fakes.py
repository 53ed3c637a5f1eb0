"""Fakes for protocol tests (DESIGN rule 11): Twisted's MemoryReactor has no
UDP, so these stand in for a socket and for the reactor's reader registry."""
from __future__ import annotations

import itertools

from twisted.internet import task


_fds = itertools.count(1000)


class FakeUdpSocket:
    """Records what would have been sent, and where."""

    def __init__(self, ip: str = "127.0.0.1", port: int = 0, dest=None):
        self.fd = next(_fds)            # distinct, as real descriptors are
        self.addr = (ip, port)
        self.dest = dest
        self.sent: list[tuple[bytes, tuple]] = []
        self.inbox: list[bytes] = []     # datagrams to be read (recv_into)
        self.closed = False

    def recv_into(self, buf):
        if not self.inbox:
            raise BlockingIOError(11, "no datagram")
        data = self.inbox.pop(0)
        n = min(len(data), len(buf))
        buf[:n] = data[:n]
        return n

    def sendto(self, data, addr):
        self.sent.append((bytes(data), addr))

    def send(self, data):
        self.sent.append((bytes(data), self.dest))

    def connect(self, addr):
        self.dest = addr

    def getsockname(self):
        return self.addr

    def fileno(self):
        return -1 if self.closed else self.fd

    def close(self):
        self.closed = True


class FakeReactor(task.Clock):
    """task.Clock plus the reader registry UdpEndpoint needs."""

    def __init__(self):
        super().__init__()
        self.readers: set = set()

    def addReader(self, r):
        self.readers.add(r)

    def removeReader(self, r):
        self.readers.discard(r)


class FakeEpoll:
    """Stands in for select.epoll in net/tftp_loop.py's TransferLoop (run with
    threaded=False): records which descriptors are watched; tests deliver
    datagrams to the transfers themselves."""

    def __init__(self):
        self.watched: set[int] = set()
        self.closed = False

    def register(self, fd, events=None):
        if fd in self.watched:
            raise FileExistsError(fd)
        self.watched.add(fd)

    def unregister(self, fd):
        self.watched.remove(fd)

    def poll(self, timeout=-1):
        return []

    def close(self):
        self.closed = True
