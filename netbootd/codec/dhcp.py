"""DHCPv4 / BOOTP message codec (RFC 2131, 2132, 3396).  Pure: bytes in, bytes out.

``decode`` reads a message into a ``Packet`` whose ``options`` dict keeps the
order in which options first appeared; long options split over several
instances are concatenated (RFC 3396 §7) and options overloaded into the
``file``/``sname`` fields (option 52, RFC 2132 §9.3) are read in the order the
RFC prescribes (options field, then file, then sname).  Any structural fault
raises ``DecodeError`` naming the reason and the byte offset.

``encode`` writes a reply that fits a size budget: values longer than 255
bytes are split (RFC 3396), options that do not fit the options field spill
into ``file`` and ``sname`` through option 52 when those are unused, and what
still does not fit is left out, last options first (callers order options by
priority).
"""
from __future__ import annotations

from .errors import DecodeError  # noqa: F401 - re-exported: codec.<x>.DecodeError

import socket
import struct

from .dhcp_options import (
    FIXED_LEN, MAGIC_COOKIE, MIN_REPLY_LEN, OPT_END, OPT_MESSAGE_TYPE, OPT_OVERLOAD,
    OPT_PAD, OPTIONS_START, OVERLOAD_FILE, OVERLOAD_SNAME,
)

_HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
assert _HEADER.size == FIXED_LEN
# decode() reads the fields before sname with this one: sname and file are
# mostly empty (their first byte NUL) and are only sliced when they are not.
_HEAD = struct.Struct("!BBBBIHH4s4s4s4s16s")
_SNAME, _FILE = 44, 108             # RFC 2131 fig. 1 offsets

_ZERO_IP = b"\x00\x00\x00\x00"
_NOT_ENCODED = frozenset((OPT_OVERLOAD, OPT_PAD, OPT_END))



class Packet:
    """One DHCP/BOOTP message.  Addresses are 4-byte ``bytes`` (``*_ip``
    properties give dotted strings); ``chaddr`` holds ``hlen`` bytes."""

    __slots__ = ("op", "htype", "hlen", "hops", "xid", "secs", "flags", "ciaddr",
                 "yiaddr", "siaddr", "giaddr", "chaddr", "sname", "file", "options")

    def __init__(self, op=1, htype=1, hlen=6, hops=0, xid=0, secs=0, flags=0,
                 ciaddr=_ZERO_IP, yiaddr=_ZERO_IP, siaddr=_ZERO_IP, giaddr=_ZERO_IP,
                 chaddr=b"", sname=b"", file=b"", options=None):
        self.op = op
        self.htype = htype
        self.hlen = hlen
        self.hops = hops
        self.xid = xid
        self.secs = secs
        self.flags = flags
        self.ciaddr = ciaddr
        self.yiaddr = yiaddr
        self.siaddr = siaddr
        self.giaddr = giaddr
        self.chaddr = chaddr
        self.sname = sname
        self.file = file
        self.options: dict[int, bytes] = {} if options is None else options

    # -- convenience views ---------------------------------------------
    @property
    def msg_type(self) -> int | None:
        v = self.options.get(OPT_MESSAGE_TYPE)
        return v[0] if v and len(v) == 1 else None

    @property
    def mac(self) -> str:
        """chaddr as 'aa:bb:cc:dd:ee:ff' (meaningful for htype 1 / hlen 6)."""
        return self.chaddr.hex(":")

    @property
    def ciaddr_ip(self) -> str:
        return socket.inet_ntoa(self.ciaddr)

    @property
    def yiaddr_ip(self) -> str:
        return socket.inet_ntoa(self.yiaddr)

    @property
    def siaddr_ip(self) -> str:
        return socket.inet_ntoa(self.siaddr)

    @property
    def giaddr_ip(self) -> str:
        return socket.inet_ntoa(self.giaddr)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return (f"Packet(op={self.op}, type={self.msg_type}, xid={self.xid:#x}, "
                f"chaddr={self.mac}, ciaddr={self.ciaddr_ip}, yiaddr={self.yiaddr_ip}, "
                f"giaddr={self.giaddr_ip}, options={sorted(self.options)})")


