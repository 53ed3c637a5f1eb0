"""`netbootd accounts create|list|show|set|delete`: accounts hosts enroll into
with a token (registry/accounts.py; /api/v1/accounts).

list/show read through the API (open to reads) or, like the other reads,
from the store; create/set/delete go to the daemon with the admin token."""
from __future__ import annotations

import urllib.parse

from .client import admin_command, error_of
from .common import add_command_args, fail, facts, fmt_time, print_json, print_rows
from .reads import run_read
from .tokens import TOKEN_COLS, token_rows

ACCOUNT_COLS = ["name", "approval", "profile", "hosts", "tokens", "created"]


def add_parser(sub) -> None:
    a = sub.add_parser("accounts", help="accounts hosts enroll into (with a token)")
    asub = a.add_subparsers(dest="accounts_cmd", required=True)

    def cmd(name, help_, func, reads=False):
        p = asub.add_parser(name, help=help_)
        add_command_args(p, reads)
        p.set_defaults(func=func)
        return p

    c = cmd("create", "a new account", create)
    c.add_argument("name", help="1-63 of a-z 0-9 . _ -")
    boot_args(c)
    cmd("list", "every account, its hosts and live tokens", list_, reads=True)
    cmd("show", "one account, its hosts count and tokens", show,
        reads=True).add_argument("name")
    s = cmd("set", "change an account's approval or default profile", set_)
    s.add_argument("name")
    boot_args(s, defaults=False)
    s.add_argument("--no-profile", action="store_true",
                   help="drop the default profile (its hosts wait for an assignment)")
    cmd("delete", "delete an account with no hosts (its tokens go with it)",
        delete).add_argument("name")


def boot_args(p, defaults: bool = True) -> None:
    """--approval and the default boot profile (the options of `hosts assign`)."""
    p.add_argument("--approval", choices=("auto", "manual"), default="auto" if defaults else None,
                   help="auto: enrolled hosts are idle at once; manual: pending until "
                        "`hosts approve`" + (" (default auto)" if defaults else ""))
    p.add_argument("--profile", help="default boot profile of its hosts (linux, sanboot, ...)")
    p.add_argument("--kernel", help="linux: kernel URL or file under the files root")
    p.add_argument("--initrd", action="append", default=[], help="linux: initrd (repeatable)")
    p.add_argument("--cmdline", help="linux: kernel command line")
    p.add_argument("--san-uri", help="sanboot: iPXE SAN URI")
    p.add_argument("--initiator-iqn", help="sanboot: initiator IQN")


def profile_args(args) -> dict:
    """The profile arguments given on the command line (policy/boot.py names)."""
    out: dict = {}
    if args.kernel:
        out["kernel"] = args.kernel
    if args.initrd:
        out["initrds"] = args.initrd
    if args.cmdline is not None:
        out["cmdline"] = args.cmdline
    if args.san_uri:
        out["san_uri"] = args.san_uri
    if args.initiator_iqn:
        out["initiator_iqn"] = args.initiator_iqn
    if getattr(args, "efi_filename", None):
        out["efi_filename"] = args.efi_filename
    return out


def _boot(args) -> dict | None:
    pargs = profile_args(args)
    if args.profile is None:
        if pargs:
            raise ValueError("--kernel/--initrd/--cmdline/--san-uri need --profile")
        return None
    return {"profile": args.profile, "args": pargs}


def _path(name: str) -> str:
    return "/api/v1/accounts/" + urllib.parse.quote(name, safe="")


# -- changes ------------------------------------------------------------------------
def create(args) -> int:
    try:
        boot = _boot(args)
    except ValueError as e:
        return fail(str(e), 2)
    return admin_command(args, "POST", "/api/v1/accounts",
                         {"name": args.name, "approval": args.approval, "boot": boot},
                         "accounts create", lambda a: f"account {a['name']} created: "
                         f"{_summary(a)}\nnext: netbootd tokens create --account {a['name']}")


