"""Fakes for protocol tests (DESIGN rule 11): Twisted's MemoryReactor has no
UDP, so these stand in for a socket and for the reactor's reader registry."""
from __future__ import annotations

from twisted.internet import task


class FakeUdpSocket:
    """Records what would have been sent, and where."""

    def __init__(self, ip: str = "127.0.0.1", port: int = 0, dest=None):
        self.addr = (ip, port)
        self.dest = dest
        self.sent: list[tuple[bytes, tuple]] = []
        self.closed = False

    def sendto(self, data, addr):
        self.sent.append((bytes(data), addr))

    def send(self, data):
        self.sent.append((bytes(data), self.dest))

    def connect(self, addr):
        self.dest = addr

    def getsockname(self):
        return self.addr

    def fileno(self):
        return -1 if self.closed else 99

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


class FakePoller:
    """Stands in for net/tftp.py's TransferPoller (an epoll set needs real
    descriptors): records which sockets are watched; tests deliver datagrams
    to the handlers themselves."""

    def __init__(self):
        self.handlers: dict[int, object] = {}

    def add(self, sock, handler):
        self.handlers[id(sock)] = handler

    def remove(self, sock):
        self.handlers.pop(id(sock), None)
