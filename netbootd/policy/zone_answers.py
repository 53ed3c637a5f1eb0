"""Answers from the DNS zone (policy/zone.py): lookups and the wire cache.  Pure.

``ZoneAnswers`` is the query side of ``Zone``: it reads the records the
zone keeps from the store writes (``_fwd`` label -> addresses, ``_ptr``
address -> label, ``_ent`` the reverse empty non-terminals, the domain's
labels ``_dl`` and the reverse zones ``_rev``) and never changes them.

Answers (``lookup``): AA on everything in our zones; a name with no record of
the asked type is NODATA (NOERROR, empty answer, the zone's SOA in authority,
RFC 2308 §2.2); a name that does not exist is NXDOMAIN with the SOA
(RFC 2308 §2.1).  Reverse names with fewer than four octets that have
addresses below them are empty non-terminals: NODATA, not NXDOMAIN
(RFC 8020).  Negative TTL = SOA minimum = the record TTL.

Wire cache: ``entry(qname, typeclass)`` encodes an answer with dnslib once
(zone_wire.py); the protocol patches the ID and the client's own question
bytes in (the answer's names point at the question, so 0x20 case is echoed
for free).  ``Zone`` drops positive entries per changed name; entries that
carry the SOA (its serial changes with every change) are all dropped on any
change.
"""
from __future__ import annotations

import ipaddress

from ..codec import dns as d
from .zone_names import _octet, reverse_name
from .zone_wire import Answer, RRec, encode

NS_LABEL = "ns"
HOSTMASTER = "hostmaster"
_SOA_LABELS = (NS_LABEL.encode(), HOSTMASTER.encode())
# SOA timers (RFC 1035 §3.3.13); nobody transfers this zone, they are informational.
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 3600, 600, 86400