def _summary(a: dict) -> str:
    return f"approval {a['approval']}, default profile {a['profile'] or 'none'}"


def set_(args) -> int:
    body: dict = {}
    if args.approval:
        body["approval"] = args.approval
    try:
        boot = _boot(args)
    except ValueError as e:
        return fail(str(e), 2)
    if boot is not None and args.no_profile:
        return fail("--profile and --no-profile: one or the other", 2)
    if boot is not None or args.no_profile:
        body["boot"] = boot
    if not body:
        return fail("accounts set: nothing to change (--approval, --profile or --no-profile)", 2)
    return admin_command(args, "PATCH", _path(args.name), body, "accounts set",
                         lambda a: f"account {a['name']}: {_summary(a)}")


def delete(args) -> int:
    return admin_command(args, "DELETE", _path(args.name), None, "accounts delete",
                         lambda r: f"account {r['deleted']} deleted (its tokens with it)")


# -- reads ----------------------------------------------------------------------------
def list_(args) -> int:
    return run_read(args, _list_api, lambda a, store: _print_list(a, store_accounts(store)))


def _list_api(args, api) -> int:
    code, rows = api.get("/api/v1/accounts")
    if code != 200:
        return fail(error_of(rows))
    return _print_list(args, rows)


def _print_list(args, rows: list) -> int:
    rows = sorted(rows, key=lambda a: a["name"])
    if args.json:
        print_json(rows)
        return 0
    print_rows(args, [dict(a, created=fmt_time(a.get("created"))) for a in rows], ACCOUNT_COLS)
    return 0


def show(args) -> int:
    return run_read(args, _show_api, _show_store)


def _show_api(args, api) -> int:
    code, a = api.get(_path(args.name))
    if code != 200:
        return fail(error_of(a))
    # Listing tokens needs the admin token; without it the count is shown.
    tokens = None
    try:
        c, rows = api.change("GET", "/api/v1/tokens?account=" + urllib.parse.quote(args.name))
        tokens = rows if c == 200 else None
    except SystemExit:
        pass
    return _print_one(args, a, tokens)


def _show_store(args, store) -> int:
    found = [a for a in store_accounts(store) if args.name in (a["name"], a["id"])]
    if not found:
        return fail(f"no account {args.name!r}")
    return _print_one(args, found[0], None)


def _print_one(args, a: dict, tokens: list | None) -> int:
    if args.json:
        print_json(dict(a, token_list=tokens) if tokens is not None else a)
        return 0
    prof = a.get("profile")
    if prof and a.get("profile_args"):
        prof += "".join(f" {k}={' '.join(v) if isinstance(v, list) else v}"
                        for k, v in sorted(a["profile_args"].items()) if v)
    print(facts([("account", a["name"]), ("id", a["id"]), ("approval", a["approval"]),
                 ("default profile", prof or "none (hosts wait for an assignment)"),
                 ("hosts", a.get("hosts", 0)), ("live tokens", a.get("tokens", 0)),
                 ("created", fmt_time(a.get("created")))]))
    if tokens is None:
        print(f"(its tokens: `netbootd tokens list --account {a['name']}`, with the admin "
              "token)")
    elif tokens:
        print()
        print_rows(args, token_rows(tokens), TOKEN_COLS)
    return 0


def store_accounts(store) -> list[dict]:
    """The accounts in the store as the API shows them (hosts, live tokens)."""
    hosts, tokens = store.load_hosts(), store.load_tokens()
    out = []
    for a in store.load_accounts():
        out.append({"id": a.id, "name": a.name, "approval": a.approval, "profile": a.profile,
                    "profile_args": a.profile_args, "created": a.created,
                    "hosts": sum(1 for h in hosts if h.account == a.id),
                    "tokens": sum(1 for t in tokens if t.account == a.id and t.revoked is None)})
    return out
