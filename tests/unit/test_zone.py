"""The DNS zone (policy/zone.py): records from leases, reservations and hosts; names,
collisions, NODATA/NXDOMAIN, reverse names, and a wire cache that follows every change."""
from __future__ import annotations

import ipaddress
import itertools

import pytest
from dnslib import DNSRecord
from hypothesis import given, settings, strategies as st

from netbootd.codec import dns as d
from netbootd.model import Host, Lease, LeaseState
from netbootd.policy.zone import Zone, reverse_name, reverse_zones, sanitize_label
from netbootd.writes import HostDelete, HostWrite, LeaseWrite

NET = "10.77.0.0/16"
MAC1 = "52:54:00:77:00:10"
MAC2 = "52:54:00:77:00:11"
MAC3 = "52:54:00:77:00:12"


def ip(s: str) -> int:
    return int(ipaddress.IPv4Address(s))


def lease(addr: str, mac: str, hostname=None, state=LeaseState.ACTIVE, ends=1000.0,
          network="lab", key=None) -> Lease:
    return Lease(ip(addr), network, key or b"\x01" + mac.encode(), mac, state, 0.0, ends, hostname)


def zone(**kw) -> Zone:
    kw.setdefault("reservations", ())
    return Zone("netboot.lan", [NET], "10.77.0.1", **kw)


def a_records(z: Zone, name: str) -> list[str]:
    ans = z.lookup(name, d.T_A)
    return [r.rdata for r in ans.answer] if ans and ans.rcode == d.NOERROR else []


def ptr(z: Zone, addr: str) -> str | None:
    ans = z.lookup(reverse_name(ip(addr)), d.T_PTR)
    return ans.answer[0].rdata if ans.answer else None


# -- records -------------------------------------------------------------------------
def test_reservation_is_in_the_zone_before_any_lease():
    z = zone(reservations=[(MAC1, "10.77.0.5", "node5")])
    assert a_records(z, "node5.netboot.lan") == ["10.77.0.5"]
    assert ptr(z, "10.77.0.5") == "node5.netboot.lan"


def test_set_networks_follows_reverse_zones_and_reservations_live():
    """A live network change (vnet create/update/delete): reservations come and
    go, a lease's name stays, reverse names of a dropped subnet are not ours,
    and no cached answer survives the change."""
    z = zone(reservations=[(MAC1, "10.77.0.5", "node5")])
    assert z.apply([LeaseWrite(lease("10.77.0.16", MAC2, "web"))])
    assert a_records(z, "node5.netboot.lan") == ["10.77.0.5"]     # cached now
    assert z.lookup(reverse_name(ip("10.88.0.7")), d.T_PTR) is None
    serial = z.serial
    z.set_networks([NET, "10.88.0.0/24"], [(MAC3, "10.88.0.7", "db1")])
    assert a_records(z, "node5.netboot.lan") == []                # reservation gone
    assert a_records(z, "db1.netboot.lan") == ["10.88.0.7"]
    assert ptr(z, "10.88.0.7") == "db1.netboot.lan"
    assert a_records(z, "web.netboot.lan") == ["10.77.0.16"]      # the lease keeps its name
    assert z.serial != serial
    z.set_networks(["10.88.0.0/24"], [(MAC3, "10.88.0.7", "db2")])
    assert a_records(z, "db1.netboot.lan") == [] and ptr(z, "10.88.0.7") == "db2.netboot.lan"
    assert z.lookup(reverse_name(ip("10.77.0.16")), d.T_PTR) is None   # not our zone now


def test_active_lease_gives_a_and_ptr_under_its_hostname():
    z = zone()
    assert z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web"))])
    assert a_records(z, "web.netboot.lan") == ["10.77.0.16"]
    assert ptr(z, "10.77.0.16") == "web.netboot.lan"


def test_lease_without_hostname_gets_a_stable_generated_name():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1))])
    assert z.names() == {"host-525400770010.netboot.lan": ("10.77.0.16",)}


