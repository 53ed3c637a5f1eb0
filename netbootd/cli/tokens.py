"""`netbootd tokens create|list|revoke|rotate-key`: enrollment tokens of an
account (registry/accounts.py, auth/enroll.py; /api/v1/tokens).

Every call needs the admin token and the daemon (it holds the tokens in
memory: a revocation counts from the moment the call returns).  A token's
text is in one reply only, the one that creates it: `create` prints it
once; lists show ids, never the text (only its hash is stored).  The admin
token of the API is `netbootd token` (admin.py)."""
from __future__ import annotations

import sys
import urllib.parse

from .client import admin_call, admin_command
from .common import add_command_args, duration, fail, fmt_time, print_json, print_rows

TOKEN_COLS = ["id", "state", "label", "uses", "expires", "created"]

ONCE = ("This is the only time the token is shown: netbootd keeps only its hash and "
        "cannot show it again.")


def add_parser(sub) -> None:
    t = sub.add_parser("tokens", help="enrollment tokens (a host that boots one joins its "
                                      "account)")
    tsub = t.add_subparsers(dest="tokens_cmd", required=True)
    c = tsub.add_parser("create", help="a new token for an account (printed once)")
    c.add_argument("--account", required=True, help="the account (name)")
    c.add_argument("--expires", help="valid for this long: 30d, 12h, 90m, 3600 (seconds); "
                                     "default: until revoked")
    c.add_argument("--uses", type=int, help="at most this many registrations (default: any)")
    c.add_argument("--label", help="a note for the lists (where the token went)")
    c.set_defaults(func=create)
    ls = tsub.add_parser("list", help="tokens (ids, state, uses; never the token text)")
    ls.add_argument("--account", help="only this account's")
    ls.set_defaults(func=list_)
    r = tsub.add_parser("revoke", help="refuse a token from now on")
    r.add_argument("id", help="the token id (tok-...)")
    r.set_defaults(func=revoke)
    k = tsub.add_parser("rotate-key", help="a new signing key for new tokens (tokens signed "
                                           "by older keys stay valid)")
    k.set_defaults(func=rotate_key)
    for p in (c, ls, r, k):
        add_command_args(p)


def token_rows(tokens: list[dict]) -> list[dict]:
    """Tokens as the tables show them: uses as 'n/max', times readable."""
    out = []
    for t in tokens:
        uses = f"{t.get('uses', 0)}/{t['max_uses']}" if t.get("max_uses") else \
            str(t.get("uses", 0))
        out.append(dict(t, uses=uses, created=fmt_time(t.get("created")),
                        expires=fmt_time(t["expires"]) if t.get("expires") else "never",
                        revoked=fmt_time(t.get("revoked")) if t.get("revoked") else None))
    return out


def create(args) -> int:
    body: dict = {"account": args.account}
    if args.expires is not None:
        try:
            body["expires_in"] = duration(args.expires)
        except ValueError as e:
            return fail(f"--expires: {e}", 2)
    if args.uses is not None:
        if args.uses < 1:
            return fail("--uses: a positive number", 2)
        body["uses"] = args.uses
    if args.label is not None:
        body["label"] = args.label
    t = admin_call(args, "POST", "/api/v1/tokens", body, "tokens create")
    if t is None:
        return 1
    if args.json:
        print_json(dict(t, note=ONCE))
        return 0
    # The token alone on stdout (`> file` keeps just it); the rest for the human.
    exp = fmt_time(t["expires"]) if t.get("expires") else "never (until revoked)"
    print(f"token {t['id']} for account {t['account']}: expires {exp}, uses "
          f"{t.get('max_uses') or 'unlimited'}" + (f", label {t['label']!r}" if t.get("label")
                                                    else "") + ":", file=sys.stderr)
    print(t["token"], flush=True)
    print(f"{ONCE}\nBoot the agent with netbootd.token=<token> on its kernel command line; "
          f"revoke it with: netbootd tokens revoke {t['id']}", file=sys.stderr)
    return 0


def list_(args) -> int:
    path = "/api/v1/tokens"
    if args.account:
        path += "?account=" + urllib.parse.quote(args.account, safe="")
    rows = admin_call(args, "GET", path, None, "tokens list")
    if rows is None:
        return 1
    rows = sorted(rows, key=lambda t: (t.get("created") or 0, t["id"]))
    if args.json:
        print_json(rows)
        return 0
    print_rows(args, token_rows(rows), ["id", "account"] + TOKEN_COLS[1:] + ["revoked"])
    return 0


def revoke(args) -> int:
    return admin_command(
        args, "POST", f"/api/v1/tokens/{urllib.parse.quote(args.id, safe='')}/revoke", None,
        "tokens revoke", lambda t: f"{t['id']}: revoked at {fmt_time(t.get('revoked'))} "
        f"(account {t['account']}); hosts it enrolled keep their own credentials")


def rotate_key(args) -> int:
    def human(r: dict) -> str:
        older = [k for k in r.get("keys", []) if k != r["current"]]
        return (f"signing key {r['current']} signs new tokens; tokens signed by "
                f"{', '.join(older) or 'no other key'} stay valid until revoked")
    return admin_command(args, "POST", "/api/v1/tokens/rotate-key", None,
                         "tokens rotate-key", human)
