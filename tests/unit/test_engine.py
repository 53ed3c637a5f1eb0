"""The sans-I/O DHCP engine: RFC 2131 exchanges, proxyDHCP, limits."""
from __future__ import annotations

import json
import socket

import pytest

from netbootd.codec import dhcp
from netbootd.codec import dhcp_options as o
from netbootd.config import BootConfig
from netbootd.model import Host, HostState, LeaseState, Reservation
from netbootd.policy.dhcp_engine import DhcpEngine, EngineSettings, Ingress, max_message, sanitize_hostname
from netbootd.policy.leases import LeaseTable, ip2int, whole_subnet
from netbootd.registry.hosts import Registry
from netbootd.writes import EventWrite, HostWrite, LeaseWrite
from tests.dhcpkit import (HTTP_UEFI, IPXE_BIOS, PXE_BIOS, PXE_UEFI, SERVER, client_packet,
                           mac_bytes, wire)

NOW = 1_700_000_000.0
ING = Ingress("eth1", SERVER, "lab")


# Relay agents the config trusts for the lab network (giaddr of relayed packets).
RELAYS = ("10.77.0.2", "10.77.0.9")


def make_engine(mode="full", reservations=(), router="10.77.0.1", relays=RELAYS,
                **settings) -> DhcpEngine:
    net = whole_subnet("lab", SERVER, 24, router=router, dns=("10.77.0.1",),
                       domain="netboot.lan", reservations=tuple(reservations),
                       relays=frozenset(ip2int(r) for r in relays))
    s = EngineSettings(mode=mode, **settings)
    return DhcpEngine(s, [net], LeaseTable([net]), Registry(), BootConfig())


def roundtrip(engine, pkt, ing=ING, now=NOW):
    """Send the packet through the real codec both ways, like the wire does."""
    out = engine.handle(dhcp.decode(wire(pkt)), ing, now)
    if out is None or out.reply is None:
        return out, None
    return out, dhcp.decode(out.reply)


def dora(engine, i, now=NOW, **kw):
    mac = mac_bytes(i)
    _, offer = roundtrip(engine, client_packet(o.DISCOVER, mac, **kw), now=now)
    out, ack = roundtrip(engine, client_packet(o.REQUEST, mac, requested=offer.yiaddr_ip,
                                                server_id=SERVER, **kw), now=now)
    return offer, out, ack


def test_discover_gets_offer_with_lease_options_from_the_pool():
    e = make_engine()
    out, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1)))
    assert offer.msg_type == o.OFFER and offer.op == o.BOOTREPLY
    assert offer.yiaddr_ip not in ("10.77.0.0", "10.77.0.1", "10.77.0.255")
    assert offer.yiaddr_ip.startswith("10.77.0.")
    assert offer.options[o.OPT_SERVER_ID] == socket.inet_aton(SERVER)
    assert int.from_bytes(offer.options[o.OPT_LEASE_TIME], "big") == 3600
    assert int.from_bytes(offer.options[o.OPT_RENEWAL_T1], "big") == 1800
    assert int.from_bytes(offer.options[o.OPT_REBINDING_T2], "big") == 3150
    assert offer.options[o.OPT_SUBNET_MASK] == socket.inet_aton("255.255.255.0")
    assert not out.must_commit, "an OFFER need not wait for the store"


def test_ack_waits_for_commit_and_carries_the_lease_write():
    e = make_engine()
    offer, out, ack = dora(e, 1)
    assert ack.msg_type == o.ACK and ack.yiaddr == offer.yiaddr
    assert out.must_commit
    leases = [w.lease for w in out.writes if type(w) is LeaseWrite]
    assert len(leases) == 1 and leases[0].state == LeaseState.ACTIVE
    assert leases[0].address == ip2int(offer.yiaddr_ip)
    assert leases[0].ends == NOW + 3600


def test_two_clients_never_get_the_same_address():
    e = make_engine()
    addrs = {dora(e, i)[2].yiaddr_ip for i in range(200)}
    assert len(addrs) == 200


