"""Host-controlled DHCP values bounded and typed at the policy boundary.  Pure.

What a client writes into its options reaches events, the registry and the
store: each value is kept only within its RFC field's size and charset
(pxe.classify does the same for arch, UNDI, UUID and vendor class).
"""
from __future__ import annotations

import re
import struct

from ..codec import dhcp_options as o

_LABEL_BAD = re.compile(r"[^a-z0-9-]+")
_DEFAULT_BUDGET = min(max(576, o.MIN_MAX_MESSAGE), o.MAX_MESSAGE_CAP) - o.IP_UDP_OVERHEAD


def sanitize_hostname(raw: bytes | None) -> str | None:
    """Option 12 is host-controlled: keep a valid DNS name (labels of
    a-z 0-9 '-', 1..63 long, 253 in all) or nothing."""
    if not raw:
        return None
    text = raw.split(b"\0", 1)[0].decode("ascii", "replace").lower()
    labels = []
    for part in text.split("."):
        lab = _LABEL_BAD.sub("-", part).strip("-")[:63].strip("-")
        if lab:
            labels.append(lab)
    name = ".".join(labels)[:253].strip(".-")
    return name or None


_hostnames: dict[bytes, str | None] = {}


def option_hostname(raw: bytes | None) -> str | None:
    """sanitize_hostname() of an option 12 value, memoized (bounded): a
    returning client sends the same name with every packet."""
    if raw is None:
        return None
    name = _hostnames.get(raw, _hostnames)
    if name is _hostnames:
        if len(_hostnames) >= 16384:
            _hostnames.clear()
        name = _hostnames[raw] = sanitize_hostname(raw)
    return name


def max_message(options: dict[int, bytes]) -> int:
    """Reply budget from option 57 (RFC 2132 §9.10): never below 576, never
    above one Ethernet frame, less the IP and UDP headers."""
    raw = options.get(o.OPT_MAX_MESSAGE_SIZE)
    if raw is None:
        return _DEFAULT_BUDGET                          # the common case: no option 57
    size = struct.unpack("!H", raw)[0] if len(raw) == 2 else 576
    size = min(max(size, o.MIN_MAX_MESSAGE), o.MAX_MESSAGE_CAP)
    return size - o.IP_UDP_OVERHEAD


def client_id_ok(options: dict[int, bytes]) -> bool:
    """Option 61 absent or 2..255 bytes (RFC 2132 §9.14).  RFC 3396
    concatenation could make it kilobytes, stored with every lease."""
    cid = options.get(o.OPT_CLIENT_ID)
    return cid is None or 2 <= len(cid) <= 255
