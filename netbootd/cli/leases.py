"""`netbootd leases [list|show ADDRESS]`: through the API or from the store."""
from __future__ import annotations

import time

from .common import LEASE_COLS, print_rows
from .reads import add_read_args, refused, run_read


def add_parser(sub) -> None:
    r = sub.add_parser("leases", help="DHCP leases")
    add_read_args(r, ("list", "show"), "address (leases show)")
    r.set_defaults(func=lambda args: run_read(args, via_api, via_store))


def _print(args, rows: list[dict]) -> int:
    print_rows(args, [r for r in rows if not args.key or r["address"] == args.key], LEASE_COLS)
    return 0


def via_api(args, api) -> int:
    code, rows = api.get("/api/v1/leases")
    return _print(args, rows) if code == 200 else refused(rows)


def via_store(args, store) -> int:
    # The view the API serves (expired active leases shown as expired).
    return _print(args, store.leases_view(time.time()))
