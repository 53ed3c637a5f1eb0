"""Unit tests for the pure DHCPv4 codec (netbootd.codec.dhcp).

Messages under test are built here by hand with ``struct`` (not with
``dhcp.encode``) so that decode tests do not depend on the encoder.
Differential tests against scapy live in test_codec_dhcp_diff.py.
"""
from __future__ import annotations

import struct
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from netbootd.codec import dhcp
from netbootd.codec.dhcp_options import (
    FIXED_LEN, MAGIC_COOKIE, MIN_REPLY_LEN, OPTIONS_START,
)

HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
SNAME_AT, FILE_AT = 44, 108            # RFC 2131 fig. 1 offsets
MAC = bytes.fromhex("525400770010")
MAX_HARD = 548                         # RFC 2131 minimum every client accepts

# Hypothesis budgets: keep the whole module well under 20 s.
FAST = settings(max_examples=300, deadline=timedelta(milliseconds=500),
                suppress_health_check=[HealthCheck.too_slow])


def raw_msg(options: bytes = b"\x35\x01\x01\xff", *, op=1, htype=1, hlen=6, hops=0,
            xid=0x12345678, secs=0, flags=0, ciaddr=b"\0" * 4, yiaddr=b"\0" * 4,
            siaddr=b"\0" * 4, giaddr=b"\0" * 4, chaddr=MAC, sname=b"", file=b"",
            cookie=MAGIC_COOKIE) -> bytes:
    """A DHCP message assembled field by field (independent of dhcp.encode)."""
    return HEADER.pack(op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr,
                       giaddr, chaddr, sname, file) + cookie + options


def tlv(code: int, value: bytes) -> bytes:
    assert len(value) <= 255
    return bytes((code, len(value))) + value


def walk_tlvs(region: bytes) -> list[tuple[int, bytes]]:
    """Reference TLV walker for asserting on encoder output: (code, value)
    pairs up to END, PADs skipped."""
    out, i = [], 0
    while i < len(region):
        c = region[i]
        if c == 0:
            i += 1
            continue
        if c == 255:
            return out
        ln = region[i + 1]
        out.append((c, region[i + 2:i + 2 + ln]))
        i += 2 + ln
    return out


# ---------------------------------------------------------------------------
# decode: well-formed messages
# ---------------------------------------------------------------------------

def test_decode_reads_every_header_field():
    data = raw_msg(op=2, htype=1, hlen=6, hops=3, xid=0xDEADBEEF, secs=7, flags=0x8000,
                   ciaddr=bytes([10, 0, 0, 1]), yiaddr=bytes([10, 0, 0, 2]),
                   siaddr=bytes([10, 0, 0, 3]), giaddr=bytes([10, 0, 0, 4]),
                   sname=b"srv", file=b"boot.efi")
    p = dhcp.decode(data)
    assert (p.op, p.htype, p.hlen, p.hops, p.xid, p.secs, p.flags) == \
        (2, 1, 6, 3, 0xDEADBEEF, 7, 0x8000)
    assert (p.ciaddr_ip, p.yiaddr_ip, p.siaddr_ip, p.giaddr_ip) == \
        ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
    assert p.ciaddr == bytes([10, 0, 0, 1])
    assert p.chaddr == MAC and p.mac == "52:54:00:77:00:10"
    assert p.sname == b"srv" and p.file == b"boot.efi"
    assert p.msg_type == 1
    assert p.options == {53: b"\x01"}


def test_decode_chaddr_is_cut_to_hlen():
    p = dhcp.decode(raw_msg(hlen=4, chaddr=bytes(range(1, 17))))
    assert p.chaddr == b"\x01\x02\x03\x04"
    assert dhcp.decode(raw_msg(hlen=16, chaddr=bytes(range(1, 17)))).chaddr == bytes(range(1, 17))
    assert dhcp.decode(raw_msg(hlen=0)).chaddr == b""


def test_decode_sname_and_file_are_cut_at_first_nul():
    p = dhcp.decode(raw_msg(sname=b"abc\0junk", file=b"x.efi\0\0garbage"))
    assert p.sname == b"abc"
    assert p.file == b"x.efi"