def test_option_55_order_is_honoured():
    e = make_engine()
    prl = bytes([15, 6, 3, 1, 28])
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), prl=prl))
    order = [c for c in offer.options if c in prl]
    assert order == list(prl)
    assert list(offer.options)[:2] == [o.OPT_MESSAGE_TYPE, o.OPT_SERVER_ID]


@pytest.mark.parametrize("size, budget", [(None, 548), (100, 548), (0, 548), (1000, 972),
                                          (65535, 1472)])
def test_option_57_bounds_the_reply(size, budget):
    extra = {o.OPT_MAX_MESSAGE_SIZE: size.to_bytes(2, "big")} if size is not None else {}
    assert max_message(extra) == budget
    e = make_engine()
    # A long domain pushes the reply past small budgets.
    e.networks["lab"] = whole_subnet("lab", SERVER, 24, domain="d" * 250, dns=("10.0.0.1",) * 60)
    e._net_cache.clear()
    out, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), prl=bytes(range(1, 80)),
                                            extra=extra))
    assert len(out.reply) <= budget
    assert offer.msg_type == o.OFFER


def test_reply_destination_follows_rfc2131_4_1():
    e = make_engine()
    out, _ = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), flags=o.FLAG_BROADCAST))
    assert out.dest == ("255.255.255.255", 68) and out.arp is None
    out, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(2)))
    assert out.dest == (offer.yiaddr_ip, 68) and out.arp == (offer.yiaddr_ip, mac_bytes(2))
    out, _ = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(3), giaddr="10.77.0.9"))
    assert out.dest == ("10.77.0.9", 67)


def test_relay_option_82_is_echoed_last_and_untrusted_82_is_not():
    e = make_engine()
    agent = b"\x01\x04port"
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), giaddr="10.77.0.9",
                                          extra={o.OPT_RELAY_AGENT: agent}))
    assert offer.options[o.OPT_RELAY_AGENT] == agent
    assert list(offer.options)[-1] == o.OPT_RELAY_AGENT
    assert offer.giaddr_ip == "10.77.0.9"
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(2),
                                          extra={o.OPT_RELAY_AGENT: agent}))
    assert o.OPT_RELAY_AGENT not in offer.options
    assert e.counters["drop.option82_untrusted"] == 1


def test_packet_from_an_untrusted_relay_is_dropped_counted_and_changes_nothing():
    """A giaddr no network lists as a relay (spoofable by any client) gets
    no answer, creates no host, spends no address."""
    e = make_engine()
    for giaddr in ("192.0.2.1", "10.77.0.50"):
        out, _ = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), giaddr=giaddr))
        assert out is None
    assert e.counters["drop.untrusted_relay"] == 2
    assert e.registry.get(mac_bytes(1).hex(":")) is None
    assert not e.leases.by_addr


def test_request_naming_another_server_frees_our_offer():
    e = make_engine()
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1)))
    out, reply = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), requested=offer.yiaddr_ip,
                                            server_id="10.77.0.250"))
    assert reply is None
    addr = ip2int(offer.yiaddr_ip)
    assert e.leases.holder(addr, NOW) is None
    # another client may now be given that very address
    _, other = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(2), requested=offer.yiaddr_ip))
    assert other.yiaddr == offer.yiaddr


def test_init_reboot_on_wrong_network_is_naked_by_broadcast():
    e = make_engine()
    out, nak = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), requested="192.168.9.9"))
    assert nak.msg_type == o.NAK and nak.yiaddr_ip == "0.0.0.0"
    assert out.dest == ("255.255.255.255", 68)
    assert not out.must_commit


def test_init_reboot_for_another_clients_address_is_naked():
    e = make_engine()
    _, _, ack = dora(e, 1)
    _, nak = roundtrip(e, client_packet(o.REQUEST, mac_bytes(2), requested=ack.yiaddr_ip))
    assert nak.msg_type == o.NAK


def test_init_reboot_with_its_own_lease_is_acked():
    e = make_engine()
    _, _, ack = dora(e, 1)
    _, again = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), requested=ack.yiaddr_ip),
                         now=NOW + 100)
    assert again.msg_type == o.ACK and again.yiaddr == ack.yiaddr


