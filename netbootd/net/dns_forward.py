"""Forwarding of names we do not own to configured upstream servers (UDP).

The lessons of DNSpooq (CVE-2020-25684/25685/25686, dnsmasq 2.83) and of
RFC 5452 ("Measures for making DNS more resilient against forged answers"):

* every query upstream leaves from its own socket, bound to a random port of
  the kernel's ephemeral range (secrets, not the kernel's counter), with a
  random 16-bit ID (secrets);
* the socket is connected to the upstream, so the kernel drops datagrams
  from any other address or port; the reply is still checked in full:
  source address and port, ID, QR, opcode and the question (name compared
  case-insensitively, type and class exactly, RFC 5452 §9.1).  A mismatch
  is counted (``forward.mismatch.<what>``) and ignored: a forged datagram
  cannot cancel the real answer;
* identical questions in flight are sent upstream once and answered
  together (a birthday attack needs many identical queries in flight,
  CVE-2020-25686); at most ``max_waiters`` clients share one;
* nothing is cached, so a forged answer could reach at most the clients of
  one query; at most ``max_pending`` queries are in flight (beyond: SERVFAIL).

Upstreams are tried in order, each once per query, ``timeout`` seconds each;
REFUSED or SERVFAIL from one moves on to the next.  After the last, the
clients get SERVFAIL.
"""
from __future__ import annotations

import errno
import logging
import secrets
import socket
from collections import Counter

from ..codec import dns as d
from .udp import UdpEndpoint

log = logging.getLogger("netbootd.dns")


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (where a random port draws no
    attention from services with fixed ports)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        if 1024 <= lo < hi <= 65535:
            return lo, hi
    except (OSError, ValueError):
        pass
    return 32768, 60999


def random_port_socket(dest: tuple[str, int], ports: tuple[int, int]) -> socket.socket:
    """A non-blocking UDP socket on a random local port, connected to dest."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        lo, hi = ports
        for _ in range(16):
            try:
                s.bind(("0.0.0.0", lo + secrets.randbelow(hi - lo + 1)))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    raise
        else:
            s.bind(("0.0.0.0", 0))
        s.connect(dest)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class _Pending:
    __slots__ = ("key", "raw", "question", "waiters", "attempt", "qid", "upstream", "endpoint",
                 "timer")

    def __init__(self, key, raw: bytes, question: bytes):
        self.key = key
        self.raw = raw
        self.question = question
        self.waiters: list = []
        self.attempt = 0
        self.qid = 0
        self.upstream = None
        self.endpoint = None
        self.timer = None


class _Reader:
    """Handler of one upstream socket (net/udp.py)."""
    transport = None

    def __init__(self, fwd: Forwarder, p: _Pending):
        self.fwd = fwd
        self.p = p

    def datagramsReceived(self, batch) -> None:
        for data, addr in batch:
            try:
                self.fwd._reply(self.p, data, addr)
            except Exception:
                self.fwd.counters["drop.internal_error"] += 1
                log.exception("dns: internal error on an upstream reply from %s", addr)


class Forwarder:
    def __init__(self, reactor, upstreams, counters: Counter | None = None, *,
                 timeout: float = 2.0, max_pending: int = 256, max_waiters: int = 32,
                 socket_factory=random_port_socket):
        self.reactor = reactor
        self.upstreams = [(u, d.DNS_PORT) if isinstance(u, str) else tuple(u) for u in upstreams]
        self.counters = counters if counters is not None else Counter()
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_waiters = max_waiters
        self.socket_factory = socket_factory
        self.ports = ephemeral_range()
        self.pending: dict[tuple, _Pending] = {}

    def forward(self, q: d.Query, raw: bytes, deliver) -> None:
        """Send ``raw`` (the client's query) upstream; ``deliver(reply)`` is
        called once with the matched upstream reply, or None on failure."""
        key = (q.qname, q.question[-4:], q.flags & (d.RD | d.CD), q.edns, q.do)
        p = self.pending.get(key)
        if p is not None:
            if len(p.waiters) >= self.max_waiters:
                self.counters["forward.busy"] += 1
                deliver(None)
                return
            self.counters["forward.coalesced"] += 1
            p.waiters.append(deliver)
            return
        if len(self.pending) >= self.max_pending or not self.upstreams:
            self.counters["forward.busy"] += 1
            deliver(None)
            return
        p = _Pending(key, raw, q.question)
        p.waiters.append(deliver)
        self.pending[key] = p
        self._send(p)

    def _send(self, p: _Pending) -> None:
        while p.attempt < len(self.upstreams):
            p.upstream = self.upstreams[p.attempt]
            p.qid = secrets.randbits(16)
            try:
                sock = self.socket_factory(p.upstream, self.ports)
                sock.send(p.qid.to_bytes(2, "big") + p.raw[2:])
            except OSError as e:
                self.counters["forward.send_error"] += 1
                log.warning("dns: cannot forward to %s:%d: %s", *p.upstream, e)
                self._close(p)
                p.attempt += 1
                continue
            self.counters["forward.sent"] += 1
            p.endpoint = UdpEndpoint(self.reactor, sock, _Reader(self, p))
            p.timer = self.reactor.callLater(self.timeout, self._timeout, p)
            return
        self._finish(p, None)

    def _close(self, p: _Pending) -> None:
        if p.timer is not None and p.timer.active():
            p.timer.cancel()
        p.timer = None
        if p.endpoint is not None:
            p.endpoint.close()
            p.endpoint = None

    def _timeout(self, p: _Pending) -> None:
        p.timer = None
        self.counters["forward.timeout"] += 1
        self._next(p)

    def _next(self, p: _Pending) -> None:
        self._close(p)
        p.attempt += 1
        self._send(p)

    def _reply(self, p: _Pending, data: bytes, addr) -> None:
        c = self.counters
        if self.pending.get(p.key) is not p or p.endpoint is None:
            return                                 # already answered or given up
        if tuple(addr[:2]) != p.upstream:
            c["forward.mismatch.source"] += 1
            return
        try:
            qid, flags, question = d.parse_reply_head(data)
        except d.DecodeError as e:
            c["forward.mismatch.malformed"] += 1
            log.debug("dns: malformed upstream reply from %s: %s", addr, e)
            return
        if qid != p.qid:
            c["forward.mismatch.id"] += 1
            return
        if flags & d.OPCODE_MASK or question[:-4].lower() != p.question[:-4].lower() or \
                question[-4:] != p.question[-4:]:
            c["forward.mismatch.question"] += 1
            return
        if flags & 0xF in (d.SERVFAIL, d.REFUSED) and p.attempt + 1 < len(self.upstreams):
            c["forward.next_upstream"] += 1
            self._next(p)
            return
        c["forward.answered"] += 1
        self._finish(p, data)

    def _finish(self, p: _Pending, reply: bytes | None) -> None:
        self._close(p)
        if self.pending.get(p.key) is p:
            del self.pending[p.key]
        for deliver in p.waiters:
            try:
                deliver(reply)
            except Exception:
                self.counters["drop.internal_error"] += 1
                log.exception("dns: cannot deliver a forwarded answer")

    def stop(self) -> None:
        for p in list(self.pending.values()):
            self._close(p)
        self.pending.clear()
