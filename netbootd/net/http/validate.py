"""One set of validators for the API: each is a pattern (used as is in the
OpenAPI document, openapi.py) and the check the handlers run.  The code's
rule is the reference; where a rule lives in policy (profile arguments,
hostnames, MACs) the pattern here is written to accept exactly what policy
accepts, and tests/unit/test_http_validate.py holds each pair equal on
generated strings.

Patterns avoid lookarounds so that ECMA-262 (the document's regex dialect)
and Python's re read them alike, and schemathesis can generate from them."""
from __future__ import annotations

import re

from ...model import HostState, normalize_mac
from ...policy.boot import PROFILES
from ...policy.dhcp_engine import sanitize_hostname
from .errors import BadRequest

# Exactly what model.normalize_mac accepts: one separator style throughout.
MAC_PATTERN = ("^([0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}|[0-9a-fA-F]{2}(-[0-9a-fA-F]{2}){5}"
               "|[0-9a-fA-F]{12})$")
# Dotted quad, each octet 0..255 without leading zeros; empty means "not
# known" (the agent on hardware without an address yet).  The old check
# (\d{1,3} four times) accepted 999.1.1.1 and non-ASCII digits.
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = f"^({_OCTET}(\\.{_OCTET}){{3}})?$"
UUID_PATTERN = ("^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                "[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")
# DNS names are case-insensitive: stored lower-case (dhcp_engine.sanitize_hostname).
HOSTNAME_PATTERN = ("^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    "(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
HOSTNAME_MAX = 253

# A kernel or initrd (policy/boot._location): an http(s)/tftp URL, or a file
# name under the files root, '/' allowed (subdirectories), never a '..'
# component.  Such a name is a path policy/paths.normalize accepts (ASCII,
# <= 255 bytes, no '..', no backslash or control character), so it cannot
# leave the root.  A component is anything but '..': one not starting with
# '.', '.' alone or followed by a non-dot, '..' followed by more, or empty
# (after the first: "a//b" is "a/b" to paths.normalize).
_C = "[A-Za-z0-9._+-]"
_NOT_DOT = "[A-Za-z0-9_+-]"
_FIRST = f"({_NOT_DOT}{_C}*|\\.({_NOT_DOT}{_C}*)?|\\.\\.{_C}+)"
_COMPONENT = f"{_FIRST}?"
LOCATION_URL_PATTERN = "^(https?|tftp)://[A-Za-z0-9._~:/?=,+@%&-]+$"
LOCATION_NAME_PATTERN = f"^{_FIRST}(/{_COMPONENT})*$"
LOCATION_URL_MAX, LOCATION_NAME_MAX = 1024, 255
CMDLINE_MAX = 2048
# SAN URIs iPXE understands (ipxe.org/sanuri), as policy/boot._SAN_RE.
SAN_URI_PATTERN = "^(iscsi|aoe|http|https|fcp|ib_srp):[A-Za-z0-9._~:/?=,+@%-]+$"
SAN_URI_MAX = 1024
# iqn./eui. names (RFC 3720 §3.2.6.3), as policy/boot._IQN_RE; empty: none.
IQN_PATTERN = ("^((iqn\\.[0-9]{4}-[0-9]{2}\\.[A-Za-z0-9.-]+(:[A-Za-z0-9._:-]+)?"
               "|eui\\.[0-9A-Fa-f]{16}))?$")
IQN_MAX = 223

STATES = tuple(s.value for s in HostState)
# An account name (registry/accounts.NAME_RE).
ACCOUNT_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
# A disk name of a wipe (registry/agent._DISK).
DISK_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
# One line of printable text (a serial number): policy.inventory.UNSAFE_CHARS.
TEXT_PATTERN = "^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
MAX_COUNT = 100 * 365 * 86400     # token uses and lifetimes (seconds)
# Profiles by the arguments they take (policy/boot.validate_args).
PROFILES_WITH_ARGS = ("linux", "sanboot")
PLAIN_PROFILES = tuple(p for p in PROFILES if p not in PROFILES_WITH_ARGS)

_IPV4_RE = re.compile(IPV4_PATTERN)
_UUID_RE = re.compile(UUID_PATTERN)
MAX_LIMIT = 1000


def mac(text, field: str = "mac") -> str:
    """The canonical MAC, or BadRequest naming the field."""
    try:
        return normalize_mac(text if isinstance(text, str) else "")
    except ValueError as e:
        raise BadRequest(f"{field}: {e}") from None


def ipv4(text: str | None, field: str = "ip") -> str | None:
    # fullmatch on ASCII: '$' also matches before a trailing newline.
    if text is not None and not (text.isascii() and _IPV4_RE.fullmatch(text)):
        raise BadRequest(f"{field}: not an IPv4 address")
    return text or None


def uuid(text: str | None, field: str = "uuid") -> str | None:
    text = (text or "").lower() or None
    if text is not None and not (text.isascii() and _UUID_RE.fullmatch(text)):
        raise BadRequest(f"{field}: not a UUID")
    return text


def hostname(raw, field: str = "hostname") -> str | None:
    """A hostname an admin sets (None clears it): a valid DNS name, stored
    lower-case, or BadRequest with the name it would become."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadRequest(f"{field}: must be a string or null")
    name = sanitize_hostname(raw.encode("utf-8", "replace"))
    if not raw or name != raw.lower():
        raise BadRequest(f"{field}: {raw!r} is not a valid DNS name "
                         f"(letters, digits, '-', dots; e.g. {name!r})")
    return name


def state(text: str | None) -> str | None:
    if text is not None and text not in STATES:
        raise BadRequest(f"state: not one of {', '.join(sorted(STATES))}")
    return text


def int_arg(request, name: str, default: int, hi: int = MAX_LIMIT, lo: int = 0) -> int:
    raw = request.args.get(name.encode())
    if not raw:
        return default
    try:
        v = int(raw[0])
    except ValueError:
        raise BadRequest(f"{name}: not an integer") from None
    if not 0 <= v <= hi:
        raise BadRequest(f"{name}: must be 0..{hi}")
    if v < lo:
        raise BadRequest(f"{name}: must be {lo}..{hi}")
    return v


def str_arg(request, name: str) -> str | None:
    raw = request.args.get(name.encode())
    return raw[0].decode("utf-8", "replace") if raw else None
