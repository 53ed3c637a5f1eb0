"""Differential tests: netbootd.codec.dhcp against scapy's BOOTP/DHCP dissector.

1. Every DHCP message in the firmware captures (tests/fixtures/
   firmware-dhcp/*.pcap, captured from real SeaBIOS/iPXE and OVMF under qemu) decodes to the same header fields and the same option
   codes / raw values as scapy sees, and matches the facts in SUMMARY.md.
2. scapy reads the messages our encoder builds the way our decoder does.
"""
from __future__ import annotations

import ast
import glob
import os
import re
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netbootd.codec import dhcp
from netbootd.codec.dhcp_options import MAGIC_COOKIE, OPTIONS_START

scapy_all = pytest.importorskip("scapy.all")
from scapy.layers.dhcp import BOOTP, DHCP, DHCPRevOptions  # noqa: E402
from scapy.layers.inet import UDP  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "firmware-dhcp")
DHCP_PORTS = {67, 68, 4011}
MAC = "52:54:00:77:00:10"
SMBIOS_UUID = uuid.UUID("8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010")
# option 97: type 0 + GUID with the first three fields little-endian
UUID_OPTION = b"\x00" + SMBIOS_UUID.bytes_le
OPTS_FIELD = DHCP.fields_desc[0]        # scapy's DHCPOptionsField


# ---------------------------------------------------------------------------
# capture loading
# ---------------------------------------------------------------------------

def _load_captures():
    """[(pcap name, index, seconds since capture start, UDP payload)] for
    every UDP datagram to or from a DHCP/PXE port."""
    out = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "*.pcap"))):
        pkts = scapy_all.rdpcap(path)
        t0 = pkts[0].time if pkts else 0
        for i, p in enumerate(pkts):
            if UDP in p and ({p[UDP].sport, p[UDP].dport} & DHCP_PORTS):
                out.append((os.path.basename(path), i, float(p.time - t0),
                            bytes(p[UDP].payload)))
    return out


# The captures are the project's own (tests/fixtures): a missing one is a
# broken checkout, so this fails rather than skips.
CAPTURED = _load_captures()
assert CAPTURED, f"no DHCP captures under {FIXTURES}"


def _scapy_options(layer) -> tuple[dict[int, bytes], list[int]]:
    """Option code -> raw value (repeats concatenated) and code order, from
    scapy's dissection: each decoded option is turned back into its TLV with
    scapy's own field encoder.  Stops at END."""
    values: dict[int, bytes] = {}
    for item in layer.options:
        if item == "end":
            break
        if item == "pad":
            continue
        assert isinstance(item, tuple), f"scapy could not dissect: {item!r}"
        raw = OPTS_FIELD.i2m(layer, [item])
        code, ln, val = raw[0], raw[1], raw[2:]
        assert ln == len(val)
        values[code] = values.get(code, b"") + val
    return values, list(values)


def _scapy_code(name) -> int:
    return name if isinstance(name, int) else DHCPRevOptions[name][0]


# ---------------------------------------------------------------------------
# 1a. captured messages: decode == scapy
# ---------------------------------------------------------------------------

def test_captures_hold_dhcp_traffic_in_both_directions():
    assert len(CAPTURED) >= 100
    ops = {dhcp.decode(raw).op for _, _, _, raw in CAPTURED}
    assert ops == {1, 2}
    assert {f for f, _, _, _ in CAPTURED} == {
        os.path.basename(p) for p in glob.glob(os.path.join(FIXTURES, "*.pcap"))}


@pytest.mark.parametrize("name,index,t,raw", CAPTURED,
                         ids=[f"{n}#{i}" for n, i, _, _ in CAPTURED])
def test_capture_decodes_like_scapy(name, index, t, raw):
    p = dhcp.decode(raw)
    b = BOOTP(raw)
    assert DHCP in b, "scapy did not see a DHCP message"
    assert b.options == MAGIC_COOKIE

    assert (p.op, p.htype, p.hlen, p.hops, p.xid, p.secs) == \
        (b.op, b.htype, b.hlen, b.hops, b.xid, b.secs)
    assert p.flags == int(b.flags)
    assert (p.ciaddr_ip, p.yiaddr_ip, p.siaddr_ip, p.giaddr_ip) == \
        (b.ciaddr, b.yiaddr, b.siaddr, b.giaddr)
    assert p.chaddr == bytes(b.chaddr)[:b.hlen]
    assert p.sname == bytes(b.sname).split(b"\0", 1)[0]
    assert p.file == bytes(b.file).split(b"\0", 1)[0]

    layer = b[DHCP]
    # scapy's dissection is lossless for these messages: re-encoding its
    # option list gives back the raw option bytes, so its raw view is exact.
    assert OPTS_FIELD.i2m(layer, layer.options) == raw[OPTIONS_START:]
    values, order = _scapy_options(layer)
    assert 52 not in values      # no capture uses overload, so the option field is all
    assert list(p.options) == order
    assert p.options == values