def test_non_authoritative_server_stays_silent_without_a_record():
    e = make_engine(authoritative=False)
    out, reply = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), requested="192.168.9.9"))
    assert reply is None


def test_renewal_is_unicast_to_ciaddr_and_extends_the_lease():
    e = make_engine()
    _, _, ack = dora(e, 1)
    out, renew = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), ciaddr=ack.yiaddr_ip),
                           now=NOW + 1800)
    assert renew.msg_type == o.ACK and out.dest == (ack.yiaddr_ip, 68)
    lease = [w.lease for w in out.writes if type(w) is LeaseWrite][0]
    assert lease.ends == NOW + 1800 + 3600


def test_release_frees_the_address_and_is_stored():
    e = make_engine()
    _, _, ack = dora(e, 1)
    out, reply = roundtrip(e, client_packet(o.RELEASE, mac_bytes(1), ciaddr=ack.yiaddr_ip,
                                            server_id=SERVER))
    assert reply is None
    lease = [w.lease for w in out.writes if type(w) is LeaseWrite][0]
    assert lease.state == LeaseState.RELEASED
    assert e.leases.holder(ip2int(ack.yiaddr_ip), NOW) is None
    # the client gets its old address back on its next DISCOVER
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1)), now=NOW + 5)
    assert offer.yiaddr == ack.yiaddr


def test_decline_puts_the_address_on_probation_not_lost_for_ever():
    e = make_engine(decline_probation=600)
    _, _, ack = dora(e, 1)
    out, _ = roundtrip(e, client_packet(o.DECLINE, mac_bytes(1), requested=ack.yiaddr_ip,
                                        server_id=SERVER))
    lease = [w.lease for w in out.writes if type(w) is LeaseWrite][0]
    assert lease.state == LeaseState.DECLINED and lease.client_key == b""
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), requested=ack.yiaddr_ip))
    assert offer.yiaddr != ack.yiaddr, "declined address offered during probation"
    assert e.leases.free_for("lab", ip2int(ack.yiaddr_ip), b"x", "x", NOW + 601)


def test_inform_gets_options_but_no_lease():
    e = make_engine()
    out, ack = roundtrip(e, client_packet(o.INFORM, mac_bytes(1), ciaddr="10.77.0.50",
                                          prl=b"\x01\x03\x06\x0f"))
    assert ack.msg_type == o.ACK and ack.yiaddr_ip == "0.0.0.0"
    assert o.OPT_LEASE_TIME not in ack.options
    assert ack.options[o.OPT_ROUTER] == socket.inet_aton("10.77.0.1")
    assert out.dest == ("10.77.0.50", 68)
    assert not [w for w in out.writes if type(w) is LeaseWrite] and not out.must_commit
    assert not e.leases.by_addr


def test_client_identifier_is_preferred_over_chaddr():
    e = make_engine()
    cid = {o.OPT_CLIENT_ID: b"\x01host-a"}
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=cid))
    # same client id from another NIC: the same client, same address
    _, offer2 = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(2), extra=cid))
    assert offer.yiaddr == offer2.yiaddr


def test_firmware_and_ipxe_stages_of_one_machine_share_an_address():
    """EDK2 sends no option 61, iPXE sends 01:<mac>: the same client."""
    e = make_engine()
    first, _, _ = dora(e, 1, extra=PXE_UEFI)
    hw_cid = {o.OPT_CLIENT_ID: b"\x01" + mac_bytes(1), **IPXE_BIOS}
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=hw_cid), now=NOW + 5)
    assert offer.yiaddr == first.yiaddr


def test_reservation_gets_its_address_and_others_never_do():
    res = Reservation(mac_bytes(7).hex(":"), ip2int("10.77.0.77"), "node7")
    e = make_engine(reservations=[res])
    offer, _, ack = dora(e, 7)
    assert ack.yiaddr_ip == "10.77.0.77" and ack.options[o.OPT_HOSTNAME] == b"node7"
    _, nak = roundtrip(e, client_packet(o.REQUEST, mac_bytes(8), requested="10.77.0.77"))
    assert nak.msg_type == o.NAK
    addrs = {dora(e, i)[2].yiaddr_ip for i in range(20, 40)}
    assert "10.77.0.77" not in addrs


