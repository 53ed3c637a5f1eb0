"""The read commands' shared path: ask the running daemon's API, or read the
state through the store when asked to (--offline, or a --state-dir without
--server) or when no daemon answers.  Both paths print the same columns
(common.HOST_COLS, LEASE_COLS, EVENT_COLS)."""
from __future__ import annotations

import sys

from ..store import open_store
from .client import ApiClient, Unreachable
from .common import add_state_args, effective_config


def add_read_args(p, actions: tuple[str, ...], key_help: str) -> None:
    p.add_argument("--server", help="daemon URL (default http://127.0.0.1:<http_port>)")
    p.add_argument("action", nargs="?", default="list", choices=actions)
    p.add_argument("--offline", action="store_true",
                   help="read the state database directly instead of the daemon's API")
    p.add_argument("key", nargs="?", help=key_help)
    add_state_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--limit", type=int, default=100)


def run_read(args, via_api, via_store) -> int:
    """via_api(args, client) when a daemon should answer, else (or when it
    does not) via_store(args, store)."""
    # A state dir named without a server means "read that state dir".
    if not args.offline and (args.server or not args.state_dir):
        try:
            return via_api(args, ApiClient(effective_config(args), args.server))
        except Unreachable:
            print("netbootd: daemon not reachable; reading the state database directly",
                  file=sys.stderr)
    cfg = effective_config(args)
    # The Store interface's reads only (load_hosts, events, leases_view): the
    # CLI never writes SQL, and never creates a store where there is none.
    store = open_store(cfg.state_dir, create=False)
    if store is None:
        print(f"netbootd: no state database in {cfg.state_dir}", file=sys.stderr)
        return 1
    try:
        return via_store(args, store)
    finally:
        store.close()


def refused(reply) -> int:
    """Print the API's error for a failed read; the exit status 1."""
    msg = reply.get("error") if isinstance(reply, dict) else reply
    print(f"netbootd: {msg}", file=sys.stderr)
    return 1
