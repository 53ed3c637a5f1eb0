"""The Store contract (netbootd/store/interface.py), written against the
Protocol alone and run for every implementation the `backend` fixture lists
(today SQLite on a tmp dir), so a second store (PostgreSQL) runs the same
suite by adding one backend class.  SQLite's own matters (schema versions,
PRAGMAs, unreadable rows) are in test_store.py."""
from __future__ import annotations

import pytest

from netbootd.model import Account, Host, HostState, Lease, LeaseState, Token
from netbootd.store import BadWrite, DatabaseError, Store, open_readonly, open_store
from netbootd.store.sqlite import INVENTORY_PER_HOST
from netbootd.writes import (WRITE_TYPES, NetworkDelete, NetworkWrite, AccountDelete, AccountWrite, EventWrite, ExportDelete,
                             ExportWrite, HostDelete, HostWrite, InventoryWrite, LeaseWrite,
                             TokenWrite, TrimEvents, event)

MAC = "52:54:00:00:00:01"
OTHER = "52:54:00:00:00:02"


class SqliteBackend:
    """SQLite in a fresh state dir: what `netbootd serve` opens."""

    def __init__(self, tmp_path):
        self.state_dir = str(tmp_path / "state")

    def open(self) -> Store:
        return open_store(self.state_dir, sync="normal")

    def open_existing(self) -> Store | None:
        return open_store(self.state_dir, create=False)

    def open_readonly(self) -> Store | None:
        return open_readonly(self.state_dir)


BACKENDS = {"sqlite": SqliteBackend}


class Opened:
    """A backend whose stores are all closed at the end of the test."""

    def __init__(self, backend):
        self.backend, self.stores = backend, []

    def _keep(self, store):
        if store is not None:
            self.stores.append(store)
        return store

    def open(self) -> Store:
        return self._keep(self.backend.open())

    def open_existing(self) -> Store | None:
        return self._keep(self.backend.open_existing())

    def open_readonly(self) -> Store | None:
        return self._keep(self.backend.open_readonly())


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, tmp_path):
    b = Opened(BACKENDS[request.param](tmp_path))
    yield b
    for s in b.stores:
        s.close()


@pytest.fixture
def store(backend) -> Store:
    return backend.open()


def host(mac=MAC, **kw) -> Host:
    return Host(mac, **{"state": HostState.IDLE, "first_seen": 1.0, "last_seen": 2.0, **kw})


def lease(i: int, state=LeaseState.ACTIVE, **kw) -> Lease:
    return Lease(**{"address": (10 << 24) + i, "network": "lab",
                    "client_key": b"\x01\x00" + bytes([0, i]), "mac": f"52:54:00:00:01:{i:02x}",
                    "state": state, "starts": 100.0 + i, "ends": 4000.0 + i,
                    "hostname": f"h{i}", **kw})


def kinds(events: list[dict]) -> list[str]:
    return [e["kind"] for e in events]


# The write types this suite stores and loads back; a new type in writes.py
# needs its round trip here before this test passes.
COVERED = (HostWrite, HostDelete, LeaseWrite, EventWrite, TrimEvents, AccountWrite,
           AccountDelete, TokenWrite, InventoryWrite, ExportWrite, ExportDelete, NetworkWrite,
           NetworkDelete)


def test_accounts_and_tokens_round_trip_and_delete_together(backend):
    s = backend.open()
    acc = Account("acc-1", "rack-a", "manual", "linux", {"kernel": "vmlinuz"}, 5.0)
    tok = Token("tok-1", "acc-1", "f" * 64, "usb stick", 6.0, 2_000_000_000, 10, 2, None)
    s.apply([AccountWrite(acc), TokenWrite(tok)])
    revoked = Token(**{**tok.__dict__, "revoked": 7.0, "uses": 3})
    s.apply([TokenWrite(revoked)])
    s.close()
    s = backend.open_existing()
    assert s.load_accounts() == [acc] and s.load_tokens() == [revoked]
    s.apply([AccountDelete("acc-1")])
    assert s.load_accounts() == [] and s.load_tokens() == []


def test_a_host_keeps_its_account_identity_credential_action_and_hardware(backend):
    s = backend.open()
    h = host(account="acc-1", ids=[["mac", MAC], ["uuid", "0a" * 4 + "-1111-2222-3333-444455556666"]],
             secret_hash="e" * 64, action={"id": 3, "action": "wipe", "disks": ["vdb"]},
             hw={"cores": 2, "memory_bytes": 1 << 30})
    s.apply([HostWrite(h)])
    s.close()
    assert backend.open_existing().load_hosts() == [h]


