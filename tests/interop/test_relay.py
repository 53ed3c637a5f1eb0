"""Relayed DHCP (RFC 2131 §4.1, RFC 3046): a scapy relay agent inside the
client namespace (giaddr = its own address, source port 67, option 82)
against `netbootd serve --mode full`."""
from __future__ import annotations

import ipaddress
import random

import pytest

from .harness import (ACK, DISCOVER, OFFER, REQUEST, build_pair, client_agent, describe_all,
                      dhcp_frame, dora, iface_mac, ip_bytes, lease_rows_for, logged_counters, opt,
                      relay_config, wait_for)

SUBNET = ipaddress.IPv4Network("10.77.0.0/16")
SERVER = "10.77.0.1"
RELAY = "10.77.0.2"
FORBIDDEN = {"10.77.0.0", "10.77.255.255", SERVER}

# Option 82: circuit-id (1) and remote-id (2) sub-options.
OPT82 = opt(1, b"swp7/vlan77") + opt(2, bytes.fromhex("0006aabbccddeeff"))


def _is(msg, xid):
    return lambda r: r.op == 2 and r.xid == xid and r.msg_type == msg


@pytest.fixture
def relay_lab(lab, netbootd_factory, tmp_path):
    lan = build_pair(lab, "10.77.0.1/16", f"{RELAY}/16")
    nb = netbootd_factory(lan.ns["srv"], ["--mode", "full", "--interface", lan.ifs["srv"],
                                          *relay_config(tmp_path / "relay.toml", (RELAY,))]).start()
    with client_agent(lab, lan, tmp_path) as agent:
        yield lan, nb, agent


@pytest.mark.interop
def test_relayed_dora_is_unicast_to_giaddr_port_67_and_echoes_option_82(relay_lab):
    """DISCOVER then REQUEST relayed with giaddr=10.77.0.2 (source port 67,
    hops 1, option 82 circuit-id + remote-id): OFFER and ACK come back
    unicast to giaddr:67 at the relay's MAC, keep giaddr, echo option 82
    byte for byte, and the lease is recorded active for the client's MAC."""
    lan, nb, agent = relay_lab
    srv_mac = iface_mac(lan.lab, lan.ns["srv"], lan.ifs["srv"])
    client = "02:77:00:00:82:01"
    xid = random.getrandbits(32)
    common = dict(chaddr=client, xid=xid, src_mac=agent.mac, dst_mac=srv_mac, src_ip=RELAY,
                  dst_ip=SERVER, sport=67, dport=67, giaddr=RELAY, hops=1, broadcast=False)

    sent = opt(55, [1, 3, 6, 51, 54]) + opt(61, b"\x01" + bytes.fromhex(client.replace(":", "")))
    got = agent.exchange(dhcp_frame(msg_type=DISCOVER, options=sent + opt(82, OPT82), **common),
                         timeout=4, want=_is(OFFER, xid))
    offers = [r for r in got if _is(OFFER, xid)(r)]
    print("replies to the relayed DISCOVER:\n" + describe_all(got))
    assert offers, f"no OFFER to relayed DISCOVER (xid {xid:#x}); saw:\n{describe_all(got)}"
    o = offers[0]
    ctx = o.describe()
    assert (o.ip_dst, o.dport, o.sport) == (RELAY, 67, 67), f"OFFER not sent to giaddr:67: {ctx}"
    assert o.eth_dst == agent.mac, f"OFFER not unicast to the relay's MAC: {ctx}"
    assert o.giaddr == RELAY, f"OFFER giaddr changed: {ctx}"
    assert o.chaddr == client, ctx
    assert o.options.get(82) == OPT82, (
        f"option 82 not echoed unchanged: sent {OPT82.hex()}, got "
        f"{o.options.get(82, b'').hex() or '(absent)'}: {ctx}")
    yiaddr = o.yiaddr
    assert ipaddress.IPv4Address(yiaddr) in SUBNET and yiaddr not in FORBIDDEN, ctx
    assert o.server_id == SERVER, ctx

    req = sent + opt(50, ip_bytes(yiaddr)) + opt(54, ip_bytes(o.server_id)) + opt(82, OPT82)
    got = agent.exchange(dhcp_frame(msg_type=REQUEST, options=req, **common),
                         timeout=4, want=_is(ACK, xid))
    acks = [r for r in got if _is(ACK, xid)(r)]
    print("replies to the relayed REQUEST:\n" + describe_all(got))
    assert acks, f"no ACK to relayed REQUEST for {yiaddr}; saw:\n{describe_all(got)}"
    a = acks[0]
    ctx = a.describe()
    assert (a.ip_dst, a.dport, a.sport) == (RELAY, 67, 67), f"ACK not sent to giaddr:67: {ctx}"
    assert a.eth_dst == agent.mac, ctx
    assert a.giaddr == RELAY, ctx
    assert a.yiaddr == yiaddr, ctx
    assert a.options.get(82) == OPT82, (
        f"option 82 not echoed unchanged in ACK: sent {OPT82.hex()}, got "
        f"{a.options.get(82, b'').hex() or '(absent)'}")
    assert 51 in a.options, f"ACK without lease time: {ctx}"

    rows = wait_for(lambda: [r for r in lease_rows_for(nb.state_dir, mac=client)
                             if r["state"] == "active"], 3, what="active lease row")
    assert [r["address"] for r in rows] == [yiaddr]


