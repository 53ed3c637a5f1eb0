"""codec/icmp6.py against scapy as the oracle: what we encode scapy reads
field by field (checksum included), what scapy builds we decode."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from netbootd.codec import icmp6
from netbootd.codec.errors import DecodeError

scapy_inet6 = pytest.importorskip("scapy.layers.inet6")
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6NDOptMTU, ICMPv6NDOptPrefixInfo, ICMPv6NDOptSrcLLAddr, ICMPv6ND_RA, ICMPv6ND_RS, IPv6)

SRC, DST = "fe80::1", "ff02::1"
MAC = bytes.fromhex("020000aabbcc")


def scapy_view(message: bytes, src=SRC, dst=DST):
    """Our message as scapy reads it inside an IPv6 packet (hop limit 255)."""
    pkt = IPv6(src=src, dst=dst, hlim=255, nh=58) / message
    return IPv6(bytes(pkt))


def test_quench_is_what_scapy_reads_as_lifetime_0_no_flags_no_prefix():
    msg = icmp6.with_checksum(SRC, DST, icmp6.encode_ra(icmp6.quench(MAC)))
    pkt = scapy_view(msg)
    ra = pkt[ICMPv6ND_RA]
    assert (ra.type, ra.code, ra.routerlifetime, ra.M, ra.O, ra.chlim) == (134, 0, 0, 0, 0, 0)
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == "02:00:00:aa:bb:cc"
    assert ICMPv6NDOptPrefixInfo not in pkt
    # the checksum scapy computes over the same bytes is ours
    ours = ra.cksum
    del pkt[ICMPv6ND_RA].cksum
    assert IPv6(bytes(pkt))[ICMPv6ND_RA].cksum == ours


def test_full_ra_matches_scapy_byte_for_byte():
    ra = icmp6.RouterAdvertisement(cur_hop_limit=64, flags=icmp6.FLAG_MANAGED | icmp6.FLAG_OTHER,
                                   router_lifetime=1800, reachable_time=30000, retrans_timer=1000,
                                   source_lladdr=MAC, mtu=1500,
                                   prefixes=(icmp6.Prefix("2001:db8:1::", 64, True, False,
                                                          86400, 3600),))
    theirs = bytes(ICMPv6ND_RA(chlim=64, M=1, O=1, routerlifetime=1800, reachabletime=30000,
                               retranstimer=1000, prf=0)
                   / ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:aa:bb:cc")
                   / ICMPv6NDOptMTU(mtu=1500)
                   / ICMPv6NDOptPrefixInfo(prefix="2001:db8:1::", prefixlen=64, L=1, A=0,
                                           validlifetime=86400, preferredlifetime=3600))
    ours = icmp6.encode_ra(ra)
    # scapy leaves the checksum to the IPv6 layer: compare with it zeroed
    assert ours == theirs[:2] + b"\0\0" + theirs[4:]
    assert icmp6.decode_ra(ours) == ra


def test_scapy_router_solicitation_decodes():
    pkt = IPv6(src="fe80::5054:ff:fe77:10", dst=icmp6.ALL_ROUTERS) / ICMPv6ND_RS() \
        / ICMPv6NDOptSrcLLAddr(lladdr="52:54:00:77:00:10")
    body = bytes(IPv6(bytes(pkt)).payload)
    rs = icmp6.decode_rs(body)
    assert rs.source_lladdr == bytes.fromhex("525400770010")
    assert icmp6.decode_rs(bytes(ICMPv6ND_RS())) == icmp6.RouterSolicitation(None)
    assert icmp6.encode_rs(MAC) == bytes(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(
        lladdr="02:00:00:aa:bb:cc"))[:2] + b"\0\0" + icmp6.encode_rs(MAC)[4:]


@settings(max_examples=200, deadline=None)
@given(hop=st.integers(0, 255), m=st.booleans(), o=st.booleans(),
       life=st.integers(0, 65535), reach=st.integers(0, 2**32 - 1),
       plen=st.integers(0, 128), valid=st.integers(0, 2**32 - 1))
def test_roundtrip_and_scapy_agree(hop, m, o, life, reach, plen, valid):
    ra = icmp6.RouterAdvertisement(hop, (icmp6.FLAG_MANAGED if m else 0)
                                   | (icmp6.FLAG_OTHER if o else 0), life, reach, 0, MAC, None,
                                   (icmp6.Prefix("2001:db8::", plen, True, True, valid, 0),))
    msg = icmp6.with_checksum(SRC, DST, icmp6.encode_ra(ra))
    assert icmp6.decode_ra(msg) == ra
    pkt = scapy_view(msg)[ICMPv6ND_RA]
    assert (pkt.chlim, pkt.M, pkt.O, pkt.routerlifetime, pkt.reachabletime) == \
        (hop, int(m), int(o), life, reach)
    assert pkt[ICMPv6NDOptPrefixInfo].validlifetime == valid


@pytest.mark.parametrize("buf,reason", [
    (b"", "short"),
    (b"\x85\x00\x00\x00", "short"),
    (b"\x86\x00\x00\x00\x00\x00\x00\x00", "bad_type"),
    (b"\x85\x01\x00\x00\x00\x00\x00\x00", "bad_code"),
    (b"\x85\x00\x00\x00\x00\x00\x00\x00\x01\x00" + b"\0" * 6, "option_zero_length"),
    (b"\x85\x00\x00\x00\x00\x00\x00\x00\x01\x02" + b"\0" * 6, "option_overrun"),
    (b"\x85\x00\x00\x00\x00\x00\x00\x00\x01", "option_truncated"),
    (b"\x85\x00\x00\x00\x00\x00\x00\x00" + b"\x01\x01" + b"\0" * 6 + b"\x01\x01" * 0
     + (b"\x0e\x01" + b"\0" * 6) * 70, "too_many_options"),
])
def test_bad_solicitations_are_named(buf, reason):
    with pytest.raises(DecodeError) as e:
        icmp6.decode_rs(buf)
    assert e.value.reason == reason


def test_bad_prefix_option_and_out_of_range_values():
    bad = icmp6.encode_ra(icmp6.RouterAdvertisement()) + bytes([3, 1]) + b"\0" * 6
    with pytest.raises(DecodeError) as e:
        icmp6.decode_ra(bad)
    assert e.value.reason == "bad_prefix_option"
    with pytest.raises(ValueError, match="router_lifetime"):
        icmp6.encode_ra(icmp6.RouterAdvertisement(router_lifetime=70000))


@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_anything_but_decode_error(buf):
    for fn in (icmp6.decode_rs, icmp6.decode_ra):
        try:
            fn(buf)
        except DecodeError:
            pass