# Decoded forms scapy produces for options it knows, checked against our raw bytes.
_DECODED_CHECKS = {
    "message-type": lambda v: bytes([v]),
    "server_id": lambda v: bytes(map(int, v.split("."))),
    "requested_addr": lambda v: bytes(map(int, v.split("."))),
    "lease_time": lambda v: v.to_bytes(4, "big"),
    "max_dhcp_size": lambda v: v.to_bytes(2, "big"),
    "vendor_class_id": lambda v: v,
    "client_id": lambda v: v,
    "param_req_list": lambda v: bytes(v),
}


def test_capture_options_match_scapy_decoded_values():
    checked = {k: 0 for k in _DECODED_CHECKS}
    for _, _, _, raw in CAPTURED:
        p = dhcp.decode(raw)
        for item in BOOTP(raw)[DHCP].options:
            if isinstance(item, tuple) and item[0] in _DECODED_CHECKS:
                name = item[0]
                vals = item[1:] if name != "param_req_list" else (item[1],)
                assert p.options[_scapy_code(name)] == b"".join(
                    _DECODED_CHECKS[name](v) for v in vals), name
                checked[name] += 1
        if p.msg_type is not None:
            assert p.msg_type == BOOTP(raw)[DHCP].options[0][1]
    assert all(checked.values()), checked     # every check ran on some message


# ---------------------------------------------------------------------------
# 1b. captured messages: facts from SUMMARY.md
# ---------------------------------------------------------------------------

def _summary_rows():
    """Parse SUMMARY.md: {pcap name: [row dict, ...]}."""
    rows: dict[str, list[dict]] = {}
    current = None
    with open(os.path.join(FIXTURES, "SUMMARY.md")) as f:
        for line in f:
            m = re.match(r"## (\S+\.pcap)", line)
            if m:
                current = m.group(1)
                rows[current] = []
                continue
            if current and line.startswith("| ") and re.match(r"\| [\d.]+ \|", line):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                keys = ["t", "60", "93", "94", "77", "97", "61", "57", "55", "175", "order"]
                assert len(cells) == len(keys), line
                rows[current].append(dict(zip(keys, cells)))
    return rows


def _expected_options(row) -> dict[int, bytes | None]:
    """SUMMARY notation -> raw option values (None: option absent)."""
    absent = "—"
    exp: dict[int, bytes | None] = {}
    exp[60] = row["60"].encode()
    exp[93] = None if row["93"] == absent else b"".join(
        a.to_bytes(2, "big") for a in ast.literal_eval(row["93"]))
    if row["94"] == absent:
        exp[94] = None
    else:
        m = re.fullmatch(r"type=(\d+) v(\d+)\.(\d+)", row["94"])
        exp[94] = bytes(int(x) for x in m.groups())
    exp[77] = None if row["77"] == absent else ast.literal_eval(row["77"]).encode()
    if row["97"] == absent:
        exp[97] = None
    else:
        m = re.fullmatch(r"type=(\d+) ([0-9a-f]{32})", row["97"])
        exp[97] = bytes([int(m.group(1))]) + bytes.fromhex(m.group(2))
    exp[61] = None if row["61"] == absent else bytes.fromhex(row["61"].replace(":", ""))
    exp[57] = int(row["57"]).to_bytes(2, "big")
    exp[55] = bytes(ast.literal_eval(row["55"]))
    return exp


