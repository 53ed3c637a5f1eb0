"""The networks table (schema 5, issue 14): the SQL of NetworkWrite and
NetworkDelete, and the rows read back.  Kept beside sqlite.py, which stays
the only module that opens a connection."""
from __future__ import annotations

from ..writes import NetworkDelete, NetworkWrite

_NETWORK_SQL = ("INSERT INTO networks(name, origin, doc, created, updated) VALUES (?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET origin=excluded.origin, doc=excluded.doc, "
                "updated=excluded.updated")

NETWORK_SQL = {
    NetworkWrite: lambda w: [(_NETWORK_SQL, (w.network, w.origin, w.doc, w.ts, w.ts))],
    NetworkDelete: lambda w: [("DELETE FROM networks WHERE name = ?", (w.network,))],
}

SELECT_NETWORKS = "SELECT id, name, origin, doc, created, updated FROM networks ORDER BY id"


def network_rows(rows) -> list[dict]:
    """Rows as dicts (doc still JSON text: the caller parses and checks it)."""
    return [{k: r[k] for k in ("id", "name", "origin", "doc", "created", "updated")}
            for r in rows]
