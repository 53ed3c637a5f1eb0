"""policy/vnet.py and vnet_template.py: network templates (TOML and
OpenNebula syntax), the checks of one network and of a set, MAC_PREFIX,
sizes and classes, the Network they become; the allocation policies and the
live swap of networks in the lease table and the engine."""
from __future__ import annotations

import random

import pytest

from netbootd.codec import dhcp_options as o
from netbootd.model import ip2int
from netbootd.net.interfaces import IfAddr
from netbootd.config import parse
from netbootd.policy.leases import LeaseTable, PoolExhausted
from netbootd.policy.plan import make_plan
from netbootd.policy.vnet import (Vnet, VnetConflict, VnetError, VnetLease, check_set, from_doc,
                                  from_template, recheck, to_network, with_leases)

ONE = """# the OpenNebula manual's example, with a relay
NAME = "Public"
TYPE = FIXED
BRIDGE = vbr1
LEASES = [IP=130.10.0.1, MAC=50:20:20:20:20:20]
LEASES = [ IP = 130.10.0.2 ]
LEASES = [
  IP = "130.10.0.3",
  HOSTNAME = web3
]
"""


def test_opennebula_fixed_template_and_mac_prefix():
    v = from_template(ONE)
    assert (v.name, v.type, v.interface, v.subnet) == ("Public", "FIXED", "vbr1",
                                                       "130.10.0.0/24")
    assert [v.lease_mac(x) for x in v.leases] == [
        "50:20:20:20:20:20", "02:00:82:0a:00:02", "02:00:82:0a:00:03"]
    net = to_network(v, ["130.10.0.254"], 3600)
    assert net.ranges == () and net.pool_size == 3 and net.kind == "FIXED"
    assert {r.mac: r.address for r in net.reservations}["02:00:82:0a:00:02"] == \
        ip2int("130.10.0.2")
    assert net.reservations[2].hostname == "web3"


def test_mac_prefix_per_network():
    v = from_template('NAME = n\nTYPE = FIXED\nMAC_PREFIX = "0A:BC"\nSUBNET = 10.0.0.0/24\n'
                      'LEASES = [IP = 10.0.0.1]\n')
    assert v.lease_mac(v.leases[0]) == "0a:bc:0a:00:00:01"


@pytest.mark.parametrize("size, cidr", [("C", "192.168.0.0/24"), ("B", "192.168.0.0/16"),
                                        ("254", "192.168.0.0/24"), ("255", "192.168.0.0/23"),
                                        ("100", "192.168.0.0/25"), ("2", "192.168.0.0/30")])
def test_network_size_as_class_or_host_count(size, cidr):
    v = from_template(f"NAME = r\nNETWORK_ADDRESS = 192.168.0.0\nNETWORK_SIZE = {size}\n")
    assert v.subnet == cidr and v.type == "RANGED"


def test_toml_ranged_with_ranges_policy_and_options():
    v = from_template('name = "lab"\ntype = "RANGED"\ncidr = "10.1.0.0/16"\n'
                      'ranges = ["10.1.2.10-10.1.2.20"]\nrouter = "10.1.0.1"\n'
                      'dns = ["10.1.0.1", "10.1.0.2"]\nlease_time = 600\npolicy = "sequential"\n'
                      'vlan = 12\nboot_server = "10.1.0.3"\naccount = "rack"\n'
                      'leases = [{ip = "10.1.0.50", mac = "52:54:00:00:00:01"}]\n')
    net = to_network(v, ["10.1.0.9"], 3600)
    assert net.ranges == ((ip2int("10.1.2.10"), ip2int("10.1.2.20")),)
    assert (net.policy, net.lease_time, net.boot_server, v.vlan, v.account) == (
        "sequential", 600, "10.1.0.3", 12, "rack")
    assert net.pool_size == 11 + 1        # the range and the reservation outside it