def test_decode_keeps_order_of_first_appearance_and_skips_pads():
    opts = b"\0\0" + tlv(53, b"\x03") + b"\0" + tlv(61, b"\x01" + MAC) + tlv(12, b"host") \
        + tlv(55, b"\x01\x03") + b"\xff"
    p = dhcp.decode(raw_msg(opts))
    assert list(p.options) == [53, 61, 12, 55]
    assert p.options[61] == b"\x01" + MAC and p.options[55] == b"\x01\x03"


def test_decode_ignores_bytes_after_end():
    # garbage after END (even a truncated option) is not looked at
    p = dhcp.decode(raw_msg(tlv(53, b"\x05") + b"\xff" + b"\x0c\xf0abc"))
    assert p.options == {53: b"\x05"}


def test_decode_accepts_zero_length_option():
    p = dhcp.decode(raw_msg(tlv(80, b"") + tlv(53, b"\x03") + b"\xff"))   # rapid commit
    assert p.options == {80: b"", 53: b"\x03"}


def test_decode_accepts_minimal_message_of_241_bytes():
    p = dhcp.decode(raw_msg(b"\xff"))
    assert len(raw_msg(b"\xff")) == OPTIONS_START + 1
    assert p.options == {} and p.msg_type is None


@pytest.mark.parametrize("value", [b"", b"\x01\x02"])
def test_msg_type_is_none_unless_option_53_is_one_byte(value):
    assert dhcp.decode(raw_msg(tlv(53, value) + b"\xff")).msg_type is None


def test_packet_defaults_encode_and_decode():
    p = dhcp.decode(dhcp.encode(dhcp.Packet(chaddr=MAC, options={53: b"\x01"})))
    assert (p.op, p.htype, p.hlen, p.xid, p.flags) == (1, 1, 6, 0, 0)
    assert p.yiaddr_ip == "0.0.0.0" and p.mac == "52:54:00:77:00:10" and p.msg_type == 1


# ---------------------------------------------------------------------------
# RFC 3396: long options
# ---------------------------------------------------------------------------

def test_rfc3396_two_instances_are_concatenated_in_order():
    opts = tlv(53, b"\x01") + tlv(43, b"first-") + tlv(60, b"PXEClient") + tlv(43, b"second") \
        + b"\xff"
    p = dhcp.decode(raw_msg(opts))
    assert p.options[43] == b"first-second"
    # the concatenated option sits where its first instance was
    assert list(p.options) == [53, 43, 60]


def test_rfc3396_encode_splits_600_byte_value_into_255_255_90():
    value = bytes(i % 251 for i in range(600))
    out = dhcp.encode(dhcp.Packet(op=2, chaddr=MAC, options={53: b"\x02", 43: value}),
                      max_size=1500)
    region = out[OPTIONS_START:]
    assert region[:3] == b"\x35\x01\x02"
    assert region[3:5] == bytes((43, 255)) and region[5:260] == value[:255]
    assert region[260:262] == bytes((43, 255)) and region[262:517] == value[255:510]
    assert region[517:519] == bytes((43, 90)) and region[519:609] == value[510:]
    assert region[609] == 0xFF
    assert dhcp.decode(out).options == {53: b"\x02", 43: value}


@pytest.mark.parametrize("n,pieces", [(0, [0]), (1, [1]), (255, [255]), (256, [255, 1]),
                                      (510, [255, 255]), (511, [255, 255, 1])])
def test_rfc3396_encode_split_boundaries(n, pieces):
    value = b"\xab" * n
    out = dhcp.encode(dhcp.Packet(options={77: value}), max_size=1500)
    found = walk_tlvs(out[OPTIONS_START:])
    assert [(c, len(v)) for c, v in found] == [(77, k) for k in pieces]
    assert dhcp.decode(out).options[77] == value


# ---------------------------------------------------------------------------
# encode: size and padding
# ---------------------------------------------------------------------------

def test_encode_pads_short_reply_to_300_bytes_after_end():
    out = dhcp.encode(dhcp.Packet(op=2, chaddr=MAC, options={53: b"\x02"}))
    assert len(out) == MIN_REPLY_LEN
    assert out[FIXED_LEN:OPTIONS_START] == MAGIC_COOKIE
    assert out[OPTIONS_START:OPTIONS_START + 4] == b"\x35\x01\x02\xff"
    assert out[OPTIONS_START + 4:] == b"\0" * (MIN_REPLY_LEN - OPTIONS_START - 4)