def test_inventory_history_is_newest_first_and_bounded(store):
    for i in range(INVENTORY_PER_HOST + 5):
        store.apply([InventoryWrite(float(i), MAC, f'{{"schema": 1, "n": {i}}}')])
    store.apply([InventoryWrite(1.0, OTHER, '{"schema": 1}')])
    docs = store.inventory(MAC, limit=100)
    assert len(docs) == INVENTORY_PER_HOST
    assert docs[0] == {"ts": float(INVENTORY_PER_HOST + 4),
                       "doc": {"schema": 1, "n": INVENTORY_PER_HOST + 4}}
    assert store.inventory(OTHER) == [{"ts": 1.0, "doc": {"schema": 1}}]
    assert store.inventory("52:54:00:00:00:99") == []


def test_exports_round_trip_with_their_secrets_replace_by_volume_and_delete(backend):
    s = backend.open()
    base = "iqn.2026-01.lan.netboot"
    a = ExportWrite("web01", "default", MAC, f"{base}:host.525400770010", f"{base}:vol.web01",
                    "host-525400770010", "AAAAbbbbCCCCdddd", "target-1", "mutualSecret12",
                    5.0)
    b = ExportWrite("db_1", "fast", OTHER, f"{base}:host.525400770011", f"{base}:vol.db.1",
                    None, None, None, None, 6.0)
    s.apply([a, b])
    assert s.load_exports() == [b, a]                      # by volume
    moved = ExportWrite(**{**{k: getattr(a, k) for k in a.__slots__}, "mac": OTHER})
    s.apply([moved, ExportDelete("db_1")])
    assert s.load_exports() == [moved]
    s.close()
    assert backend.open_existing().load_exports() == [moved]      # survives reopening


def test_the_contract_covers_every_write_type():
    assert set(COVERED) == set(WRITE_TYPES)


def test_an_opened_store_implements_the_interface_and_starts_empty(store):
    assert isinstance(store, Store)
    assert store.load_hosts() == [] and store.load_leases() == []
    assert store.events(None, 10) == [] and store.leases_view(0.0) == []


def test_a_host_write_round_trips_every_field_and_survives_reopening(backend, store):
    full = host(arch=7, vendor_class="PXEClient:Arch:00007", uuid="8a7c3f5e", hostname="node1",
                interface="eth1", ip="10.0.0.5", profile="rescue",
                profile_args={"console": "ttyS0", "n": 2, "nested": {"a": [1, "b"]}})
    bare = host(OTHER, state=HostState.DISCOVERED)
    store.apply([HostWrite(full), HostWrite(bare)])
    store.close()
    again = backend.open()
    assert sorted(again.load_hosts(), key=lambda h: h.mac) == [full, bare]
    assert again.host(MAC) == full and again.host("52:54:00:00:00:09") is None


@pytest.mark.parametrize("state", [s for s in LeaseState if s is not LeaseState.OFFERED])
def test_a_lease_write_round_trips_every_field(store, state):
    """Every stored state (offers stay in memory), a client key with NUL
    bytes, no hostname."""
    one = lease(1, state, client_key=b"\x00\xff\x00client", hostname=None)
    store.apply([LeaseWrite(one)])
    assert store.load_leases() == [one]


def test_leases_load_oldest_start_first(store):
    store.apply([LeaseWrite(lease(i, starts=100.0 - i)) for i in range(1, 6)])
    assert [x.starts for x in store.load_leases()] == [95.0, 96.0, 97.0, 98.0, 99.0]


def test_a_later_batch_rewrites_every_field_of_a_lease(store):
    store.apply([LeaseWrite(lease(1)), LeaseWrite(lease(2))])
    moved = Lease(lease(1).address, "other", b"\x00client-id", "52:54:00:00:00:99",
                  LeaseState.RELEASED, 500.0, 600.0, None)
    store.apply([LeaseWrite(moved)])
    assert store.load_leases() == [lease(2), moved]


def test_an_event_write_round_trips_with_host_data_kept_as_data(store):
    store.apply([event(5.0, MAC, "dhcp.ack", ip="10.0.0.1", hostname='x"; DROP TABLE--é'),
                 event(6.0, None, "dhcp.conflict")])
    a, b = store.events(None, 10)
    assert (a["ts"], a["mac"], a["kind"]) == (5.0, MAC, "dhcp.ack")
    assert a["detail"] == {"ip": "10.0.0.1", "hostname": 'x"; DROP TABLE--é'}
    assert (b["mac"], b["kind"], b["detail"]) == (None, "dhcp.conflict", {})
    assert a["id"] < b["id"]


