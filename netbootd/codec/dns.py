"""DNS message framing for a small authoritative server (RFC 1035, 2181, 6891).  Pure, stdlib only.

Records are encoded with dnslib (policy/zone.py); this module only does what
the server needs on every query and what dnslib must not be trusted with on
hostile input:

* ``parse_query`` reads a query strictly and in bounded time: one question,
  no answer/authority records, at most ``MAX_ADDITIONAL`` additional records,
  names of at most 255 bytes in labels of at most 63 (RFC 1035 §2.3.4),
  compression pointers only backwards and never into the header (RFC 1035
  §4.1.4; a pointer to itself or into its own name is a loop), at most one
  OPT record (RFC 6891 §6.1.1) with well-formed options.  Any fault raises
  ``DecodeError(reason, offset)``; ``reason`` is a short token for counters.
* ``header``, ``opt_rr``, ``error_reply``, ``truncated_reply`` write the
  replies that carry no records.
* ``parse_reply_head`` reads the ID, flags and question of an upstream reply
  (for matching a forwarded query's answer).
"""
from __future__ import annotations

from .errors import DecodeError  # noqa: F401 - re-exported: codec.<x>.DecodeError

import struct
from dataclasses import dataclass

DNS_PORT = 53                       # RFC 1035 §4.2

# Header flags (RFC 1035 §4.1.1; AD/CD: RFC 4035 §3.2).
QR = 0x8000
OPCODE_MASK = 0x7800
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
AD = 0x0020
CD = 0x0010
COPIED_FLAGS = RD | CD              # RFC 1035 §4.1.1 (RD), RFC 4035 §3.1.6 (CD)

OPCODE_QUERY = 0

# RCODEs (RFC 1035 §4.1.1; BADVERS: RFC 6891 §9, carried in the OPT record).
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

# Types and classes (RFC 1035 §3.2.2-3.2.4; AAAA RFC 3596; OPT RFC 6891).
T_A = 1
T_NS = 2
T_SOA = 6
T_PTR = 12
T_AAAA = 28
T_OPT = 41
T_IXFR = 251
T_AXFR = 252
T_ANY = 255
C_IN = 1

MAX_NAME = 255                      # RFC 1035 §2.3.4: octets of a wire name
MAX_LABEL = 63                      # RFC 1035 §2.3.4
MAX_ADDITIONAL = 4                  # a query carries OPT, maybe TSIG: more is abuse
MAX_POINTER_HOPS = 64               # bound on work per name even with backward pointers

UDP_PLAIN_LIMIT = 512               # RFC 1035 §4.2.1: UDP message without EDNS
EDNS_MIN_SIZE = 512                 # RFC 6891 §6.2.5: smaller sizes are treated as 512
EDNS_OUR_SIZE = 1232                # DNS flag day 2020: avoids IP fragmentation
MAX_TCP_MESSAGE = 65535             # RFC 1035 §4.2.2: 2-byte length prefix

_HDR = struct.Struct("!HHHHHH")



@dataclass(slots=True)
class Query:
    id: int
    flags: int
    question: bytes          # the question section exactly as asked (case kept)
    qname: bytes             # wire name, lower-cased (ASCII only, RFC 4343 §3)
    qtype: int
    qclass: int
    edns: bool = False
    udp_size: int = UDP_PLAIN_LIMIT
    edns_version: int = 0
    do: bool = False         # DNSSEC OK (RFC 3225): echoed, never acted upon

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    @property
    def labels(self) -> tuple[bytes, ...]:
        return wire_labels(self.qname)

    def reply_limit(self, tcp: bool = False) -> int:
        """Largest reply this client takes: TCP 65535; UDP 512 without EDNS,
        else its EDNS size (at least 512, RFC 6891 §6.2.5) capped at ours."""
        if tcp:
            return MAX_TCP_MESSAGE
        if not self.edns:
            return UDP_PLAIN_LIMIT
        return min(max(self.udp_size, EDNS_MIN_SIZE), EDNS_OUR_SIZE)