def _parse_options(data: bytes, start: int, end: int, out: dict, base: int,
                   need_end: bool) -> int | None:
    """Parse options in data[start:end] into `out` (concatenating repeats,
    RFC 3396).  Returns the offset of the first option 52 if seen, else
    None.  `base` is added to offsets in errors so they are message offsets."""
    i = start
    overload_at = None
    while i < end:
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return overload_at
        if i + 1 >= end:
            raise DecodeError("option_truncated", base + i, f"option {code} has no length")
        ln = data[i + 1]
        j = i + 2 + ln
        if j > end:
            raise DecodeError("option_overrun", base + i,
                              f"option {code} length {ln} runs past the end")
        val = data[i + 2:j]
        prev = out.get(code)
        out[code] = val if prev is None else prev + val
        if code == OPT_OVERLOAD and overload_at is None:
            overload_at = base + i
        i = j
    if need_end:
        raise DecodeError("no_end", base + end, "options not terminated by END (255)")
    # file/sname fields may simply run out (they are fixed-size and NUL padded)
    return overload_at


def decode(data: bytes) -> Packet:
    if type(data) is not bytes:
        data = bytes(data)
    n = len(data)
    if n < OPTIONS_START:
        raise DecodeError("short", n, f"{n} bytes, a DHCP message needs at least {OPTIONS_START}")
    if data[FIXED_LEN:OPTIONS_START] != MAGIC_COOKIE:
        raise DecodeError("bad_cookie", FIXED_LEN)
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
     chaddr) = _HEAD.unpack_from(data, 0)
    if op not in (1, 2):
        raise DecodeError("bad_op", 0, f"op {op}")
    if hlen > 16:
        raise DecodeError("bad_hlen", 2, f"hlen {hlen}")
    options: dict[int, bytes] = {}
    at = _parse_options(data, OPTIONS_START, n, options, 0, need_end=True)
    if at is not None:
        # RFC 2132 §9.3: only the options field may carry option 52; an
        # option 52 inside file/sname is ignored (it cannot start a loop).
        # Repeated instances concatenate (RFC 3396): only one byte is valid.
        raw = options[OPT_OVERLOAD]
        if len(raw) != 1 or raw[0] not in (1, 2, 3):
            raise DecodeError("bad_overload", at, f"option 52 value {raw.hex()}")
        overload = raw[0]
        if overload & OVERLOAD_FILE:
            file = data[_FILE:FIXED_LEN]
            _parse_options(file, 0, len(file), options, _FILE, need_end=False)
        if overload & OVERLOAD_SNAME:
            sname = data[_SNAME:_FILE]
            _parse_options(sname, 0, len(sname), options, _SNAME, need_end=False)
        options[OPT_OVERLOAD] = bytes([overload])
    else:
        overload = 0
    sname = b"" if overload & OVERLOAD_SNAME or not data[_SNAME] else \
        data[_SNAME:_FILE].split(b"\0", 1)[0]
    file = b"" if overload & OVERLOAD_FILE or not data[_FILE] else \
        data[_FILE:FIXED_LEN].split(b"\0", 1)[0]
    return Packet(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr,
                  chaddr[:hlen], sname, file, options)


def _option_bytes(code: int, value: bytes) -> bytes:
    """TLV encoding of one option, split into 255-byte pieces (RFC 3396)."""
    if len(value) <= 255:
        return bytes((code, len(value))) + value
    parts = []
    for k in range(0, len(value), 255):
        piece = value[k:k + 255]
        parts.append(bytes((code, len(piece))) + piece)
    return b"".join(parts)


def _layout(tlvs: list[bytes], main_room: int, file_room: int, sname_room: int):
    """Greedy placement in priority order: options field, then file, then
    sname; what fits nowhere is left out.  Returns (kept flags, parts)."""
    kept, main, in_file, in_sname = [], [], [], []
    for tlv in tlvs:
        n = len(tlv)
        if n <= main_room:
            main.append(tlv)
            main_room -= n
        elif n <= file_room:
            in_file.append(tlv)
            file_room -= n
        elif n <= sname_room:
            in_sname.append(tlv)
            sname_room -= n
        else:
            kept.append(False)
            continue
        kept.append(True)
    return kept, main, in_file, in_sname