def test_the_later_write_of_a_row_in_a_batch_wins(store):
    store.apply([LeaseWrite(lease(1)), LeaseWrite(lease(1, LeaseState.RELEASED)),
                 HostWrite(host(state=HostState.DISCOVERED)), HostWrite(host())])
    assert [x.state for x in store.load_leases()] == [LeaseState.RELEASED]
    assert store.load_hosts() == [host()]


def test_a_host_delete_removes_the_host_and_keeps_its_history(store):
    store.apply([HostWrite(host()), HostWrite(host(OTHER)), LeaseWrite(lease(1, mac=MAC)),
                 event(1.0, MAC, "dhcp.ack")])
    store.apply([HostDelete(MAC)])
    assert [h.mac for h in store.load_hosts()] == [OTHER] and store.host(MAC) is None
    assert [x.mac for x in store.load_leases()] == [MAC]
    assert kinds(store.events(None, 10, mac=MAC)) == ["dhcp.ack"]


def test_within_a_batch_a_delete_and_a_write_of_a_host_apply_in_order(store):
    store.apply([HostWrite(host()), HostWrite(host(OTHER))])
    store.apply([HostDelete(OTHER), HostWrite(host(OTHER, hostname="again"))])  # re-created
    store.apply([HostWrite(host(hostname="late")), HostDelete(MAC)])           # deleted
    assert store.load_hosts() == [host(OTHER, hostname="again")]


def test_deleting_an_absent_host_is_no_error(store):
    store.apply([HostDelete(MAC)])
    assert store.load_hosts() == []


def test_an_unknown_write_fails_the_whole_batch_as_a_write_fault(store):
    with pytest.raises(BadWrite) as e:
        store.apply([HostWrite(host()), ("host", host(OTHER))])
    assert store.is_write_fault(e.value)
    assert not store.is_write_fault(OSError(28, "No space left on device"))
    assert store.load_hosts() == []


def test_stored_reads_back_the_row_a_write_targets(store):
    store.apply([HostWrite(host()), LeaseWrite(lease(1))])
    assert store.stored(HostWrite(host(hostname="changed"))) == host()
    assert store.stored(LeaseWrite(lease(1, LeaseState.RELEASED))) == lease(1)
    assert store.stored(HostWrite(host(OTHER))) is None
    assert store.stored(LeaseWrite(lease(2))) is None
    assert store.stored(event(1.0, MAC, "x")) is None


def _five(store) -> None:
    store.apply([event(1.0, MAC, "dhcp.discover"), event(2.0, OTHER, "dhcp.ack"),
                 event(3.0, MAC, "dhcp.ack"), event(4.0, None, "daemon.start"),
                 event(5.0, MAC, "agent.register")])


def test_events_come_in_id_order_after_a_given_id(store):
    _five(store)
    every = store.events(None, 100)
    assert [e["ts"] for e in every] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [e["id"] for e in every] == sorted(e["id"] for e in every)
    assert [e["ts"] for e in store.events(every[2]["id"], 100)] == [4.0, 5.0]
    assert store.events(every[-1]["id"], 100) == []


def test_events_filter_by_mac_and_kind(store):
    _five(store)
    assert kinds(store.events(None, 100, mac=MAC)) == ["dhcp.discover", "dhcp.ack",
                                                      "agent.register"]
    assert [e["mac"] for e in store.events(None, 100, kind="dhcp.ack")] == [OTHER, MAC]
    assert [e["ts"] for e in store.events(None, 100, mac=MAC, kind="dhcp.ack")] == [3.0]


def test_events_limit_takes_the_oldest_or_with_newest_the_newest_in_order(store):
    _five(store)
    assert [e["ts"] for e in store.events(None, 2)] == [1.0, 2.0]
    assert [e["ts"] for e in store.events(None, 2, newest=True)] == [4.0, 5.0]
    assert [e["ts"] for e in store.events(None, 2, mac=MAC, newest=True)] == [3.0, 5.0]


def test_a_timeline_holds_the_hosts_and_the_daemons_events_oldest_first(store):
    _five(store)
    tl = store.timeline(MAC)
    assert [(e["ts"], e["mac"]) for e in tl] == [(1.0, MAC), (3.0, MAC), (4.0, None), (5.0, MAC)]
    assert tl[0]["detail"] == "{}"        # the stored JSON text, not parsed