def test_pool_exhaustion_is_an_event_not_a_crash():
    net = whole_subnet("lab", SERVER, 29)          # 6 usable, one is ours: 5
    e = DhcpEngine(EngineSettings(), [net], LeaseTable([net]), Registry(), BootConfig())
    got = [dora(e, i)[2] for i in range(5)]
    assert all(a.msg_type == o.ACK for a in got)
    out, reply = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(99)))
    assert reply is None
    assert e.counters["drop.pool_exhausted"] == 1
    assert any(type(w) is EventWrite and w.kind == "pool.exhausted" for w in out.writes)


def test_unknown_clients_cannot_take_the_share_kept_for_known_hosts():
    net = whole_subnet("lab", SERVER, 28)          # 13 addresses in the pool
    reg = Registry()
    e = DhcpEngine(EngineSettings(), [net], LeaseTable([net], unknown_share=0.5), reg,
                   BootConfig())
    offers = [roundtrip(e, client_packet(o.DISCOVER, mac_bytes(i)))[1] for i in range(13)]
    assert sum(1 for x in offers if x is not None) == 6      # int(13 * 0.5)
    assert e.counters["drop.pool_exhausted"] == 7
    reg.hosts[mac_bytes(500).hex(":")] = Host(mac_bytes(500).hex(":"), HostState.REGISTERED)
    _, _, ack = dora(e, 500)
    assert ack.msg_type == o.ACK, "a known host must still get an address"


def test_per_mac_rate_limit_drops_and_counts_a_flood():
    e = make_engine(per_mac_pps=5)
    answered = sum(1 for _ in range(50)
                   if roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1)))[1] is not None)
    assert answered == 10                          # burst = 2 x rate
    assert e.counters["drop.rate_mac"] == 40
    # a second later the client is served again
    assert roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1)), now=NOW + 1)[1] is not None


def test_new_client_rate_limit_per_interface():
    e = make_engine(new_clients_per_interface_pps=10)
    answered = sum(1 for i in range(100)
                   if roundtrip(e, client_packet(o.DISCOVER, mac_bytes(i)))[1] is not None)
    assert answered == 20
    assert e.counters["drop.rate_new_clients"] == 80


def test_first_discover_is_only_seen_and_the_ack_registers_the_host_with_uuid():
    """A DISCOVER alone stores no host (a random-MAC flood must not grow the
    registry); the ACKed lease makes it a host, stored with the ACK."""
    e = make_engine()
    out, _ = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=PXE_UEFI))
    host = e.registry.get(mac_bytes(1).hex(":"))
    assert host.state.value == "discovered" and host.arch == 7 and host.interface == "eth1"
    assert host.uuid == "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010"
    assert not e.registry.hosts and not [w for w in out.writes if type(w) is HostWrite]
    assert "host.discovered" not in [w.kind for w in out.writes if type(w) is EventWrite]
    _, out, _ = dora(e, 1, extra=PXE_UEFI)
    events = [w for w in out.writes if type(w) is EventWrite]
    # Its two offers were held, not stored, and now open its timeline.
    assert [ev.kind for ev in events] == ["dhcp.offer", "dhcp.offer", "host.discovered",
                                        "dhcp.ack"]
    assert HostWrite(host) in out.writes
    assert json.loads(events[2].detail)["uuid"] == host.uuid
    assert e.registry.hosts[host.mac] is host and out.must_commit


def test_offers_to_macs_that_never_take_a_lease_store_nothing():
    """20,000 random-MAC DISCOVERs (issue 16: they left 20,101 events): each is
    answered, but no write is made; memory holds at most seen_max of them."""
    e = make_engine(new_clients_per_interface_pps=1e9)
    e.registry.seen_max = 500
    writes, offers = [], 0
    for i in range(20000):
        mac = (0x020000000000 + i).to_bytes(6, "big")
        out, offer = roundtrip(e, client_packet(o.DISCOVER, mac), now=NOW + i * 1e-3)
        offers += offer is not None
        writes += [w for w in (out.writes if out else ())
                   if not (type(w) is EventWrite and w.kind == "pool.exhausted")]
    assert offers > 200 and writes == []
    assert len(e.registry.seen) == 500 and len(e.registry._pending) <= 500