@pytest.mark.parametrize("state", [LeaseState.RELEASED, LeaseState.EXPIRED, LeaseState.DECLINED])
def test_released_expired_declined_remove_the_records(state):
    z = zone()
    live = lease("10.77.0.16", MAC1, "web")
    z.apply([LeaseWrite(live)])
    gone = lease("10.77.0.16", MAC1 if state != LeaseState.DECLINED else "", state=state)
    z.apply([LeaseWrite(gone)])
    assert z.lookup("web.netboot.lan", d.T_A).rcode == d.NXDOMAIN
    assert z.lookup(reverse_name(ip("10.77.0.16")), d.T_PTR).rcode == d.NXDOMAIN


def test_offers_are_not_named():
    z = zone()
    assert not z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web", LeaseState.OFFERED))])
    assert z.names() == {}


def test_expire_drops_leases_that_ended():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web", ends=100.0)),
             LeaseWrite(lease("10.77.0.17", MAC2, "db", ends=200.0))])
    assert z.expire(99.0) == 0
    assert z.expire(150.0) == 1
    assert list(z.names()) == ["db.netboot.lan"]


def test_apply_with_now_ignores_a_lease_that_already_ended():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web", ends=100.0))], now=100.0)
    assert z.names() == {}


def test_renewal_keeps_its_lease_alive_past_the_old_end():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web", ends=100.0))])
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web", ends=300.0))])
    z.expire(150.0)
    assert a_records(z, "web.netboot.lan") == ["10.77.0.16"]


def test_a_client_that_moves_loses_its_old_address():
    """LeaseTable.bind releases the previous address without writing it:
    the zone follows the (network, client) key."""
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web"))])
    z.apply([LeaseWrite(lease("10.77.0.30", MAC1, "web"))])
    assert a_records(z, "web.netboot.lan") == ["10.77.0.30"]
    assert ptr(z, "10.77.0.16") is None


def test_one_mac_on_several_networks_has_one_name_with_every_address():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.2.9", MAC1, "trunk", network="b")),
             LeaseWrite(lease("10.77.1.9", MAC1, "trunk", network="a"))])
    assert a_records(z, "trunk.netboot.lan") == ["10.77.1.9", "10.77.2.9"]
    assert ptr(z, "10.77.2.9") == ptr(z, "10.77.1.9") == "trunk.netboot.lan"


def test_a_lease_on_a_reserved_address_owns_it_while_active():
    z = zone(reservations=[(MAC1, "10.77.0.5", "node5")])
    z.apply([LeaseWrite(lease("10.77.0.5", MAC2, "intruder"))])
    assert ptr(z, "10.77.0.5") == "intruder.netboot.lan"
    assert z.lookup("node5.netboot.lan", d.T_A).rcode == d.NXDOMAIN
    z.apply([LeaseWrite(lease("10.77.0.5", MAC2, state=LeaseState.RELEASED))])
    assert ptr(z, "10.77.0.5") == "node5.netboot.lan"


# -- names ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw, label", [
    ("Web_Server.example.com", "web-server"),
    ("node5.netboot.lan", "node5"),
    ("  DB01 ", "db01"),
    ("-x-", "x"),
    ("a" * 80, "a" * 63),
    ("ünï", "n"),
    ("---", None),
    ("", None),
    (None, None),
    ('"><script>', "script"),
])
def test_host_supplied_names_become_one_valid_label(raw, label):
    assert sanitize_label(raw) == label


def test_configured_name_beats_registered_beats_lease_hostname():
    z = zone(reservations=[(MAC1, "10.77.0.5", "configured")])
    z.apply([HostWrite(Host(MAC1, hostname="registered")),
             LeaseWrite(lease("10.77.0.5", MAC1, "fromdhcp"))])
    assert list(z.names()) == ["configured.netboot.lan"]
    z2 = zone()
    z2.apply([HostWrite(Host(MAC1, hostname="registered")),
              LeaseWrite(lease("10.77.0.5", MAC1, "fromdhcp"))])
    assert list(z2.names()) == ["registered.netboot.lan"]


def test_host_renamed_moves_its_records_at_once():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "old"))])
    z.apply([HostWrite(Host(MAC1, hostname="new"))])
    assert a_records(z, "new.netboot.lan") == ["10.77.0.16"]
    assert z.lookup("old.netboot.lan", d.T_A).rcode == d.NXDOMAIN
    assert ptr(z, "10.77.0.16") == "new.netboot.lan"


