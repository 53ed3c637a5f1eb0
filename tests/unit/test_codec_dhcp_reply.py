"""codec.dhcp.encode_reply (the DHCP server's hot-path encoder) against the
general encoder: for any request and any options that fit, the same bytes as
encode() of the reply Packet; None exactly when they do not fit."""
from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netbootd.codec import dhcp

FAST = settings(max_examples=300, deadline=timedelta(milliseconds=500),
                suppress_health_check=[HealthCheck.too_slow])
ip = st.binary(min_size=4, max_size=4)
options = st.dictionaries(st.integers(1, 254).filter(lambda c: c not in (52,)),
                          st.binary(min_size=0, max_size=120), max_size=12)


@FAST
@given(htype=st.integers(0, 255), chaddr=st.binary(min_size=0, max_size=16),
       xid=st.integers(0, 2**32 - 1), flags=st.integers(0, 0xFFFF), ciaddr=ip, giaddr=ip,
       yiaddr=ip, siaddr=ip, file=st.binary(max_size=127).filter(lambda b: b"\0" not in b),
       opts=options, budget=st.sampled_from([548, 600, 1000, 1472]))
def test_encode_reply_is_encode_of_the_reply_packet(htype, chaddr, xid, flags, ciaddr, giaddr,
                                                     yiaddr, siaddr, file, opts, budget):
    req = dhcp.Packet(1, htype, len(chaddr), 3, xid, 7, flags, ciaddr, b"\1\2\3\4", b"\5\6\7\10",
                      giaddr, chaddr, b"req-sname", b"req-file", {53: b"\x03"})
    reply = dhcp.Packet(2, htype, len(chaddr), 0, xid, 0, flags, ciaddr, yiaddr, siaddr, giaddr,
                        chaddr, b"", file, dict(opts))
    tlvs = b"".join(dhcp.option_tlv(c, v) for c, v in opts.items())
    got = dhcp.encode_reply(req, yiaddr, siaddr, file, tlvs, budget)
    fits = len(tlvs) <= budget - 240 - 1
    if not fits:
        assert got is None
        return
    assert got == dhcp.encode(reply, budget)
    assert got == dhcp.encode_prebuilt(reply, tlvs, budget)
    back = dhcp.decode(got)
    assert (back.op, back.xid, back.flags, back.yiaddr, back.siaddr, back.file) == \
        (2, xid, flags, yiaddr, siaddr, file)
