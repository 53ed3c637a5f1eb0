"""SQLite store: migrations, round trips, tolerant loading."""
from __future__ import annotations

import sqlite3
from importlib import resources

import pytest

from netbootd.model import Host, HostState, Lease, LeaseState
from netbootd.store.sqlite import DB_NAME, SCHEMA_VERSION, DatabaseError, Store, StoreError
from netbootd.writes import HostDelete, HostWrite, LeaseWrite, event


def lease(i, state=LeaseState.ACTIVE):
    return Lease((10 << 24) + i, "lab", b"\x01\x01" + bytes(5) + bytes([i]),
                 f"52:54:00:00:00:{i:02x}", state, 100.0 + i, 4000.0 + i, f"h{i}")


def test_fresh_store_has_the_current_schema_version(tmp_path):
    s = Store(str(tmp_path))
    assert s.conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s.conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_writes_survive_reopening(tmp_path):
    s = Store(str(tmp_path))
    h = Host("52:54:00:00:00:01", HostState.DISCOVERED, 7, "PXEClient", "u", None, "eth1", 1, 2)
    s.apply([HostWrite(h), LeaseWrite(lease(1)), LeaseWrite(lease(2)),
             event(5.0, h.mac, "dhcp.ack", ip="10.0.0.1")])
    s.close()
    s2 = Store(str(tmp_path))
    assert s2.load_leases() == [lease(1), lease(2)]
    assert s2.load_hosts() == [h]
    assert s2.query("SELECT kind FROM events")[0]["kind"] == "dhcp.ack"


def test_last_write_of_a_lease_in_a_batch_wins(tmp_path):
    s = Store(str(tmp_path))
    s.apply([LeaseWrite(lease(1)), LeaseWrite(lease(1, LeaseState.RELEASED))])
    assert s.load_leases()[0].state == LeaseState.RELEASED


def test_a_later_batch_rewrites_every_field_of_a_lease(tmp_path):
    """Renewals and moves update the row in place (an upsert): every column
    takes the new value, and the mac index finds the new holder only."""
    s = Store(str(tmp_path))
    s.apply([LeaseWrite(lease(1)), LeaseWrite(lease(2))])
    new = Lease(lease(1).address, "other", b"\x00client-id", "52:54:00:00:00:99",
                LeaseState.RELEASED, 500.0, 600.0, None)
    s.apply([LeaseWrite(new)])
    s.apply([LeaseWrite(lease(2, LeaseState.EXPIRED))])
    assert s.load_leases() == [lease(2, LeaseState.EXPIRED), new]
    by_mac = "SELECT address FROM leases WHERE mac = ?"
    assert s.query(by_mac, (lease(1).mac,)) == []
    assert [r["address"] for r in s.query(by_mac, (new.mac,))] == ["10.0.0.1"]


def test_unreadable_rows_are_skipped_not_fatal(tmp_path, caplog):
    s = Store(str(tmp_path))
    s.apply([LeaseWrite(lease(1))])
    s.conn().execute("INSERT INTO leases VALUES ('999.1.1.1','lab',x'01','m',NULL,'active',1,2)")
    s.conn().execute("INSERT INTO leases VALUES ('10.0.0.9','lab',x'01','m',NULL,'bogus',1,2)")
    s.conn().execute("INSERT INTO hosts(mac, state, first_seen, last_seen) VALUES ('m','nostate',1,1)")
    s.conn().execute("INSERT INTO hosts(mac, state, first_seen, last_seen, profile_args) "
                     "VALUES ('n','idle',1,1,'[1]')")
    assert s.load_leases() == [lease(1)]
    assert s.load_hosts() == []
    assert "skipping unreadable lease row" in caplog.text


def test_a_newer_schema_is_refused(tmp_path):
    Store(str(tmp_path)).close()
    c = sqlite3.connect(tmp_path / DB_NAME)
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(StoreError, match="newer"):
        Store(str(tmp_path))


def test_events_are_trimmed_per_host(tmp_path):
    s = Store(str(tmp_path))
    s.apply([event(float(i), "a", "k") for i in range(30)] + [event(1.0, "b", "k")])
    assert s.trim_events(keep=10) == 20
    rows = s.query("SELECT mac, COUNT(*) AS n FROM events GROUP BY mac ORDER BY mac")
    assert [(r["mac"], r["n"]) for r in rows] == [("a", 10), ("b", 1)]