def test_deleted_host_loses_its_registered_name_at_once_as_after_a_restart():
    """A host deleted by an admin: its registered name leaves DNS with the
    commit (it used to stay until a restart), and its lease's own name is what
    a restart would publish."""
    z = zone()
    batch = [HostWrite(Host(MAC1, hostname="registered")),
             LeaseWrite(lease("10.77.0.16", MAC1, "fromdhcp"))]
    z.apply(batch)
    assert a_records(z, "registered.netboot.lan") == ["10.77.0.16"]
    assert z.apply([HostDelete(MAC1)])
    assert z.lookup("registered.netboot.lan", d.T_A).rcode == d.NXDOMAIN
    restarted = zone()
    restarted.load([batch[1].lease], [], 0.0)
    assert list(z.names()) == list(restarted.names()) == ["fromdhcp.netboot.lan"]
    assert ptr(z, "10.77.0.16") == "fromdhcp.netboot.lan"


@pytest.mark.parametrize("wanted", ["ns", "host-525400770011"])
def test_reserved_labels_are_not_given_to_hosts(wanted):
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, wanted))])
    assert list(z.names()) == ["host-525400770010.netboot.lan"]
    assert a_records(z, "ns.netboot.lan") == ["10.77.0.1"]


def test_a_host_may_ask_for_its_own_generated_name():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "host-525400770010"))])
    assert list(z.names()) == ["host-525400770010.netboot.lan"]


def test_collision_goes_to_the_lowest_mac_whatever_the_order():
    for order in itertools.permutations([(MAC3, "10.77.0.3"), (MAC1, "10.77.0.1"),
                                         (MAC2, "10.77.0.2")]):
        z = zone()
        for mac, addr in order:
            z.apply([LeaseWrite(lease(addr, mac, "ubuntu"))])
        assert z.names() == {"ubuntu.netboot.lan": ("10.77.0.1",),
                             "host-525400770011.netboot.lan": ("10.77.0.2",),
                             "host-525400770012.netboot.lan": ("10.77.0.3",)}


def test_collision_a_configured_name_wins_over_a_lower_mac():
    z = zone(reservations=[(MAC3, "10.77.0.3", "ubuntu")])
    z.apply([LeaseWrite(lease("10.77.0.1", MAC1, "ubuntu"))])
    assert z.names()["ubuntu.netboot.lan"] == ("10.77.0.3",)
    assert z.names()["host-525400770010.netboot.lan"] == ("10.77.0.1",)


def test_collision_loser_takes_the_name_when_the_winner_leaves():
    z = zone()
    z.apply([LeaseWrite(lease("10.77.0.1", MAC1, "ubuntu")),
             LeaseWrite(lease("10.77.0.2", MAC2, "ubuntu"))])
    z.apply([LeaseWrite(lease("10.77.0.1", MAC1, state=LeaseState.RELEASED))])
    assert z.names() == {"ubuntu.netboot.lan": ("10.77.0.2",)}
    assert ptr(z, "10.77.0.2") == "ubuntu.netboot.lan"


@settings(max_examples=60, deadline=None)
@given(st.permutations(list(range(6))), st.lists(st.sampled_from(["a", "b", None]), min_size=6,
                                                 max_size=6))
def test_names_depend_on_the_claims_not_their_order(perm, names):
    writes = [LeaseWrite(lease(f"10.77.0.{i + 10}", f"52:54:00:00:00:{i:02x}", names[i]))
              for i in range(6)]
    z1, z2 = zone(), zone()
    z1.apply(writes)
    for i in perm:
        z2.apply([writes[i]])
    assert z1.names() == z2.names()
    assert len(z1.names()) == 6


# -- answers -------------------------------------------------------------------------
def test_nodata_is_noerror_with_the_soa_in_authority():
    z = zone(reservations=[(MAC1, "10.77.0.5", "node5")])
    ans = z.lookup("node5.netboot.lan", d.T_AAAA)
    assert ans.rcode == d.NOERROR and ans.answer == ()
    assert [r.rtype for r in ans.authority] == [d.T_SOA]
    assert ans.authority[0].name == "netboot.lan"


