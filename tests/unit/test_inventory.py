"""The inventory document's schema (netbootd/policy/inventory.py)."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings, strategies as st

from netbootd.policy import inventory
from netbootd.policy.inventory import InventoryError, summary, validate

GOOD = {
    "schema": 1,
    "cpu": {"model": "QEMU Virtual CPU version 2.5+", "sockets": 1, "cores": 2, "threads": 2},
    "memory": {"bytes": 1073741824},
    "disks": [{"name": "vda", "bytes": 1073741824, "model": "QEMU HARDDISK", "serial": "D1",
               "rotational": False, "transport": "virtio", "readonly": False},
              {"name": "vdb", "bytes": 2147483648, "serial": "D2", "rotational": True}],
    "nics": [{"name": "eth0", "mac": "52:54:00:12:34:56", "driver": "e1000", "link": True,
              "speed": 1000},
             {"name": "eth1", "mac": "52:54:00:12:34:57", "driver": "virtio_net", "link": False}],
    "dmi": {"system": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)",
                       "serial": "SYS-1", "uuid": "a0b1c2d3-0000-1111-2222-333344445555"},
            "board": {"vendor": "QEMU", "product": "pc", "serial": "BRD-1"},
            "bios": {"vendor": "EDK II", "version": "stable202302", "date": "02/06/2023"}},
    "firmware": "uefi",
    "secure_boot": False,
}


def test_a_full_document_is_unchanged():
    assert validate(copy.deepcopy(GOOD)) == GOOD


def test_only_schema_is_required():
    assert validate({"schema": 1}) == {"schema": 1}


def test_normalization():
    doc = {"schema": 1, "firmware": " UEFI ", "cpu": {"model": "  x86  ", "cores": None},
           "nics": [{"mac": "52-54-00-12-34-56"}],
           "dmi": {"system": {"uuid": "A0B1C2D3-0000-1111-2222-333344445555",
                              "serial": "a\x01b"}, "board": {"uuid": "x"}}}
    assert validate(doc) == {
        "schema": 1, "firmware": "uefi", "cpu": {"model": "x86"},
        "nics": [{"mac": "52:54:00:12:34:56"}],
        "dmi": {"system": {"uuid": "a0b1c2d3-0000-1111-2222-333344445555",
                           "serial": "a\ufffdb"}, "board": {}},
        "extra": {"dmi.board.uuid": "x"}}


def test_a_firmware_placeholder_uuid_is_kept_as_text():
    got = validate({"schema": 1, "dmi": {"system": {"uuid": "Not Settable"}}})
    assert got["dmi"]["system"]["uuid"] == "Not Settable"


def test_unknown_fields_go_to_extra():
    doc = {"schema": 1, "gpu": [{"model": "x"}], "agent": "0.3",
           "extra": {"lspci": ["00:01.0"]}, "disks": [{"name": "sda", "wwn": "0x5000", "zz": 1}]}
    got = validate(doc)
    assert got["extra"] == {"lspci": ["00:01.0"], "gpu": [{"model": "x"}], "agent": "0.3",
                            "disks[0].zz": 1}
    assert got["disks"] == [{"name": "sda", "wwn": "0x5000"}]
    assert validate(got) == got


def test_an_oversized_extra_is_dropped_and_flagged():
    doc = {"schema": 1, "cpu": {"cores": 4},
           "extra": {f"k{i}": "x" * 200 for i in range(100)}}
    got = validate(doc)
    assert got == {"schema": 1, "cpu": {"cores": 4}, "extra_truncated": True}
    assert validate(got) == got


def test_unknown_fields_moved_too_deep_are_dropped_and_flagged():
    deep = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}   # 8 deep in place, 9 in extra
    got = validate({"schema": 1, "deep": deep, "ok": 1})
    assert got == {"schema": 1, "extra": {"ok": 1}, "extra_truncated": True}
    assert validate(got) == got


@pytest.mark.parametrize("doc,message", [
    ({"schema": 2}, "schema: must be 1"),
    ({}, "schema: must be 1"),
    ({"schema": "1"}, "schema: must be 1"),
    ({"schema": True}, "schema: must be 1"),
    ({"schema": 1.0}, "schema: must be 1"),
    ({"schema": 1, "disks": [{}, {"bytes": -1}]}, r"disks\[1\].bytes: must be a non-negative"),
    ({"schema": 1, "disks": [{}, {"bytes": True}]}, r"disks\[1\].bytes: must be a non-negative"),
    ({"schema": 1, "disks": [{"bytes": 2 ** 63}]}, r"disks\[0\].bytes: integer out of range"),
    ({"schema": 1, "disks": [{"bytes": 1.5}]}, r"disks\[0\].bytes: must be a non-negative"),
    ({"schema": 1, "disks": [None]}, r"disks\[0\]: must be an object"),
    ({"schema": 1, "disks": {"vda": {}}}, "disks: must be a list"),
    ({"schema": 1, "disks": [{}] * 257}, "disks: more than 256 items"),
    ({"schema": 1, "nics": [{"mac": "zz"}]}, r"nics\[0\].mac: not a MAC"),
    ({"schema": 1, "nics": [{"link": "up"}]}, r"nics\[0\].link: must be true or false"),
    ({"schema": 1, "cpu": "x86"}, "cpu: must be an object"),
    ({"schema": 1, "cpu": {"model": 5}}, "cpu.model: must be a string"),
    ({"schema": 1, "cpu": {"model": "x" * 257}}, "cpu.model: longer than 256"),
    ({"schema": 1, "dmi": {"system": {"vendor": ["a"]}}}, "dmi.system.vendor: must be a string"),
    ({"schema": 1, "firmware": "coreboot"}, "firmware: must be"),
    ({"schema": 1, "secure_boot": "yes"}, "secure_boot: must be true or false"),
    ({"schema": 1, "extra": []}, "extra: must be an object"),
    ({"schema": 1, "extra": {"x": float("nan")}}, "extra.x: must be a finite number"),
    ({"schema": 1, "extra": {"x": {1, 2}}}, "extra.x: not a JSON value"),
    ({"schema": 1, "x": [[[[[[[[1]]]]]]]]}, "nested deeper than 8"),
    ({"schema": 1, "x": {str(i): 1 for i in range(257)}}, "x: more than 256 keys"),
    ([], "document: must be a JSON object"),
])
def test_bad_documents_name_the_path(doc, message):
    with pytest.raises(InventoryError, match=message):
        validate(doc)


def test_depth_eight_is_allowed():
    validate({"schema": 1, "extra": {"a": [[[[[[1]]]]]]}})   # object, extra, 6 lists = 8


def test_a_very_deep_document_is_refused_without_recursion_trouble():
    doc: dict = {"schema": 1}
    node = doc
    for _ in range(50_000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InventoryError, match="deeper"):
        validate(doc)


def test_parse_enforces_size_and_strict_json():
    body = json.dumps(GOOD).encode()
    assert inventory.parse(body) == GOOD
    with pytest.raises(InventoryError, match="larger than"):
        inventory.parse(b" " * (inventory.MAX_BYTES + 1))
    for bad in (b"{", b'{"schema": NaN}', b'{"schema": Infinity}', b"\xff", b"[" * 100_000):
        with pytest.raises(InventoryError):
            inventory.parse(bad)


def test_digest_is_stable_and_sensitive():
    a = inventory.digest(validate(GOOD))
    assert a == inventory.digest(validate(json.loads(json.dumps(GOOD))))
    changed = copy.deepcopy(GOOD)
    changed["memory"]["bytes"] += 1
    assert a != inventory.digest(validate(changed))


def test_summary():
    assert summary(validate(GOOD)) == {
        "cpu": "QEMU Virtual CPU version 2.5+", "cores": 2, "threads": 2,
        "memory_bytes": 1073741824, "disks": 2, "disk_bytes": 3221225472, "nics": 2,
        "firmware": "uefi", "secure_boot": False, "vendor": "QEMU",
        "product": "Standard PC (Q35 + ICH9, 2009)", "serial": "SYS-1"}


def test_summary_of_a_partial_document():
    s = summary(validate({"schema": 1, "disks": [{"name": "sda"}]}))
    assert s["disks"] == 1 and s["disk_bytes"] == 0 and s["nics"] == 0
    assert s["cpu"] is None and s["secure_boot"] is None
    assert summary(None)["disks"] == 0


# -- properties --

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=40)
keys = st.sampled_from(["schema", "cpu", "memory", "disks", "nics", "dmi", "firmware",
                        "secure_boot", "extra", "extra_truncated", "other"])


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(keys, json_values | st.just(1), max_size=8) | json_values)
def test_random_json_raises_only_inventory_error(doc):
    try:
        got = validate(doc)
    except InventoryError:
        return
    assert validate(got) == got                    # normalized is a fixed point
    json.dumps(got, allow_nan=False)


safe_chars = st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))
text = st.text(safe_chars, min_size=1, max_size=40).map(str.strip).filter(bool)
count = st.integers(0, 2 ** 63 - 1)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


def _opt(d: dict):
    return st.fixed_dictionaries({}, optional=d)


valid_docs = st.fixed_dictionaries({"schema": st.just(1)}, optional={
    "cpu": _opt({"model": text, "sockets": count, "cores": count, "threads": count}),
    "memory": _opt({"bytes": count}),
    "disks": st.lists(_opt({"name": text, "bytes": count, "model": text, "serial": text,
                            "rotational": st.booleans(), "transport": text,
                            "readonly": st.booleans()}), max_size=4),
    "nics": st.lists(_opt({"name": text, "mac": macs, "driver": text, "link": st.booleans(),
                           "speed": count}), max_size=4),
    "dmi": _opt({"system": _opt({"vendor": text, "product": text, "serial": text,
                                 "uuid": st.uuids().map(str)}),
                 "board": _opt({"vendor": text, "product": text, "serial": text}),
                 "bios": _opt({"vendor": text, "version": text, "date": text})}),
    "firmware": st.sampled_from(["bios", "uefi"]),
    "secure_boot": st.booleans(),
    "extra": st.dictionaries(st.text(safe_chars, max_size=10),
                             st.text(safe_chars, max_size=20) | count, min_size=1, max_size=4),
})


@settings(max_examples=500, deadline=None)
@given(valid_docs)
def test_valid_documents_round_trip(doc):
    assert validate(doc) == doc
    assert inventory.parse(json.dumps(doc).encode()) == doc
    s = summary(doc)
    assert s["disks"] == len(doc.get("disks", [])) and s["nics"] == len(doc.get("nics", []))


@settings(max_examples=200, deadline=None)
@given(valid_docs, st.sampled_from(["cpu.cores", "memory.bytes", "firmware", "secure_boot",
                                    "dmi.system.vendor"]),
       st.sampled_from([-1, "x" * 300, [], {}, 1.5, 2 ** 64]))
def test_a_bad_known_field_is_named(doc, path, bad):
    parts = path.split(".")
    node = doc
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = bad
    try:
        validate(doc)
    except InventoryError as e:
        assert str(e).startswith(path)
    else:
        pytest.fail(f"{path} = {bad!r} was accepted")
