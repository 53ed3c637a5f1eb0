"""ICMPv6 router discovery (RFC 4861 §4.1, §4.2): router solicitations in,
router advertisements out.  Bytes in, values out; the standard library only.

The body starts at the ICMPv6 type byte (what a raw IPPROTO_ICMPV6 socket
reads and writes: the kernel adds the IPv6 header and, on send, the checksum).
`checksum()` is here for callers that build whole packets (tests, captures).
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from .errors import DecodeError

ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
OPT_SOURCE_LLADDR = 1
OPT_PREFIX_INFO = 3
OPT_MTU = 5
FLAG_MANAGED = 0x80          # M: addresses from DHCPv6
FLAG_OTHER = 0x40            # O: other configuration from DHCPv6
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
MAX_OPTIONS = 64             # a bound on what one packet may make us walk


@dataclass(frozen=True)
class Prefix:
    prefix: str              # "2001:db8::"
    length: int
    on_link: bool = True
    autonomous: bool = True
    valid: int = 2592000
    preferred: int = 604800


@dataclass(frozen=True)
class RouterSolicitation:
    source_lladdr: bytes | None = None


@dataclass(frozen=True)
class RouterAdvertisement:
    cur_hop_limit: int = 0           # 0: unspecified (RFC 4861 §4.2)
    flags: int = 0                   # FLAG_MANAGED | FLAG_OTHER
    router_lifetime: int = 0         # seconds; 0: not a default router
    reachable_time: int = 0
    retrans_timer: int = 0
    source_lladdr: bytes | None = None
    mtu: int | None = None
    prefixes: tuple[Prefix, ...] = ()


def _options(buf: bytes, offset: int) -> list[tuple[int, bytes]]:
    """(type, body) of each option; a zero or overlong length is an error
    (RFC 4861 §4.6: a node must silently discard such a packet)."""
    out = []
    while offset < len(buf):
        if len(buf) - offset < 2:
            raise DecodeError("option_truncated", offset)
        otype, olen = buf[offset], buf[offset + 1]
        if olen == 0:
            raise DecodeError("option_zero_length", offset)
        end = offset + olen * 8
        if end > len(buf):
            raise DecodeError("option_overrun", offset, f"option {otype}")
        if len(out) >= MAX_OPTIONS:
            raise DecodeError("too_many_options", offset)
        out.append((otype, buf[offset + 2:end]))
        offset = end
    return out


def _lladdr(body: bytes) -> bytes:
    """A link-layer address option's address (Ethernet: 6 bytes, padding dropped)."""
    return body[:6] if len(body) >= 6 else body


def message_type(buf: bytes) -> int:
    if len(buf) < 4:
        raise DecodeError("short", 0, "shorter than an ICMPv6 header")
    return buf[0]


def _check(buf: bytes, kind: int, minimum: int, what: str) -> None:
    if len(buf) < minimum:
        raise DecodeError("short", 0, f"{what} under {minimum} bytes")
    if buf[0] != kind:
        raise DecodeError("bad_type", 0, f"type {buf[0]} is not a {what}")
    if buf[1] != 0:
        raise DecodeError("bad_code", 1, f"code {buf[1]} (must be 0)")


def decode_rs(buf: bytes) -> RouterSolicitation:
    _check(buf, ROUTER_SOLICITATION, 8, "router solicitation")
    ll = None
    for otype, body in _options(buf, 8):
        if otype == OPT_SOURCE_LLADDR:
            ll = _lladdr(body)
    return RouterSolicitation(ll)


def decode_ra(buf: bytes) -> RouterAdvertisement:
    _check(buf, ROUTER_ADVERTISEMENT, 16, "router advertisement")
    hop, flags, lifetime, reachable, retrans = struct.unpack_from("!BBHII", buf, 4)
    ll, mtu, prefixes = None, None, []
    for otype, body in _options(buf, 16):
        if otype == OPT_SOURCE_LLADDR:
            ll = _lladdr(body)
        elif otype == OPT_MTU and len(body) >= 6:
            mtu = struct.unpack_from("!I", body, 2)[0]
        elif otype == OPT_PREFIX_INFO:
            if len(body) != 30:
                raise DecodeError("bad_prefix_option", 16, "prefix information option is not 32 bytes")
            plen, pflags, valid, preferred = struct.unpack_from("!BBII", body, 0)
            prefixes.append(Prefix(str(ipaddress.IPv6Address(body[14:30])), plen,
                                   bool(pflags & 0x80), bool(pflags & 0x40), valid, preferred))
    return RouterAdvertisement(hop, flags, lifetime, reachable, retrans, ll, mtu,
                               tuple(prefixes))


def encode_rs(source_lladdr: bytes | None = None) -> bytes:
    out = struct.pack("!BBHI", ROUTER_SOLICITATION, 0, 0, 0)
    if source_lladdr:
        out += _lladdr_option(source_lladdr)
    return out


def encode_ra(ra: RouterAdvertisement) -> bytes:
    """The message with a zero checksum (the kernel fills it in on a raw
    ICMPv6 socket; `with_checksum` for whole packets)."""
    for name, value, bits in (("cur_hop_limit", ra.cur_hop_limit, 8), ("flags", ra.flags, 8),
                              ("router_lifetime", ra.router_lifetime, 16),
                              ("reachable_time", ra.reachable_time, 32),
                              ("retrans_timer", ra.retrans_timer, 32)):
        if not 0 <= value < (1 << bits):
            raise ValueError(f"{name} {value} does not fit in {bits} bits")
    out = struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, ra.cur_hop_limit, ra.flags,
                      ra.router_lifetime, ra.reachable_time, ra.retrans_timer)
    if ra.source_lladdr:
        out += _lladdr_option(ra.source_lladdr)
    if ra.mtu is not None:
        out += struct.pack("!BBHI", OPT_MTU, 1, 0, ra.mtu)
    for p in ra.prefixes:
        pflags = (0x80 if p.on_link else 0) | (0x40 if p.autonomous else 0)
        out += struct.pack("!BBBBIII", OPT_PREFIX_INFO, 4, p.length, pflags, p.valid,
                           p.preferred, 0) + ipaddress.IPv6Address(p.prefix).packed
    return out


def _lladdr_option(addr: bytes) -> bytes:
    body = bytes([OPT_SOURCE_LLADDR, 0]) + addr
    body += b"\0" * (-len(body) % 8)
    return bytes([OPT_SOURCE_LLADDR, len(body) // 8]) + body[2:]


def checksum(src: str, dst: str, message: bytes) -> int:
    """The ICMPv6 checksum over the IPv6 pseudo-header (RFC 4443 §2.3) of
    `message` with its checksum field taken as zero."""
    msg = message[:2] + b"\0\0" + message[4:]
    data = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
            + struct.pack("!I3xB", len(msg), 58) + msg)
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def with_checksum(src: str, dst: str, message: bytes) -> bytes:
    return message[:2] + struct.pack("!H", checksum(src, dst, message)) + message[4:]


def quench(source_lladdr: bytes | None = None) -> RouterAdvertisement:
    """"There is no IPv6 router here": lifetime 0 (not a default router), M=0
    and O=0 (no DHCPv6), no prefix (no address to configure).  iPXE ends its
    IPv6 autoconfiguration on the first such answer (src/net/ndp.c,
    ipv6conf_rx_router_advertisement) instead of soliciting for ~13 s."""
    return RouterAdvertisement(source_lladdr=source_lladdr)