class ZoneAnswers:
    """The queries of ``Zone`` (its base class): reads its records, the
    server's addresses, ``ttl``, ``serial`` and the caches ``pos``, ``neg``,
    ``_shapes``, ``_pos_keys``, ``max_cached``."""

    # -- queries -------------------------------------------------------------------
    def names(self) -> dict[str, tuple[str, ...]]:
        """fqdn -> addresses, for status pages and tests."""
        return {f"{lab.decode()}.{self.domain}": tuple(str(ipaddress.IPv4Address(a)) for a in v)
                for lab, v in self._fwd.items()}

    def owns(self, labels: tuple[bytes, ...]) -> bool:
        if labels[-len(self._dl):] == self._dl:
            return True
        return any(labels[-len(z):] == z for z in self._rev)

    def lookup(self, qname, qtype: int) -> Answer | None:
        """The answer for a name in our zones (text or lower-case labels);
        None when the name is not ours."""
        if isinstance(qname, str):
            t = qname.strip().rstrip(".").lower()
            labels = tuple(p.encode() for p in t.split(".")) if t else ()
        else:
            labels = qname
        dl = self._dl
        if len(labels) >= len(dl) and labels[len(labels) - len(dl):] == dl:
            return self._forward(labels[:len(labels) - len(dl)], qtype)
        for z in self._rev:
            if len(labels) >= len(z) and labels[len(labels) - len(z):] == z:
                return self._reverse(labels[:len(labels) - len(z)], z, qtype)
        return None

    def _soa(self, apex: str) -> RRec:
        return RRec(apex, d.T_SOA, self.ttl,
                    (f"{NS_LABEL}.{self.domain}", f"{HOSTMASTER}.{self.domain}", self.serial,
                     SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, self.ttl))

    def _apex(self, apex: str, qtype: int) -> Answer:
        soa = self._soa(apex)
        ns = RRec(apex, d.T_NS, self.ttl, f"{NS_LABEL}.{self.domain}")
        glue = tuple(RRec(f"{NS_LABEL}.{self.domain}", d.T_A, self.ttl, ip)
                     for ip in self.server_ips)
        if qtype == d.T_SOA:
            return Answer(d.NOERROR, (soa,), (), ())
        if qtype == d.T_NS:
            return Answer(d.NOERROR, (ns,), (), glue)
        if qtype == d.T_ANY:
            return Answer(d.NOERROR, (soa, ns), (), glue)
        return Answer(d.NOERROR, (), (soa,))

    def _forward(self, rel: tuple[bytes, ...], qtype: int) -> Answer:
        if not rel:
            return self._apex(self.domain, qtype)
        soa = (self._soa(self.domain),)
        if len(rel) != 1:
            return Answer(d.NXDOMAIN, (), soa)
        lab = rel[0]
        name = f"{lab.decode('ascii', 'replace')}.{self.domain}"
        if lab == NS_LABEL.encode():
            addrs = self.server_ips
        else:
            got = self._fwd.get(lab)
            if got is None:
                return Answer(d.NXDOMAIN, (), soa)
            addrs = tuple(str(ipaddress.IPv4Address(a)) for a in got)
        if qtype in (d.T_A, d.T_ANY):
            return Answer(d.NOERROR, tuple(RRec(name, d.T_A, self.ttl, ip) for ip in addrs))
        return Answer(d.NOERROR, (), soa)

    def _reverse(self, rel: tuple[bytes, ...], zone: tuple[bytes, ...], qtype: int) -> Answer:
        apex = b".".join(zone).decode()
        if not rel:
            return self._apex(apex, qtype)
        soa = (self._soa(apex),)
        labels = rel + zone[:-2]
        octets = [_octet(x) for x in reversed(labels)]
        if len(octets) > 4 or None in octets:
            return Answer(d.NXDOMAIN, (), soa)
        if len(octets) < 4:                       # an empty non-terminal if anything is below
            prefix = 0
            for o in octets:
                prefix = (prefix << 8) | o
            rc = d.NOERROR if self._ent.get((len(octets), prefix)) else d.NXDOMAIN
            return Answer(rc, (), soa)
        a = (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]
        lab = self._ptr.get(a)
        if lab is None:
            return Answer(d.NXDOMAIN, (), soa)
        if qtype in (d.T_PTR, d.T_ANY):
            return Answer(d.NOERROR, (RRec(reverse_name(a), d.T_PTR, self.ttl,
                                           f"{lab}.{self.domain}"),))
        return Answer(d.NOERROR, (), soa)

    # -- wire cache ----------------------------------------------------------------
    def entry(self, qname: bytes, typeclass: bytes) -> tuple | None:
        """The cached wire answer for (lower-case wire qname, type+class
        bytes): (headers, tail), see ``encode``.  None when the name is not
        ours.  Only class IN is answered from the zone."""
        key = qname + typeclass
        e = self.pos.get(key) or self.neg.get(key)
        if e is not None:
            return e
        labels = d.wire_labels(qname)
        qtype = (typeclass[0] << 8) | typeclass[1]
        ans = self.lookup(labels, qtype)
        if ans is None:
            return None
        if ans.rcode == d.NOERROR and ans.answer and \
                not any(r.rtype == d.T_SOA for r in ans.answer):
            e = encode(labels, typeclass, ans)
            self.pos[key] = e
            self._pos_keys.setdefault(qname, []).append(key)
            return e
        if len(self.neg) >= self.max_cached:
            self.neg = {}
            self._shapes = {}
        if ans.answer or ans.additional:
            e = encode(labels, typeclass, ans)
        else:
            # NXDOMAIN/NODATA: the SOA's owner and names point into the
            # question, so the bytes depend only on where the apex starts in
            # it - unless the label above the domain is one of the SOA's own
            # (ns, hostmaster), which compresses differently.
            apex = ans.authority[0].name
            above = labels[-len(self._dl) - 1] if len(labels) > len(self._dl) else None
            shape = (ans.rcode, apex, len(qname), above if above in _SOA_LABELS else None)
            e = self._shapes.get(shape)
            if e is None:
                e = self._shapes[shape] = encode(labels, typeclass, ans)
        self.neg[key] = e
        return e
