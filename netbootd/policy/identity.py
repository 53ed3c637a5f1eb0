"""Host identity beyond the MAC (issue 11 item 3): the identifiers a host reports
(all NIC MACs, SMBIOS system UUID, system serial, board serial) and the
placeholders that never count as identity.

Firmware ships with template values its vendor never filled in ("To be filled by
O.E.M.", all-zero UUIDs, "0123456789"...): thousands of unrelated machines share
them, so matching on one would merge hosts.  Pure: no I/O.
"""
from __future__ import annotations

import re
import uuid as _uuid

from ..model import normalize_mac
from .inventory import UNSAFE_CHARS

KINDS = ("mac", "uuid", "serial", "board_serial")
MAX_MACS = 64
MAX_TEXT = 128


def _squash(text: str) -> str:
    """'To Be Filled By O.E.M.' -> 'tobefilledbyoem': case, spaces and punctuation
    vary between firmware builds of the same placeholder."""
    return re.sub(r"[\W_]+", "", text.casefold())


# Serial-number (and other SMBIOS string) placeholders, squashed.  Sources: the
# AMI/Insyde/Phoenix template strings seen in dmidecode output across vendors.
_TEXT_PLACEHOLDERS = frozenset(_squash(s) for s in (
    "To be filled by O.E.M.", "To Be Filled By OEM", "Fill By OEM", "OEM", "O.E.M.",
    "Default string", "Default", "DefaultString", "$(DEFAULT_STRING)",
    "None", "Null", "Nil", "N/A", "NA", "Not Specified", "Not Applicable",
    "Not Available", "Not Present", "Not Settable", "Not Defined", "Unknown", "Undefined",
    "Invalid", "Empty", "No Asset Tag", "No Asset Information",
    "System Serial Number", "Chassis Serial Number", "Base Board Serial Number",
    "Board Serial Number", "Type2 - Board Serial Number", "Serial Number", "Serial",
    "SerialNumber", "SN", "System Product Name", "System Version", "x.x",
    "Chassis Serial", "MB Serial", "Mainboard Serial", "Motherboard Serial",
))
# ascending digit runs: '1234', ..., '0123456789', '1234567890', '123456789012'
_DIGIT_RUNS = frozenset(("01234567890123456789"[s:s + n])
                        for s in (0, 1) for n in range(4, 13))

_MAC_PLACEHOLDERS = frozenset({
    "00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff",
    "00:11:22:33:44:55",       # example/"unprogrammed" MAC of some NIC EEPROMs
    "02:00:00:00:00:00",       # a stack's "MAC hidden" stand-in
    "88:88:88:88:87:88",       # cheap NICs with a blank EEPROM
    "00:e0:4c:68:00:01",       # unprogrammed RTL8168 default
})

_UUID_PLACEHOLDERS = frozenset({
    "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
    # AMI template UUID (many Gigabyte/ASRock/no-name boards), as stored and as
    # read with the SMBIOS >= 2.6 little-endian byte order of the first 3 fields
    "03000200-0400-0500-0006-000700080009", "00020003-0004-0005-0006-000700080009",
    "12345678-1234-5678-90ab-cddeefaabbcc",   # the "example" UUID of some BIOS kits
})

PLACEHOLDERS: dict[str, frozenset[str]] = {
    "mac": _MAC_PLACEHOLDERS,
    "uuid": _UUID_PLACEHOLDERS,
    "serial": _TEXT_PLACEHOLDERS | _DIGIT_RUNS,
    "board_serial": _TEXT_PLACEHOLDERS | _DIGIT_RUNS,
}


def _canon_uuid(text: str) -> str | None:
    try:
        return str(_uuid.UUID(text.strip()))
    except (ValueError, AttributeError, TypeError):
        return None


def _canon_mac(text) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        return normalize_mac(text)
    except ValueError:
        return None


