"""What the DNS server does with one query: answer, refuse, forward or drop.  Pure.

``DnsEngine.handle(data, src_ip, now, tcp)`` returns the reply bytes, a
``Forward`` (the caller sends it upstream and later calls ``relay``), or None
(dropped).  Nothing here does I/O; the clock is passed in.

Hot path: a query of the usual shape (one question, no pointers, at most an
OPT record with well-formed options) whose answer is in the zone's wire cache
is answered by concatenation: the client's ID, a pre-built header (RD/CD
copied, one more additional record when the client sent EDNS), the client's
question bytes exactly as sent (0x20 case kept; the cached answer's names
point at them), the cached records, our OPT.  Everything else takes the slow
path: the strict parser (codec/dns.py), then the zone, forwarding or an error.

Never an open resolver: names outside our zones are forwarded only for
clients inside the served subnets that asked for recursion, and only when
forwarders are configured; everyone else gets REFUSED.  Every source is rate
limited (token bucket per address) before anything else is done.

Counters: ``drop.<reason>`` (dropped: short, response, ratelimit), and
``formerr.<reason>`` (answered FORMERR: the parser's reason), plus
``answer.*``, ``refused``, ``forward``, ``truncated``.
"""
from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from dataclasses import dataclass

from ..codec import dns as d
from .ratelimit import Buckets
from .zone import Zone

_OPT = d.opt_rr(False)
_OPT_DO = d.opt_rr(True)
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"      # qd=1 an=0 ns=0
_OPT_HEAD = b"\x00\x00\x29"                       # root owner, type OPT (RFC 6891 §6.1.2)
_ZONE_CLASS = b"\x00\x01"                          # IN
_TRANSFERS = (b"\x00\xfb", b"\x00\xfc")              # IXFR, AXFR
PREFETCH = 8            # rate-limit tokens taken at once (a source may run <8 queries ahead)
CREDIT_KEYS = 65536


@dataclass(slots=True)
class Forward:
    """A query to send to the forwarders on the client's behalf."""
    query: d.Query
    raw: bytes
    tcp: bool


