"""`netbootd net show` (interfaces, addresses, state, the networks they
serve: the daemon's view through GET /api/v1/net/interfaces, else this
host's interfaces read through netlink) and `netbootd net bridge add|del`
(local root operations through pyroute2: net/bridges.py)."""
from __future__ import annotations

import sys

from .common import add_state_args, effective_config, fail, print_json, table

SHOW_COLS = ["name", "state", "kind", "master", "mac", "ipv4", "ipv6_linklocal", "served",
             "network", "ra"]


def add_parser(sub) -> None:
    p = sub.add_parser("net", help="interfaces and bridges")
    nsub = p.add_subparsers(dest="net_cmd", required=True)
    s = nsub.add_parser("show", help="interfaces, addresses, state and the networks they serve")
    s.add_argument("--server", help="daemon URL (default http://127.0.0.1:<http_port>)")
    s.add_argument("--local", action="store_true",
                   help="read this host's interfaces directly (no daemon: nothing is 'served')")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_state_args(s)
    s.set_defaults(func=show)
    b = nsub.add_parser("bridge", help="make or remove a bridge (local, needs root)")
    bsub = b.add_subparsers(dest="bridge_cmd", required=True)
    a = bsub.add_parser("add", help="bridge NAME with --port IFACE (idempotent)")
    a.add_argument("name")
    a.add_argument("--port", required=True, help="the interface to enslave")
    a.add_argument("--address", help="an address with prefix for the bridge (10.0.0.1/24)")
    a.add_argument("--vlan", type=int, help="enslave IFACE.VLAN (a VLAN interface made here)")
    a.add_argument("--force", action="store_true",
                   help="also when the port carries the default route or has another master")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=bridge_add)
    d = bsub.add_parser("del", help="remove bridge NAME (idempotent)")
    d.add_argument("name")
    d.add_argument("--force", action="store_true",
                   help="also when the bridge carries the default route")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=bridge_del)


def _local_rows() -> list[dict]:
    from ..net import interfaces
    return [{**row, "served": None, "served_ip": None, "network": None, "ra": None}
            for row in interfaces.link_rows(interfaces.links())]


def show(args) -> int:
    rows = None
    if not args.local:
        from .client import ApiClient, Unreachable
        try:
            code, reply = ApiClient(effective_config(args), args.server).get(
                "/api/v1/net/interfaces")
            if code != 200:
                return fail(reply.get("error") if isinstance(reply, dict) else str(reply))
            rows = reply
        except Unreachable:
            print("netbootd: daemon not reachable; this host's interfaces (nothing served)",
                  file=sys.stderr)
    if rows is None:
        rows = _local_rows()
    if args.json:
        print_json(rows)
        return 0
    view = []
    for r in rows:
        v = dict(r)
        v["state"] = r["state"] if r["up"] else "down (admin)"
        v["ipv4"] = ",".join(r["ipv4"])
        v["served"] = {True: "yes", False: "no", None: "?"}[r["served"]]
        view.append(v)
    print(table(view, SHOW_COLS))
    return 0


def _report(args, res, what: str) -> int:
    if args.json:
        print_json({"bridge": res.bridge, "changed": res.changed, "done": res.done})
    elif res.changed:
        for line in res.done:
            print(line)
    else:
        print(f"bridge {res.bridge}: {what}: nothing to do")
    return 0


def bridge_add(args) -> int:
    from ..net import bridges
    try:
        res = bridges.add(args.name, args.port, args.address, args.vlan, args.force)
    except bridges.BridgeError as e:
        return fail(str(e))
    except PermissionError as e:
        return fail(f"{e}: bridges need root (CAP_NET_ADMIN)")
    return _report(args, res, "already as asked")


def bridge_del(args) -> int:
    from ..net import bridges
    try:
        res = bridges.delete(args.name, args.force)
    except bridges.BridgeError as e:
        return fail(str(e))
    except PermissionError as e:
        return fail(f"{e}: bridges need root (CAP_NET_ADMIN)")
    return _report(args, res, "does not exist")
