"""`netbootd hosts list|show|assign|approve|retire|delete`.

list/show read through the API (or the store, see reads.py); the changes go
to the running daemon only: it owns the registry in memory."""
from __future__ import annotations

import dataclasses
import json
import sys

from .client import ApiClient
from .common import HOST_COLS, EVENT_COLS, effective_config, mac_arg, print_rows
from .reads import add_read_args, refused, run_read

CHANGES = ("approve", "retire", "delete")


def add_parser(sub) -> None:
    r = sub.add_parser("hosts", help="hosts in the registry")
    r.add_argument("--kernel", help="linux: kernel URL or file under the files root")
    r.add_argument("--initrd", action="append", default=[], help="linux: initrd (repeatable)")
    r.add_argument("--cmdline", help="linux: kernel command line")
    r.add_argument("--san-uri", help="sanboot: iPXE SAN URI")
    r.add_argument("--initiator-iqn", help="sanboot: initiator IQN")
    add_read_args(r, ("list", "show", "assign") + CHANGES, "MAC (hosts show, assign, ...)")
    r.add_argument("profile", nargs="?", help="profile (hosts assign MAC PROFILE)")
    r.add_argument("--state", help="hosts list: only hosts in this state")
    r.add_argument("-q", "--query", help="hosts list: substring of mac/hostname/ip")
    r.add_argument("--all", action="store_true",
                   help="hosts list: every page, not only the first --limit hosts")
    r.add_argument("--cursor", help="hosts list: start after this cursor (printed "
                                    "when more hosts remain)")
    r.set_defaults(func=run)


def run(args) -> int:
    if args.action == "assign":
        return assign(args)
    if args.action in CHANGES:
        return change(args)
    return run_read(args, via_api, via_store)


# -- changes (the daemon only) --------------------------------------------------
def assign(args) -> int:
    cfg = effective_config(args)
    mac = mac_arg(args.key if args.profile else None, "usage: hosts assign MAC PROFILE [options]")
    if mac is None:
        return 2
    pargs: dict = {}
    if args.kernel:
        pargs["kernel"] = args.kernel
    if args.initrd:
        pargs["initrds"] = args.initrd
    if args.cmdline is not None:
        pargs["cmdline"] = args.cmdline
    if args.san_uri:
        pargs["san_uri"] = args.san_uri
    if args.initiator_iqn:
        pargs["initiator_iqn"] = args.initiator_iqn
    code, reply = ApiClient(cfg, args.server).change(
        "POST", f"/api/v1/hosts/{mac}/assign", {"profile": args.profile, "args": pargs})
    if code != 200:
        print(f"netbootd: assign refused ({code}): {reply.get('error')}", file=sys.stderr)
        return 1
    print(f"{mac}: {reply['state']} profile={reply['profile']}")
    return 0


def change(args) -> int:
    mac = mac_arg(args.key, f"usage: hosts {args.action} MAC")
    if mac is None:
        return 2
    method, path = ("DELETE", f"/api/v1/hosts/{mac}") if args.action == "delete" else \
        ("POST", f"/api/v1/hosts/{mac}/{args.action}")
    code, reply = ApiClient(effective_config(args), args.server).change(method, path)
    if code != 200:
        print(f"netbootd: {args.action} refused ({code}): {reply.get('error')}", file=sys.stderr)
        return 1
    print(f"{mac}: " + ("deleted" if args.action == "delete" else reply["state"]))
    return 0


# -- reads -------------------------------------------------------------------------
def _show(args, host: dict, timeline: list) -> int:
    """One host, then its timeline (oldest first), the same from both paths."""
    if args.json:
        print(json.dumps(dict(host, timeline=timeline), indent=1, default=str))
        return 0
    host.pop("last_event", None)
    print_rows(args, [host], HOST_COLS)
    print()
    print_rows(args, timeline, EVENT_COLS)
    return 0


def via_api(args, api: ApiClient) -> int:
    if args.action == "show":
        mac = mac_arg(args.key, "hosts show needs a MAC")
        if mac is None:
            return 2
        code, host = api.get(f"/api/v1/hosts/{mac}")
        if code != 200:
            return refused(host)
        return _show(args, host, host.pop("timeline", []))
    code, rows = _pages(args, api)
    if code != 200:
        return refused(rows)
    print_rows(args, rows, HOST_COLS)
    return 0


def _pages(args, api: ApiClient) -> tuple[int, list | dict]:
    """hosts list through the API, a page (of --limit, at most 1000) at a time:
    the first page, or every page with --all.  When hosts remain, says how to
    get them on stderr, so stdout stays a table or one JSON list."""
    cursor, rows = args.cursor, []
    while True:
        code, page = api.get("/api/v1/hosts", limit=max(1, min(args.limit, 1000)),
                             state=args.state, q=args.query, cursor=cursor)
        if code != 200:
            return code, page
        rows += page["hosts"]
        cursor = page["next"]
        if not cursor:
            return 200, rows
        if not args.all:
            print(f"netbootd: {len(rows)} of {page['total']} hosts shown; --all for every "
                  f"page, or --cursor {cursor} for the next", file=sys.stderr)
            return 200, rows


def host_view(h) -> dict:
    """A stored Host as the API shows it (the fields HOST_COLS picks from)."""
    from ..model import arch_name
    d = dataclasses.asdict(h)
    del d["secret_hash"]                  # never shown (the API drops it too)
    d["credential"] = h.secret_hash is not None
    d["state"] = h.state.value
    d["arch_name"] = arch_name(h.arch) if h.arch is not None else None
    return d


def _matches(args, d: dict) -> bool:
    if args.state and d["state"] != args.state:
        return False
    q = (args.query or "").lower()
    return not q or any(q in (d.get(k) or "").lower() for k in ("mac", "hostname", "ip"))


def via_store(args, store) -> int:
    hosts = sorted(store.load_hosts(), key=lambda h: (h.first_seen, h.mac))
    if args.action == "show":
        mac = mac_arg(args.key, "hosts show needs a MAC")
        if mac is None:
            return 2
        found = [h for h in hosts if h.mac == mac]
        if not found:
            print(f"netbootd: no host {args.key}", file=sys.stderr)
            return 1
        return _show(args, host_view(found[0]), store.events(None, args.limit, mac, newest=True))
    rows = [d for d in map(host_view, hosts) if _matches(args, d)]
    if not args.all:
        rows = rows[:max(1, args.limit)]
    print_rows(args, rows, HOST_COLS)
    return 0
