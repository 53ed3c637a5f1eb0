"""ICMP echo probe of an address before it is first offered (RFC 2131 §2.2
SHOULD).  Non-blocking: each probe is a Deferred that fires True (someone
answered: the address is in use) or False after the timeout, while the
reactor keeps serving every other client - unlike dnsmasq's ping, which
stalls the whole server for the wait."""
from __future__ import annotations

import itertools
import os
import socket
import struct

from twisted.internet import defer

from .udp import SockReader

ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST = 0, 8


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"netbootd-probe") -> bytes:
    head = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = _checksum(head + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, csum, ident, seq) + payload


class IcmpProber(SockReader):
    """A raw ICMP socket registered with the reactor as a reader."""

    def __init__(self, reactor, timeout: float):
        self.reactor = reactor
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.setblocking(False)
        self.ident = os.getpid() & 0xFFFF
        self._seq = itertools.count(1)
        self._pending: dict[tuple[str, int], tuple[defer.Deferred, object]] = {}
        reactor.addReader(self)

    # IReadDescriptor: doRead (the rest: udp.SockReader)
    def doRead(self) -> None:
        for _ in range(64):
            try:
                data, (src, _) = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            ihl = (data[0] & 0x0F) * 4 if data else 0
            if len(data) < ihl + 8:
                continue
            typ, _, _, ident, seq = struct.unpack_from("!BBHHH", data, ihl)
            if typ != ICMP_ECHO_REPLY or ident != self.ident:
                continue
            entry = self._pending.pop((src, seq), None)
            if entry is not None:
                d, timer = entry
                timer.cancel()
                d.callback(True)

    def probe(self, ip: str) -> defer.Deferred:
        seq = next(self._seq) & 0xFFFF
        d = defer.Deferred()
        try:
            self.sock.sendto(echo_request(self.ident, seq), (ip, 0))
        except OSError:
            d.callback(False)       # cannot probe (no route): do not block the offer
            return d
        timer = self.reactor.callLater(self.timeout, self._expire, ip, seq)
        self._pending[(ip, seq)] = (d, timer)
        return d

    def _expire(self, ip: str, seq: int) -> None:
        entry = self._pending.pop((ip, seq), None)
        if entry is not None:
            entry[0].callback(False)

    def close(self) -> None:
        self.reactor.removeReader(self)
        for d, timer in self._pending.values():
            timer.cancel()
        self._pending.clear()
        self.sock.close()
