"""The inventory document an agent posts (docs/agent-protocol.md): its schema,
validation and a summary for tables.  Pure: values in, values out.

The document is host-controlled data: every limit is checked (body size, nesting,
string lengths, list lengths, integer range), strings are kept as data (control
characters and lone surrogates replaced with U+FFFD, so they can never break a
log line, a JSON encoder or a terminal).  Every section is optional: an agent on odd
hardware reports what it can.  Fields this version does not know are kept in a
bounded `extra` (top-level ones under their name, nested ones under their path,
e.g. "disks[0].wwn"), so a newer agent loses nothing a newer server could show.

Counts are per host: `cpu.cores` and `cpu.threads` are totals over all sockets.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import uuid as _uuid

from ..model import normalize_mac

SCHEMA = 1
MAX_BYTES = 256 * 1024
MAX_DEPTH = 8              # nesting of objects/lists, the top-level object is 1
MAX_STR = 256
MAX_ITEMS = 256            # disks, nics, any list
MAX_KEYS = 256             # keys of any object
MAX_EXTRA = 16 * 1024      # `extra` as compact JSON
_INT_MAX = 2 ** 63

# field kinds: "str" text, "int" non-negative integer, "bool", or a validator
_TEXT, _INT, _BOOL = "str", "int", "bool"


class InventoryError(ValueError):
    """A refused document; str() names the path: 'disks[1].bytes: ...'."""


def _firmware(path: str, v):
    if not isinstance(v, str) or v.strip().lower() not in ("bios", "uefi"):
        raise InventoryError(f"{path}: must be \"bios\" or \"uefi\"")
    return v.strip().lower()


def _mac(path: str, v):
    try:
        return normalize_mac(v)
    except (ValueError, AttributeError):
        raise InventoryError(f"{path}: not a MAC address") from None


def _uuid_text(path: str, v):
    """A UUID in canonical lower case; other text (firmware's "Not Settable") kept."""
    v = _scalar(path, v, _TEXT)
    if v is None:
        return None
    try:
        return str(_uuid.UUID(v))
    except ValueError:
        return v


_CPU = {"model": _TEXT, "vendor": _TEXT, "arch": _TEXT,
        "sockets": _INT, "cores": _INT, "threads": _INT, "mhz": _INT}
_MEMORY = {"bytes": _INT}
_DISK = {"name": _TEXT, "bytes": _INT, "model": _TEXT, "vendor": _TEXT, "serial": _TEXT,
         "wwn": _TEXT, "rotational": _BOOL, "transport": _TEXT, "readonly": _BOOL,
         "removable": _BOOL}
_NIC = {"name": _TEXT, "mac": _mac, "driver": _TEXT, "link": _BOOL, "speed": _INT,
        "mtu": _INT}
_DMI = {
    "system": {"vendor": _TEXT, "product": _TEXT, "version": _TEXT, "serial": _TEXT,
               "uuid": _uuid_text, "sku": _TEXT, "family": _TEXT},
    "board": {"vendor": _TEXT, "product": _TEXT, "version": _TEXT, "serial": _TEXT},
    "bios": {"vendor": _TEXT, "version": _TEXT, "date": _TEXT},
    "chassis": {"vendor": _TEXT, "type": _TEXT, "serial": _TEXT, "asset_tag": _TEXT},
}
_TOP_SCALARS = {"firmware": _firmware, "secure_boot": _BOOL, "extra_truncated": _BOOL}


# C0/C1 controls, line/paragraph separators, lone surrogates: break logs, terminals
# or UTF-8 encoders; everything else (any script, emoji, NBSP) is kept as sent
UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _clean(s: str) -> str:
    return UNSAFE_CHARS.sub("\ufffd", s)


def _check_tree(path: str, v, depth: int):
    """Generic limits over any JSON value; returns a cleaned copy."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        if not -_INT_MAX <= v < _INT_MAX:
            raise InventoryError(f"{path}: integer out of range")
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InventoryError(f"{path}: must be a finite number")
        return v
    if isinstance(v, str):
        if len(v) > MAX_STR:
            raise InventoryError(f"{path}: longer than {MAX_STR} characters")
        return _clean(v)
    if isinstance(v, (list, dict)) and depth > MAX_DEPTH:
        raise InventoryError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(v, list):
        if len(v) > MAX_ITEMS:
            raise InventoryError(f"{path}: more than {MAX_ITEMS} items")
        return [_check_tree(f"{path}[{i}]", x, depth + 1) for i, x in enumerate(v)]
    if isinstance(v, dict):
        if len(v) > MAX_KEYS:
            raise InventoryError(f"{path}: more than {MAX_KEYS} keys")
        out = {}
        for k, x in v.items():
            if not isinstance(k, str) or len(k) > MAX_STR:
                raise InventoryError(f"{path}: keys must be strings of at most {MAX_STR} chars")
            out[_clean(k)] = _check_tree(f"{path}.{k}" if path else k, x, depth + 1)
        return out
    raise InventoryError(f"{path or 'document'}: not a JSON value ({type(v).__name__})")


def _scalar(path: str, v, kind):
    if v is None:
        return None
    if callable(kind):
        return kind(path, v)
    if kind == _TEXT:
        if not isinstance(v, str):
            raise InventoryError(f"{path}: must be a string")
        return v.strip() or None
    if kind == _INT:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InventoryError(f"{path}: must be a non-negative integer")
        return v
    if not isinstance(v, bool):
        raise InventoryError(f"{path}: must be true or false")
    return v


def _object(path: str, v, fields: dict, extra: dict) -> dict | None:
    """A known section: known fields checked and normalized, others to `extra`."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InventoryError(f"{path}: must be an object")
    out = {}
    for k, x in v.items():
        kind = fields.get(k)
        if kind is None:
            extra.setdefault(f"{path}.{k}", x)
        elif isinstance(kind, dict):
            sub = _object(f"{path}.{k}", x, kind, extra)
            if sub is not None:
                out[k] = sub
        else:
            val = _scalar(f"{path}.{k}", x, kind)
            if val is not None:
                out[k] = val
    return out


def _items(path: str, v, fields: dict, extra: dict) -> list | None:
    if v is None:
        return None
    if not isinstance(v, list):
        raise InventoryError(f"{path}: must be a list")
    out = []
    for i, x in enumerate(v):
        if not isinstance(x, dict):
            raise InventoryError(f"{path}[{i}]: must be an object")
        out.append(_object(f"{path}[{i}]", x, fields, extra))
    return out


def validate(doc) -> dict:
    """The normalized inventory document, or InventoryError naming the path."""
    if not isinstance(doc, dict):
        raise InventoryError("document: must be a JSON object")
    doc = _check_tree("", doc, 1)
    if type(doc.get("schema")) is not int or doc["schema"] != SCHEMA:
        raise InventoryError(f"schema: must be {SCHEMA}")
    extra = doc.get("extra")
    if extra is None:
        extra = {}
    elif not isinstance(extra, dict):
        raise InventoryError("extra: must be an object")
    extra = dict(extra)
    out: dict = {"schema": SCHEMA}
    sections = {"cpu": _CPU, "memory": _MEMORY, "dmi": _DMI}
    lists = {"disks": _DISK, "nics": _NIC}
    for key, v in doc.items():
        if key in ("schema", "extra"):
            continue
        if key in sections:
            val = _object(key, v, sections[key], extra)
        elif key in lists:
            val = _items(key, v, lists[key], extra)
        elif key in _TOP_SCALARS:
            val = _scalar(key, v, _TOP_SCALARS[key])
        else:
            extra.setdefault(key, v)
            continue
        if val is not None:
            out[key] = val
    _bound_extra(out, extra)
    return out


def _depth(v) -> int:
    """Nesting of a (checked, so bounded) value: 0 for a scalar."""
    if isinstance(v, dict):
        return 1 + max(map(_depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(_depth, v), default=0)
    return 0


def _bound_extra(out: dict, extra: dict) -> None:
    """Keep `extra` within limits, so the normalized document validates again:
    entries too deep or with too long a key (moved in from elsewhere) are left out,
    and all of it when it is over MAX_EXTRA; either sets `extra_truncated`."""
    kept = {k: v for k, v in extra.items()
            if len(k) <= MAX_STR and 2 + _depth(v) <= MAX_DEPTH}
    if len(kept) > MAX_KEYS or len(json.dumps(kept, separators=(",", ":"))) > MAX_EXTRA:
        kept = {}
    if len(kept) < len(extra):
        out["extra_truncated"] = True
    if kept:
        out["extra"] = kept


def parse(body: bytes) -> dict:
    """An HTTP body -> the normalized document: size first, then strict JSON (no
    NaN/Infinity), then validate."""
    if len(body) > MAX_BYTES:
        raise InventoryError(f"document: larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise InventoryError(f"document: not valid JSON ({str(e)[:80]})") from None
    return validate(doc)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def digest(inv: dict) -> str:
    """A stable hash of a normalized document (to tell a changed inventory)."""
    text = json.dumps(inv, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def summary(inv: dict | None) -> dict:
    """The hardware at a glance, for tables: missing parts are None (counts 0)."""
    inv = inv or {}
    cpu = inv.get("cpu") or {}
    disks = inv.get("disks") or []
    system = (inv.get("dmi") or {}).get("system") or {}
    return {
        "cpu": cpu.get("model"),
        "cores": cpu.get("cores"),
        "threads": cpu.get("threads"),
        "memory_bytes": (inv.get("memory") or {}).get("bytes"),
        "disks": len(disks),
        "disk_bytes": sum(d.get("bytes") or 0 for d in disks),
        "nics": len(inv.get("nics") or []),
        "firmware": inv.get("firmware"),
        "secure_boot": inv.get("secure_boot"),
        "vendor": system.get("vendor"),
        "product": system.get("product"),
        "serial": system.get("serial"),
    }