def test_encode_header_layout_matches_rfc2131():
    p = dhcp.Packet(op=2, htype=1, hlen=6, hops=1, xid=0x01020304, secs=9, flags=0x8000,
                    ciaddr=b"\x01\x01\x01\x01", yiaddr=b"\x02\x02\x02\x02",
                    siaddr=b"\x03\x03\x03\x03", giaddr=b"\x04\x04\x04\x04", chaddr=MAC,
                    sname=b"server", file=b"ipxe.efi", options={53: b"\x02"})
    out = dhcp.encode(p)
    assert HEADER.unpack_from(out) == (
        2, 1, 6, 1, 0x01020304, 9, 0x8000, b"\x01" * 4, b"\x02" * 4, b"\x03" * 4, b"\x04" * 4,
        MAC + b"\0" * 10, b"server" + b"\0" * 58, b"ipxe.efi" + b"\0" * 120)


@pytest.mark.parametrize("max_size", [0, 300, 547])
def test_encode_budget_below_548_is_raised_to_548(max_size):
    # 3 + 202 + 202 = 407 bytes of TLVs: more than 548 allows, so the budget matters
    pkt = dhcp.Packet(op=2, chaddr=MAC, file=b"f", sname=b"s",
                      options={53: b"\x02", 43: b"v" * 200, 12: b"h" * 200})
    out = dhcp.encode(pkt, max_size=max_size)
    assert out == dhcp.encode(pkt, max_size=548)
    assert len(out) <= MAX_HARD
    assert list(dhcp.decode(out).options) == [53, 43]


def test_encode_uses_exactly_the_budget_when_options_fill_it():
    # 548 - 240 - 1 (END) = 307 bytes of options: 3 (type) + 2 + 255 + 2 + 45
    opts = {53: b"\x02", 43: b"a" * 255, 12: b"b" * 45}
    out = dhcp.encode(dhcp.Packet(op=2, options=opts), max_size=548)
    assert len(out) == 548 and out[-1] == 0xFF
    p = dhcp.decode(out)
    assert p.options == opts and 52 not in p.options


def test_encode_skips_pad_end_and_caller_supplied_overload_option():
    out = dhcp.encode(dhcp.Packet(options={0: b"x", 53: b"\x01", 52: b"\x03", 255: b"y"},
                                  file=b"keep.me"))
    p = dhcp.decode(out)
    assert p.options == {53: b"\x01"}
    assert p.file == b"keep.me"


def test_encode_drops_last_options_first_when_nothing_can_overload():
    # file and sname in use: options field only, 307 bytes, 304 before the
    # 3 bytes the encoder keeps for option 52.
    opts = {53: b"\x02", 54: b"\x0a\x4d\x00\x01"}
    for code in (100, 101, 102, 103, 104):
        opts[code] = bytes([code]) * 98           # 100-byte TLVs
    out = dhcp.encode(dhcp.Packet(op=2, sname=b"srv", file=b"boot", options=opts))
    p = dhcp.decode(out)
    assert len(out) <= MAX_HARD
    assert list(p.options) == [53, 54, 100, 101]
    assert all(p.options[c] == opts[c] for c in p.options)
    assert p.sname == b"srv" and p.file == b"boot"


@pytest.mark.parametrize("names", [{}, {"file": b"boot", "sname": b"srv"}],
                         ids=["file-sname-free", "file-sname-taken"])
def test_encode_never_drops_an_option_for_a_later_one(names):
    """Priority: 53 + a 300-byte option 43 fit in 548 bytes (305 of 307 option
    bytes); adding a lower-priority 12-byte option must not evict option 43.
    Option 52 can never be needed here (nothing else fits with it), so no
    room may be held back for it."""
    hi = {53: b"\x02", 43: b"A" * 300}
    alone = dhcp.decode(dhcp.encode(dhcp.Packet(op=2, chaddr=MAC, options=hi, **names)))
    assert alone.options == hi
    both = dhcp.encode(dhcp.Packet(op=2, chaddr=MAC, options={**hi, 12: b"b" * 10}, **names))
    assert len(both) <= MAX_HARD
    p = dhcp.decode(both)
    assert p.options.get(43) == hi[43], f"option 43 dropped, kept {list(p.options)}"
    assert 12 not in p.options


