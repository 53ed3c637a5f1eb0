"""DNS over UDP and TCP: bytes -> DnsEngine (policy/dns_engine.py) -> bytes.  Nothing else here.

* UDP: a batching reader (net/udp.py); replies go straight to
  ``socket.sendto``.  No exception escapes a datagram's handling.
* TCP (RFC 1035 §4.2.2, RFC 7766): 2-byte length prefix, pipelined queries
  answered as they complete.  Bounded: ``tcp_max`` connections in all,
  ``tcp_per_source`` per client address, ``tcp_idle`` seconds without a
  complete query closes the connection (a client dribbling bytes does not
  keep it), at most ``tcp_inflight`` forwarded queries per connection, and
  reading stops while our replies are not being read (push producer).
* Forwarding (net/dns_forward.py) only for what the engine hands over.
* The zone's expired leases are dropped every ``expire_interval`` seconds.

``DnsServer(reactor, zone, served_subnets=..., forwarders=...)``, then
``listen(port, ip)`` once per address, ``stop()`` at the end; ``counters``
holds everything counted (see policy/dns_engine.py for the names).
"""
from __future__ import annotations

import logging
from collections import Counter

from twisted.internet import defer, protocol, task
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from ..policy.dns_engine import DnsEngine, Forward
from ..policy.zone import Zone
from . import interfaces
from .dns_forward import Forwarder, random_port_socket
from .udp import UdpEndpoint

log = logging.getLogger("netbootd.dns")


def _default_socket(port: int, ip: str):
    return interfaces.udp_socket(None, port, ip)


class DnsUdp:
    """Handler of one listening UDP socket (see net/udp.py)."""

    transport = None

    def __init__(self, server: DnsServer):
        self.server = server

    def datagramsReceived(self, batch: list) -> None:
        srv = self.server
        handle = srv.engine.handle
        now = srv.reactor.seconds()
        sendto = self.transport.socket.sendto
        counters = srv.counters
        for data, addr in batch:
            try:
                out = handle(data, addr[0], now)
                if out is None:
                    continue
                if out.__class__ is bytes:
                    sendto(out, addr)
                else:
                    srv.forward(out, lambda reply, addr=addr: self.send(reply, addr))
            except BlockingIOError:
                counters["tx.buffer_full"] += 1
            except OSError as e:
                counters["tx.error"] += 1
                log.debug("dns: cannot send to %s: %s", addr, e)
            except Exception:
                counters["drop.internal_error"] += 1
                log.exception("dns: internal error on a query from %s", addr)

    def send(self, data: bytes, addr) -> None:
        if self.transport is None or self.transport.socket.fileno() < 0:
            return
        try:
            self.transport.socket.sendto(data, addr)
        except OSError:
            self.server.counters["tx.error"] += 1


@implementer(IPushProducer)
class DnsTcp(protocol.Protocol):
    """One TCP client: length-prefixed messages in, replies out."""

    def __init__(self, server: DnsServer, src: str):
        self.server = server
        self.src = src
        self.buf = bytearray()
        self.inflight = 0
        self.timer = None
        self.closed = False

    def connectionMade(self) -> None:
        self.server.tcp_conns.add(self)
        self.transport.registerProducer(self, True)
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = self.server.reactor.callLater(self.server.tcp_idle, self._idle)

    def _idle(self) -> None:
        self.timer = None
        if self.inflight:                     # a forwarded answer is still to come
            self._arm()
            return
        self.server.counters["tcp.idle_closed"] += 1
        self.transport.loseConnection()
        # A client that never reads keeps loseConnection waiting: cut it.
        self.timer = self.server.reactor.callLater(self.server.tcp_idle, self._abort)

    def _abort(self) -> None:
        self.timer = None
        if not self.closed:
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        srv = self.server
        while len(self.buf) >= 2 and not self.closed:
            ln = (self.buf[0] << 8) | self.buf[1]
            if ln < 12:
                srv.counters["drop.tcp_short"] += 1      # cannot even hold a header
                self.transport.abortConnection()
                return
            if len(self.buf) < 2 + ln:
                return
            msg = bytes(self.buf[2:2 + ln])
            del self.buf[:2 + ln]
            self._arm()
            try:
                out = srv.engine.handle(msg, self.src, srv.reactor.seconds(), tcp=True)
                if out is None:
                    continue
                if out.__class__ is bytes:
                    self.write(out)
                elif self.inflight >= srv.tcp_inflight:
                    srv.counters["forward.busy"] += 1
                    self.write(srv.engine.relay(out, None))
                else:
                    self.inflight += 1
                    srv.forward(out, self._forwarded)
            except Exception:
                srv.counters["drop.internal_error"] += 1
                log.exception("dns: internal error on a TCP query from %s", self.src)

    def _forwarded(self, reply: bytes) -> None:
        self.inflight -= 1
        self.write(reply)

    def write(self, reply: bytes) -> None:
        if not self.closed:
            self.transport.write(len(reply).to_bytes(2, "big") + reply)

    # IPushProducer: our replies pile up unread -> stop reading queries.
    def pauseProducing(self) -> None:
        self.server.counters["tcp.paused"] += 1
        self.transport.pauseProducing()          # tcp.Connection: stop reading

    def resumeProducing(self) -> None:
        if not self.closed:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.server.tcp_conns.discard(self)
        self.server._tcp_gone(self.src)


