"""Many rows in few statements: a batch's rows of one table go as multi-row
``INSERT ... VALUES (...),(...)`` statements instead of one step per row.

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

from functools import lru_cache

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