def test_encode_does_not_overload_at_the_cost_of_a_higher_priority_option():
    """53 + a 300-byte option 43 (split: 257 + 47 bytes) fill the 307-byte
    options field exactly.  Overloading would free file/sname for 12 and 15
    but leave no room for 43 next to option 52: 43 must win."""
    opts = {53: b"\x02", 43: b"A" * 300, 12: b"b" * 248, 15: b"c" * 98}
    out = dhcp.encode(dhcp.Packet(op=2, chaddr=MAC, options=opts))
    assert len(out) == MAX_HARD
    p = dhcp.decode(out)
    assert list(p.options) == [53, 43]
    assert p.options[43] == opts[43]


def test_encode_message_type_first_survives_any_amount_of_options():
    opts = {53: b"\x05"}
    opts.update({c: b"z" * 255 for c in range(100, 130)})
    out = dhcp.encode(dhcp.Packet(op=2, options=opts), max_size=548)
    assert len(out) <= MAX_HARD
    assert dhcp.decode(out).msg_type == 5


# ---------------------------------------------------------------------------
# Option overload (option 52, RFC 2132 §9.3)
# ---------------------------------------------------------------------------

def _big_reply(**kw):
    # 3 + 257 + 102 + 52 = 414 bytes of TLVs: more than the 307 available.
    # After 53 and 43 the options field has at most 47 bytes left: too few
    # for 12 (102 bytes, fits file only) and 15 (52 bytes, fits file or sname).
    opts = {53: b"\x02", 43: b"V" * 255, 12: b"H" * 100, 15: b"D" * 50}
    return dhcp.Packet(op=2, chaddr=MAC, options=opts, **kw), opts


def test_overload_spills_into_file_then_sname_and_decodes_back_complete():
    pkt, opts = _big_reply()
    out = dhcp.encode(pkt, max_size=548)
    assert len(out) <= MAX_HARD
    # options field: caller's order (message type first), then 52, then END
    assert [c for c, _ in walk_tlvs(out[OPTIONS_START:])] == [53, 43, 52]
    assert walk_tlvs(out[OPTIONS_START:])[-1] == (52, b"\x03")
    # RFC 2131 §4.1: overloaded fields start with options, END, then padding
    assert out[FILE_AT:FILE_AT + 128] == tlv(12, opts[12]) + b"\xff" + b"\0" * 25
    assert out[SNAME_AT:SNAME_AT + 64] == tlv(15, opts[15]) + b"\xff" + b"\0" * 11
    p = dhcp.decode(out)
    assert {c: v for c, v in p.options.items() if c != 52} == opts
    assert p.options[52] == b"\x03"
    assert p.file == b"" and p.sname == b""


@pytest.mark.parametrize("field,at,size", [("file", FILE_AT, 128), ("sname", SNAME_AT, 64)])
def test_overload_field_keeps_a_byte_for_end(field, at, size):
    """An option fills a borrowed field only up to size-1 bytes: END must fit."""
    other = {"file": {"sname": b"s"}, "sname": {"file": b"f"}}[field]
    main_filler = {53: b"\x02", 43: b"M" * 250, 44: b"N" * 47}     # 3+252+49 = 304
    fits = {**main_filler, 12: b"x" * (size - 3)}           # TLV of size-1
    out = dhcp.encode(dhcp.Packet(op=2, options=fits, **other))
    assert out[at:at + size] == tlv(12, fits[12]) + b"\xff"
    assert dhcp.decode(out).options[12] == fits[12]
    too_big = {**main_filler, 12: b"x" * (size - 2)}        # TLV of size
    p = dhcp.decode(dhcp.encode(dhcp.Packet(op=2, options=too_big, **other)))
    assert 12 not in p.options and 52 not in p.options
    assert getattr(p, field) == b""


def test_encode_one_byte_over_budget_does_not_grow_the_message():
    # 308 bytes of TLVs: one more than 548 - 240 - 1 allows in the options field
    opts = {53: b"\x02", 43: b"a" * 255, 12: b"b" * 46}
    out = dhcp.encode(dhcp.Packet(op=2, sname=b"s", file=b"f", options=opts), max_size=548)
    assert len(out) <= 548
    assert list(dhcp.decode(out).options) == [53, 43]
    out = dhcp.encode(dhcp.Packet(op=2, options=opts), max_size=548)   # file free: spills
    p = dhcp.decode(out)
    assert len(out) <= 548 and p.options[12] == opts[12] and p.options[52] == b"\x01"