def test_nxdomain_carries_the_soa_of_the_zone():
    z = zone()
    for name, apex in (("nothing.netboot.lan", "netboot.lan"),
                       ("a.b.netboot.lan", "netboot.lan"),
                       ("9.0.77.10.in-addr.arpa", "77.10.in-addr.arpa"),
                       ("x.0.77.10.in-addr.arpa", "77.10.in-addr.arpa"),
                       ("01.0.77.10.in-addr.arpa", "77.10.in-addr.arpa"),
                       ("1.1.0.77.10.in-addr.arpa", "77.10.in-addr.arpa")):
        ans = z.lookup(name, d.T_A)
        assert ans.rcode == d.NXDOMAIN, name
        assert ans.authority[0].rtype == d.T_SOA and ans.authority[0].name == apex


def test_apex_has_soa_and_ns_with_glue():
    z = zone()
    soa = z.lookup("netboot.lan", d.T_SOA).answer[0]
    assert soa.rdata[:2] == ("ns.netboot.lan", "hostmaster.netboot.lan")
    ns = z.lookup("netboot.lan", d.T_NS)
    assert ns.answer[0].rdata == "ns.netboot.lan" and ns.additional[0].rdata == "10.77.0.1"
    assert z.lookup("77.10.in-addr.arpa", d.T_NS).answer[0].rdata == "ns.netboot.lan"
    assert z.lookup("netboot.lan", d.T_A).rcode == d.NOERROR
    assert z.lookup("netboot.lan", d.T_A).answer == ()


def test_reverse_empty_non_terminal_is_nodata_only_with_something_below():
    z = zone()
    assert z.lookup("0.77.10.in-addr.arpa", d.T_PTR).rcode == d.NXDOMAIN
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1))])
    assert z.lookup("0.77.10.in-addr.arpa", d.T_PTR).rcode == d.NOERROR
    assert z.lookup("1.77.10.in-addr.arpa", d.T_PTR).rcode == d.NXDOMAIN


def test_names_outside_our_zones_are_not_ours():
    z = zone()
    assert z.lookup("example.com", d.T_A) is None
    assert z.lookup("netboot.lan.evil.com", d.T_A) is None
    assert z.lookup("10.in-addr.arpa", d.T_SOA) is None
    assert z.lookup("5.0.78.10.in-addr.arpa", d.T_PTR) is None


def test_lookup_is_case_insensitive():
    z = zone(reservations=[(MAC1, "10.77.0.5", "node5")])
    assert a_records(z, "NODE5.NetBoot.LAN.") == ["10.77.0.5"]


@pytest.mark.parametrize("subnet, zones", [
    ("10.77.0.0/24", ["0.77.10.in-addr.arpa"]),
    ("10.77.0.0/16", ["77.10.in-addr.arpa"]),
    ("10.0.0.0/8", ["10.in-addr.arpa"]),
    ("10.77.0.64/26", ["0.77.10.in-addr.arpa"]),
    ("10.77.16.0/22", [f"{i}.77.10.in-addr.arpa" for i in range(16, 20)]),
])
def test_reverse_zones_are_octet_aligned(subnet, zones):
    got = [".".join(x.decode() for x in z) for z in reverse_zones(ipaddress.IPv4Network(subnet))]
    assert sorted(got) == sorted(zones)


# -- the wire cache ------------------------------------------------------------------
def _wire(z: Zone, name: str, qtype: int) -> DNSRecord:
    hdrs, tail = z.entry(d.name_wire(name), qtype.to_bytes(2, "big") + b"\x00\x01")
    q = d.name_wire(name) + qtype.to_bytes(2, "big") + b"\x00\x01"
    return DNSRecord.parse(b"\x12\x34" + hdrs[0] + q + tail)


def test_cached_answers_change_the_moment_the_lease_does():
    z = zone()
    assert _wire(z, "web.netboot.lan", d.T_A).header.rcode == d.NXDOMAIN
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web"))])
    r = _wire(z, "web.netboot.lan", d.T_A)
    assert r.header.rcode == d.NOERROR and str(r.rr[0].rdata) == "10.77.0.16"
    assert r.header.aa == 1
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, state=LeaseState.RELEASED))])
    assert _wire(z, "web.netboot.lan", d.T_A).header.rcode == d.NXDOMAIN
    assert not z.pos


def test_every_change_bumps_the_serial_and_clears_negative_answers():
    z = zone()
    s0 = z.serial
    _wire(z, "nothing.netboot.lan", d.T_A)
    assert z.neg
    z.apply([LeaseWrite(lease("10.77.0.16", MAC1, "web"))])
    assert z.serial == s0 + 1 and not z.neg
    assert _wire(z, "nothing.netboot.lan", d.T_A).auth[0].rdata.times[0] == s0 + 1


