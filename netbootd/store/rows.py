"""Rows: a Host as a hosts row and back (host_row, host_of), and many rows in
few statements: a batch's rows of one table go as multi-row ``INSERT ...
VALUES (...),(...)`` statements instead of one step per row (insert_rows).

Python's sqlite3 releases the GIL around every step and takes it back after;
with ``executemany`` a group commit of 50 new clients (5 rows each) took the
GIL back ~250 times, each time waiting for the reactor thread to let go of
it (bench/dhcp/README.md, 2026-12-04: the commit thread switched context
~2,200 times a second at 6,000 DORA/s).  Rows go in chunks of fixed sizes
(64, 16, 4, 1), so each table has at most four statement texts in the
connection's statement cache.  Rows are inserted in their order, as with
executemany (SQLite runs a VALUES list in order), so event ids keep it.
"""
from __future__ import annotations

import json
from functools import lru_cache

from ..model import Host, HostState

CHUNKS = (64, 16, 4, 1)


@lru_cache(maxsize=64)
def multi_sql(head: str, tail: str, width: int, rows: int) -> str:
    """`head` + `rows` groups of `width` placeholders + `tail`."""
    one = "(" + ",".join("?" * width) + ")"
    return head + ",".join((one,) * rows) + tail


def insert_rows(conn, head: str, tail: str, width: int, rows) -> None:
    """Run head VALUES ... tail for every row of `rows` (tuples of `width`
    values), in order, in as few statements as the chunk sizes allow."""
    rows = rows if isinstance(rows, list) else list(rows)
    i, n = 0, len(rows)
    for size in CHUNKS:
        if n - i < size:
            continue
        sql = multi_sql(head, tail, width, size)
        while n - i >= size:
            if size == 1:
                conn.execute(sql, rows[i])
            else:
                conn.execute(sql, [v for r in rows[i:i + size] for v in r])
            i += size


def _json_obj(text, kind, default):
    v = json.loads(text) if text else default
    if not isinstance(v, kind):
        raise ValueError(f"not a {kind.__name__}: {text!r:.40}")
    return v


def host_row(h: Host) -> tuple:
    # A new host has no profile arguments and no identifiers: '{}' and '[]'
    # as json.dumps writes them, without its ~1 us per call (one host row per
    # new DHCP client).
    args, ids = h.profile_args, h.ids
    return (h.mac, h.state.value, h.arch, h.vendor_class, h.uuid, h.hostname, h.interface,
            h.first_seen, h.last_seen, h.ip, h.profile,
            "{}" if type(args) is dict and not args else json.dumps(args, sort_keys=True),
            h.account, "[]" if type(ids) is list and not ids else json.dumps(ids),
            h.secret_hash, h.agent_addr,
            None if h.action is None else json.dumps(h.action, sort_keys=True),
            None if h.hw is None else json.dumps(h.hw, sort_keys=True))


def host_of(row) -> Host:
    return Host(str(row[0]), HostState(row[1]), None if row[2] is None else int(row[2]),
                row[3], row[4], row[5], row[6], float(row[7]), float(row[8]), row[9], row[10],
                _json_obj(row[11], dict, {}), row[12], _json_obj(row[13], list, []), row[14],
                row[15], _json_obj(row[16], dict, None) if row[16] else None,
                _json_obj(row[17], dict, None) if row[17] else None)
