"""The status page's templates and static files (served by net/http/status.py).

Pure: no I/O beyond Jinja2 loading its own templates.  Everything a host
controls (hostname, vendor class, uuid, event details) reaches the page as
data: templates run with autoescape on (DESIGN rule 9), and static/status.js
builds the DOM with textContent only.
"""
from __future__ import annotations

import json
import os
import time

import jinja2

from ..events import FAILURE_KINDS

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES_DIR = os.path.join(HERE, "templates")
STATIC_DIR = os.path.join(HERE, "static")

# Steps that answer "why didn't my host boot?": the catalog's failure kinds
# (static/status.js fetches the same catalog from the API and applies the same
# rule in isFailure; tests/e2e/test_status_page.py checks both).
FAILED_KINDS = FAILURE_KINDS

# Detail keys shown first in a one-line summary of an event.
_SUMMARY_FIRST = ("file", "path", "status", "profile", "ip", "error", "reason", "old", "new")


def is_failure(ev: dict | None) -> bool:
    """A boot step that went wrong: refused/failed TFTP, an HTTP file
    answered >= 400, a NAK, an unsupported client, an exhausted pool."""
    if not ev:
        return False
    kind = ev.get("kind")
    if kind in FAILED_KINDS:
        return True
    if isinstance(kind, str) and kind.startswith("http."):
        status = (ev.get("detail") or {}).get("status")
        return isinstance(status, int) and status >= 400
    return False


def summary(detail) -> str:
    """'key=value ...' of an event's detail, the interesting keys first
    (plain text: the template escapes it)."""
    if not isinstance(detail, dict):
        return "" if detail is None else str(detail)
    keys = [k for k in _SUMMARY_FIRST if k in detail]
    keys += sorted(k for k in detail if k not in _SUMMARY_FIRST)
    parts = []
    for k in keys:
        v = detail[k]
        if v is None or v == "" or k == "bytes":
            continue
        if not isinstance(v, str):
            v = json.dumps(v, sort_keys=True, separators=(",", ":"))
        parts.append(f"{k}={v}")
    return " ".join(parts)


def human_bytes(n) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def _count(hw: dict, key: str):
    v = hw.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def hw_glance(hw) -> str:
    """A host's hardware in one line from its inventory summary (host.hw,
    policy/inventory.summary): '2c/4t 8.0 GiB 2 disks 1.5 TiB 2 nics uefi'.
    static/status.js hwGlance says the same; `hosts show` prints it too."""
    if not isinstance(hw, dict):
        return ""
    parts = []
    cores, threads = _count(hw, "cores"), _count(hw, "threads")
    if cores or threads:
        parts.append(f"{cores or '?'}c/{threads or '?'}t")
    if _count(hw, "memory_bytes"):
        parts.append(human_bytes(hw["memory_bytes"]))
    disks, nics = _count(hw, "disks"), _count(hw, "nics")
    if disks:
        parts.append(f"{disks} disk{'' if disks == 1 else 's'} "
                     f"{human_bytes(_count(hw, 'disk_bytes') or 0)}")
    if nics:
        parts.append(f"{nics} nic{'' if nics == 1 else 's'}")
    if isinstance(hw.get("firmware"), str):
        parts.append(hw["firmware"])
    return " ".join(parts)


def ago(ts, now) -> str:
    """'12s ago', '5m ago', '3h ago', '2d ago' (server clock, so skew-free)."""
    if not isinstance(ts, (int, float)) or not isinstance(now, (int, float)):
        return "-"
    d = max(0, now - ts)
    if d < 60:
        return f"{d:.0f}s ago"
    if d < 3600:
        return f"{d // 60:.0f}m ago"
    if d < 86400:
        return f"{d // 3600:.0f}h ago"
    return f"{d // 86400:.0f}d ago"


def clock(ts) -> str:
    if not isinstance(ts, (int, float)):
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def percent(used, size) -> str:
    if not isinstance(used, (int, float)) or not size:
        return "-"
    return f"{100.0 * used / size:.0f}%"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,                 # every {{ }} is HTML-escaped (DESIGN rule 9)
        # A field missing from a host/pool/event renders empty rather than
        # failing the whole page (the JSON shapes grow over time).
        undefined=jinja2.Undefined,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(summary=summary, human_bytes=human_bytes, clock=clock, hw=hw_glance)
    env.globals.update(is_failure=is_failure, ago=ago, percent=percent)
    return env
