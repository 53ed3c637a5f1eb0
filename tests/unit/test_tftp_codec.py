"""Unit tests for the pure TFTP codec (netbootd.codec.tftp).

Decode tests build datagrams by hand with ``struct`` so they do not depend on
the encoder; round trips and fuzzing use hypothesis.
"""
from __future__ import annotations

import struct
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from netbootd.codec import tftp as t

FAST = settings(max_examples=300, deadline=timedelta(milliseconds=500),
                suppress_health_check=[HealthCheck.too_slow])


def rrq(*fields: bytes, op: int = 1) -> bytes:
    return struct.pack("!H", op) + b"".join(f + b"\0" for f in fields)


# -- requests -------------------------------------------------------------------
def test_rrq_with_options_decodes_name_mode_and_options_in_order():
    pkt = t.decode(rrq(b"undionly.kpxe", b"octet", b"tsize", b"0", b"blksize", b"1432"))
    assert pkt == t.Request(t.OP_RRQ, "undionly.kpxe", "octet",
                            (("tsize", "0"), ("blksize", "1432")))
    assert not pkt.is_write


def test_wrq_decodes_as_a_write_request():
    pkt = t.decode(rrq(b"up.bin", b"octet", op=2))
    assert pkt.is_write and pkt.opcode == t.OP_WRQ


def test_mode_is_case_insensitive_and_lowercased():
    assert t.decode(rrq(b"f", b"NetASCII")).mode == "netascii"
    assert t.decode(rrq(b"f", b"OCTET")).mode == "octet"


def test_option_names_keep_their_spelling_but_option_dict_is_lowercased_first_wins():
    pkt = t.decode(rrq(b"f", b"octet", b"BlkSize", b"1024", b"blksize", b"512"))
    assert pkt.options[0] == ("BlkSize", "1024")
    assert pkt.option_dict() == {"blksize": "1024"}


def test_trailing_nul_padding_after_options_is_tolerated():
    pkt = t.decode(rrq(b"f", b"octet", b"tsize", b"0") + b"\0\0\0")
    assert pkt.options == (("tsize", "0"),)


@pytest.mark.parametrize("data, reason, offset", [
    (b"", "short", 0),
    (b"\x00", "short", 1),
    (b"\x00\x01f", "unterminated", 3),                          # no NUL after filename
    (b"\x00\x01f\0octet", "unterminated", 9),                   # no NUL after mode
    (b"\x00\x01\0octet\0", "empty_filename", 2),
    (b"\x00\x01" + b"a" * 256 + b"\0octet\0", "filename_too_long", 257),
    (b"\x00\x01a\x01b\0octet\0", "bad_filename", 3),            # ASCII control char
    (b"\x00\x01a\xc3\xa9\0octet\0", "bad_filename", 3),         # non-ASCII (UTF-8 e-acute)
    (b"\x00\x01a\x7f\0octet\0", "bad_filename", 3),             # DEL
    (b"\x00\x01a\0b\0octet\0", "bad_mode", 4),                  # embedded NUL: "b" as mode
    (b"\x00\x01a\0binary\0", "bad_mode", 4),
    (b"\x00\x01a\0octet\0blksize\0", "option_unpaired", 18),
    (b"\x00\x01a\0octet\0blksize\x00512", "unterminated", 21),
    (b"\x00\x01a\0octet\0bl\x02k\x00512\0", "bad_option", 12),
    (b"\x00\x01a\0octet\0\0junk\0", "trailing_garbage", 10),
    (b"\x00\x01a\0octet\0" + b"x\0" * 66, "too_many_options", 10 + 64 * 2),
    (b"\x00\x04\x00", "short", 3),
    (b"\x00\x03\x00", "short", 3),
    (b"\x00\x05\x00", "short", 3),
    (b"\x00\x07\x00\x01", "bad_opcode", 0),
    (b"\x00\x00\x00\x01", "bad_opcode", 0),
    (b"\x00\x03\x00\x01" + b"x" * 65465, "data_too_long", 4 + 65464),
])
def test_malformed_datagrams_raise_decode_error_with_reason_and_offset(data, reason, offset):
    with pytest.raises(t.DecodeError) as ei:
        t.decode(data)
    assert (ei.value.reason, ei.value.offset) == (reason, offset)


def test_filename_of_exactly_255_bytes_is_accepted():
    assert t.decode(rrq(b"a" * 255, b"octet")).filename == "a" * 255