@pytest.mark.parametrize("extra, file, vendor", [
    (PXE_BIOS, b"undionly.kpxe", None),
    (PXE_UEFI, b"ipxe.efi", None),
    (IPXE_BIOS, b"http://10.77.0.1:8080/boot/52-54-00-00-00-01.ipxe", None),
])
def test_full_mode_offer_carries_the_boot_decision(extra, file, vendor):
    """A plain offer with the boot file and no option 60: EDK2 takes
    "PXEClient" without option 43 for a BINL offer and goes to port 4011."""
    e = make_engine()
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=extra))
    assert offer.file == file and offer.options[o.OPT_BOOTFILE] == file
    assert offer.options.get(o.OPT_VENDOR_CLASS) == vendor
    if not file.startswith(b"http"):
        assert offer.siaddr_ip == SERVER


def test_uefi_http_boot_gets_a_url_and_httpclient_echo():
    e = make_engine()
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=HTTP_UEFI))
    assert offer.options[o.OPT_VENDOR_CLASS] == b"HTTPClient"
    assert offer.options[o.OPT_BOOTFILE] == b"http://10.77.0.1:8080/files/ipxe.efi"


def test_proxy_mode_offers_boot_info_without_an_address():
    e = make_engine(mode="proxy")
    out, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=PXE_UEFI))
    assert offer.yiaddr_ip == "0.0.0.0" and offer.file == b"ipxe.efi"
    assert offer.options[o.OPT_VENDOR_CLASS] == b"PXEClient"
    assert offer.options[o.OPT_VENDOR_SPECIFIC] == bytes((6, 1, 8, 255))
    assert offer.options[o.OPT_CLIENT_UUID] == PXE_UEFI[o.OPT_CLIENT_UUID]
    assert o.OPT_LEASE_TIME not in offer.options
    assert out.dest == ("255.255.255.255", 68)
    assert not [w for w in out.writes if type(w) is LeaseWrite] and not e.leases.by_addr


def test_proxy_mode_ignores_non_pxe_clients():
    e = make_engine(mode="proxy")
    out, reply = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1)))
    assert out is None and reply is None
    assert e.counters["ignored.proxy_not_pxe"] == 1
    assert e.registry.get(mac_bytes(1).hex(":")) is None


def test_proxy_port_4011_request_is_answered_to_its_source():
    e = make_engine(mode="proxy")
    ing = Ingress("eth1", SERVER, None, o.PXE_PORT, ("10.77.0.66", 4011))
    out, ack = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), ciaddr="10.77.0.66",
                                          extra=PXE_UEFI), ing=ing)
    assert ack.msg_type == o.ACK and ack.file == b"ipxe.efi" and ack.yiaddr_ip == "0.0.0.0"
    assert out.dest == ("10.77.0.66", 4011)


def test_port_4011_is_answered_in_full_mode_too():
    e = make_engine(mode="full")
    ing = Ingress("eth1", SERVER, "lab", o.PXE_PORT, ("10.77.0.66", 4011))
    out, ack = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), ciaddr="10.77.0.66",
                                          extra=PXE_UEFI), ing=ing)
    assert ack.msg_type == o.ACK and ack.file == b"ipxe.efi"
    assert ack.options[o.OPT_VENDOR_CLASS] == b"PXEClient" and out.dest == ("10.77.0.66", 4011)
    assert not e.leases.by_addr


def test_unknown_arch_becomes_an_event_not_a_crash():
    e = make_engine()
    extra = {o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00200:UNDI:003000", o.OPT_CLIENT_ARCH: b"\x00\xc8"}
    out, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=extra))
    assert offer.msg_type == o.OFFER and offer.file == b""
    ev = [w for w in out.writes if type(w) is EventWrite and w.kind == "boot.unsupported"]
    assert ev and "unknown-200" in ev[0].detail