def encode(pkt: Packet, max_size: int = 548) -> bytes:
    """Encode `pkt`; the result never exceeds `max_size` bytes (clamped to at
    least 548, the RFC 2131 minimum).  Options are placed in dict order; see
    the module docstring for what happens when they do not fit."""
    max_size = max(max_size, 548)
    room = max_size - OPTIONS_START - 1  # 1 for END
    tlvs = [option_tlv(c, v) for c, v in pkt.options.items() if c not in _NOT_ENCODED]
    file = pkt.file
    sname = pkt.sname
    if sum(map(len, tlvs)) <= room:
        main = tlvs
    else:
        # Two candidate layouts: options field only, or with option 52
        # overloading unused file/sname fields (3 bytes of the options field
        # go to option 52 itself).  Keep the one that drops the
        # highest-priority option later: an option is never left out to make
        # room for one after it.
        plain = _layout(tlvs, room, -1, -1)
        over = _layout(tlvs, room - 3, -1 if file else 127, -1 if sname else 63)
        best = plain
        if over[2] or over[3]:
            for a, b in zip(plain[0], over[0]):
                if a != b:
                    best = over if b else plain
                    break
        _, main, in_file, in_sname = best
        if in_file or in_sname:
            overload = (OVERLOAD_FILE if in_file else 0) | (OVERLOAD_SNAME if in_sname else 0)
            main = main + [bytes((OPT_OVERLOAD, 1, overload))]
            if in_file:
                file = b"".join(in_file) + b"\xff"
            if in_sname:
                sname = b"".join(in_sname) + b"\xff"
    return _assemble(pkt, sname, file, b"".join(main))


def option_tlv(code: int, value: bytes) -> bytes:
    """One option as encode() writes it (split past 255 bytes, RFC 3396)."""
    return bytes((code, len(value))) + value if len(value) < 256 else _option_bytes(code, value)


def encode_prebuilt(pkt: Packet, tlvs: bytes, max_size: int = 548) -> bytes | None:
    """encode() for a caller that has its options as ready TLV bytes, in
    order (``pkt.options`` is not read): the same bytes encode() writes for
    those options, or None when they do not fit the options field, where
    encode() would overload file/sname or leave options out."""
    if len(tlvs) > max(max_size, 548) - OPTIONS_START - 1:
        return None
    return _assemble(pkt, pkt.sname, pkt.file, tlvs)


def encode_reply(req: Packet, yiaddr: bytes, siaddr: bytes, file: bytes, tlvs: bytes,
                 max_size: int = 548) -> bytes | None:
    """encode_prebuilt() of the BOOTREPLY to `req` (its htype, hlen, xid,
    flags, ciaddr, giaddr and chaddr; hops, secs and sname zero) without
    building that Packet: the same bytes, or None where encode_prebuilt()
    gives None (the DHCP server's hot path: one reply per request)."""
    if len(tlvs) > max(max_size, 548) - OPTIONS_START - 1:
        return None
    out = _HEADER.pack(2, req.htype, req.hlen, 0, req.xid & 0xFFFFFFFF, 0, req.flags & 0xFFFF,
                       req.ciaddr, yiaddr, siaddr, req.giaddr, req.chaddr[:16], b"",
                       file[:128]) + MAGIC_COOKIE + tlvs + b"\xff"
    if len(out) < MIN_REPLY_LEN:
        out += b"\0" * (MIN_REPLY_LEN - len(out))
    return out


def _assemble(pkt: Packet, sname: bytes, file: bytes, options: bytes) -> bytes:
    head = _HEADER.pack(pkt.op, pkt.htype, pkt.hlen, pkt.hops, pkt.xid & 0xFFFFFFFF,
                        pkt.secs & 0xFFFF, pkt.flags & 0xFFFF, pkt.ciaddr, pkt.yiaddr,
                        pkt.siaddr, pkt.giaddr, pkt.chaddr[:16], sname[:64], file[:128])
    out = head + MAGIC_COOKIE + options + b"\xff"
    if len(out) < MIN_REPLY_LEN:
        out += b"\0" * (MIN_REPLY_LEN - len(out))
    return out
