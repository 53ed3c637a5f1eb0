"""Answers of the zone as value types, and their one-time wire encoding (dnslib).  Pure.

``encode`` builds the reply once with dnslib (names compressed against the
question at offset 12) and keeps what the protocol needs to answer any later
query for the same name and type by concatenation: the header bytes for each
combination of the query's RD, CD and EDNS, and everything after the question.
"""
from __future__ import annotations

from typing import NamedTuple

from dnslib import A, DNSHeader, DNSLabel, DNSQuestion, DNSRecord, NS, PTR, RR, SOA

from ..codec import dns as d


class RRec(NamedTuple):
    name: str            # lower-case, no trailing dot
    rtype: int
    ttl: int
    rdata: object        # A: dotted quad; NS/PTR: name; SOA: (mname, rname, serial, ...)


class Answer(NamedTuple):
    rcode: int
    answer: tuple = ()
    authority: tuple = ()
    additional: tuple = ()


def _dnslib_rr(r: RRec) -> RR:
    if r.rtype == d.T_A:
        rdata = A(r.rdata)
    elif r.rtype == d.T_PTR:
        rdata = PTR(r.rdata + ".")
    elif r.rtype == d.T_NS:
        rdata = NS(r.rdata + ".")
    else:
        mname, rname, *times = r.rdata
        rdata = SOA(mname + ".", rname + ".", tuple(times))
    return RR(r.name + ".", r.rtype, ttl=r.ttl, rdata=rdata)


def encode(labels: tuple[bytes, ...], typeclass: bytes, ans: Answer) -> tuple:
    """Encode an answer once (dnslib, names compressed against the question
    at offset 12): (headers, tail).  ``headers[i]`` are bytes 2..11 of the
    reply header for i = RD | CD << 1 | EDNS << 2 of the query (RD and CD
    copied, RFC 1035 §4.1.1, RFC 4035 §3.1.6; one more additional record
    for our OPT); ``tail`` is everything after the question."""
    qtype = (typeclass[0] << 8) | typeclass[1]
    qclass = (typeclass[2] << 8) | typeclass[3]
    rec = DNSRecord(DNSHeader(id=0, qr=1, aa=1, rcode=ans.rcode),
                    q=DNSQuestion(DNSLabel(labels), qtype, qclass))
    for r in ans.answer:
        rec.add_answer(_dnslib_rr(r))
    for r in ans.authority:
        rec.add_auth(_dnslib_rr(r))
    for r in ans.additional:
        rec.add_ar(_dnslib_rr(r))
    wire = rec.pack()
    qlen = len(d.labels_wire(labels)) + 4
    tail = wire[12 + qlen:]
    an, ns, ar = len(ans.answer), len(ans.authority), len(ans.additional)
    headers = []
    for i in range(8):
        flags = d.QR | d.AA | ans.rcode | (d.RD if i & 1 else 0) | (d.CD if i & 2 else 0)
        headers.append(d.header(0, flags, 1, an, ns, ar + (1 if i & 4 else 0))[2:])
    return tuple(headers), bytes(tail)