class DnsTcpFactory(protocol.ServerFactory):
    def __init__(self, server: DnsServer):
        self.server = server

    def buildProtocol(self, addr):
        srv = self.server
        src = addr.host
        if srv.tcp_open >= srv.tcp_max or srv.tcp_by_source[src] >= srv.tcp_per_source:
            srv.counters["tcp.refused_connection"] += 1
            return None                   # twisted closes the connection at once
        srv.tcp_open += 1
        srv.tcp_by_source[src] += 1
        srv.counters["tcp.connections"] += 1
        return DnsTcp(srv, src)


class DnsServer:
    def __init__(self, reactor, zone: Zone, *, served_subnets=(), forwarders=(),
                 rate_limit: float | None = 200.0, forward_timeout: float = 2.0,
                 tcp_max: int = 64, tcp_per_source: int = 8, tcp_idle: float = 10.0,
                 tcp_inflight: int = 16, expire_interval: float = 5.0,
                 socket_factory=_default_socket, upstream_socket_factory=random_port_socket):
        self.reactor = reactor
        self.zone = zone
        self.counters: Counter = Counter()
        self.engine = DnsEngine(zone, served_subnets, forwarding=bool(forwarders),
                                rate_limit_qps=rate_limit, counters=self.counters)
        self.forwarder = Forwarder(reactor, forwarders, self.counters, timeout=forward_timeout,
                                   socket_factory=upstream_socket_factory) if forwarders else None
        self.tcp_max = tcp_max
        self.tcp_per_source = tcp_per_source
        self.tcp_idle = tcp_idle
        self.tcp_inflight = tcp_inflight
        self.tcp_open = 0
        self.tcp_by_source: Counter = Counter()
        self.tcp_conns: set[DnsTcp] = set()
        self.socket_factory = socket_factory
        self.udp: list[UdpEndpoint] = []
        self.tcp: list = []
        self._expire = task.LoopingCall(self._expire_tick)
        self._expire.clock = reactor
        self.expire_interval = expire_interval

    def listen(self, port: int, ip: str):
        """UDP and TCP on ip:port (port 0: any free port, the same for both
        when possible).  Returns the (UDP endpoint, TCP port)."""
        # With port 0 the kernel picks a free UDP port; the same TCP port may
        # still be taken (by an unrelated connection), so try a few picks.
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            sock = self.socket_factory(port, ip)
            ep = UdpEndpoint(self.reactor, sock, DnsUdp(self))
            bound = sock.getsockname()[1]
            try:
                tcp = self.reactor.listenTCP(bound, DnsTcpFactory(self), backlog=64,
                                             interface=ip)
                break
            except CannotListenError:
                ep.close()                    # both or neither
                if attempt == attempts - 1:
                    raise
            except Exception:
                ep.close()
                raise
        self.udp.append(ep)
        self.tcp.append(tcp)
        if not self._expire.running:
            self._expire.start(self.expire_interval, now=False)
        log.info("dns: %s:%d (udp+tcp), zone %s", ip, bound, self.zone.domain)
        return ep, tcp

    def forward(self, f: Forward, reply_to) -> None:
        def deliver(reply, f=f):
            reply_to(self.engine.relay(f, reply))
        self.forwarder.forward(f.query, f.raw, deliver)

    def _tcp_gone(self, src: str) -> None:
        self.tcp_open -= 1
        self.tcp_by_source[src] -= 1
        if self.tcp_by_source[src] <= 0:
            del self.tcp_by_source[src]

    def _expire_tick(self) -> None:
        n = self.zone.expire(self.reactor.seconds())
        if n:
            self.counters["zone.expired"] += n

    def stop(self):
        """Close every socket; returns a Deferred (TCP listeners)."""
        if self._expire.running:
            self._expire.stop()
        for ep in self.udp:
            ep.close()
        self.udp = []
        if self.forwarder is not None:
            self.forwarder.stop()
        ds = [defer.maybeDeferred(p.stopListening) for p in self.tcp]
        self.tcp = []
        for conn in list(self.tcp_conns):
            conn.transport.abortConnection()
        return defer.gatherResults(ds)

