"""Host identity beyond the MAC (netbootd/policy/identity.py): placeholders never count."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from netbootd.policy.identity import (KINDS, PLACEHOLDERS, identifiers, is_placeholder,
                                      normalize_ids)

MAC = "52:54:00:12:34:56"
UUID = "a0b1c2d3-0000-1111-2222-333344445555"

SERIAL_PLACEHOLDERS = [
    "To be filled by O.E.M.", "TO BE FILLED BY O.E.M.", "To Be Filled By OEM",
    "Default string", "DEFAULT STRING", "0123456789", "123456789", "None", "Not Specified",
    "System Serial Number", "Chassis Serial Number", "", "   ", "\t", "0", "00000000",
    "XXXXXXXXXX", "..........", "N/A", "Not Applicable", "Unknown", "Base Board Serial Number",
]
UUID_PLACEHOLDERS = [
    "00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
    "ffffffffffffffffffffffffffffffff", "03000200-0400-0500-0006-000700080009",
    "03000200-0400-0500-0006-000700080009".upper(), "Not Settable", "Not Present", "", "junk",
]
MAC_PLACEHOLDERS = ["00:00:00:00:00:00", "FF:FF:FF:FF:FF:FF", "ff-ff-ff-ff-ff-ff",
                    "000000000000", "01:00:5e:00:00:01", "33:33:00:00:00:01", "not a mac", ""]


@pytest.mark.parametrize("value", SERIAL_PLACEHOLDERS)
def test_serial_placeholders(value):
    assert is_placeholder("serial", value) and is_placeholder("board_serial", value)


@pytest.mark.parametrize("value", UUID_PLACEHOLDERS)
def test_uuid_placeholders(value):
    assert is_placeholder("uuid", value)


@pytest.mark.parametrize("value", MAC_PLACEHOLDERS)
def test_mac_placeholders(value):
    assert is_placeholder("mac", value)


@pytest.mark.parametrize("kind,value", [
    ("serial", "CZ1234ABCD"), ("serial", "PF2XYZ01"), ("board_serial", "BR80YFDYZ68ICQ4"),
    ("serial", "VMware-56 4d 12 34"), ("uuid", UUID), ("uuid", UUID.upper()),
    ("mac", MAC), ("mac", "52-54-00-12-34-56")])
def test_real_values_count(kind, value):
    assert not is_placeholder(kind, value)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown identifier kind"):
        is_placeholder("hostname", "x")


def test_non_strings_never_count():
    assert all(is_placeholder(k, v) for k in KINDS for v in (None, 5, b"x", ["a"]))


def test_placeholder_table_covers_every_kind():
    assert set(PLACEHOLDERS) == set(KINDS)


# -- normalize_ids --

def test_normalize_ids():
    got = normalize_ids({"macs": ["52-54-00-12-34-56", MAC, "52:54:00:12:34:57"],
                         "uuid": UUID.upper(), "serial": " S1 ", "board_serial": "",
                         "future_field": 1})
    assert got == {"macs": [MAC, "52:54:00:12:34:57"], "uuid": UUID, "serial": "S1"}


def test_normalize_ids_empty():
    assert normalize_ids(None) == {} == normalize_ids({})


def test_a_placeholder_word_for_the_uuid_is_left_out():
    assert normalize_ids({"uuid": "Not Settable"}) == {}


@pytest.mark.parametrize("obj,field", [
    ([], "ids: must be an object"),
    ({"macs": "52:54:00:12:34:56"}, "ids.macs: must be a list"),
    ({"macs": [MAC, "zz"]}, r"ids.macs\[1\]: not a MAC"),
    ({"macs": [MAC, 5]}, r"ids.macs\[1\]: not a MAC"),
    ({"macs": [f"52:54:00:00:00:{i:02x}" for i in range(65)]}, "ids.macs: more than 64"),
    ({"uuid": "not-a-uuid-at-all"}, "ids.uuid: not a UUID"),
    ({"uuid": 5}, "ids.uuid: must be a string"),
    ({"serial": "x" * 129}, "ids.serial: longer than 128"),
    ({"serial": "a\x00b"}, "ids.serial: must be printable"),
    ({"board_serial": ["x"]}, "ids.board_serial: must be a string"),
])
def test_normalize_ids_names_the_bad_field(obj, field):
    with pytest.raises(ValueError, match=field):
        normalize_ids(obj)


# -- identifiers --

def test_identifiers_from_ids_and_inventory():
    ids = normalize_ids({"macs": [MAC, "52:54:00:12:34:57"], "uuid": UUID, "serial": "S1",
                         "board_serial": "B1"})
    inv = {"nics": [{"mac": "52:54:00:12:34:58"}, {"mac": MAC}, {}],
           "dmi": {"system": {"uuid": UUID, "serial": "S1"}, "board": {"serial": "B2"}}}
    assert identifiers(MAC, ids, inv) == [
        ("mac", MAC), ("mac", "52:54:00:12:34:57"), ("mac", "52:54:00:12:34:58"),
        ("uuid", UUID), ("serial", "S1"), ("board_serial", "B1"), ("board_serial", "B2")]


def test_identifiers_key_mac_only():
    assert identifiers("52-54-00-12-34-56", None) == [("mac", MAC)]


def test_identifiers_drop_placeholders():
    ids = {"macs": ["00:00:00:00:00:00"], "uuid": "03000200-0400-0500-0006-000700080009",
           "serial": "To be filled by O.E.M.", "board_serial": "Default string"}
    inv = {"dmi": {"system": {"uuid": "00000000-0000-0000-0000-000000000000",
                              "serial": "0123456789"},
                   "board": {"serial": "None"}}}
    assert identifiers(MAC, ids, inv) == [("mac", MAC)]


def test_identifiers_tolerate_a_malformed_inventory():
    for inv in ({"nics": "x"}, {"nics": [5, None, {"mac": 7}]}, {"dmi": []},
                {"dmi": {"system": "x"}}, [], "x"):
        assert identifiers(MAC, {}, inv) == [("mac", MAC)]


texts = st.text(max_size=40)


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(KINDS), value=texts | st.sampled_from(
    SERIAL_PLACEHOLDERS + UUID_PLACEHOLDERS + MAC_PLACEHOLDERS))
def test_placeholders_never_count(kind, value):
    """Whatever value is reported, identifiers() never yields one is_placeholder
    refuses, from the ids or from the inventory."""
    ids = {"macs": [value] if kind == "mac" else [], kind: value}
    if kind == "mac":
        ids.pop("mac")
    inv = {"nics": [{"mac": value}],
           "dmi": {"system": {"uuid": value, "serial": value}, "board": {"serial": value}}}
    got = identifiers(MAC, ids, inv)
    assert got[0] == ("mac", MAC)
    assert all(not is_placeholder(k, v) for k, v in got)
    assert len(got) == len(set(got))
    if is_placeholder(kind, value):
        assert all(v != value.strip() for k, v in got if k == kind)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["macs", "uuid", "serial", "board_serial", "x"]),
                       st.none() | texts | st.integers() | st.lists(texts, max_size=3)))
def test_normalize_ids_only_raises_value_error(obj):
    try:
        out = normalize_ids(obj)
    except ValueError as e:
        assert str(e).startswith("ids.")
    else:
        assert normalize_ids(out) == out