def test_the_leases_view_is_by_address_and_shows_a_lapsed_lease_as_expired(store):
    store.apply([LeaseWrite(lease(10, ends=50.0)), LeaseWrite(lease(9)),
                 LeaseWrite(lease(2, LeaseState.RELEASED, ends=50.0))])
    view = store.leases_view(now=60.0)
    assert [v["address"] for v in view] == ["10.0.0.2", "10.0.0.9", "10.0.0.10"]
    assert [v["state"] for v in view] == ["released", "active", "expired"]
    assert set(view[1]) == {"address", "mac", "state", "hostname", "network", "starts", "ends"}
    assert (view[1]["mac"], view[1]["hostname"], view[1]["network"]) == (lease(9).mac, "h9", "lab")
    assert (view[1]["starts"], view[1]["ends"]) == (109.0, 4009.0)
    assert [v["state"] for v in store.leases_view(now=40.0)] == ["released", "active", "active"]


def test_trim_keeps_the_newest_events_per_host_and_of_orphans_in_all(store):
    orphans = [f"02:00:00:00:00:{i:02x}" for i in range(30)]
    store.apply([HostWrite(host())]
                + [event(float(i), MAC, "dhcp.ack") for i in range(20)]
                + [event(100.0 + i, m, "dhcp.offer") for i, m in enumerate(orphans)]
                + [event(200.0, None, "daemon.start")])
    assert store.trim_events(keep=5, orphans=10) == 15 + 20
    assert [e["ts"] for e in store.events(None, 100, mac=MAC)] == [float(i) for i in range(15, 20)]
    assert [e["mac"] for e in store.events(None, 100, kind="dhcp.offer")] == orphans[20:]
    assert kinds(store.events(None, 100, kind="daemon.start")) == ["daemon.start"]


def test_a_trim_write_trims_after_its_batch_is_stored(store):
    """The periodic TrimEvents write: the default cap per host applies to the
    events of the same batch too."""
    store.apply([HostWrite(host())] + [event(float(i), MAC, "dhcp.ack") for i in range(505)]
                + [TrimEvents()])
    left = store.events(None, 1000, mac=MAC)
    assert len(left) == 500 and left[0]["ts"] == 5.0


def test_the_readonly_opener_never_creates_nor_writes(backend):
    assert backend.open_readonly() is None
    assert backend.open_existing() is None           # the readonly look created nothing
    store = backend.open()
    store.apply([HostWrite(host()), event(1.0, MAC, "dhcp.ack")])
    ro = backend.open_readonly()
    assert ro.host(MAC) == host() and kinds(ro.timeline(MAC)) == ["dhcp.ack"]
    with pytest.raises(DatabaseError):
        ro.apply([HostWrite(host(OTHER)), event(2.0, OTHER, "dhcp.ack")])
    assert store.load_hosts() == [host()] and kinds(store.events(None, 10)) == ["dhcp.ack"]


def test_a_readonly_store_sees_what_the_writer_commits_later(backend):
    store = backend.open()
    ro = backend.open_readonly()
    assert ro.timeline(MAC) == []
    store.apply([event(1.0, MAC, "dhcp.ack")])
    assert kinds(ro.timeline(MAC)) == ["dhcp.ack"]


def test_close_keeps_what_was_stored_and_may_be_called_twice(backend):
    store = backend.open()
    store.apply([HostWrite(host()), LeaseWrite(lease(1))])
    store.close()
    store.close()
    again = backend.open_existing()
    assert again.load_hosts() == [host()] and again.load_leases() == [lease(1)]


def test_networks_round_trip_update_in_place_and_delete(backend):
    s = backend.open()
    s.apply([NetworkWrite("lab", "config", '{"name": "lab", "subnet": "10.0.0.0/24"}', 1.0),
             NetworkWrite("pub", "api", '{"name": "pub", "subnet": "10.1.0.0/24"}', 2.0)])
    s.apply([NetworkWrite("lab", "config", '{"name": "lab", "subnet": "10.9.0.0/24"}', 3.0)])
    rows = s.load_networks()
    assert [(r["name"], r["origin"], r["created"], r["updated"]) for r in rows] == [
        ("lab", "config", 1.0, 3.0), ("pub", "api", 2.0, 2.0)]
    assert "10.9.0.0/24" in rows[0]["doc"] and rows[0]["id"] < rows[1]["id"]
    s.apply([NetworkDelete("lab")])
    assert [r["name"] for r in s.load_networks()] == ["pub"]