def test_overload_uses_only_file_when_sname_is_taken():
    pkt, opts = _big_reply(sname=b"tftp.example")
    out = dhcp.encode(pkt)
    p = dhcp.decode(out)
    assert p.options[52] == b"\x01"
    assert p.sname == b"tftp.example"
    assert 12 in p.options and p.options[12] == opts[12]
    assert 15 not in p.options      # 52 bytes: no room left in options field or file
    assert len(out) <= MAX_HARD


def test_overload_uses_only_sname_when_file_is_taken():
    pkt, opts = _big_reply(file=b"undionly.kpxe")
    p = dhcp.decode(dhcp.encode(pkt))
    assert p.options[52] == b"\x02"
    assert p.file == b"undionly.kpxe"
    assert p.options[15] == opts[15]
    assert 12 not in p.options      # 102 bytes fit neither options field nor sname (63)


def test_overload_not_used_when_options_fit():
    out = dhcp.encode(dhcp.Packet(op=2, options={53: b"\x02", 12: b"h" * 200}))
    assert 52 not in dhcp.decode(out).options
    assert out[SNAME_AT:FILE_AT + 128] == b"\0" * 192


def test_decode_overload_reads_options_then_file_then_sname():
    """RFC 3396 §7 concatenation order across the three areas."""
    opts = tlv(53, b"\x01") + tlv(52, b"\x03") + tlv(12, b"ab") + b"\xff"
    file = tlv(12, b"cd") + tlv(66, b"tftp") + b"\xff"
    sname = tlv(12, b"ef") + tlv(67, b"boot") + b"\xff"
    p = dhcp.decode(raw_msg(opts, sname=sname, file=file))
    assert p.options[12] == b"abcdef"
    assert list(p.options) == [53, 52, 12, 66, 67]
    assert p.options[52] == b"\x03"
    assert p.file == b"" and p.sname == b""


def test_decode_overload_file_without_end_is_accepted():
    file = tlv(66, b"10.0.0.1") + b"\0" * 3     # runs into NUL padding, no END
    p = dhcp.decode(raw_msg(tlv(52, b"\x01") + b"\xff", file=file, sname=b"srv"))
    assert p.options[66] == b"10.0.0.1"
    assert p.sname == b"srv"        # not overloaded: kept as a name


def test_decode_overload_value_inside_file_does_not_loop_or_reparse():
    # main says "file"; file says 52=3 (would pull in sname) and 52=1 again.
    opts = tlv(53, b"\x01") + tlv(52, b"\x01") + b"\xff"
    file = tlv(52, b"\x03") + tlv(12, b"abc") + tlv(52, b"\x01") + b"\xff"
    sname = tlv(15, b"not-an-option") + b"\xff"
    p = dhcp.decode(raw_msg(opts, file=file, sname=sname))
    assert p.options[12] == b"abc"
    assert p.options[52] == b"\x01"     # the options-field value, not the file's
    assert 15 not in p.options          # sname was not overloaded by the main field
    assert p.sname == sname             # still the raw (NUL-stripped) field
    assert p.file == b""


def test_decode_option_52_only_inside_file_is_ignored():
    file = tlv(52, b"\x01") + tlv(12, b"x") + b"\xff"
    p = dhcp.decode(raw_msg(tlv(53, b"\x01") + b"\xff", file=file))
    assert 52 not in p.options and 12 not in p.options
    assert p.file == file           # an ordinary (NUL-stripped) file name


@pytest.mark.parametrize("value", [b"\x00", b"\x04", b"\xff", b"", b"\x01\x02"])
def test_decode_bad_overload_value_raises_bad_overload(value):
    data = raw_msg(tlv(53, b"\x01") + tlv(52, value) + b"\xff")
    with pytest.raises(dhcp.DecodeError) as ei:
        dhcp.decode(data)
    assert ei.value.reason == "bad_overload"
    assert OPTIONS_START <= ei.value.offset < len(data)


