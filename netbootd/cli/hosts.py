"""`netbootd hosts list|show|assign|approve|retire|delete|action|wipe|reset|move`.

list/show read through the API (or the store, see reads.py); the changes go
to the running daemon only (hosts_admin.py): it owns the registry in memory.
`show` prints the host, its account and agent, its hardware (hosts_show.py)
and its timeline."""
from __future__ import annotations

import sys

from . import hosts_admin
from .client import ApiClient
from .common import HOST_COLS, fail, mac_arg, print_rows
from .hosts_show import show_host
from .reads import add_read_args, refused, run_read


def add_parser(sub) -> None:
    r = sub.add_parser("hosts", help="hosts in the registry",
                       description="hosts list|show MAC (read); assign MAC PROFILE, "
                                   "approve|retire|delete|reset MAC, action MAC "
                                   "poweroff|reboot|wait, wipe MAC --disk D --yes-destroy-data, "
                                   "move MAC --account A|--no-account (admin token)")
    r.add_argument("--kernel", help="linux: kernel URL or file under the files root")
    r.add_argument("--initrd", action="append", default=[], help="linux: initrd (repeatable)")
    r.add_argument("--cmdline", help="linux: kernel command line")
    r.add_argument("--san-uri", help="sanboot: iPXE SAN URI")
    r.add_argument("--initiator-iqn", help="sanboot: initiator IQN")
    r.add_argument("--volume", help="sanboot: a volume of netbootd's storage, exported to "
                                    "this host only (its IQN and CHAP)")
    r.add_argument("--efi-filename", help="sanboot: the UEFI loader on the volume when it is "
                                          "not \\EFI\\BOOT\\BOOTX64.EFI (backslashes)")
    add_read_args(r, ("list", "show") + hosts_admin.ACTIONS, "MAC (hosts show, assign, ...)")
    r.add_argument("arg", nargs="?", metavar="PROFILE|ACTION",
                   help="hosts assign MAC PROFILE; hosts action MAC poweroff|reboot|wait")
    r.add_argument("--state", help="hosts list: only hosts in this state")
    r.add_argument("--account", help="hosts list: only this account's hosts ('-': in no "
                                     "account); hosts move: the account to move to")
    r.add_argument("--no-account", action="store_true", help="hosts move: out of any account")
    r.add_argument("--disk", action="append", default=[],
                   help="hosts wipe: a disk to wipe, as the inventory names it (repeatable)")
    r.add_argument("--yes-destroy-data", action="store_true",
                   help="hosts wipe: required; the listed disks' data is destroyed")
    r.add_argument("-q", "--query", help="hosts list: substring of mac/hostname/ip")
    r.add_argument("--all", action="store_true",
                   help="hosts list: every page, not only the first --limit hosts")
    r.add_argument("--cursor", help="hosts list: start after this cursor (printed "
                                    "when more hosts remain)")
    r.set_defaults(func=run)


def run(args) -> int:
    if args.action in hosts_admin.ACTIONS:
        return hosts_admin.run(args)
    return run_read(args, via_api, via_store)


# -- reads -------------------------------------------------------------------------
def via_api(args, api: ApiClient) -> int:
    if args.action == "show":
        mac = mac_arg(args.key, "hosts show needs a MAC")
        if mac is None:
            return 2
        code, host = api.get(f"/api/v1/hosts/{mac}")
        if code != 200:
            return refused(host)
        return show_host(args, host, host.pop("timeline", []), host.pop("inventory", None))
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
                             state=args.state, q=args.query, account=args.account,
                             cursor=cursor)
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


def host_view(h, names: dict) -> dict:
    """A stored Host as the API shows it (views.host_json: the same fields,
    the agent secret's hash dropped), without its last event and lease;
    `names`: account id -> name."""
    from ..net.http.views import host_json
    d = host_json(h, None, None, lambda i: names.get(i, i))
    del d["last_event"]
    return d


def _matches(args, d: dict) -> bool:
    if args.state and d["state"] != args.state:
        return False
    if args.account is not None and (d["account"] or "-") != args.account:
        return False
    q = (args.query or "").lower()
    return not q or any(q in (d.get(k) or "").lower() for k in ("mac", "hostname", "ip"))


def via_store(args, store) -> int:
    hosts = sorted(store.load_hosts(), key=lambda h: (h.first_seen, h.mac))
    names = {a.id: a.name for a in store.load_accounts()}
    if args.action == "show":
        mac = mac_arg(args.key, "hosts show needs a MAC")
        if mac is None:
            return 2
        found = [h for h in hosts if h.mac == mac]
        if not found:
            return fail(f"no host {args.key}")
        inv = store.inventory(mac)
        return show_host(args, host_view(found[0], names),
                         store.events(None, args.limit, mac, newest=True), inv[0] if inv else None)
    if args.account not in (None, "-") and args.account not in names.values():
        return fail(f"no account {args.account!r}")
    rows = [d for d in (host_view(h, names) for h in hosts) if _matches(args, d)]
    if not args.all:
        rows = rows[:max(1, args.limit)]
    print_rows(args, rows, HOST_COLS)
    return 0