def test_events_of_macs_that_are_no_host_are_capped_in_all(tmp_path):
    """A random-MAC flood leaves one offer event per MAC and no host row: those
    orphans are kept only `orphans` in all (newest), a host's own are kept."""
    s = Store(str(tmp_path))
    h = Host("52:54:00:00:00:01", HostState.DISCOVERED, None, None, None, None, "eth1", 1, 2)
    flood = [event(float(i), f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}", "dhcp.offer")
             for i in range(300)]
    s.apply([HostWrite(h)] + [event(0.5, h.mac, "dhcp.ack")] + flood + [event(400.0, None, "x")])
    assert s.trim_events(keep=10, orphans=50) == 250
    rows = s.query("SELECT mac, ts FROM events WHERE mac LIKE '02:%' ORDER BY ts")
    assert [r["ts"] for r in rows] == [float(i) for i in range(250, 300)]
    assert s.query("SELECT COUNT(*) AS n FROM events WHERE mac = ?", (h.mac,))[0]["n"] == 1
    assert s.query("SELECT COUNT(*) AS n FROM events WHERE mac IS NULL")[0]["n"] == 1


def test_state_dir_is_private(tmp_path):
    d = tmp_path / "state"
    Store(str(d))
    assert (d.stat().st_mode & 0o777) == 0o700


def test_a_version_1_database_is_migrated_and_keeps_its_rows(tmp_path):
    from netbootd.store.sqlite import MIGRATIONS
    c = sqlite3.connect(tmp_path / DB_NAME)
    for stmt in MIGRATIONS[0].split(";"):
        if stmt.strip():
            c.execute(stmt)
    c.execute("INSERT INTO hosts VALUES ('52:54:00:00:00:01','idle',7,NULL,NULL,NULL,'eth1',1,2)")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    s = Store(str(tmp_path))
    assert s.conn().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    (h,) = s.load_hosts()
    assert h.mac == "52:54:00:00:00:01" and h.state == HostState.IDLE and h.arch == 7
    assert h.profile is None and h.profile_args == {}


def test_a_deleted_host_is_gone_but_a_later_write_in_the_batch_wins(tmp_path):
    s = Store(str(tmp_path))
    a = Host("52:54:00:00:00:01", HostState.IDLE, first_seen=1, last_seen=1)
    b = Host("52:54:00:00:00:02", HostState.IDLE, first_seen=1, last_seen=1)
    s.apply([HostWrite(a), HostWrite(b)])
    s.apply([HostDelete(a.mac)])
    assert [h.mac for h in s.load_hosts()] == [b.mac]
    s.apply([HostDelete(b.mac), HostWrite(b)])          # re-created after the delete
    s.apply([HostWrite(a), HostDelete(a.mac)])          # deleted after the write
    assert [h.mac for h in s.load_hosts()] == [b.mac]


@pytest.mark.parametrize("n", [1, 3, 4, 21, 64, 85, 250])
def test_a_batch_of_any_size_stores_every_row_and_keeps_event_order(tmp_path, n):
    """Every row of a batch is stored once, hosts upserted, events in batch order."""
    s = Store(str(tmp_path))
    hosts = [Host(f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}", HostState.DISCOVERED, 7, "PXE",
                  None, None, "eth1", 1.0, 2.0) for i in range(n)]
    s.apply([HostWrite(h) for h in hosts])
    changed = [Host(h.mac, HostState.IDLE, 0, "PXE", "u", "n", "eth2", 1.0, 3.0) for h in hosts]
    s.apply([HostWrite(h) for h in changed]
            + [LeaseWrite(lease(i % 250)) for i in range(n)]
            + [event(float(i), hosts[i].mac, "dhcp.ack", seq=i) for i in range(n)])
    assert sorted(s.load_hosts(), key=lambda h: h.mac) == sorted(changed, key=lambda h: h.mac)
    assert len(s.load_leases()) == min(n, 250)
    rows = s.query("SELECT id, ts FROM events ORDER BY id")
    assert [r["ts"] for r in rows] == [float(i) for i in range(n)]