def test_decode_overrun_inside_overloaded_file_reports_message_offset():
    file = b"\0\0" + bytes((12, 200)) + b"x" * 10       # length runs past the 128-byte field
    data = raw_msg(tlv(52, b"\x01") + b"\xff", file=file)
    with pytest.raises(dhcp.DecodeError) as ei:
        dhcp.decode(data)
    assert (ei.value.reason, ei.value.offset) == ("option_overrun", FILE_AT + 2)


def test_decode_truncated_option_at_end_of_overloaded_sname():
    sname = b"\0" * 63 + b"\x0c"                        # code in the last byte, no length
    data = raw_msg(tlv(52, b"\x02") + b"\xff", sname=sname)
    with pytest.raises(dhcp.DecodeError) as ei:
        dhcp.decode(data)
    assert (ei.value.reason, ei.value.offset) == ("option_truncated", SNAME_AT + 63)


# ---------------------------------------------------------------------------
# Malformed corpus: each raises DecodeError with the right reason and offset
# ---------------------------------------------------------------------------

_VALID = raw_msg()
_COOKIE_BAD = _VALID[:FIXED_LEN] + b"\x63\x82\x53\x64" + _VALID[OPTIONS_START:]
_PADS_1MB = raw_msg(b"\0" * (1 << 20))

MALFORMED = [
    pytest.param(b"", "short", 0, id="empty"),
    pytest.param(_VALID[:239], "short", 239, id="239-bytes"),
    pytest.param(_VALID[:OPTIONS_START - 1], "short", OPTIONS_START - 1, id="cookie-cut"),
    pytest.param(_COOKIE_BAD, "bad_cookie", FIXED_LEN, id="bad-cookie"),
    pytest.param(raw_msg(cookie=b"\0\0\0\0"), "bad_cookie", FIXED_LEN, id="bootp-no-cookie"),
    pytest.param(raw_msg(op=3), "bad_op", 0, id="op-3"),
    pytest.param(raw_msg(op=0), "bad_op", 0, id="op-0"),
    pytest.param(raw_msg(hlen=17), "bad_hlen", 2, id="hlen-17"),
    pytest.param(raw_msg(hlen=255), "bad_hlen", 2, id="hlen-255"),
    pytest.param(raw_msg(b"\x35\x05\x01"), "option_overrun", OPTIONS_START,
                 id="length-past-end"),
    pytest.param(raw_msg(b"\x35\x02\x01"), "option_overrun", OPTIONS_START,
                 id="length-one-past-end"),
    pytest.param(raw_msg(tlv(53, b"\x01") + b"\x3d\x07\x01\x52\x54\xff"), "option_overrun",
                 OPTIONS_START + 3, id="second-option-past-end"),
    pytest.param(raw_msg(tlv(53, b"\x01") + b"\x0c"), "option_truncated", OPTIONS_START + 3,
                 id="code-in-last-byte"),
    pytest.param(raw_msg(tlv(53, b"\x01")), "no_end", OPTIONS_START + 3, id="missing-end"),
    pytest.param(raw_msg(b""), "no_end", OPTIONS_START, id="no-options-at-all"),
    pytest.param(_PADS_1MB, "no_end", len(_PADS_1MB), id="1MB-of-pads"),
]


@pytest.mark.parametrize("data,reason,offset", MALFORMED)
def test_malformed_input_raises_decode_error_with_reason_and_offset(data, reason, offset):
    with pytest.raises(dhcp.DecodeError) as ei:
        dhcp.decode(data)
    assert ei.value.reason == reason
    assert ei.value.offset == offset
    assert isinstance(ei.value, ValueError)
    assert reason in str(ei.value)


# ---------------------------------------------------------------------------
# Fuzzing: decode returns a Packet or raises DecodeError, nothing else
# ---------------------------------------------------------------------------

REASONS = {"short", "bad_cookie", "bad_op", "bad_hlen", "option_truncated",
           "option_overrun", "no_end", "bad_overload"}


def _decode_total(data: bytes):
    try:
        p = dhcp.decode(data)
    except dhcp.DecodeError as e:
        assert e.reason in REASONS
        assert 0 <= e.offset <= len(data)
        return None
    assert isinstance(p, dhcp.Packet)
    assert len(p.chaddr) == p.hlen <= 16
    assert all(isinstance(k, int) and 0 < k < 255 and isinstance(v, bytes)
               for k, v in p.options.items())
    return p


@FAST
@given(st.binary(max_size=700))
def test_fuzz_random_bytes_only_raise_decode_error(data):
    _decode_total(data)


