"""What the command groups share: the effective config, the MAC argument,
table and time formatting, and the column sets that both the API path and the
offline (store) path print, so the two show the same table."""
from __future__ import annotations

import json
import re
import sys
import time

from .. import config as config_mod

HOST_COLS = ["mac", "state", "account", "hostname", "arch_name", "ip", "profile", "last_seen"]
LEASE_COLS = ["address", "mac", "state", "hostname", "network", "ends"]
EVENT_COLS = ["ts", "mac", "kind", "detail"]
_TIME_COLS = ("ends", "last_seen", "ts")


def add_state_args(p) -> None:
    """--state-dir / --config: where the state and the config are."""
    p.add_argument("--state-dir", help=f"state directory (default {config_mod.DEFAULT_STATE_DIR})")
    p.add_argument("--config", help="TOML config file (default: embedded defaults)")


def add_command_args(p, reads: bool = False) -> None:
    """--server, --state-dir, --config, --json (and --offline for a read) of a
    subcommand (accounts, tokens)."""
    p.add_argument("--server", help="daemon URL (default http://127.0.0.1:<http_port>)")
    add_state_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    if reads:
        p.add_argument("--offline", action="store_true",
                       help="read the state database directly instead of the daemon's API")


def effective_config(args) -> config_mod.Config:
    """Config file, then command-line overrides."""
    cfg = config_mod.load(getattr(args, "config", None))
    over = {}
    if getattr(args, "mode", None):
        over["mode"] = args.mode
    if getattr(args, "interface", None):
        over["interfaces"] = tuple(args.interface)
    if getattr(args, "state_dir", None):
        over["state_dir"] = args.state_dir
    if getattr(args, "log_level", None):
        over["log_level"] = args.log_level
    return cfg.replace(**over) if over else cfg


def mac_arg(key: str | None, usage: str) -> str | None:
    """The MAC argument normalized, or None after printing why not."""
    from ..model import normalize_mac
    if not key:
        print(f"netbootd: {usage}", file=sys.stderr)
        return None
    try:
        return normalize_mac(key)
    except ValueError as e:
        print(f"netbootd: {e}", file=sys.stderr)
        return None


# C0/C1 controls and line separators: a host-controlled string (hostname,
# inventory) must not move the cursor or recolour the admin's terminal.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def cell(v) -> str:
    """One value as a table shows it: "-" for none, yes/no, control chars replaced."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return _UNSAFE.sub("\ufffd", str(v))


def table(rows: list[dict], cols: list[str]) -> str:
    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths))]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    return "\n".join(line.rstrip() for line in lines)


def facts(pairs: list[tuple[str, object]], indent: str = "") -> str:
    """'label   value' lines, labels aligned (a host's details, an account)."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{indent}{k.ljust(width)}  {cell(v)}" for k, v in pairs)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> int:
    """'30d', '12h', '90m', '45s', '2w' or '3600' (seconds) -> seconds > 0;
    ValueError naming what is accepted."""
    m = _DURATION.match(text or "")
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: a positive number with an optional "
                         "unit s, m, h, d or w (30d, 12h, 90m, 3600)")
    return int(m.group(1)) * _UNIT[m.group(2)]


def print_json(obj) -> None:
    print(json.dumps(obj, indent=1, default=str))


def fail(msg: str, status: int = 1) -> int:
    """Print `netbootd: msg` on stderr; the exit status."""
    print(f"netbootd: {msg}", file=sys.stderr)
    return status


def fmt_time(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def print_rows(args, rows: list[dict], cols: list[str]) -> None:
    """One JSON list (--json) or a table of `cols`, times made readable."""
    if args.json:
        print_json(rows)
        return
    view = []
    for r in rows:
        v = dict(r)
        for k in _TIME_COLS:
            if k in v and k in cols:
                v[k] = fmt_time(v[k])
        if isinstance(v.get("detail"), dict):
            v["detail"] = json.dumps(v["detail"], separators=(",", ":"))
        view.append(v)
    print(table(view, cols))


def event_line(ev: dict) -> str:
    """One event as `events -f` prints it as it arrives."""
    return (f"{fmt_time(ev['ts'])}  {ev['mac'] or '-':<17}  {ev['kind']:<16} "
            f"{json.dumps(ev['detail'], separators=(',', ':'))}")