def test_arm64_without_a_binary_is_an_event_and_with_one_gets_it():
    extra = {o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00011:UNDI:003000", o.OPT_CLIENT_ARCH: b"\x00\x0b"}
    e = make_engine()
    out, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1), extra=extra))
    assert offer.file == b"" and "arm64" in json.dumps([w.detail for w in out.writes if type(w) is EventWrite])
    e.boot = BootConfig(uefi_arm64="arm64/ipxe.efi")
    _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(2), extra=extra))
    assert offer.file == b"arm64/ipxe.efi"


@pytest.mark.parametrize("raw, name", [
    (b"node-01", "node-01"), (b"Node_01.Example.COM", "node-01.example.com"),
    (b"evil\nname\0tail", "evil-name"), (b"x" * 300, "x" * 63), (b"---", None), (b"", None),
    (b"a..b", "a.b"), (b"$(reboot)", "reboot"),
])
def test_hostnames_are_sanitized(raw, name):
    assert sanitize_hostname(raw) == name


def test_bootp_and_replies_are_dropped_and_counted():
    e = make_engine()
    p = client_packet(o.DISCOVER, mac_bytes(1))
    del p.options[o.OPT_MESSAGE_TYPE]
    assert roundtrip(e, p)[0] is None
    q = client_packet(o.DISCOVER, mac_bytes(1))
    q.op = o.BOOTREPLY
    assert roundtrip(e, q)[0] is None
    assert e.counters["drop.bootp_or_no_type"] == 1 and e.counters["drop.not_request"] == 1


def test_a_relays_own_address_is_never_handed_out():
    e = make_engine()
    addrs = set()
    for i in range(30):
        _, offer = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(i), giaddr="10.77.0.2"))
        addrs.add(offer.yiaddr_ip)
    assert "10.77.0.2" not in addrs and len(addrs) == 30
    _, nak = roundtrip(e, client_packet(o.REQUEST, mac_bytes(99), giaddr="10.77.0.2",
                                        requested="10.77.0.2"))
    assert nak.msg_type == o.NAK


def test_spoofed_giaddr_floods_take_no_address_and_nak_no_renewal():
    """100 DISCOVERs from one MAC, each with a different giaddr inside the
    served subnet (the victim's among them), none a configured relay: the
    pool stays whole for everyone and the victim's renewal is ACKed."""
    e = make_engine()
    _, _, ack = dora(e, 1)
    victim = ack.yiaddr_ip
    base = ip2int("10.77.0.10")
    for i in range(100):
        g = socket.inet_ntoa((base + i).to_bytes(4, "big"))
        out, _ = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(66), xid=i, giaddr=g))
        assert out is None
    out, _ = roundtrip(e, client_packet(o.DISCOVER, mac_bytes(66), giaddr=victim))
    assert out is None
    assert e.counters["drop.untrusted_relay"] == 101
    held, size = e.leases.usage("lab", NOW + 1)
    assert held == 1, "only the victim's lease is held"
    out, renew = roundtrip(e, client_packet(o.REQUEST, mac_bytes(1), ciaddr=victim),
                           now=NOW + 1800)
    assert renew.msg_type == o.ACK and renew.yiaddr_ip == victim
    # Every other address of the pool is still offered to new clients.
    offered = {roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1000 + i)), now=NOW + 1800)[1]
               .yiaddr_ip for i in range(size - 3)}   # less the victim and the 2 relays
    assert len(offered) == size - 3 and victim not in offered


