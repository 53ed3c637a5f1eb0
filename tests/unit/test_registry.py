"""The registry: a MAC only seen on DHCP is not a host (bounded, expiring, never
stored) until it does something that matters; host lists come a page at a time."""
from __future__ import annotations

import random

import pytest

from netbootd.model import Host, HostState
from netbootd.registry.hosts import BadCursor, Registry, decode_cursor, encode_cursor, page, state_counts
from netbootd.writes import EventWrite, HostDelete


def _mac(i: int) -> str:
    return ":".join(f"{b:02x}" for b in (0x02, 0, *(i.to_bytes(4, "big"))))


def _kinds(writes):
    return [w.kind if type(w) is EventWrite else w.name for w in writes]


def test_100000_random_macs_seen_once_leave_a_bounded_set_and_no_writes():
    reg = Registry(seen_max=10000)
    rng = random.Random(7)
    writes: list = []
    for i in range(100_000):
        mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        reg.observe(mac, 1000.0 + i / 1000, "eth0", 0, "PXEClient", None, writes)
    assert writes == []
    assert reg.hosts == {}
    assert len(reg.seen) == 10000
    assert reg.counters["seen.evicted"] == reg.counters["seen.added"] - 10000 > 89000


def test_a_seen_mac_is_answered_like_a_discovered_host_but_is_not_known():
    reg = Registry()
    writes: list = []
    h = reg.observe(_mac(1), 10.0, "eth0", 7, "PXEClient:Arch:00007", None, writes)
    assert writes == [] and reg.get(_mac(1)) is h
    assert h.state == HostState.DISCOVERED and not reg.is_known(_mac(1))


def test_seen_macs_expire_after_the_ttl_and_lru_eviction_keeps_the_recent():
    reg = Registry(seen_max=2, seen_ttl=60)
    w: list = []
    reg.observe(_mac(1), 0.0, "eth0", None, None, None, w)
    reg.observe(_mac(2), 1.0, "eth0", None, None, None, w)
    reg.observe(_mac(1), 2.0, "eth0", None, None, None, w)       # 1 is now the most recent
    reg.observe(_mac(3), 3.0, "eth0", None, None, None, w)       # evicts 2, not 1
    assert list(reg.seen) == [_mac(1), _mac(3)]
    reg.observe(_mac(4), 62.5, "eth0", None, None, None, w)      # 1 silent for 60.5 s
    assert list(reg.seen) == [_mac(3), _mac(4)]
    assert reg.counters["seen.expired"] == 1 and reg.counters["seen.evicted"] == 1
    assert w == []


def test_an_acked_lease_promotes_a_seen_mac_to_a_stored_host_with_its_facts():
    reg = Registry()
    w: list = []
    reg.observe(_mac(1), 5.0, "eth1", 7, "PXEClient:Arch:00007", "u-1", w)
    h = reg.promote(_mac(1), 6.0, w)
    assert _kinds(w) == ["host.discovered", "host"]
    assert reg.hosts[_mac(1)] is h and _mac(1) not in reg.seen
    assert (h.arch, h.interface, h.first_seen) == (7, "eth1", 5.0)
    assert '"arch":7' in w[0].detail
    again: list = []
    assert reg.promote(_mac(1), 7.0, again) is h and again == []
    assert reg.promote(_mac(2), 7.0, again) is None and again == []


def test_a_boot_script_promotes_a_seen_mac_keeping_its_dhcp_facts():
    reg = Registry()
    reg.observe(_mac(1), 5.0, "eth1", 7, "PXEClient", None, [])
    w = reg.script_served(_mac(1), "10.0.0.5", "discover", 100, 9.0)
    h = reg.hosts[_mac(1)]
    assert h.arch == 7 and h.first_seen == 5.0 and h.ip == "10.0.0.5"
    assert "host.discovered" in _kinds(w) and "host" in _kinds(w)