@FAST
@given(head=st.tuples(st.sampled_from([1, 2]), st.integers(0, 255), st.integers(0, 16)),
       options=st.binary(max_size=400),
       sname=st.binary(max_size=64), file=st.binary(max_size=128),
       overload=st.sampled_from([b"", tlv(52, b"\x01"), tlv(52, b"\x02"), tlv(52, b"\x03"),
                                 tlv(52, b"\x07")]))
def test_fuzz_random_option_area_only_raises_decode_error(head, options, sname, file, overload):
    """Valid header and cookie, random options / file / sname (with and
    without an overload option), so parsing gets past the fixed part."""
    op, htype, hlen = head
    _decode_total(raw_msg(overload + options, op=op, htype=htype, hlen=hlen,
                          sname=sname, file=file))


_SEED_PACKETS = [
    raw_msg(tlv(53, b"\x01") + tlv(57, b"\x05\xc0") + tlv(93, b"\0\0") + tlv(60, b"PXEClient")
            + tlv(55, bytes(range(1, 30))) + b"\xff"),
    raw_msg(tlv(53, b"\x02") + tlv(52, b"\x03") + tlv(54, b"\x0a\0\0\x01") + b"\xff",
            file=tlv(12, b"host") + tlv(67, b"boot.efi") + b"\xff",
            sname=tlv(15, b"example.org") + b"\xff"),
    raw_msg(tlv(43, b"a" * 255) + tlv(43, b"b" * 10) + b"\xff" + b"\0" * 50),
]


@st.composite
def mutated_packets(draw):
    data = bytearray(draw(st.sampled_from(_SEED_PACKETS)))
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 2, 3, 52, 53, 254, 255]))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
    return bytes(data)


@FAST
@given(mutated_packets())
def test_fuzz_mutated_valid_packets_only_raise_decode_error(data):
    _decode_total(data)


@settings(max_examples=20, deadline=timedelta(seconds=2))
@given(st.integers(0, 1 << 20), st.sampled_from([b"", b"\xff", b"\x0c", b"\x0c\xff"]))
def test_fuzz_large_pad_runs_decode_quickly(n, tail):
    """Up to 1 MiB of PAD: linear work, no quadratic slicing (deadline-bound)."""
    p = _decode_total(raw_msg(b"\0" * n + tail))
    assert (p is not None) == (tail == b"\xff")


# ---------------------------------------------------------------------------
# Round trip (hypothesis)
# ---------------------------------------------------------------------------

OPTION_CODES = [c for c in range(1, 255) if c != 52]
ip4 = st.binary(min_size=4, max_size=4)
no_nul = lambda n: st.binary(max_size=n).filter(lambda b: b"\0" not in b)  # noqa: E731


@st.composite
def packets(draw, options=None):
    hlen = draw(st.integers(0, 16))
    if options is None:
        options = draw(st.dictionaries(st.sampled_from(OPTION_CODES),
                                       st.binary(max_size=600), max_size=12))
    return dhcp.Packet(
        op=draw(st.sampled_from([1, 2])), htype=draw(st.integers(0, 255)), hlen=hlen,
        hops=draw(st.integers(0, 255)), xid=draw(st.integers(0, 2**32 - 1)),
        secs=draw(st.integers(0, 2**16 - 1)), flags=draw(st.integers(0, 2**16 - 1)),
        ciaddr=draw(ip4), yiaddr=draw(ip4), siaddr=draw(ip4), giaddr=draw(ip4),
        chaddr=draw(st.binary(min_size=hlen, max_size=hlen)),
        sname=draw(st.one_of(st.just(b""), no_nul(64))),
        file=draw(st.one_of(st.just(b""), no_nul(128))), options=options)


HEADER_FIELDS = ("op", "htype", "hlen", "hops", "xid", "secs", "flags", "ciaddr",
                 "yiaddr", "siaddr", "giaddr", "chaddr")


@FAST
@given(packets())
def test_roundtrip_with_large_budget_preserves_everything(p):
    out = dhcp.encode(p, max_size=65000)
    q = dhcp.decode(out)
    for f in HEADER_FIELDS + ("sname", "file"):
        assert getattr(q, f) == getattr(p, f), f
    assert q.options == p.options
    assert list(q.options) == list(p.options)       # order kept when nothing spills
    assert len(out) >= MIN_REPLY_LEN