@pytest.mark.parametrize("extra, rejected", [
    ({o.OPT_VENDOR_CLASS: b"PXEClient:Arch:99999999999999999999:UNDI:003000"}, "arch"),
    ({o.OPT_VENDOR_CLASS: b"PXEClient:Arch:65536:UNDI:003000"}, "arch"),
    ({o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00007:UNDI:99999999999999"}, "undi"),
    ({o.OPT_CLIENT_ARCH: b"\x07"}, "arch"),
    ({o.OPT_CLIENT_UUID: b"\x00" * 40}, "uuid"),
    ({o.OPT_CLIENT_ID: b"\x01" + b"x" * 600}, "client_id"),
])
def test_out_of_range_wire_values_are_absent_counted_and_the_client_still_served(
        extra, rejected):
    """A value no RFC field can hold (arch > 16 bits, a 20-digit UNDI, a
    600-byte client id...) is treated as absent and counted; the client is
    answered as if it had not sent it, and nothing unstorable reaches a write."""
    e = make_engine()
    offer, out, ack = dora(e, 1, extra=extra)
    assert offer.msg_type == o.OFFER and ack.msg_type == o.ACK
    assert e.counters["bad_value." + rejected] == 2
    for w in out.writes:
        if type(w) is HostWrite:
            assert w.host.arch is None or 0 <= w.host.arch <= 0xFFFF
        if type(w) is LeaseWrite:
            assert len(w.lease.client_key) <= 256
    h = e.registry.get(mac_bytes(1).hex(":"))
    assert h is None or h.arch is None or h.arch <= 0xFFFF


# -- the reply template cache against the general encoder ---------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from netbootd.policy import pxe  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(rtype=st.sampled_from([o.OFFER, o.ACK]),
       prl=st.one_of(st.none(), st.binary(max_size=40), st.lists(st.sampled_from(
           [1, 3, 6, 12, 15, 28, 43, 51, 54, 58, 59, 60, 66, 67, 82, 97, 0, 255]),
           max_size=12).map(bytes)),
       uuid=st.one_of(st.none(), st.binary(max_size=17)),
       relay=st.one_of(st.none(), st.binary(max_size=300)),
       hostname=st.one_of(st.none(), st.sampled_from(["node1", "a" * 200])),
       filename=st.one_of(st.none(), st.sampled_from(["undionly.kpxe", "x" * 200])),
       proxy=st.booleans(), lease_time=st.sampled_from([None, 3600]),
       maxsize=st.one_of(st.none(), st.integers(0, 1500)),
       repeat=st.booleans())
def test_cached_reply_bytes_equal_the_general_encoder(rtype, prl, uuid, relay, hostname,
                                                       filename, proxy, lease_time, maxsize,
                                                       repeat):
    """_reply builds options once per shape and slots the client's UUID and
    relay agent option in; the bytes must be exactly what encode() writes
    for the full option dict, including when they overflow into file/sname."""
    e = make_engine()
    net = e.networks["lab"]
    extra = {o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001"}
    if uuid is not None:
        extra[o.OPT_CLIENT_UUID] = uuid
    if relay is not None:
        extra[o.OPT_RELAY_AGENT] = relay
    if maxsize is not None:
        extra[o.OPT_MAX_MESSAGE_SIZE] = maxsize.to_bytes(2, "big")
    pkt = client_packet(o.DISCOVER, mac_bytes(3), prl=prl, extra=extra, giaddr="10.77.0.9")
    client = pxe.classify(pkt.options)
    boot = pxe.BootAnswer(filename, "10.77.0.1" if filename else None, None)
    args = (pkt, rtype, socket.inet_aton("10.77.0.50"), ING, None if proxy else net, client,
            lease_time, hostname, boot, proxy)
    got = e._reply(*args)
    if repeat:                                   # the second call comes from the cache
        got = e._reply(*args)
    echo = pkt.options.get(o.OPT_CLIENT_UUID) if proxy or filename else None
    opts = e._reply_options(rtype, ING, None if proxy else net, client, lease_time, hostname,
                            boot, proxy, echo, pkt.options)
    fn = filename.encode() if filename else b""
    ref = dhcp.Packet(o.BOOTREPLY, pkt.htype, pkt.hlen, 0, pkt.xid, 0, pkt.flags, pkt.ciaddr,
                      socket.inet_aton("10.77.0.50"),
                      socket.inet_aton("10.77.0.1") if filename else b"\0" * 4, pkt.giaddr,
                      pkt.chaddr, b"", fn if len(fn) < 128 else b"", opts)
    assert got == dhcp.encode(ref, max_message(pkt.options))


# -- an ACK that only extends a binding (Outcome.renews; net/dhcp.py decides) --

def _renew(e, i, addr, now, hostname=None):
    extra = {o.OPT_HOSTNAME: hostname.encode()} if hostname else None
    return roundtrip(e, client_packet(o.REQUEST, mac_bytes(i), requested=addr,
                                      server_id=SERVER, extra=extra), now=now)


def _lease(out):
    return [w.lease for w in out.writes if type(w) is LeaseWrite][0]


def test_a_new_binding_is_never_a_renewal_and_is_not_yet_numbered():
    e = make_engine()
    _, out, ack = dora(e, 1)
    assert ack.msg_type == o.ACK and out.must_commit and out.renews is None
    assert out.lease is _lease(out) and out.lease.seq is None, "bound, not yet submitted"


def test_a_returning_client_renews_the_binding_it_holds():
    e = make_engine()
    _, first, ack = dora(e, 1)
    out, again = _renew(e, 1, ack.yiaddr_ip, NOW + 60)
    assert again.msg_type == o.ACK and out.must_commit
    assert out.renews is first.lease, "the binding it extends"
    assert _lease(out).ends == NOW + 60 + 3600, "the extension is still written"


def test_a_renewal_is_early_only_while_the_held_binding_reaches_past_t2():
    e = make_engine()
    _, _, ack = dora(e, 1)
    out, again = _renew(e, 1, ack.yiaddr_ip, NOW + 450)       # 3150 s left = T2: covered
    assert again.msg_type == o.ACK and out.renews is not None
    held = out.lease
    out, again = _renew(e, 1, ack.yiaddr_ip, NOW + 450 + 451)  # 3149 s left of 3600
    assert again.msg_type == o.ACK and out.renews is None
    assert held.ends - (NOW + 901) == 3149
    out, again = _renew(e, 1, ack.yiaddr_ip, NOW + 901 + 1800)  # a T1 renewal: waits
    assert again.msg_type == o.ACK and out.renews is None


def test_a_changed_hostname_address_or_mac_is_not_a_renewal():
    e = make_engine()
    _, _, ack = dora(e, 1)
    out, again = _renew(e, 1, ack.yiaddr_ip, NOW + 1, hostname="newname")
    assert again.msg_type == o.ACK and out.renews is None     # a new name for DNS
    out, again = _renew(e, 1, ack.yiaddr_ip, NOW + 2, hostname="newname")
    assert out.renews is not None                             # the name is held now
    free = "10.77.0.200"
    out, moved = _renew(e, 1, free, NOW + 3)
    assert moved.msg_type == o.ACK and moved.yiaddr_ip == free and out.renews is None
    # the same client identifier (option 61) from another NIC: the row's MAC changes
    cid = {o.OPT_CLIENT_ID: b"\x00stable-id"}
    out, a1 = roundtrip(e, client_packet(o.REQUEST, mac_bytes(7), requested="10.77.0.201",
                                         server_id=SERVER, extra=cid), now=NOW + 4)
    assert a1.msg_type == o.ACK
    out, a2 = roundtrip(e, client_packet(o.REQUEST, mac_bytes(8), requested="10.77.0.201",
                                         server_id=SERVER, extra=cid), now=NOW + 5)
    assert a2.msg_type == o.ACK and out.lease.mac == "52:54:00:00:00:08"
    assert out.renews is None


def test_a_renewal_that_registers_its_host_again_is_not_early():
    e = make_engine()
    _, _, ack = dora(e, 1)
    mac = "52:54:00:00:00:01"
    del e.registry.hosts[mac]                   # the host deleted, its lease kept
    roundtrip(e, client_packet(o.DISCOVER, mac_bytes(1)), now=NOW + 10)   # seen again
    out, again = _renew(e, 1, ack.yiaddr_ip, NOW + 11)
    assert again.msg_type == o.ACK
    assert any(type(w) is HostWrite for w in out.writes), "the ACK re-creates the host"
    assert out.renews is None