def is_placeholder(kind: str, value) -> bool:
    """True when `value` can never identify a host of `kind` ("mac", "uuid",
    "serial", "board_serial"): a known placeholder, empty or blank, one character
    repeated ("000000", "xxxxxxx"), or (for MACs and UUIDs) not one at all;
    multicast MACs never name a NIC.  Case-insensitive."""
    if kind not in PLACEHOLDERS:
        raise ValueError(f"unknown identifier kind {kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(value, str):
        return True
    if kind == "mac":
        mac = _canon_mac(value)
        return mac is None or mac in _MAC_PLACEHOLDERS or int(mac[:2], 16) & 1 == 1
    if kind == "uuid":
        u = _canon_uuid(value)
        return u is None or u in _UUID_PLACEHOLDERS or len(set(u.replace("-", ""))) == 1
    s = _squash(value)
    return len(set(s)) <= 1 or s in PLACEHOLDERS[kind]


# -- the `ids` object of POST /api/v1/agent/register ----------------------------------

def _text(field: str, value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{field}: longer than {MAX_TEXT} characters")
    if UNSAFE_CHARS.search(value):
        raise ValueError(f"{field}: must be printable text (no control characters)")
    return value.strip() or None


def normalize_ids(obj) -> dict:
    """Validate the register call's `ids`: {"macs": [MAC...] (<= 64), "uuid",
    "serial", "board_serial"}.  Returns them normalized (canonical MACs, deduped;
    lower-case 8-4-4-4-12 UUID; stripped strings); absent, null and blank values
    are left out, as is a UUID the firmware spells as a placeholder word ("Not
    Settable").  Unknown keys are ignored (a newer agent may send more).
    Raises ValueError("ids.<field>: ...") naming the bad field."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ValueError("ids: must be an object")
    out: dict = {}
    macs = obj.get("macs")
    if macs is not None:
        if not isinstance(macs, list):
            raise ValueError("ids.macs: must be a list of MAC addresses")
        if len(macs) > MAX_MACS:
            raise ValueError(f"ids.macs: more than {MAX_MACS} MACs")
        seen: dict[str, None] = {}
        for i, m in enumerate(macs):
            mac = _canon_mac(m)
            if mac is None:
                raise ValueError(f"ids.macs[{i}]: not a MAC address")
            seen[mac] = None
        out["macs"] = list(seen)
    u = _text("ids.uuid", obj.get("uuid"))
    if u is not None:
        canon = _canon_uuid(u)
        if canon is not None:
            out["uuid"] = canon
        elif _squash(u) not in _TEXT_PLACEHOLDERS:
            raise ValueError("ids.uuid: not a UUID")
    for key in ("serial", "board_serial"):
        v = _text(f"ids.{key}", obj.get(key))
        if v is not None:
            out[key] = v
    return out


def _get(doc, *path):
    """doc[path...] when every step is an object, else None (inventory is validated
    elsewhere; identity takes what it can)."""
    for p in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(p)
    return doc


def identifiers(mac: str, ids: dict | None, inventory: dict | None = None
                ) -> list[tuple[str, str]]:
    """Every usable identifier of a host, deduplicated, key MAC first:
    [("mac", m)..., ("uuid", u)..., ("serial", s)..., ("board_serial", s)...].
    `ids` as from normalize_ids (raw values are normalized too); `inventory` a
    validated inventory document (its NIC MACs and DMI system/board ids).
    Placeholders never appear."""
    ids = ids or {}
    found: dict[str, list] = {k: [] for k in KINDS}
    found["mac"].append(mac)
    found["mac"].extend(ids.get("macs") or ())
    nics = _get(inventory, "nics")
    if isinstance(nics, list):
        found["mac"].extend(_get(n, "mac") for n in nics)
    found["uuid"] += [ids.get("uuid"), _get(inventory, "dmi", "system", "uuid")]
    found["serial"] += [ids.get("serial"), _get(inventory, "dmi", "system", "serial")]
    found["board_serial"] += [ids.get("board_serial"),
                              _get(inventory, "dmi", "board", "serial")]
    out: dict[tuple[str, str], None] = {}
    for kind in KINDS:
        for v in found[kind]:
            if is_placeholder(kind, v):
                continue
            if kind == "mac":
                v = normalize_mac(v)
            elif kind == "uuid":
                v = _canon_uuid(v)
            else:
                v = v.strip()
            out[(kind, v)] = None
    return list(out)