def test_range_vectors_and_ip_start_end():
    v = from_template("NAME = r\nSUBNET = 10.0.0.0/24\nRANGE = [IP_START = 10.0.0.10, "
                      "IP_END = 10.0.0.19]\nRANGE = [IP = 10.0.0.100, SIZE = 5]\n")
    assert v.ranges == ("10.0.0.10-10.0.0.19", "10.0.0.100-10.0.0.104")
    v = from_template("NAME = r\nSUBNET = 10.0.0.0/24\nIP_START = 10.0.0.5\nIP_END = 10.0.0.6\n")
    assert v.ranges == ("10.0.0.5-10.0.0.6",)


def test_stored_documents_round_trip():
    for text in (ONE, 'name = "x"\nsubnet = "10.0.0.0/8"\nrelays = ["10.0.0.2", "10.0.0.3"]\n'
                      'dns = "10.0.0.1 10.0.0.2"\n'):
        v = from_template(text)
        assert from_doc(v.to_doc(), v.origin) == v == recheck(v)


# Every bad template names the line and the key.
BAD = [
    ('NAME = "x\nSUBNET = 10.0.0.0/24\n', 1, "NAME", "unterminated"),
    ("NAME = x\nTYPE = FLOATING\nSUBNET = 10.0.0.0/24\n", 2, "TYPE", "FIXED or RANGED"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nBRDIGE = vbr0\n", 3, "BRDIGE", "unknown key"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nLEASES = [IP = 10.0.0.1\n", 3, "LEASES", "no ']'"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nLEASES = [IP = 10.0.0.1, MAC = nope]\n", 3,
     "LEASES[0].MAC", "not a MAC"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\n\nLEASES = [IP = 10.0.0.1]\nLEASES = [IP = 10.0.1.1]\n",
     5, "LEASES[1].IP", "outside"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nLEASES = [IP = 10.0.0.1]\nLEASES = [IP = 10.0.0.1]\n",
     4, "LEASES[1].IP", "given twice"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nLEASES = [IP = 10.0.0.1, MAC = 02:00:00:00:00:01]\n"
     "LEASES = [IP = 10.0.0.2, MAC = 02:00:00:00:00:01]\n", 4, "LEASES[1].MAC",
     "two addresses"),
    ("NAME = x\nTYPE = FIXED\nSUBNET = 10.0.0.0/24\nIP_START = 10.0.0.1\nIP_END = 10.0.0.2\n",
     4, "IP_START", "LEASES only"),
    ("NAME = x\nNETWORK_ADDRESS = 10.0.0.1\nNETWORK_SIZE = C\n", 2, "NETWORK_ADDRESS",
     "first address"),
    ("NAME = x\nNETWORK_ADDRESS = 10.0.0.0\nNETWORK_SIZE = Z\n", 3, "NETWORK_SIZE", "A, B or C"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nROUTER = 10.0.1.1\n", 3, "ROUTER", "outside"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nVLAN_ID = 5000\n", 3, "VLAN_ID", "1 to 4094"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nPOLICY = fastest\n", 3, "POLICY", "lru"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nNAME = y\n", 3, "NAME", "given twice"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nRANGES = 10.0.0.9-10.0.0.3\n", 3, "RANGES",
     "ends before"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nMAC_PREFIX = 02:00:00\n", 3, "MAC_PREFIX", "two hex"),
    ("NAME = x\nSUBNET = 10.0.0.0/24\nLEASES = [IP = 10.0.0.1,, MAC = 1]\n", 3, "LEASES",
     "expected SUBKEY"),
    ("NAME = x\n= 5\n", 2, None, "expected KEY"),
    ("NAME x\n", 1, "NAME", "'='"),
    ('name = "x"\nsubnet = "10.0.0.0/24"\nlease_time = -5\n', 3, "LEASE_TIME", "whole number"),
    ('name = "x"\nsubnet = "10.0.0.1/24"\n', 2, "SUBNET", "CIDR"),
    ('name = "bad name!"\nsubnet = "10.0.0.0/24"\n', 1, "NAME", "characters"),
    ("TYPE = FIXED\nSUBNET = 10.0.0.0/24\n", None, "NAME", "missing"),
    ("NAME = x\nRELAYS = 10.0.0.1 10.0.0.300\nSUBNET = 10.0.0.0/24\n", 2, "RELAYS",
     "not an IPv4"),
]


@pytest.mark.parametrize("text, line, key, words", BAD)
def test_a_bad_template_names_its_line_and_key(text, line, key, words):
    with pytest.raises(VnetError) as e:
        from_template(text)
    msg = str(e.value)
    assert e.value.line == line and e.value.key == key, msg
    if line is not None:
        assert msg.startswith(f"line {line}, {key}:" if key else f"line {line}:"), msg
    assert words in msg, msg


def test_the_set_refuses_overlap_shared_relay_interface_and_name():
    a = from_template('name = "a"\nsubnet = "10.0.0.0/16"\nrelays = ["10.9.0.1"]\n'
                      'interface = "eth1"\n')
    for text, what in (('name = "b"\nsubnet = "10.0.5.0/24"\n', "overlaps a"),
                       ('name = "b"\nsubnet = "10.1.0.0/24"\nrelays = ["10.9.0.1"]\n', "relay"),
                       ('name = "b"\nsubnet = "10.1.0.0/24"\ninterface = "eth1"\n', "eth1"),
                       ('name = "a"\nsubnet = "10.1.0.0/24"\n', "exists")):
        with pytest.raises(VnetConflict, match=what):
            check_set([a, from_template(text)])
    check_set([a, from_template('name = "b"\nsubnet = "10.1.0.0/24"\n')])


def test_with_leases_replaces_by_ip_and_removes():
    v = from_template(ONE)
    v2 = recheck(with_leases(v, add=[VnetLease("130.10.0.2", "02:ff:00:00:00:02")],
                             remove=["130.10.0.1"]))
    assert [(x.ip, v2.lease_mac(x)) for x in v2.leases] == [
        ("130.10.0.3", "02:00:82:0a:00:03"), ("130.10.0.2", "02:ff:00:00:00:02")]
    with pytest.raises(VnetError, match="two addresses"):
        recheck(with_leases(v, add=[VnetLease("130.10.0.9", "50:20:20:20:20:20")]))


# -- the lease table: policies and the live swap ------------------------------------
NOW = 1000.0


def _table(policy, rng=None):
    v = from_template(f'name = "n"\nsubnet = "10.0.0.0/24"\nranges = ["10.0.0.10-10.0.0.19"]\n'
                      f'policy = "{policy}"\n')
    return LeaseTable([to_network(v, ["10.0.0.1"], 60)], rng=rng)


def _take(t, i):
    k = bytes([1, i])
    a = t.choose("n", k, f"02:00:00:00:00:{i:02x}", None, NOW)
    t.bind("n", a, k, f"02:00:00:00:00:{i:02x}", NOW, 60)
    return a


def test_sequential_gives_the_lowest_free_address_again():
    t = _table("sequential")
    got = [_take(t, i) for i in range(3)]
    assert got == [ip2int(f"10.0.0.{n}") for n in (10, 11, 12)]
    t.release("n", bytes([1, 0]), got[0], NOW)
    assert _take(t, 9) == ip2int("10.0.0.10")      # lru would give .13


def test_lru_is_the_old_order_and_random_stays_in_the_pool():
    t = _table("lru")
    got = [_take(t, i) for i in range(3)]
    t.release("n", bytes([1, 0]), got[0], NOW)
    assert _take(t, 9) == ip2int("10.0.0.13")
    t = _table("random", random.Random(7))
    got = {_take(t, i) for i in range(10)}
    assert got == {ip2int(f"10.0.0.{n}") for n in range(10, 20)}    # all 10, each once
    with pytest.raises(PoolExhausted):
        _take(t, 11)


def test_fixed_network_serves_only_its_macs():
    v = from_template(ONE)
    t = LeaseTable([to_network(v, [], 60)])
    assert t.choose("Public", b"k", "02:00:82:0a:00:02", None, NOW) == ip2int("130.10.0.2")
    with pytest.raises(PoolExhausted):
        t.choose("Public", b"j", "02:00:82:0a:00:99", None, NOW)


def test_set_networks_keeps_leases_and_a_removed_ranges_address_stays_held():
    t = _table("lru")
    a = _take(t, 1)
    v2 = from_template('name = "m"\nsubnet = "10.1.0.0/24"\n')
    t.set_networks([to_network(v2, [], 60)])            # "n" removed
    assert t.holder(a, NOW) is not None and t.holder(a, NOW + 61) is None
    assert set(t.nets) == {"m"} and t.usage_all(NOW) == {"m": (0, 254)}
    t.set_networks([to_network(from_template('name = "n"\nsubnet = "10.0.0.0/24"\nranges = '
                                             '["10.0.0.10-10.0.0.19"]\n'), ["10.0.0.1"], 60)])
    assert t.usage_all(NOW) == {"n": (1, 10)}
    assert t.free_for("n", a, bytes([1, 1]), "02:00:00:00:00:01", NOW)   # renewable again


def test_replan_swaps_the_engines_networks_and_a_relay_selects_its_network():
    from tests.unit.test_engine import make_engine, client_packet, mac_bytes, roundtrip
    e = make_engine()
    fixed = from_template("NAME = far\nTYPE = FIXED\nRELAYS = 10.77.0.9\nSUBNET = 10.88.0.0/24\n"
                          "LEASES = [IP = 10.88.0.5]\n")
    lab = Vnet(name="lab", subnet="10.77.0.0/24")
    plan = make_plan(parse('mode = "full"\n'), [IfAddr("eth0", "10.77.0.1", 24)], [lab, fixed])
    e.leases.set_networks(list(plan.networks))
    e.set_networks(list(plan.networks), dict(plan.attached))
    p = client_packet(o.DISCOVER, bytes.fromhex("02000a580005"))
    p.giaddr = bytes([10, 77, 0, 9])
    out, offer = roundtrip(e, p)
    assert offer is not None and offer.yiaddr == bytes([10, 88, 0, 5])
    # The interface's network is gone: nothing, once, and an event.
    plan = make_plan(parse('mode = "full"\n'), [IfAddr("eth0", "10.77.0.1", 24)], [fixed])
    e.set_networks(list(plan.networks), dict(plan.attached))
    out, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(3)))
    assert offer is None and e.counters["drop.no_network"] == 1
    assert [w.kind for w in out.writes if hasattr(w, "kind")] == ["dhcp.no_network"]


