"""Command line: argument parsing and the subcommands that need no reactor.

`serve` is run by __main__ (the only module that touches the global
reactor).  The read-only `hosts`/`leases`/`events` commands read the state
database directly (SQLite allows readers beside the running daemon); the
JSON API replaces them for remote use.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import config as config_mod
from .store.sqlite import DB_NAME, Store


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netbootd", description="network-boot appliance")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("--config", help="TOML config file (default: embedded defaults)")
    s.add_argument("--mode", choices=("proxy", "full"), help="DHCP mode (default: proxy)")
    s.add_argument("--interface", action="append", default=[],
                   help="serve on this interface (repeatable; default: all with IPv4 but lo)")
    s.add_argument("--state-dir", help=f"state directory (default {config_mod.DEFAULT_STATE_DIR})")
    s.add_argument("--log-level", choices=("debug", "info", "warn", "error"))

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    chk = csub.add_parser("check", help="validate a config file")
    chk.add_argument("file")

    for name, helptext in (("hosts", "hosts in the registry"), ("leases", "DHCP leases"),
                           ("events", "recent events")):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("action", nargs="?", default="list", choices=("list", "show"))
        r.add_argument("key", nargs="?", help="MAC (hosts show) or address (leases show)")
        r.add_argument("--state-dir")
        r.add_argument("--config")
        r.add_argument("--json", action="store_true", help="machine-readable output")
        r.add_argument("--limit", type=int, default=100)
    return p


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


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = [max([len(c)] + [len(str(r.get(c, "") if r.get(c) is not None else "-"))
                              for r in rows]) for c in cols]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(cols, widths))]
    for r in rows:
        lines.append("  ".join(str(r.get(c) if r.get(c) is not None else "-").ljust(w)
                               for c, w in zip(cols, widths)))
    return "\n".join(lines)


def _fmt_time(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def cmd_read(args) -> int:
    cfg = effective_config(args)
    if not os.path.exists(os.path.join(cfg.state_dir, DB_NAME)):
        print(f"netbootd: no state database in {cfg.state_dir}", file=sys.stderr)
        return 1
    store = Store(cfg.state_dir)
    now = time.time()
    if args.cmd == "hosts":
        sql, qargs = "SELECT * FROM hosts ORDER BY first_seen", ()
        if args.action == "show":
            if not args.key:
                print("netbootd: hosts show needs a MAC", file=sys.stderr)
                return 2
            from .model import normalize_mac
            try:
                mac = normalize_mac(args.key)
            except ValueError as e:
                print(f"netbootd: {e}", file=sys.stderr)
                return 2
            sql, qargs = "SELECT * FROM hosts WHERE mac = ?", (mac,)
        rows = [dict(r) for r in store.query(sql, qargs)]
        if args.action == "show" and not rows:
            print(f"netbootd: no host {args.key}", file=sys.stderr)
            return 1
        if args.action == "show":
            rows[0]["events"] = [dict(e) for e in store.query(
                "SELECT ts, kind, detail FROM events WHERE mac = ? ORDER BY id DESC LIMIT ?",
                (rows[0]["mac"], args.limit))]
        cols = ["mac", "state", "arch", "vendor_class", "uuid", "interface", "last_seen"]
    elif args.cmd == "leases":
        rows = [dict(r) for r in store.query("SELECT * FROM leases ORDER BY address")]
        for r in rows:
            r.pop("client_key", None)
            if r["state"] == "active" and r["ends"] <= now:
                r["state"] = "expired"
        if args.key:
            rows = [r for r in rows if r["address"] == args.key]
        cols = ["address", "mac", "state", "hostname", "network", "ends"]
    else:
        rows = [dict(r) for r in store.query(
            "SELECT * FROM events ORDER BY id DESC LIMIT ?", (args.limit,))][::-1]
        cols = ["ts", "mac", "kind", "detail"]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
    else:
        for r in rows:
            for k in ("ends", "last_seen", "ts"):
                if k in r and k in cols:
                    r[k] = _fmt_time(r[k])
        print(_table(rows, cols))
        if args.cmd == "hosts" and args.action == "show":
            for e in rows[0]["events"][::-1]:
                print(f"  {_fmt_time(e['ts'])}  {e['kind']:<18} {e['detail']}")
    return 0


def cmd_config_check(args) -> int:
    try:
        cfg = config_mod.load(args.file)
    except config_mod.ConfigError as e:
        print(f"netbootd: config error: {e}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK (mode={cfg.mode}, {len(cfg.networks)} network(s))")
    return 0
