"""`netbootd events [-f] [--mac MAC]`: the newest events, through the API or
from the store; -f keeps polling the API for newer ones."""
from __future__ import annotations

import json
import time

from .common import EVENT_COLS, event_line, mac_arg, print_rows
from .reads import add_read_args, refused, run_read


def add_parser(sub) -> None:
    r = sub.add_parser("events", help="recent events")
    add_read_args(r, ("list", "show"), "not used by events")
    r.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    r.add_argument("--mac", help="only this host's events")
    r.set_defaults(func=run)


def run(args) -> int:
    mac = mac_arg(args.mac, "") if args.mac else None
    if args.mac and mac is None:
        return 2
    return run_read(args, lambda a, api: via_api(a, api, mac),
                    lambda a, store: via_store(a, store, mac))


def via_api(args, api, mac: str | None) -> int:
    code, rows = api.get("/api/v1/events", limit=args.limit, mac=mac)
    if code != 200:
        return refused(rows)
    if args.follow:
        return _follow(args, api, rows, mac)
    print_rows(args, rows, EVENT_COLS)
    return 0


def via_store(args, store, mac: str | None) -> int:
    print_rows(args, store.events(None, args.limit, mac, newest=True), EVENT_COLS)
    return 0


def _follow(args, api, rows: list, mac: str | None) -> int:
    """events -f: print, then poll for newer events until interrupted."""
    last = rows[-1]["id"] if rows else 0
    print_rows(args, rows, EVENT_COLS)
    try:
        while True:
            time.sleep(1.0)
            code, new = api.get("/api/v1/events", after=last, limit=1000, mac=mac)
            if code == 200 and new:
                last = new[-1]["id"]
                for ev in new:
                    print(json.dumps(ev, default=str) if args.json else event_line(ev),
                          flush=True)
    except KeyboardInterrupt:
        return 0
