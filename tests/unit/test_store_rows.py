"""store/rows.py: multi-row statements write what executemany writes, in the
same order (event ids), for every count around the chunk sizes; an upsert
through them updates in place; a bad value still fails the statement."""
from __future__ import annotations

import sqlite3

import pytest

from netbootd.store.rows import CHUNKS, insert_rows, multi_sql

HEAD = "INSERT INTO t(k, v) VALUES "
TAIL = " ON CONFLICT(k) DO UPDATE SET v=excluded.v"


def _db() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:", isolation_level=None)
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v INTEGER)")
    return c


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 15, 16, 17, 63, 64, 65, 85, 150])
def test_same_rows_in_the_same_order_as_executemany(n):
    rows = [(f"k{i:03d}", i * 7) for i in range(n)]
    a, b = _db(), _db()
    a.executemany(HEAD + "(?,?)", rows)
    insert_rows(b, HEAD, "", 2, rows)
    want = a.execute("SELECT id, k, v FROM t ORDER BY id").fetchall()
    assert b.execute("SELECT id, k, v FROM t ORDER BY id").fetchall() == want


def test_upsert_updates_in_place():
    c = _db()
    insert_rows(c, HEAD, TAIL, 2, [(f"k{i}", i) for i in range(70)])
    insert_rows(c, HEAD, TAIL, 2, [(f"k{i}", -i) for i in range(0, 70, 2)])
    got = dict(c.execute("SELECT k, v FROM t").fetchall())
    assert len(got) == 70
    assert all(got[f"k{i}"] == (-i if i % 2 == 0 else i) for i in range(70))


def test_statement_texts_are_few_and_a_bad_value_still_raises():
    assert multi_sql(HEAD, "", 2, 4) == HEAD + "(?,?),(?,?),(?,?),(?,?)"
    assert CHUNKS[-1] == 1 and list(CHUNKS) == sorted(CHUNKS, reverse=True)
    c = _db()
    with pytest.raises(OverflowError):
        insert_rows(c, HEAD, "", 2, [("a", 1), ("b", 2 ** 70), ("c", 3), ("d", 4)])