def read_name(data: bytes, off: int) -> tuple[bytes, int]:
    """Read the wire name at ``off``: (uncompressed wire form, offset after
    it).  Pointers must point backwards, past the header, and outside the
    name being read; bounded by MAX_NAME and MAX_POINTER_HOPS."""
    n = len(data)
    out = bytearray()
    end = -1                      # where the name ends in the message (first pointer)
    seg = off                     # start of the segment being read: pointers go below it
    hops = 0
    while True:
        if off >= n:
            raise DecodeError("truncated", off, "name runs past the end")
        ln = data[off]
        if ln == 0:
            out.append(0)
            if len(out) > MAX_NAME:
                raise DecodeError("name_too_long", off)
            return bytes(out), (end if end >= 0 else off + 1)
        top = ln & 0xC0
        if top == 0xC0:
            if off + 1 >= n:
                raise DecodeError("truncated", off, "pointer runs past the end")
            ptr = ((ln & 0x3F) << 8) | data[off + 1]
            if ptr > off:
                raise DecodeError("forward_pointer", off, f"to {ptr}")
            if ptr >= seg:
                raise DecodeError("pointer_loop", off, f"to {ptr}")
            if ptr < 12:
                raise DecodeError("bad_pointer", off, f"into the header ({ptr})")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DecodeError("pointer_loop", off, "too many pointers")
            if end < 0:
                end = off + 2
            off = seg = ptr
            continue
        if top:
            # 0x40/0x80: extended label types (RFC 6891 §5 deprecated them).
            raise DecodeError("label_too_long", off, f"length byte 0x{ln:02x}")
        if off + 1 + ln > n:
            raise DecodeError("truncated", off, "label runs past the end")
        out += data[off:off + 1 + ln]
        if len(out) + 1 > MAX_NAME:
            raise DecodeError("name_too_long", off)
        off += 1 + ln


def _read_rr_head(data: bytes, off: int) -> tuple[int, int, int, int, int]:
    """(type, class, ttl, rdata offset, end offset) of the RR at ``off``."""
    _, off = read_name(data, off)
    if off + 10 > len(data):
        raise DecodeError("truncated", off, "record header")
    rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, off)
    off += 10
    if off + rdlen > len(data):
        raise DecodeError("truncated", off, "record data")
    return rtype, rclass, ttl, off, off + rdlen


def parse_query(data: bytes) -> Query:
    """Read a query strictly (see the module docstring)."""
    if len(data) < 12:
        raise DecodeError("short", len(data), "no complete header")
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(data, 0)
    if flags & QR:
        raise DecodeError("response", 2, "QR set in a query")
    if qd != 1 or an or ns or ar > MAX_ADDITIONAL:
        raise DecodeError("counts", 4, f"qd={qd} an={an} ns={ns} ar={ar}")
    qname, off = read_name(data, 12)
    if off + 4 > len(data):
        raise DecodeError("truncated", off, "question type/class")
    qtype, qclass = struct.unpack_from("!HH", data, off)
    q = Query(qid, flags, data[12:off + 4], qname.lower(), qtype, qclass)
    off += 4
    seen_opt = False
    for _ in range(ar):
        start = off
        rtype, rclass, ttl, rdata, off = _read_rr_head(data, off)
        if rtype != T_OPT:
            continue                      # e.g. TSIG: not supported, ignored
        if seen_opt:
            raise DecodeError("opt_repeated", start)     # RFC 6891 §6.1.1
        if data[start] != 0:
            raise DecodeError("opt_owner", start, "OPT owner must be the root")
        seen_opt = True
        j = rdata
        while j < off:                    # options: code(2) length(2) data
            if j + 4 > off:
                raise DecodeError("opt_options", j)
            j += 4 + ((data[j + 2] << 8) | data[j + 3])
        if j != off:
            raise DecodeError("opt_options", j)
        q.edns = True
        q.udp_size = rclass
        q.edns_version = (ttl >> 16) & 0xFF
        q.do = bool(ttl & 0x8000)
    if off != len(data):
        raise DecodeError("trailing", off, f"{len(data) - off} bytes after the message")
    return q


