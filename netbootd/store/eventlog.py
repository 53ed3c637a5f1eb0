"""The event log's SQL (schema version 6): events chained per MAC.

Each events row keeps `prev`, the id of the same MAC's previous event (the
daemon's own events, MAC NULL, chain under the key ''), and event_heads holds
each chain's newest id.  A batch appends its events at the table's end and
rewrites a few pages of event_heads (one row per MAC).  The index on (mac, id)
it replaces put every event at a random leaf: with ~500 events per host the
two events of a returning client's DORA cost 19.6-25.2 us of commit-thread CPU
per DORA, 6.4-9.5 us chained (bench/dhcp/inproc.py --part store
--events-per-host 500 --sizes 60,128,512, same run, 2026-12-05).

Reads walk a chain from its head, newest first, one rowid look-up per event (a
recursive CTE): a host's history costs its own events, not the table's.  A
trimmed event ends its chain (the walk finds no row for it).

An empty MAC is stored as NULL (append): one key, one chain, one trim
partition.  Every function here takes the connection of the caller's
transaction.
"""
from __future__ import annotations

from .rows import insert_rows

_INSERT_HEAD = "INSERT INTO events(id, ts, mac, kind, detail, prev) VALUES "
_HEADS_HEAD = "INSERT INTO event_heads(mac, id) VALUES "
_HEADS_TAIL = " ON CONFLICT(mac) DO UPDATE SET id = excluded.id"
_COLS = "id, ts, mac, kind, detail"
# The chain of one key, newest first, down to the first id above `after` (bound:
# the key, `after`, `after`; then the LIMIT when there is one).
_CHAIN = ("WITH RECURSIVE chain(id) AS (SELECT id FROM event_heads WHERE mac = ? AND id > ? "
          "UNION ALL SELECT e.prev FROM events e JOIN chain ON e.id = chain.id "
          "WHERE e.prev > ?{limit}) ")
_LOOKUP_CHUNK = 500


def append(c, events: list[tuple]) -> None:
    """Append (ts, mac, kind, detail) rows in order, each chained to its MAC's
    previous event, and move the heads.  Ids continue from the table's largest,
    as INTEGER PRIMARY KEY would.  An empty MAC is stored as NULL, the
    daemon's own: its chain key, so a trim cannot cut that chain."""
    keys = list({mac or "" for _, mac, _, _ in events})
    heads: dict[str, int] = {}
    for i in range(0, len(keys), _LOOKUP_CHUNK):
        part = keys[i:i + _LOOKUP_CHUNK]
        heads.update(c.execute(
            f"SELECT mac, id FROM event_heads WHERE mac IN ({','.join('?' * len(part))})",
            part).fetchall())
    next_id = (c.execute("SELECT MAX(id) FROM events").fetchone()[0] or 0) + 1
    rows = []
    for ts, mac, kind, detail in events:
        key = mac or ""
        rows.append((next_id, ts, mac or None, kind, detail, heads.get(key)))
        heads[key] = next_id
        next_id += 1
    insert_rows(c, _INSERT_HEAD, "", 6, rows)
    insert_rows(c, _HEADS_HEAD, _HEADS_TAIL, 2, [(k, heads[k]) for k in keys])


def select(after: int | None, limit: int, mac: str | None, kind: str | None,
           newest: bool) -> tuple[str, tuple]:
    """SQL and arguments for events in id order: those after `after`, or
    (newest) the newest `limit`; of one MAC, of one kind."""
    where, args = [], []
    sql = f"SELECT {_COLS} FROM events"
    if mac:
        # Without a kind filter the newest `limit` of the chain are all needed.
        cap = newest and not kind
        sql = _CHAIN.format(limit=" LIMIT ?" if cap else "") + sql
        args += [mac, after or 0, after or 0] + ([limit] if cap else [])
        where += ["id IN chain", "mac = ?"]
        args.append(mac)
    elif after:
        where.append("id > ?")
        args.append(after)
    if kind:
        where.append("kind = ?")
        args.append(kind)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY id {'DESC' if newest else 'ASC'} LIMIT ?"
    return sql, tuple(args) + (limit,)


# A host's events and the daemon's own (MAC NULL, chain ''), oldest first.
TIMELINE = ("WITH RECURSIVE chain(id) AS (SELECT id FROM event_heads WHERE mac IN (?, '') "
            "UNION ALL SELECT e.prev FROM events e JOIN chain ON e.id = chain.id "
            "WHERE e.prev IS NOT NULL) "
            f"SELECT {_COLS} FROM events WHERE id IN chain AND (mac = ? OR mac IS NULL) "
            "ORDER BY id")

# The newest event of every MAC (not the daemon's own).
LAST = (f"SELECT e.id, e.ts, e.mac, e.kind, e.detail FROM event_heads h "
        "JOIN events e ON e.id = h.id WHERE h.mac != ''")


def trim(c, keep: int, orphans: int) -> int:
    """Keep the newest `keep` events of each MAC (and of the daemon's own) and
    the newest `orphans` of MACs that are no host; drop heads whose chain is
    gone.  Returns the events deleted."""
    n = c.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER "
        "(PARTITION BY mac ORDER BY id DESC) AS rn FROM events) WHERE rn > ?)", (keep,)).rowcount
    n += c.execute(
        "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE mac IS NOT NULL "
        "AND mac NOT IN (SELECT mac FROM hosts) ORDER BY id DESC LIMIT -1 OFFSET ?)",
        (orphans,)).rowcount
    c.execute("DELETE FROM event_heads WHERE NOT EXISTS "
              "(SELECT 1 FROM events e WHERE e.id = event_heads.id)")
    return n