def test_an_unrelated_change_keeps_other_positive_entries():
    z = zone(reservations=[(MAC1, "10.77.0.5", "node5")])
    _wire(z, "node5.netboot.lan", d.T_A)
    key = d.name_wire("node5.netboot.lan") + b"\x00\x01\x00\x01"
    assert key in z.pos
    z.apply([LeaseWrite(lease("10.77.0.16", MAC2, "web"))])
    assert key in z.pos


def test_negative_cache_is_bounded():
    z = Zone("netboot.lan", [NET], "10.77.0.1", max_cached=10)
    for i in range(25):
        _wire(z, f"n{i}.netboot.lan", d.T_A)
    assert len(z.neg) <= 10


name_label = st.sampled_from(["ns", "hostmaster", "x", "node5", "a" * 20, "1", "0", "77"])


@settings(max_examples=300, deadline=None)
@given(st.lists(name_label, min_size=0, max_size=3),
       st.sampled_from(["netboot.lan", "77.10.in-addr.arpa", "0.77.10.in-addr.arpa"]),
       st.sampled_from([d.T_A, d.T_AAAA, d.T_PTR, d.T_SOA, d.T_NS, d.T_ANY, 99]))
def test_shared_negative_answers_are_byte_identical_to_fresh_ones(prefix, suffix, qtype):
    """Negative answers are shared between names of one shape: each must be
    exactly what dnslib encodes for that very name."""
    from netbootd.policy.zone import encode
    z = zone(reservations=[(MAC1, "10.77.0.5", "node5")])
    for other in ("zz", "q" * len(prefix[0]) if prefix else "qq"):   # fill the shape cache
        z.entry(d.name_wire(".".join([other] + prefix[1:] + [suffix])), qtype.to_bytes(2, "big")
                + b"\x00\x01")
    name = ".".join(prefix + [suffix])
    wire = d.name_wire(name)
    tc = qtype.to_bytes(2, "big") + b"\x00\x01"
    assert z.entry(wire, tc) == encode(d.wire_labels(wire), tc, z.lookup(name, qtype))


def test_nested_subnets_give_one_reverse_zone():
    z = Zone("netboot.lan", ["10.77.0.0/16", "10.77.1.0/24"], "10.77.0.1")
    z.apply([LeaseWrite(lease("10.77.1.9", MAC1))])
    ans = z.lookup(reverse_name(ip("10.77.1.9")), d.T_PTR)
    assert ans.answer and z.lookup("1.77.10.in-addr.arpa", d.T_SOA).answer == ()


_MACS = [MAC1, MAC2, MAC3]
_write = st.tuples(st.integers(0, 2), st.integers(0, 3), st.sampled_from(["lab", "other"]),
                   st.sampled_from([None, "web", "db"]),
                   st.sampled_from([LeaseState.ACTIVE, LeaseState.ACTIVE, LeaseState.RELEASED]),
                   st.integers(1, 5), st.sampled_from([None, None, b"\x00client-a"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_write, min_size=1, max_size=4), max_size=12), st.integers(0, 6))
def test_renewal_fast_path_changes_nothing_but_the_work(batches, expire_at):
    """Random renewals, moves, releases and renames, batch by batch: the zone
    with the renewal fast path answers exactly as the general path does."""
    fast, slow = zone(), zone()
    slow.renewal_fast_path = False
    for batch in batches:
        # key None: htype + MAC; else an option 61 id that several MACs may send
        writes = [LeaseWrite(lease(f"10.77.0.{10 + addr}", _MACS[m], name, state,
                                  ends=float(end * 100), network=net, key=key))
                  for m, addr, net, name, state, end, key in batch]
        assert fast.apply(writes, 0.0) == slow.apply(writes, 0.0)
        assert fast.names() == slow.names()
        assert fast.serial == slow.serial
    assert fast.expire(expire_at * 100.0) == slow.expire(expire_at * 100.0)
    assert fast.names() == slow.names()
    for a in range(10, 14):
        assert ptr(fast, f"10.77.0.{a}") == ptr(slow, f"10.77.0.{a}")