def wire_labels(wire: bytes) -> tuple[bytes, ...]:
    """Labels of an uncompressed wire name."""
    out, i = [], 0
    while wire[i]:
        ln = wire[i]
        out.append(wire[i + 1:i + 1 + ln])
        i += 1 + ln
    return tuple(out)


def labels_wire(labels) -> bytes:
    return b"".join(bytes([len(lab)]) + lab for lab in labels) + b"\x00"


def name_wire(text: str) -> bytes:
    """'Node5.Netboot.Lan.' -> lower-case wire form (ASCII names only)."""
    t = text.strip().rstrip(".").lower()
    return labels_wire([p.encode("ascii") for p in t.split(".")] if t else [])


def header(qid: int, flags: int, qd: int = 0, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return _HDR.pack(qid, flags, qd, an, ns, ar)


def opt_rr(do: bool = False, ext_rcode: int = 0, size: int = EDNS_OUR_SIZE) -> bytes:
    """Our OPT record (RFC 6891 §6.1.2): root owner, our UDP size, version 0;
    the DO bit echoes the query's (RFC 3225 §3)."""
    return b"\x00\x00\x29" + struct.pack("!HBBHH", size, ext_rcode, 0, 0x8000 if do else 0, 0)


def reply_flags(query_flags: int, rcode: int, aa: bool = False) -> int:
    """QR set, the query's opcode, RD and CD copied, the rcode's low 4 bits."""
    return QR | (query_flags & (OPCODE_MASK | COPIED_FLAGS)) | (AA if aa else 0) | (rcode & 0xF)


def error_reply(q: Query, rcode: int, aa: bool = False) -> bytes:
    """A reply with the question and no records (REFUSED, SERVFAIL, NOTIMP,
    BADVERS...).  Extended rcodes go in the OPT record (RFC 6891 §6.1.3)."""
    edns = q.edns
    msg = header(q.id, reply_flags(q.flags, rcode, aa), 1, 0, 0, 1 if edns else 0) + q.question
    if edns:
        msg += opt_rr(q.do, rcode >> 4)
    return msg


def formerr_reply(data: bytes) -> bytes | None:
    """FORMERR for a message whose header could be read (RFC 1035 §4.1.1):
    header only, since the question may be what was wrong.  None when the
    message has no header or is itself a response (never answer those)."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    flags = (data[2] << 8) | data[3]
    return data[:2] + header(0, reply_flags(flags, FORMERR))[2:]


def truncated_reply(q: Query, aa: bool = True) -> bytes:
    """TC set, question only: the client retries over TCP (RFC 1035 §4.2.1,
    RFC 2181 §9)."""
    flags = reply_flags(q.flags, NOERROR, aa) | TC
    msg = header(q.id, flags, 1, 0, 0, 1 if q.edns else 0) + q.question
    if q.edns:
        msg += opt_rr(q.do)
    return msg


def parse_reply_head(data: bytes) -> tuple[int, int, bytes]:
    """(id, flags, question bytes) of a reply carrying exactly one question,
    read with the same name rules as queries."""
    if len(data) < 12:
        raise DecodeError("short", len(data))
    qid, flags, qd = struct.unpack_from("!HHH", data, 0)
    if not flags & QR:
        raise DecodeError("not_response", 2)
    if qd != 1:
        raise DecodeError("counts", 4, f"qd={qd}")
    _, off = read_name(data, 12)
    if off + 4 > len(data):
        raise DecodeError("truncated", off)
    return qid, flags, data[12:off + 4]


def name_text(wire: bytes) -> str:
    """For logs: the name with non-printable bytes escaped (RFC 4343 §2.1)."""
    out = []
    for lab in wire_labels(wire):
        out.append("".join(chr(b) if 0x21 <= b <= 0x7E and b not in (0x2E, 0x5C)
                           else f"\\{b:03d}" for b in lab))
    return ".".join(out) + "."
