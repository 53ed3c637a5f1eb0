"""The zone's names: host labels from host-supplied names (RFC 1123 §2.1), the
generated fallback, reverse names and the reverse zones of a subnet.  Pure."""
from __future__ import annotations

import ipaddress
import re

_GENERATED = re.compile(r"host-[0-9a-f]{12}")
_BAD = re.compile(r"[^a-z0-9-]")
_ARPA = (b"in-addr", b"arpa")


def sanitize_label(hostname: str | None) -> str | None:
    """The first label of a host-supplied name as a valid DNS label, or None."""
    if not hostname:
        return None
    first = hostname.strip().split(".", 1)[0].lower()
    lab = _BAD.sub("-", first).strip("-")[:63].strip("-")
    return lab or None


def generated_label(mac: str) -> str:
    return "host-" + mac.replace(":", "")


def reverse_name(addr: int) -> str:
    """10.0.0.5 -> 5.0.0.10.in-addr.arpa (RFC 1035 §3.5)."""
    return ".".join(str((addr >> s) & 0xFF) for s in (0, 8, 16, 24)) + ".in-addr.arpa"


def reverse_zones(subnet: ipaddress.IPv4Network) -> list[tuple[bytes, ...]]:
    """Octet-aligned reverse zones covering a subnet: prefixes /9../23 are
    split into the /16 or /24 zones inside them; longer than /24 claims the
    whole /24 zone (no RFC 2317 delegation here: we are the only server)."""
    p = subnet.prefixlen
    aligned = 24 if p > 24 else max(8, -(-p // 8) * 8)
    nets = [subnet.supernet(new_prefix=aligned)] if aligned < p else \
        list(subnet.subnets(new_prefix=aligned))
    out = []
    for n in nets:
        octets = str(n.network_address).split(".")[:aligned // 8]
        out.append(tuple(o.encode() for o in reversed(octets)) + _ARPA)
    return out


def _octet(lab: bytes) -> int | None:
    if not lab.isdigit() or len(lab) > 3 or (len(lab) > 1 and lab[:1] == b"0"):
        return None
    v = int(lab)
    return v if v <= 255 else None
