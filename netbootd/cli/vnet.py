"""`netbootd vnet create|list|show|addleases|rmleases|update|delete`: networks as
objects (issue 14; /api/v1/networks; docs/networks.md).

create/update take a template file (TOML or OpenNebula syntax; `-` reads
stdin), checked locally first so a typo is named with its line before the
daemon is asked.  list/show read through the API or, like the other reads,
from the store (the definitions; usage needs the daemon)."""
from __future__ import annotations

import json
import sys
import urllib.parse

from ..policy.vnet import VnetError, from_doc, from_template
from .client import admin_call, admin_command, error_of
from .common import add_command_args, fail, print_json, print_rows
from .reads import run_read

LIST_COLS = ["id", "name", "type", "bridge", "subnet", "leases", "origin"]
LEASE_COLS = ["ip", "mac", "used", "host", "state"]
CHUNK = 256          # the API takes this many leases / addresses per call


def add_parser(sub) -> None:
    v = sub.add_parser("vnet", help="networks: FIXED (listed leases) or RANGED (a pool)")
    vsub = v.add_subparsers(dest="vnet_cmd", required=True)

    def cmd(name, help_, func, reads=False):
        p = vsub.add_parser(name, help=help_)
        add_command_args(p, reads)
        p.set_defaults(func=func)
        return p

    cmd("create", "a network from a template (TOML or OpenNebula syntax; - = stdin)",
        create).add_argument("file")
    cmd("list", "every network: ID, NAME, TYPE, BRIDGE, leases used/total", list_, reads=True)
    cmd("show", "one network and each lease: IP, MAC, USED, the host", show,
        reads=True).add_argument("name")
    a = cmd("addleases", "add leases: IP [MAC] pairs (no MAC: MAC_PREFIX + the IP)", addleases)
    a.add_argument("name")
    a.add_argument("items", nargs="+", metavar="IP [MAC]")
    r = cmd("rmleases", "remove leases by IP (refused while in use unless --force)", rmleases)
    r.add_argument("name")
    r.add_argument("ips", nargs="+", metavar="IP")
    r.add_argument("--force", action="store_true", help="remove leases in use too")
    u = cmd("update", "replace a network's definition (same NAME) from a template", update)
    u.add_argument("name")
    u.add_argument("file")
    d = cmd("delete", "delete a network (refused while leases are in use unless --force)",
            delete)
    d.add_argument("name")
    d.add_argument("--force", action="store_true", help="delete it with leases in use")


def _path(name: str, tail: str = "") -> str:
    return "/api/v1/networks/" + urllib.parse.quote(name, safe="") + tail