def test_known_hosts_keep_their_behaviour_on_dhcp():
    h = Host(_mac(1), HostState.IDLE, 0, None, None, None, "eth0", 1.0, 1.0)
    reg = Registry([h])
    w: list = []
    assert reg.observe(_mac(1), 100.0, "eth0", 0, None, None, w) is h
    assert _kinds(w) == ["host"] and not reg.seen and reg.is_known(_mac(1))


def test_admin_actions_on_a_seen_mac_make_it_a_host_and_delete_forgets_it():
    reg = Registry()
    reg.observe(_mac(1), 1.0, "eth0", None, None, None, [])
    reg.observe(_mac(2), 1.0, "eth0", None, None, None, [])
    h, w = reg.set_hostname(_mac(1), None, 2.0)           # nothing changed, still stored
    assert h is reg.hosts[_mac(1)] and "host" in _kinds(w)
    assert reg.delete(_mac(2), 3.0) == [HostDelete(_mac(2))] and _mac(2) not in reg.seen
    assert reg.retire(_mac(9), 3.0) == (None, []) and reg.approve(_mac(9), 3.0) == (None, [])


def test_http_host_creation_is_limited_per_source_and_in_total():
    reg = Registry(new_per_source_pps=1.0, new_total_pps=1.0)
    oks = [reg.admit_http(_mac(i), "10.0.0.1", 0.0) is None for i in range(50)]
    assert sum(oks) == 10                                  # the per-source burst
    assert reg.counters["http.new_host_refused_source"] == 40
    oks = [reg.admit_http(_mac(1000 + i), f"10.0.1.{i}", 0.0) is None for i in range(200)]
    assert sum(oks) == 90                                  # the total burst (100) is shared
    assert reg.counters["http.new_host_refused_total"] == 110
    # A MAC DHCP has seen is limited per source only; a host is never refused.
    reg.observe(_mac(5000), 0.0, "eth0", None, None, None, [])
    assert reg.admit_http(_mac(5000), "10.0.2.1", 0.0) is None
    reg.script_served(_mac(1), "10.0.0.1", "discover", 1, 0.0)
    assert reg.admit_http(_mac(1), "10.0.0.1", 0.0) is None


def _hosts(n):
    return [Host(_mac(i), HostState.IDLE if i % 3 else HostState.DISCOVERED,
                 first_seen=float(i // 2), last_seen=0.0) for i in range(n)]


def test_pages_walk_every_host_once_in_order_and_survive_inserts():
    hosts = _hosts(250)
    got, cursor, pages = [], None, 0
    while True:
        rows, cursor, total = page(hosts, 100, cursor)
        got += rows
        pages += 1
        assert total == (250 if pages == 1 else 251)
        if pages == 1:    # a host added before the cursor does not shift later pages
            hosts.append(Host(_mac(999), HostState.IDLE, first_seen=-1.0, last_seen=0.0))
        if cursor is None:
            break
    assert pages == 3
    assert [h.mac for h in got] == [h.mac for h in sorted(_hosts(250),
                                                            key=lambda h: (h.first_seen, h.mac))]


def test_pages_filter_and_count():
    hosts = _hosts(30)
    rows, cursor, total = page(hosts, 5, None, lambda h: h.state == HostState.DISCOVERED)
    assert total == 10 and len(rows) == 5 and cursor is not None
    assert state_counts(hosts) == {"discovered": 10, "idle": 20}
    rows, cursor, total = page(hosts, 100)
    assert len(rows) == 30 and cursor is None


def test_a_cursor_round_trips_the_sort_key():
    h = Host("52:54:00:00:00:01", HostState.IDLE, first_seen=1712345678.1234567, last_seen=0.0)
    assert decode_cursor(encode_cursor(h)) == (h.first_seen, h.mac)
    h.first_seen = 1e-05
    assert decode_cursor(encode_cursor(h)) == (1e-05, h.mac)


@pytest.mark.parametrize("bad", ["x", "!!!", "WzEsMl0", "1.0~", "1.0~XYZ", "nan~0011", "1.0"])
def test_a_cursor_we_did_not_give_out_is_refused(bad):
    with pytest.raises(BadCursor):
        decode_cursor(bad)
