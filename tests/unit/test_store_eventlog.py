"""The event log chained per MAC (store/eventlog.py, schema version 6): reads
walk chains, not an index, through migration, trims and failed batches."""
from __future__ import annotations

import random
import sqlite3

import pytest

from netbootd.store import BadWrite, open_store
from netbootd.store.sqlite import DB_NAME, MIGRATIONS, statements
from netbootd.writes import HostWrite, InventoryWrite, TrimEvents, event
from tests.unit.test_store_contract import host

MACS = [f"52:54:00:00:00:{i:02x}" for i in range(1, 6)]


def _reference(rows):
    """What the reads must give, computed from (id, ts, mac, kind) rows."""
    by_mac = {}
    for r in rows:
        by_mac.setdefault(r[2], []).append(r)
    return by_mac


def _v5_database(path, rows) -> None:
    c = sqlite3.connect(path, isolation_level=None)
    for v, sql in enumerate(MIGRATIONS[:5]):
        for stmt in statements(sql):
            c.execute(stmt)
        c.execute(f"PRAGMA user_version={v + 1}")
    c.executemany("INSERT INTO events(id, ts, mac, kind, detail) VALUES (?,?,?,?,'{}')", rows)
    c.close()


def _mixed(n, seed=7):
    rnd = random.Random(seed)
    return [(i, float(i), rnd.choice(MACS + [None]), rnd.choice(["dhcp.offer", "dhcp.ack"]))
            for i in range(1, n + 1)]


def test_a_version_5_log_is_chained_on_migration_and_reads_as_before(tmp_path):
    rows = _mixed(400)
    state = tmp_path / "state"
    state.mkdir()
    _v5_database(state / DB_NAME, rows)
    s = open_store(str(state), sync="normal")
    try:
        ref = _reference(rows)
        for mac in MACS:
            assert [e["id"] for e in s.events(None, 1000, mac=mac)] == [r[0] for r in ref[mac]]
            assert [e["id"] for e in s.timeline(mac)] == sorted(
                r[0] for r in ref[mac] + ref[None])
            assert s.last_events()[mac]["id"] == ref[mac][-1][0]
        assert set(s.last_events()) == set(MACS)
        # New events continue the migrated chains.
        s.apply([event(1000.0, MACS[0], "dhcp.ack"), event(1001.0, None, "daemon.stop")])
        mine = s.events(None, 3, mac=MACS[0], newest=True)
        assert [e["id"] for e in mine] == [r[0] for r in ref[MACS[0]][-2:]] + [401]
        assert [e["id"] for e in s.timeline(MACS[1])][-1] == 402
        idx = s.query("SELECT name FROM sqlite_master WHERE type = 'index' "
                      "AND tbl_name = 'events'")
        assert [r["name"] for r in idx] == []        # writes append; no random leaf
    finally:
        s.close()


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "state"), sync="normal")
    yield s
    s.close()


def test_reads_over_many_batches_filter_by_mac_kind_after_and_newest(store):
    rows = _mixed(300, seed=11)
    for i in range(0, 300, 37):
        store.apply([event(ts, mac, kind) for _, ts, mac, kind in rows[i:i + 37]])
    ref = _reference(rows)
    mac = MACS[2]
    ids = [r[0] for r in ref[mac]]
    acks = [r[0] for r in ref[mac] if r[3] == "dhcp.ack"]
    cut = ids[len(ids) // 2]
    assert [e["id"] for e in store.events(cut, 1000, mac=mac)] == [i for i in ids if i > cut]
    assert [e["id"] for e in store.events(cut, 3, mac=mac)] == [i for i in ids if i > cut][:3]
    assert [e["id"] for e in store.events(None, 4, mac=mac, newest=True)] == ids[-4:]
    assert [e["id"] for e in store.events(cut, 4, mac=mac, newest=True)] == ids[-4:]
    assert [e["id"] for e in store.events(None, 3, mac=mac, kind="dhcp.ack",
                                          newest=True)] == acks[-3:]
    assert store.events(None, 10, mac="52:54:00:ff:ff:ff") == []
    assert store.timeline("52:54:00:ff:ff:ff") == [
        {"id": r[0], "ts": r[1], "mac": None, "kind": r[3], "detail": "{}"} for r in ref[None]]


def test_a_trim_ends_chains_and_drops_the_heads_of_logs_it_emptied(store):
    orphan = "02:00:00:00:00:01"
    store.apply([HostWrite(host(MACS[0]))]
                + [event(float(i), MACS[0], "dhcp.ack") for i in range(10)]
                + [event(50.0, orphan, "dhcp.offer")]
                + [event(60.0 + i, f"02:00:00:00:01:{i:02x}", "dhcp.offer") for i in range(3)])
    assert store.trim_events(keep=4, orphans=3) == 6 + 1
    assert [e["ts"] for e in store.events(None, 100, mac=MACS[0])] == [6.0, 7.0, 8.0, 9.0]
    assert [e["ts"] for e in store.timeline(MACS[0])] == [6.0, 7.0, 8.0, 9.0]
    assert store.events(None, 100, mac=orphan) == []
    assert orphan not in store.last_events()
    assert store.query("SELECT 1 FROM event_heads WHERE mac = ?", (orphan,)) == []
    # The trimmed chain goes on from its kept head.
    store.apply([event(10.0, MACS[0], "dhcp.ack"), TrimEvents()])
    assert [e["ts"] for e in store.events(None, 100, mac=MACS[0])] == [6.0, 7.0, 8.0, 9.0, 10.0]


def test_a_failed_batch_leaves_the_chains_as_they_were(store):
    store.apply([event(1.0, MACS[0], "dhcp.offer")])
    # The inventory row (mac NOT NULL) fails in SQL after the events went in.
    with pytest.raises(sqlite3.IntegrityError):
        store.apply([event(2.0, MACS[0], "dhcp.ack"), InventoryWrite(2.0, None, "{}")])
    with pytest.raises(BadWrite):
        store.apply([event(2.5, MACS[0], "dhcp.ack"), ("bogus", 1)])
    store.apply([event(3.0, MACS[0], "dhcp.ack")])
    assert [e["ts"] for e in store.events(None, 10, mac=MACS[0])] == [1.0, 3.0]
    assert store.last_events()[MACS[0]]["ts"] == 3.0


def test_an_empty_mac_is_the_daemons_chain_so_a_trim_cannot_cut_it(store):
    store.apply([event(float(i), "" if i % 2 else None, "daemon.note") for i in range(6)]
                + [event(9.0, MACS[0], "dhcp.ack")])
    assert store.trim_events(keep=4, orphans=1) == 2
    assert [(e["ts"], e["mac"]) for e in store.timeline(MACS[0])] == [
        (2.0, None), (3.0, None), (4.0, None), (5.0, None), (9.0, MACS[0])]