def test_boot_profile_is_checked_and_found_by_address():
    from netbootd.policy.vnet import profile_for
    with pytest.raises(VnetError) as e:
        from_template("NAME = x\nSUBNET = 10.0.0.0/24\nBOOT_PROFILE = linux\n")
    assert e.value.line == 3 and e.value.key == "BOOT_PROFILE" and "localboot" in str(e.value)
    a = from_template("NAME = a\nSUBNET = 10.0.0.0/24\nBOOT_PROFILE = localboot\n")
    b = from_template("NAME = b\nSUBNET = 10.0.1.0/24\n")
    assert profile_for([b, a], "10.0.0.7") == "localboot"
    assert profile_for([b, a], "10.0.1.7") is None and profile_for([a], "nonsense") is None


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000 + "\n",                  # tomllib recursion
    "name = \"x\"\nleases = [[[[[[1]]]]]]\n",                  # deeper than any network
    "name = \"x\"\n" + "b = {" * 300 + "c = 1" + "}" * 300 + "\n",
])
def test_deep_nesting_is_a_template_error_not_a_crash(text):
    with pytest.raises(VnetError) as e:
        from_template(text)
    assert "nested too deeply" in str(e.value) or "unknown key" in str(e.value), str(e.value)


def test_many_keys_are_read_in_one_pass_and_the_first_unknown_one_is_named():
    text = 'name = "x"\nsubnet = "10.0.0.0/24"\n' + "".join(f"k{i} = {i}\n" for i in range(7000))
    with pytest.raises(VnetError) as e:
        from_template(text)
    assert e.value.key == "K0" and e.value.line == 3, str(e.value)