@pytest.mark.interop
def test_option_82_from_client_without_giaddr_is_not_echoed(relay_lab):
    """A DISCOVER straight from a client (giaddr 0.0.0.0, broadcast flag)
    carrying an option 82 gets an OFFER broadcast to port 68 that does NOT
    echo option 82 (only relays' option 82 is echoed, RFC 3046 §2.2)."""
    lan, nb, agent = relay_lab
    client = "02:77:00:00:82:02"
    xid = random.getrandbits(32)
    frame = dhcp_frame(chaddr=client, xid=xid, msg_type=DISCOVER,
                       options=opt(55, [1, 3, 6]) + opt(82, OPT82), broadcast=True)
    got = agent.exchange(frame, timeout=4, want=_is(OFFER, xid))
    offers = [r for r in got if _is(OFFER, xid)(r)]
    print("replies to the direct DISCOVER with option 82:\n" + describe_all(got))
    assert offers, f"no OFFER to a direct DISCOVER carrying option 82; saw:\n{describe_all(got)}"
    o = offers[0]
    assert o.dport == 68 and o.giaddr == "0.0.0.0", o.describe()
    assert 82 not in o.options, f"option 82 echoed to a non-relayed client: {o.describe()}"


@pytest.mark.interop
def test_relayed_client_is_never_offered_the_relays_own_address(relay_lab):
    """The relay's address (giaddr 10.77.0.2) is listed as the network's
    relay, so it is excluded from the pool by configuration: a relayed
    DISCOVER is never OFFERed it."""
    lan, nb, agent = relay_lab
    srv_mac = iface_mac(lan.lab, lan.ns["srv"], lan.ifs["srv"])
    offered = []
    for i in range(3):
        client = f"02:77:00:00:83:{i:02x}"
        xid = random.getrandbits(32)
        frame = dhcp_frame(chaddr=client, xid=xid, msg_type=DISCOVER, options=opt(55, [1, 3]),
                           src_mac=agent.mac, dst_mac=srv_mac, src_ip=RELAY, dst_ip=SERVER,
                           sport=67, dport=67, giaddr=RELAY, hops=1, broadcast=False)
        got = agent.exchange(frame, timeout=4, want=_is(OFFER, xid))
        offers = [r for r in got if _is(OFFER, xid)(r)]
        assert offers, f"no OFFER to relayed DISCOVER from {client}; saw:\n{describe_all(got)}"
        offered.append(offers[0])
    bad = [o.describe() for o in offered if o.yiaddr == RELAY]
    assert not bad, "relayed client offered the relay's own address (giaddr):\n" + "\n".join(bad)


@pytest.mark.interop
def test_spoofed_giaddr_takes_no_address_and_naks_no_renewal(relay_lab):
    """A victim holds a lease; one MAC then sends 100 DISCOVERs, each with a
    giaddr no network lists as a relay (100 addresses of the served subnet,
    the victim's among them).  None is answered; the victim's renewal
    (INIT-REBOOT REQUEST for its address) is ACKed, not NAKed ("address
    belongs to another client"); a new client still gets an address; the
    daemon counts 100 untrusted relays."""
    lan, nb, agent = relay_lab
    victim = "02:77:00:00:84:01"
    _, ack = dora(agent, victim, opt(55, [1, 3]))
    vaddr = ack.yiaddr
    spoofer = "02:77:00:00:84:66"
    spoofed = [vaddr] + [f"10.77.1.{i}" for i in range(1, 100)]   # none is RELAY
    for g in spoofed:
        xid = random.getrandbits(32)
        agent.send(dhcp_frame(chaddr=spoofer, xid=xid, msg_type=DISCOVER,
                              options=opt(55, [1, 3]), giaddr=g))
    answered = [r for r in agent.collect(1.5) if r.chaddr == spoofer]
    assert not answered, "a spoofed-giaddr DISCOVER was answered:\n" + describe_all(answered)
    xid = random.getrandbits(32)
    got = agent.exchange(dhcp_frame(chaddr=victim, xid=xid, msg_type=REQUEST,
                                    options=opt(50, ip_bytes(vaddr))),
                         timeout=4, want=lambda r: r.xid == xid and r.msg_type in (ACK, 6))
    mine = [r for r in got if r.xid == xid]
    assert mine and mine[0].msg_type == ACK and mine[0].yiaddr == vaddr, (
        f"victim's renewal of {vaddr} not ACKed after the spoofed flood:\n{describe_all(got)}")
    _, ack2 = dora(agent, "02:77:00:00:84:02", opt(55, [1, 3]))
    assert ack2.yiaddr != vaddr
    assert not lease_rows_for(nb.state_dir, mac=spoofer)
    nb.stop()
    assert logged_counters(nb).get("drop.untrusted_relay", 0) == 100
