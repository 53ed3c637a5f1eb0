"""What the command groups share: the effective config, the MAC argument,
table and time formatting, and the column sets that both the API path and the
offline (store) path print, so the two show the same table."""
from __future__ import annotations

import json
import sys
import time

from .. import config as config_mod

HOST_COLS = ["mac", "state", "hostname", "arch_name", "ip", "profile", "last_seen"]
LEASE_COLS = ["address", "mac", "state", "hostname", "network", "ends"]
EVENT_COLS = ["ts", "mac", "kind", "detail"]
_TIME_COLS = ("ends", "last_seen", "ts")


def add_state_args(p) -> None:
    """--state-dir / --config: where the state and the config are."""
    p.add_argument("--state-dir", help=f"state directory (default {config_mod.DEFAULT_STATE_DIR})")
    p.add_argument("--config", help="TOML config file (default: embedded defaults)")


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


def table(rows: list[dict], cols: list[str]) -> str:
    widths = [max([len(c)] + [len(str(r.get(c, "") if r.get(c) is not None else "-"))
                              for r in rows]) for c in cols]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths))]
    for r in rows:
        lines.append("  ".join(str(r.get(c) if r.get(c) is not None else "-").ljust(w)
                               for c, w in zip(cols, widths)))
    return "\n".join(lines)


def fmt_time(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def print_rows(args, rows: list[dict], cols: list[str]) -> None:
    """One JSON list (--json) or a table of `cols`, times made readable."""
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
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