class DnsEngine:
    def __init__(self, zone: Zone, served_subnets=(), *, forwarding: bool = False,
                 rate_limit_qps: float | None = 200.0, counters: Counter | None = None):
        self.zone = zone
        self.set_served(served_subnets)
        self.forwarding = forwarding
        self.buckets = Buckets(rate_limit_qps) if rate_limit_qps else None
        self._credit: dict[str, int] = {}
        self.counters = counters if counters is not None else Counter()

    def set_served(self, served_subnets) -> None:
        """The subnets whose clients may use forwarding (followed live)."""
        self.served = [(int(n.network_address), int(n.netmask)) for n in
                       (ipaddress.IPv4Network(s, strict=False) for s in served_subnets)]

    def in_served(self, ip: str) -> bool:
        try:
            a = int.from_bytes(socket.inet_aton(ip), "big")
        except OSError:
            return False
        return any(a & mask == net for net, mask in self.served)

    # -- the hot path ------------------------------------------------------------
    def admit(self, src_ip: str, now: float) -> bool:
        """The per-source token bucket, taken ``PREFETCH`` tokens at a time
        when the bucket has them (one bucket operation per few queries)."""
        credit = self._credit.get(src_ip)
        if credit:
            self._credit[src_ip] = credit - 1
            return True
        b = self.buckets
        if b.allow(src_ip, now, PREFETCH):
            if len(self._credit) >= CREDIT_KEYS:
                self._credit.clear()
            self._credit[src_ip] = PREFETCH - 1
            return True
        if b.allow(src_ip, now):
            return True
        self.counters["drop.ratelimit"] += 1
        return False

    def handle(self, data: bytes, src_ip: str, now: float, tcp: bool = False):
        if self.buckets is not None:
            credit = self._credit.get(src_ip)
            if credit:
                self._credit[src_ip] = credit - 1
            elif not self.admit(src_ip, now):
                return None
        n = len(data)
        # QR=0, opcode QUERY (RFC 1035 §4.1.1), one question, nothing else but ARs.
        if n < 17 or data[2] & 0xF8 or data[4:10] != _ONE_QUESTION:
            return self._slow(data, src_ip, tcp)
        i = 12
        try:
            ln = data[12]
            while ln:
                if ln > 63 or i > 266:    # pointer, label > 63, name > 255: strict parser
                    return self._slow(data, src_ip, tcp)
                i += ln + 1
                ln = data[i]
        except IndexError:
            return self._slow(data, src_ip, tcp)
        qend = i + 5
        if qend > n or i > 266:                  # 266 = 12 + 255 - 1 (RFC 1035 §2.3.4)
            return self._slow(data, src_ip, tcp)
        edns = do = 0
        if data[10:12] == b"\x00\x00":
            if n != qend:
                return self._slow(data, src_ip, tcp)
        elif data[10:12] == b"\x00\x01" and data[qend:qend + 3] == _OPT_HEAD and n >= qend + 11 \
                and not data[qend + 6]:          # EDNS version 0 (RFC 6891 §6.1.3)
            j = qend + 11
            if j + ((data[qend + 9] << 8) | data[qend + 10]) != n:
                return self._slow(data, src_ip, tcp)
            while j + 4 <= n:                    # options must tile RDATA exactly
                j += 4 + ((data[j + 2] << 8) | data[j + 3])
            if j != n:
                return self._slow(data, src_ip, tcp)
            edns = 4
            do = data[qend + 7] & 0x80
            size = (data[qend + 3] << 8) | data[qend + 4]
        else:
            return self._slow(data, src_ip, tcp)
        qname = data[12:i + 1].lower()
        key = qname + data[i + 1:qend]
        z = self.zone
        e = z.pos.get(key) or z.neg.get(key)
        if e is None:
            # Well-formed (the checks above are the parser's for this shape):
            # straight to the zone unless it is a transfer or another class.
            if data[qend - 2:qend] != _ZONE_CLASS or data[i + 1:i + 3] in _TRANSFERS:
                return self._slow(data, src_ip, tcp)
            e = z.entry(qname, data[i + 1:qend])
            if e is None:
                return self._slow(data, src_ip, tcp)
            self.counters["answer.built"] += 1
        idx = (data[2] & 1) | ((data[3] >> 3) & 2) | edns
        if edns:
            out = data[:2] + e[0][idx] + data[12:qend] + e[1] + (_OPT_DO if do else _OPT)
            limit = d.EDNS_OUR_SIZE if size >= d.EDNS_OUR_SIZE else \
                (size if size > d.EDNS_MIN_SIZE else d.EDNS_MIN_SIZE)
        else:
            out = data[:2] + e[0][idx] + data[12:qend] + e[1]
            limit = d.UDP_PLAIN_LIMIT
        if len(out) > limit and not tcp:
            # TC, question only (RFC 2181 §9): the client retries over TCP.
            self.counters["truncated"] += 1
            h = e[0][idx]
            return data[:2] + bytes([h[0] | (d.TC >> 8), h[1]]) + b"\x00\x01\x00\x00\x00\x00" + \
                (b"\x00\x01" if edns else b"\x00\x00") + data[12:qend] + \
                ((_OPT_DO if do else _OPT) if edns else b"")
        return out

    # -- everything else -----------------------------------------------------------
    def _slow(self, data: bytes, src_ip: str, tcp: bool):
        c = self.counters
        try:
            q = d.parse_query(data)
        except d.DecodeError as e:
            if e.reason in ("short", "response"):
                c["drop." + e.reason] += 1       # no header to answer, or never answer answers
                return None
            c["formerr." + e.reason] += 1
            return d.formerr_reply(data)
        if q.opcode != d.OPCODE_QUERY:
            c["answer.notimp"] += 1
            return d.error_reply(q, d.NOTIMP)
        if q.edns and q.edns_version != 0:
            c["answer.badvers"] += 1
            return d.error_reply(q, d.BADVERS)    # RFC 6891 §6.1.3
        ours = self.zone.owns(q.labels)
        if q.qtype in (d.T_AXFR, d.T_IXFR) or (ours and q.qclass != d.C_IN):
            c["refused"] += 1                     # no zone transfers; only class IN
            return d.error_reply(q, d.REFUSED)
        if ours:
            e = self.zone.entry(q.qname, q.question[-4:])
            c["answer.built"] += 1
            return self.assemble(q, e, tcp)
        if self.forwarding and q.flags & d.RD and self.in_served(src_ip):
            c["forward"] += 1
            return Forward(q, data, tcp)
        c["refused"] += 1
        return d.error_reply(q, d.REFUSED)

    def assemble(self, q: d.Query, e: tuple, tcp: bool) -> bytes:
        """A cached answer for a parsed query (the slow path's twin of the
        concatenation in ``handle``)."""
        idx = (1 if q.flags & d.RD else 0) | (2 if q.flags & d.CD else 0) | (4 if q.edns else 0)
        out = q.id.to_bytes(2, "big") + e[0][idx] + q.question + e[1]
        if q.edns:
            out += _OPT_DO if q.do else _OPT
        if not tcp and len(out) > q.reply_limit():
            self.counters["truncated"] += 1
            return d.truncated_reply(q)
        return out

    def relay(self, f: Forward, reply: bytes | None) -> bytes:
        """An upstream reply (already matched to the query it answers) for
        one client: its ID and its question bytes, cut to TC when it does not
        fit the client's UDP size.  None (no answer upstream): SERVFAIL."""
        q = f.query
        if reply is None:
            self.counters["forward.servfail"] += 1
            return d.error_reply(q, d.SERVFAIL)
        qlen = len(q.question)
        out = q.id.to_bytes(2, "big") + reply[2:12] + q.question + reply[12 + qlen:]
        if not f.tcp and len(out) > q.reply_limit():
            self.counters["truncated"] += 1
            flags = (reply[2] << 8 | reply[3]) & (d.OPCODE_MASK | d.RD | d.RA | d.CD | 0xF)
            return d.header(q.id, d.QR | d.TC | flags, 1, 0, 0, 1 if q.edns else 0) + \
                q.question + (d.opt_rr(q.do) if q.edns else b"")
        return out
