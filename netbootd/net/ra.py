"""The router-advertisement quench: answer IPv6 router solicitations on a
served interface with "there is no router here" (codec/icmp6.quench: router
lifetime 0, M=0, O=0, no prefix), so iPXE ends its IPv6 autoconfiguration at
once instead of soliciting for ~13 s at every boot (docs/networks-interfaces.md).

One raw ICMPv6 socket per interface, a reader on the reactor (no thread, no
polling): bound to the interface (SO_BINDTODEVICE) and its link-local address,
joined to ff02::2 (all-routers: where solicitations go; a host that does not
forward has not joined it), hop limit 255 (RFC 4861 §6.1.2: receivers drop an
RA with any other), incoming solicitations accepted only with hop limit 255.

Safety: a link that has a real IPv6 router must keep hearing only it.  At
start the responder sends one solicitation of its own and stays silent for
`learn` seconds; any RA from another source that offers something (a router
lifetime, a prefix, M/O flags) marks the link as routed and the responder
stops answering there (`router_seen`), counted and reported as an event.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import struct
from collections import Counter

from ..codec import icmp6
from ..codec.errors import DecodeError
from . import interfaces
from .udp import SockReader

log = logging.getLogger("netbootd")

IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
ICMP6_FILTER = 1                         # <netinet/icmp6.h>, level IPPROTO_ICMPV6
MAX_ANSWERS_PER_SECOND = 20              # per interface; the rest counted, not answered


def icmp6_filter(*allowed: int) -> bytes:
    """struct icmp6_filter: a bit set per type means *block* (Linux)."""
    words = [0xFFFFFFFF] * 8
    for t in allowed:
        words[t >> 5] &= ~(1 << (t & 31))
    return struct.pack("=8I", *words)


class RaResponder(SockReader):
    """Quench RAs on one interface.  `on_event(kind, **detail)` reports
    router_seen; counters: rx.RS, tx.RA, rx.RA, drop.<reason>, ignored.<why>."""

    def __init__(self, reactor, iface: str, index: int, linklocal: str, mac: bytes | None,
                 counters: Counter | None = None, on_event=None, learn: float = 1.0):
        self.reactor = reactor
        self.iface = iface
        self.index = index
        self.linklocal = linklocal
        self.mac = mac
        self.counters = counters if counters is not None else Counter()
        self.on_event = on_event or (lambda kind, **detail: None)
        self.router_seen: str | None = None      # the other router's address
        self.answers = 0
        self._window = 0
        self.answer = icmp6.encode_ra(icmp6.quench(mac))
        self.sock = self._open()
        self._learning = reactor.callLater(learn, self._learned) if learn > 0 else None
        reactor.addReader(self)
        self._send(icmp6.encode_rs(mac), icmp6.ALL_ROUTERS)

    def _open(self) -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            s.setsockopt(socket.SOL_SOCKET, interfaces.SO_BINDTODEVICE, self.iface.encode())
            s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER,
                         icmp6_filter(icmp6.ROUTER_SOLICITATION, icmp6.ROUTER_ADVERTISEMENT))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
            mreq = socket.inet_pton(socket.AF_INET6, icmp6.ALL_ROUTERS) + struct.pack("@I",
                                                                                     self.index)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            s.bind((self.linklocal, 0, 0, self.index))
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        return s

    # IReadDescriptor: doRead (the rest: udp.SockReader) -------------------
    def doRead(self) -> None:
        for _ in range(64):
            try:
                data, anc, _, addr = self.sock.recvmsg(1500, socket.CMSG_SPACE(4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.counters["drop.read_error"] += 1
                log.debug("ra %s: read error %s", self.iface, e)
                return
            hops = next((struct.unpack("=i", d[:4])[0] for lvl, typ, d in anc
                         if lvl == socket.IPPROTO_IPV6 and typ == IPV6_HOPLIMIT), None)
            self.received(data, addr[0].split("%")[0], hops)

    def received(self, data: bytes, src: str, hops: int | None) -> None:
        c = self.counters
        if hops != 255:                          # RFC 4861 §6.1.1: not from this link
            c["drop.hop_limit"] += 1             # (no hop limit given: not trusted either)
            return
        if not (src == "::" or _link_local(src)):
            c["drop.source"] += 1                # RS/RA come from link-local or :: only
            return
        try:
            kind = icmp6.message_type(data)
            if kind == icmp6.ROUTER_ADVERTISEMENT:
                self._other_router(icmp6.decode_ra(data), src)
                return
            icmp6.decode_rs(data)
        except DecodeError as e:
            c["drop." + e.reason] += 1
            return
        c["rx.RS"] += 1
        if self.router_seen:
            c["ignored.router_present"] += 1
        elif self._learning is not None:
            c["ignored.learning"] += 1
        elif not self._budget():
            c["ignored.rate_limit"] += 1
        else:
            # To the solicitor's link-local address; from :: (no address yet)
            # the answer must go to all nodes (RFC 4861 §6.2.6).
            self._send(self.answer, src if src != "::" else icmp6.ALL_NODES)

    def _other_router(self, ra: icmp6.RouterAdvertisement, src: str) -> None:
        c = self.counters
        c["rx.RA"] += 1
        if src == self.linklocal:
            return
        if not (ra.router_lifetime or ra.prefixes or ra.flags & (icmp6.FLAG_MANAGED
                                                                 | icmp6.FLAG_OTHER)):
            c["ignored.other_quench"] += 1       # another "no router here": harmless
            return
        if self.router_seen is None:
            log.warning("ra %s: an IPv6 router (%s) answers on this link: no quench here",
                        self.iface, src)
            self.on_event("ra.router_seen", iface=self.iface, router=src,
                          lifetime=ra.router_lifetime, prefixes=len(ra.prefixes))
        self.router_seen = src

    def _budget(self) -> bool:
        now = int(self.reactor.seconds())
        if now != self._window:
            self._window, self.answers = now, 0
        self.answers += 1
        return self.answers <= MAX_ANSWERS_PER_SECOND

    def _learned(self) -> None:
        self._learning = None

    def _send(self, message: bytes, dst: str) -> None:
        kind = "RA" if message[0] == icmp6.ROUTER_ADVERTISEMENT else "RS"
        try:
            self.sock.sendto(message, (dst, 0, 0, self.index))
            self.counters["tx." + kind] += 1
        except OSError as e:
            self.counters["drop.send_error"] += 1
            log.debug("ra %s: cannot send %s to %s: %s", self.iface, kind, dst, e)

    def close(self) -> None:
        if self._learning is not None and self._learning.active():
            self._learning.cancel()
        self._learning = None
        if self.sock.fileno() >= 0:
            self.reactor.removeReader(self)
            self.sock.close()


def _link_local(addr: str) -> bool:
    try:
        return ipaddress.IPv6Address(addr).is_link_local
    except ValueError:
        return False