# -- other messages -----------------------------------------------------------------
def test_ack_decodes_its_block_and_ignores_trailing_bytes_like_tftp_hpa():
    assert t.decode(b"\x00\x04\xff\xfe") == t.Ack(65534)
    assert t.decode(b"\x00\x04\x00\x07\x00\x00") == t.Ack(7)


def test_data_decodes_block_and_payload_including_empty_payload():
    assert t.decode(b"\x00\x03\x00\x01abc") == t.Data(1, b"abc")
    assert t.decode(b"\x00\x03\x01\x00") == t.Data(256, b"")


def test_error_decodes_code_and_message_and_tolerates_a_missing_terminator():
    assert t.decode(b"\x00\x05\x00\x08bad option\0") == t.Error(8, "bad option")
    assert t.decode(b"\x00\x05\x00\x01gone") == t.Error(1, "gone")


def test_error_message_control_characters_are_made_harmless():
    assert t.decode(b"\x00\x05\x00\x00a\x1bb\0").message == "a?b"


def test_oack_decodes_options():
    assert t.decode(b"\x00\x06blksize\x001468\x00tsize\x00123\x00") == \
        t.OAck((("blksize", "1468"), ("tsize", "123")))


# -- encode -----------------------------------------------------------------------------
def test_encode_data_wraps_block_number_to_16_bits():
    assert t.encode_data(65536, b"x") == b"\x00\x03\x00\x00x"
    assert t.encode_data(65537, memoryview(b"yz")) == b"\x00\x03\x00\x01yz"


def test_encode_error_uses_rfc_text_by_default_and_terminates_with_nul():
    assert t.encode_error(t.ERR_UNKNOWN_TID) == b"\x00\x05\x00\x05Unknown transfer ID\0"
    assert t.encode_error(2, "no\0way") == b"\x00\x05\x00\x02no?way\0"


def test_encode_oack_and_rrq_wire_layout():
    assert t.encode_oack([("blksize", 1468)]) == b"\x00\x06blksize\x001468\x00"
    assert t.encode_rrq("f", "octet", [("tsize", "0")]) == b"\x00\x01f\0octet\0tsize\x000\0"


def test_encode_refuses_nul_inside_a_filename():
    with pytest.raises(ValueError):
        t.encode_rrq("a\0b")


def test_error_codes_are_the_rfc_values():
    assert (t.ERR_NOT_DEFINED, t.ERR_NOT_FOUND, t.ERR_ACCESS, t.ERR_DISK_FULL, t.ERR_ILLEGAL_OP,
            t.ERR_UNKNOWN_TID, t.ERR_FILE_EXISTS, t.ERR_NO_SUCH_USER,
            t.ERR_OPTION_REFUSED) == tuple(range(9))


# -- hypothesis --------------------------------------------------------------------------
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                    max_size=40)
names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                max_size=255)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)
options = st.lists(st.tuples(printable, values), max_size=8).map(tuple)

messages = st.one_of(
    st.builds(t.Request, st.sampled_from([t.OP_RRQ, t.OP_WRQ]), names,
              st.sampled_from(sorted(t.MODES)), options),
    st.builds(t.Data, st.integers(0, 0xFFFF), st.binary(max_size=1500)),
    st.builds(t.Ack, st.integers(0, 0xFFFF)),
    st.builds(t.Error, st.integers(0, 0xFFFF), st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)),
    st.builds(t.OAck, options),
)


@FAST
@given(messages)
def test_every_message_round_trips_through_encode_and_decode(msg):
    assert t.decode(t.encode(msg)) == msg


@FAST
@given(st.binary(max_size=600))
@example(b"\x00\x01")
@example(b"\x00\x06\x00")
@example(b"\x00\x01a\0octet\0\0\0x")
def test_arbitrary_bytes_decode_or_raise_only_decode_error(data):
    try:
        t.decode(data)
    except t.DecodeError as e:
        assert 0 <= e.offset <= len(data) and e.reason


@FAST
@given(st.sampled_from([1, 2, 6]), st.binary(max_size=300))
def test_request_shaped_garbage_decodes_or_raises_only_decode_error(op, body):
    data = struct.pack("!H", op) + body
    try:
        pkt = t.decode(data)
    except t.DecodeError as e:
        assert 0 <= e.offset <= len(data)
    else:
        if isinstance(pkt, t.Request):
            assert pkt.filename.isprintable() and 0 < len(pkt.filename) <= 255
            assert pkt.mode in t.MODES