def _sub_tlvs(value: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(value):
        out.append((value[i], value[i + 2:i + 2 + value[i + 1]]))
        i += 2 + value[i + 1]
    return out


_SUMMARY = _summary_rows() if os.path.isdir(FIXTURES) else {}
_SUMMARY_CASES = [(name, row) for name, rs in sorted(_SUMMARY.items()) for row in rs]


def test_summary_covers_every_capture():
    assert set(_SUMMARY) == {f for f, _, _, _ in CAPTURED}
    assert len(_SUMMARY_CASES) == 20


@pytest.mark.parametrize("name,row", _SUMMARY_CASES,
                         ids=[f"{n}@{r['t']}" for n, r in _SUMMARY_CASES])
def test_capture_first_discover_of_each_stage_matches_summary(name, row):
    t = float(row["t"])
    hits = [dhcp.decode(raw) for n, _, pt, raw in CAPTURED
            if n == name and abs(pt - t) < 0.002]
    hits = [p for p in hits if p.op == 1 and p.msg_type == 1]    # the DISCOVER
    assert len(hits) == 1, f"no single DISCOVER at t={t}"
    p = hits[0]
    assert p.mac == MAC
    for code, value in _expected_options(row).items():
        if value is None:
            assert code not in p.options, code
        else:
            assert p.options.get(code) == value, code
    assert list(p.options) == ast.literal_eval(row["order"])
    if row["175"] == "—":
        assert 175 not in p.options
    else:
        expected = [(int(c), bytes.fromhex(v))
                    for c, v in (kv.split("=") for kv in row["175"].split())]
        assert _sub_tlvs(p.options[175]) == expected


def _first_discovers(pred):
    return [dhcp.decode(raw) for _, _, _, raw in CAPTURED
            if dhcp.decode(raw).msg_type == 1 and pred(dhcp.decode(raw))]


def test_capture_bios_clients_send_arch_0_and_uuid_in_option_97():
    bios = _first_discovers(lambda p: p.options.get(60, b"").startswith(
        b"PXEClient:Arch:00000"))
    assert len(bios) >= 10
    for p in bios:
        assert p.options[93] == b"\x00\x00"
        assert p.options[94] == b"\x01\x02\x01"
        assert p.options[97] == UUID_OPTION
        assert p.options[61] == b"\x01" + bytes.fromhex(MAC.replace(":", ""))
        assert p.options[57] == (1472).to_bytes(2, "big")
        assert list(p.options) == [53, 57, 93, 94, 60, 77, 55, 175, 61, 97]


def test_capture_uefi_http_boot_client_facts():
    http = _first_discovers(lambda p: p.options.get(60, b"").startswith(b"HTTPClient"))
    assert http
    for p in http:
        assert p.options[60] == b"HTTPClient:Arch:00016:UNDI:003000"
        assert p.options[93] == b"\x00\x10"
        assert p.options[97] == UUID_OPTION
        assert 61 not in p.options and 77 not in p.options
        assert list(p.options) == [53, 57, 55, 97, 94, 93, 60]


def test_capture_udhcpc_discover_facts():
    udhcp = _first_discovers(lambda p: p.options.get(60) == b"udhcp 1.35.0")
    assert len(udhcp) >= 7
    for p in udhcp:
        assert p.options[57] == (576).to_bytes(2, "big")
        assert p.options[55] == bytes([1, 3, 6, 12, 15, 28, 42])
        assert list(p.options) == [53, 57, 55, 12, 60, 61]


def test_capture_replies_reencode_to_identical_option_set():
    """decode -> encode -> decode of every captured message is stable."""
    for _, _, _, raw in CAPTURED:
        p = dhcp.decode(raw)
        q = dhcp.decode(dhcp.encode(p, max_size=1500))
        assert (q.op, q.xid, q.chaddr, q.yiaddr, q.siaddr, q.file) == \
            (p.op, p.xid, p.chaddr, p.yiaddr, p.siaddr, p.file)
        assert q.options == p.options and list(q.options) == list(p.options)


# ---------------------------------------------------------------------------
# 2. our encoder's output, read by scapy
# ---------------------------------------------------------------------------

ip4 = st.binary(min_size=4, max_size=4)


@st.composite
def replies(draw):
    hlen = draw(st.integers(1, 16))
    opts = {53: bytes([draw(st.integers(1, 8))])}
    opts.update(draw(st.dictionaries(
        st.sampled_from([c for c in range(1, 255) if c not in (52, 53)]),
        st.binary(max_size=600), max_size=10)))
    pkt = dhcp.Packet(
        op=draw(st.sampled_from([1, 2])), htype=1, hlen=hlen,
        hops=draw(st.integers(0, 255)), xid=draw(st.integers(0, 2**32 - 1)),
        secs=draw(st.integers(0, 2**16 - 1)), flags=draw(st.sampled_from([0, 0x8000])),
        ciaddr=draw(ip4), yiaddr=draw(ip4), siaddr=draw(ip4), giaddr=draw(ip4),
        chaddr=draw(st.binary(min_size=hlen, max_size=hlen)), options=opts)
    return pkt, draw(st.sampled_from([548, 576, 1024, 1500, 65000]))


@settings(max_examples=300, deadline=timedelta(milliseconds=500),
          suppress_health_check=[HealthCheck.too_slow])
@given(replies())
def test_scapy_reads_encoded_messages_like_decode(args):
    pkt, max_size = args
    out = dhcp.encode(pkt, max_size=max_size)
    ours = dhcp.decode(out)
    b = BOOTP(out)
    assert DHCP in b
    assert (b.op, b.xid, b.secs, b.hops, int(b.flags)) == \
        (pkt.op, pkt.xid, pkt.secs, pkt.hops, pkt.flags)
    assert bytes(b.chaddr)[:pkt.hlen] == pkt.chaddr
    assert (b.ciaddr, b.yiaddr, b.siaddr, b.giaddr) == \
        (ours.ciaddr_ip, ours.yiaddr_ip, ours.siaddr_ip, ours.giaddr_ip)
    first = b[DHCP].options[0]
    assert first == ("message-type", pkt.options[53][0])

    # scapy gives up on options whose value does not fit its idea of the
    # option's type; up to there, its raw view must agree with ours.
    layer = b[DHCP]
    seen: dict[int, bytes] = {}
    for item in layer.options:
        if item == "end" or not isinstance(item, tuple):
            break
        raw = OPTS_FIELD.i2m(layer, [item])
        seen[raw[0]] = seen.get(raw[0], b"") + raw[2:]
    assert seen, "scapy found no option at all"
    for code, val in seen.items():
        if code == 52:
            assert val == ours.options[52]
        else:
            assert ours.options[code].startswith(val), code