def test_a_readonly_store_reads_beside_the_daemon_and_never_creates_or_writes(tmp_path):
    """The lab watches its VM boot through the daemon's store: opened
    read-only, absent until the daemon created it, and never written."""
    assert Store.open_readonly(str(tmp_path)) is None
    s = Store(str(tmp_path))
    mac = "52:54:00:00:00:01"
    s.apply([HostWrite(Host(mac)), event(1.0, mac, "dhcp.ack"), event(2.0, None, "dhcp.conflict"),
             event(3.0, "52:54:00:00:00:02", "dhcp.ack")])
    ro = Store.open_readonly(str(tmp_path))
    assert [(e["kind"], e["mac"]) for e in ro.timeline(mac)] == [("dhcp.ack", mac),
                                                                 ("dhcp.conflict", None)]
    assert ro.host(mac).mac == mac and ro.host("52:54:00:00:00:09") is None
    with pytest.raises(DatabaseError):
        ro.apply([HostWrite(Host("52:54:00:00:00:03"))])
    ro.close()


# The sha256 of each schema step's text as it was written in store/sqlite.py
# (MIGRATIONS, before the steps became SQL files): the files hold exactly that
# text under their comment header, and a released step is never edited.
_IN_CODE_SHA256 = [
    "f75846b752d9122f45f06c11e3f364d8c34e1b51ac95b9fa83c26e1ba2d1ec13",
    "cb34aea92eb2697e0e467380ade68c437103ee3951abdb544fd910af06f6f9b4",
]


def _migration_files() -> list:
    return sorted((p for p in (resources.files("netbootd.store") / "migrations").iterdir()
                   if p.name.endswith(".sql")), key=lambda p: p.name)


def _in_code_text(path) -> str:
    """A step's text as the in-code list held it: the file less its header."""
    return "".join(line for line in path.read_text().splitlines(keepends=True)
                   if not line.startswith("--"))


def _in_code_database(path, version: int) -> None:
    """A database as the in-code migrator left it at `version` (its runner:
    each step split on ';', then the version set)."""
    c = sqlite3.connect(path)
    for v, f in enumerate(_migration_files()[:version]):
        for stmt in _in_code_text(f).split(";"):
            if stmt.strip():
                c.execute(stmt)
        c.execute(f"PRAGMA user_version={v + 1}")
    c.commit()
    c.close()


def _schema(path) -> tuple:
    c = sqlite3.connect(path)
    try:
        return (c.execute("PRAGMA user_version").fetchone()[0],
                c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                          "ORDER BY type, name").fetchall())
    finally:
        c.close()


def test_the_schema_version_is_the_number_of_migration_files():
    from netbootd.store.sqlite import MIGRATIONS
    names = [p.name for p in _migration_files()]
    assert names == ["0001_initial.sql", "0002_host_profiles.sql", "0003_accounts.sql",
                     "0004_storage.sql", "0005_networks.sql", "0006_event_chains.sql"]
    assert SCHEMA_VERSION == len(names) == len(MIGRATIONS)


def test_the_released_steps_are_the_in_code_steps_unedited():
    import hashlib
    assert [hashlib.sha256(_in_code_text(p).encode()).hexdigest()
            for p in _migration_files()[:len(_IN_CODE_SHA256)]] == _IN_CODE_SHA256


@pytest.mark.parametrize("version", range(len(_IN_CODE_SHA256) + 1))
def test_a_database_of_the_in_code_steps_is_upgraded_to_the_same_schema(tmp_path, version):
    """A database the in-code migrator left at any version is upgraded by the
    store to exactly what that migrator made of a new one (sqlite_master's
    text and PRAGMA user_version); so is a store created from nothing."""
    # The in-code steps' last version, upgraded by the later files (0003 on).
    (tmp_path / "in-code").mkdir()
    _in_code_database(tmp_path / "in-code" / DB_NAME, len(_IN_CODE_SHA256))
    Store(str(tmp_path / "in-code")).close()
    expected = _schema(tmp_path / "in-code" / DB_NAME)
    old = tmp_path / f"v{version}"
    old.mkdir()
    _in_code_database(old / DB_NAME, version)
    Store(str(old)).close()
    assert _schema(old / DB_NAME) == expected
    Store(str(tmp_path / "new")).close()
    assert _schema(tmp_path / "new" / DB_NAME) == expected


def test_migration_comments_are_dropped_and_statements_split():
    from netbootd.store.sqlite import statements
    sql = "-- a step; with a semicolon in its comment\n  CREATE TABLE a (x);\n -- b\nDROP TABLE a;\n"
    assert [s.strip() for s in statements(sql)] == ["CREATE TABLE a (x)", "DROP TABLE a"]