def _template(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _checked(args):
    """The template text, checked here first (the daemon checks it again, with
    the other networks)."""
    try:
        text = _template(args.file)
    except OSError as e:
        raise SystemExit(f"netbootd: cannot read {args.file}: {e.strerror}")
    try:
        from_template(text)
    except VnetError as e:
        raise SystemExit(f"netbootd: {'stdin' if args.file == '-' else args.file}: {e}")
    return text


def _summary(n: dict) -> str:
    return (f"network {n['name']}: {n.get('type')} {n.get('subnet')}, "
            f"{n.get('used', 0)}/{n.get('total', 0)} leases used")


def create(args) -> int:
    return admin_command(args, "POST", "/api/v1/networks", {"template": _checked(args)},
                         "vnet create", lambda n: _summary(n) + " - created, served now")


def update(args) -> int:
    return admin_command(args, "PUT", _path(args.name), {"template": _checked(args)},
                         "vnet update", lambda n: _summary(n) + " - updated, served now")


def delete(args) -> int:
    tail = "?force=true" if args.force else ""
    return admin_command(args, "DELETE", _path(args.name, tail), None, "vnet delete",
                         lambda r: f"network {r['deleted']} deleted")


def lease_items(items: list[str]) -> list[dict]:
    """IP [MAC] IP [MAC]...: a word with a ':' or '-' after an IP is its MAC."""
    out: list[dict] = []
    for word in items:
        if out and "mac" not in out[-1] and ("-" in word or word.count(":") == 5):
            out[-1]["mac"] = word
        else:
            out.append({"ip": word})
    return out


def addleases(args) -> int:
    return _chunks(args, "/leases", "leases", lease_items(args.items), {}, "vnet addleases")


def rmleases(args) -> int:
    return _chunks(args, "/leases/remove", "ips", args.ips, {"force": args.force},
                   "vnet rmleases")


def _chunks(args, tail, key, items, extra, what) -> int:
    reply = None
    for i in range(0, len(items), CHUNK):
        reply = admin_call(args, "POST", _path(args.name, tail),
                           {key: items[i:i + CHUNK], **extra}, what)
        if reply is None:
            return 1
    if args.json:
        print_json(reply)
    else:
        print(_summary(reply))
    return 0


# -- reads ----------------------------------------------------------------------------
def list_(args) -> int:
    return run_read(args, _list_api, _list_store)


def _list_api(args, api) -> int:
    code, rows = api.get("/api/v1/networks")
    if code != 200:
        return fail(error_of(rows))
    return _print_list(args, rows)


def _stored(store) -> list[dict]:
    out = []
    for row in store.load_networks():
        try:
            v = from_doc(json.loads(row["doc"]), row["origin"])
        except (ValueError, VnetError) as e:
            print(f"netbootd: stored network {row['name']!r} is unreadable: {e}",
                  file=sys.stderr)
            continue
        out.append({"id": row["id"], "name": v.name, "type": v.type, "interface": v.interface,
                    "subnet": v.subnet, "origin": v.origin, "used": None,
                    "total": len(v.leases) if v.type == "FIXED" else None,
                    "definition": v.to_doc()})
    return out


def _list_store(args, store) -> int:
    return _print_list(args, _stored(store))


def _print_list(args, rows: list) -> int:
    if args.json:
        print_json(rows)
        return 0
    print_rows(args, [dict(r, bridge=r.get("interface") or ",".join(r.get("relays") or ()),
                           leases=f"{'?' if r.get('used') is None else r['used']}/"
                                  f"{'?' if r.get('total') is None else r['total']}")
                      for r in rows], LIST_COLS)
    return 0


def show(args) -> int:
    return run_read(args, _show_api, _show_store)


def _show_api(args, api) -> int:
    code, n = api.get(_path(args.name))
    if code != 200:
        return fail(error_of(n))
    return _print_one(args, n)


def _show_store(args, store) -> int:
    found = [r for r in _stored(store) if r["name"] == args.name]
    if not found:
        return fail(f"no network {args.name!r}")
    n = found[0]
    n["leases"] = [{"ip": x["ip"], "mac": x.get("mac"), "used": None}
                   for x in n["definition"].get("leases", [])]
    return _print_one(args, n)


def _print_one(args, n: dict) -> int:
    if args.json:
        print_json(n)
        return 0
    d = n.get("definition", {})
    print(f"network {n['name']} (id {n.get('id')}, {n.get('origin')}): {d.get('type')} "
          f"{d.get('subnet')} on {d.get('interface') or 'relays ' + ','.join(d.get('relays', []))}"
          f", policy {d.get('policy', 'lru')}, leases used "
          f"{n.get('used', '?')}/{n.get('total', '?')}")
    for k in ("ranges", "router", "dns", "domain", "lease_time", "boot_server", "boot_profile",
              "account", "vlan", "mac_prefix"):
        if d.get(k) not in (None, [], ()):
            print(f"  {k}: {d[k]}")
    print()
    print_rows(args, [dict(x, used={True: "yes", False: "no"}.get(x.get("used"), "?"))
                      for x in n.get("leases", [])], LEASE_COLS)
    return 0