# value sizes that exercise every area: small (fit sname), medium (fit file
# but not sname), large (options field only, or split per RFC 3396)
option_values = st.one_of(st.binary(max_size=61), st.binary(min_size=62, max_size=125),
                          st.binary(min_size=126, max_size=600))


@st.composite
def budgeted_packets(draw):
    opts = {53: bytes([draw(st.integers(1, 8))])}
    rest = draw(st.dictionaries(st.sampled_from([c for c in OPTION_CODES if c != 53]),
                                option_values, min_size=1, max_size=14))
    opts.update(rest)
    budget = draw(st.one_of(st.sampled_from([0, 548, 576, 600]), st.integers(0, 1500)))
    return draw(packets(options=opts)), budget


def _tlv_len(v: bytes) -> int:
    return len(v) + 2 * max(1, -(-len(v) // 255))


@FAST
@given(budgeted_packets())
@example((dhcp.Packet(chaddr=MAC, options={53: b"\x01", 43: b"x" * 600, 12: b"y" * 120,
                                          15: b"z" * 60}),
          548))
def test_roundtrip_with_small_budget_fits_and_keeps_what_it_keeps(args):
    p, max_size = args
    original = dict(p.options)
    out = dhcp.encode(p, max_size=max_size)
    assert MIN_REPLY_LEN <= len(out) <= max(max_size, MAX_HARD)
    q = dhcp.decode(out)
    for f in HEADER_FIELDS:
        assert getattr(q, f) == getattr(p, f), f
    assert q.msg_type == original[53][0]
    assert list(q.options)[0] == 53
    kept = {c: v for c, v in q.options.items() if c != 52}
    assert set(kept) <= set(original)
    for c, v in kept.items():
        assert v == original[c], c
    room = max(max_size, MAX_HARD) - OPTIONS_START - 1
    if sum(_tlv_len(v) for v in original.values()) <= room:
        assert kept == original and 52 not in q.options
    if 52 in q.options:
        ov = q.options[52][0]
        assert ov in (1, 2, 3)
        # only fields the caller left empty are borrowed for options
        assert not (ov & 1 and p.file) and not (ov & 2 and p.sname)
    # fields not borrowed for options come back unchanged
    ov = q.options.get(52, b"\0")[0]
    if not ov & 1:
        assert q.file == p.file
    if not ov & 2:
        assert q.sname == p.sname
    assert p.options == original        # encode does not mutate its input


@settings(FAST, max_examples=200)
@given(budgeted_packets())
def test_later_options_never_push_out_earlier_ones(args):
    """'Dropped last options first': if an option is left out, it is left out
    even when every option after it is removed, i.e. it was dropped for want
    of room left by higher-priority options, not to make room for later ones."""
    p, max_size = args
    kept = dhcp.decode(dhcp.encode(p, max_size=max_size)).options
    codes = list(p.options)
    for k, code in enumerate(codes):
        if code in kept:
            continue
        prefix = dict((c, p.options[c]) for c in codes[:k + 1])
        q = dhcp.Packet(op=p.op, chaddr=p.chaddr, hlen=p.hlen, sname=p.sname, file=p.file,
                        options=prefix)
        assert code not in dhcp.decode(dhcp.encode(q, max_size=max_size)).options, code


def test_option_52_given_twice_is_an_invalid_two_byte_value_at_its_first_offset():
    """RFC 3396 concatenates repeats, so two option 52s make a 2-byte value,
    which is invalid; the error points at the first option 52."""
    base = bytearray(240)
    base[0] = 1
    base[236:240] = b"\x63\x82\x53\x63"
    raw = bytes(base) + b"\x35\x01\x01" + b"\x34\x01\x01" + b"\x34\x01\x02" + b"\xff"
    with pytest.raises(dhcp.DecodeError) as e:
        dhcp.decode(raw)
    assert e.value.reason == "bad_overload" and e.value.offset == 243


def test_bytearray_input_decodes_to_bytes_values():
    base = bytearray(240)
    base[0] = 1
    base[236:240] = b"\x63\x82\x53\x63"
    p = dhcp.decode(base + b"\x35\x01\x01\xff")
    assert type(p.options[53]) is bytes and type(p.chaddr) is bytes
