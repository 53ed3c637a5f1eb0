"""DNS wire handling (codec/dns.py + policy/dns_engine.py), with dnslib as the oracle:
the hot path's concatenated answers, 0x20 case, EDNS and truncation, refusal and
forwarding decisions, and a malformed corpus that is answered FORMERR or dropped."""
from __future__ import annotations

import random
import struct
import time

import pytest
from dnslib import A, EDNS0, QTYPE, RCODE, RR, DNSError, DNSRecord
from hypothesis import HealthCheck, given, settings, strategies as st

from netbootd.codec import dns as d
from netbootd.model import Lease, LeaseState
from netbootd.policy.dns_engine import DnsEngine, Forward
from netbootd.policy.zone import Zone
from netbootd.writes import LeaseWrite

INSIDE = "10.77.0.50"
OUTSIDE = "192.0.2.9"
MAC = "52:54:00:77:00:10"


def make_engine(forwarding=False, rate=None, **kw) -> DnsEngine:
    z = Zone("netboot.lan", ["10.77.0.0/16"], "10.77.0.1",
             reservations=[(MAC, "10.77.0.5", "node5")], **kw)
    return DnsEngine(z, ["10.77.0.0/16"], forwarding=forwarding, rate_limit_qps=rate)


@pytest.fixture
def engine() -> DnsEngine:
    return make_engine()


def query(name: str, qtype: str = "A", *, qid: int = 0x4242, rd: bool = True,
          edns: int | None = None, do: bool = False, opts=()) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    q.header.rd = int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, flags="do" if do else "", opts=list(opts)))
    raw = bytes(q.pack())
    # dnslib re-spells the name; put the exact bytes we want (case) into the question.
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return raw[:12] + wire + raw[12 + len(wire):]


def oracle(out: bytes):
    """dnslib's parse; it refuses labels that are not UTF-8, which DNS allows
    (RFC 2181 §11): those replies are checked with our reader instead."""
    try:
        return DNSRecord.parse(out)
    except DNSError as e:
        if "Invalid label" not in str(e):
            raise
        d.read_name(out, 12)
        return None


def ask(engine, data: bytes, src: str = INSIDE, tcp: bool = False):
    return engine.handle(data, src, 1000.0, tcp=tcp)


# -- answers against the oracle ---------------------------------------------------------
@pytest.mark.parametrize("name, qtype, rcode, answers", [
    ("node5.netboot.lan", "A", "NOERROR", ["10.77.0.5"]),
    ("5.0.77.10.in-addr.arpa", "PTR", "NOERROR", ["node5.netboot.lan."]),
    ("node5.netboot.lan", "AAAA", "NOERROR", []),
    ("missing.netboot.lan", "A", "NXDOMAIN", []),
    ("netboot.lan", "NS", "NOERROR", ["ns.netboot.lan."]),
    ("ns.netboot.lan", "A", "NOERROR", ["10.77.0.1"]),
])
def test_answers_parse_with_dnslib_and_say_what_the_zone_says(engine, name, qtype, rcode, answers):
    for attempt in range(2):                 # first: slow path builds; then: hot path
        r = DNSRecord.parse(ask(engine, query(name, qtype)))
        assert r.header.id == 0x4242 and r.header.qr == 1 and r.header.aa == 1
        assert r.header.rd == 1 and r.header.ra == 0
        assert RCODE[r.header.rcode] == rcode
        assert [str(x.rdata) for x in r.rr] == answers
        if not answers:
            assert [QTYPE[x.rtype] for x in r.auth] == ["SOA"]
    assert engine.counters["answer.built"] == 1


def test_hot_path_and_slow_path_give_identical_bytes(engine):
    for name, qt in (("node5.netboot.lan", "A"), ("x.netboot.lan", "A"),
                     ("5.0.77.10.in-addr.arpa", "PTR")):
        for kw in ({}, {"edns": 1232}, {"edns": 4096, "do": True}, {"rd": False}):
            data = query(name, qt, **kw)
            engine.zone.pos.clear()
            engine.zone.neg.clear()
            slow = ask(engine, data)
            fast = ask(engine, data)
            assert slow == fast


def test_0x20_case_is_echoed_exactly_and_answers_the_same(engine):
    rnd = random.Random(7)
    for _ in range(20):
        name = "".join(c.upper() if rnd.random() < .5 else c for c in "node5.netboot.lan")
        data = query(name, "A", qid=rnd.randrange(65536))
        out = ask(engine, data)
        assert out[:2] == data[:2]
        assert out[12:12 + len(name) + 6] == data[12:12 + len(name) + 6]
        r = DNSRecord.parse(out)
        assert str(r.q.qname) == name + "." and str(r.rr[0].rdata) == "10.77.0.5"


def test_rd_and_cd_are_copied(engine):
    raw = bytearray(query("node5.netboot.lan", rd=False))
    raw[3] |= 0x10                              # CD
    for _ in range(2):
        r = DNSRecord.parse(ask(engine, bytes(raw)))
        assert r.header.rd == 0 and r.header.cd == 1


# -- EDNS and truncation ---------------------------------------------------------------
def test_edns_is_echoed_with_our_size_and_the_do_bit(engine):
    r = DNSRecord.parse(ask(engine, query("node5.netboot.lan", edns=4096, do=True,
                                          opts=[])))
    opt = [x for x in r.ar if x.rtype == QTYPE.OPT]
    assert len(opt) == 1 and opt[0].rclass == d.EDNS_OUR_SIZE and opt[0].ttl & 0x8000
    r = DNSRecord.parse(ask(engine, query("node5.netboot.lan")))
    assert not r.ar


def test_edns_version_1_gets_badvers(engine):
    data = bytearray(query("node5.netboot.lan", edns=1232))
    data[-5] = 1                                # OPT TTL byte 2: version
    r = DNSRecord.parse(ask(engine, bytes(data)))
    opt = r.ar[0]
    assert (opt.ttl >> 24) == 1 and r.header.rcode == 0      # BADVERS = 16: upper bits in OPT


def big_engine(n: int = 40) -> DnsEngine:
    """One MAC on n VLANs (one lease per network): a legitimately large A RRset."""
    e = make_engine()
    e.zone.apply([LeaseWrite(Lease((10 << 24) | (77 << 16) | (i << 8) | 9, f"vlan{i}",
                                  b"\x01" + MAC.encode(), MAC, LeaseState.ACTIVE, 0, 1e12,
                                  "trunk")) for i in range(1, n + 1)])
    return e


@pytest.mark.parametrize("edns, limit", [(None, 512), (100, 512), (700, 700), (9000, 1232)])
def test_answers_over_the_clients_udp_size_are_truncated(edns, limit):
    for n in (20, 100):
        e = big_engine(n)
        for _ in range(2):
            data = query("trunk.netboot.lan", edns=edns)
            full = ask(e, data, tcp=True)
            out = ask(e, data)
            assert len(out) <= limit
            r = DNSRecord.parse(out)
            if len(full) > limit:
                assert r.header.tc == 1 and not r.rr and r.header.aa == 1
                assert len(DNSRecord.parse(full).rr) == n
                assert bool(r.ar) == (edns is not None)
            else:
                assert out == full and r.header.tc == 0


# -- who gets what ----------------------------------------------------------------------
def test_outsiders_get_answers_for_our_names_but_refused_for_others():
    e = make_engine(forwarding=True)
    assert DNSRecord.parse(ask(e, query("node5.netboot.lan"), OUTSIDE)).rr
    r = DNSRecord.parse(ask(e, query("example.com"), OUTSIDE))
    assert RCODE[r.header.rcode] == "REFUSED" and r.header.aa == 0


def test_insiders_are_forwarded_only_with_recursion_desired_and_forwarders():
    e = make_engine(forwarding=True)
    f = ask(e, query("example.com", edns=1232))
    assert isinstance(f, Forward) and f.query.qname == d.name_wire("example.com")
    assert RCODE[DNSRecord.parse(ask(e, query("example.com", rd=False))).header.rcode] == "REFUSED"
    e2 = make_engine(forwarding=False)
    assert RCODE[DNSRecord.parse(ask(e2, query("example.com"))).header.rcode] == "REFUSED"


def test_zone_transfers_and_other_classes_are_refused(engine):
    r = DNSRecord.parse(ask(engine, query("netboot.lan", "AXFR"), tcp=True))
    assert RCODE[r.header.rcode] == "REFUSED"
    data = bytearray(query("node5.netboot.lan"))
    data[-1] = 3                               # class CH
    assert RCODE[DNSRecord.parse(ask(engine, bytes(data))).header.rcode] == "REFUSED"


def test_relay_patches_id_and_question_and_truncates_for_udp():
    e = make_engine(forwarding=True)
    f = ask(e, query("ExAmple.com", qid=7))
    upstream = DNSRecord.question("example.com")
    upstream.header.id = 999
    rep = upstream.reply()
    for i in range(60):
        rep.add_answer(RR("example.com", QTYPE.A, rdata=A(f"192.0.2.{i}")))
    out = e.relay(f, rep.pack())
    r = DNSRecord.parse(out)
    assert r.header.id == 7 and r.header.tc == 1 and out[12:12 + 13] == f.query.question[:13]
    f.tcp = True
    r = DNSRecord.parse(e.relay(f, rep.pack()))
    assert r.header.tc == 0 and len(r.rr) == 60 and str(r.q.qname) == "ExAmple.com."
    assert RCODE[DNSRecord.parse(e.relay(f, None)).header.rcode] == "SERVFAIL"


def test_rate_limit_per_source_drops_the_excess():
    e = make_engine(rate=10)
    got = [ask(e, query("node5.netboot.lan")) for _ in range(50)]
    assert sum(x is not None for x in got) == 20          # burst = 2 x rate
    assert e.counters["drop.ratelimit"] == 30
    assert ask(e, query("node5.netboot.lan"), "10.77.0.51") is not None


# -- malformed input -------------------------------------------------------------------
GOOD = query("node5.netboot.lan")
HDR = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)


def with_counts(qd=1, an=0, ns=0, ar=0, flags=0x0100) -> bytes:
    return struct.pack("!HHHHHH", 0x4242, flags, qd, an, ns, ar)


CORPUS = [
    # (name, message, expected: "drop.<r>" or "formerr.<r>")
    ("empty", b"", "drop.short"),
    ("half header", HDR[:7], "drop.short"),
    ("a response", GOOD[:2] + b"\x81\x00" + GOOD[4:], "drop.response"),
    ("no question", with_counts(qd=0), "formerr.counts"),
    ("two questions", with_counts(qd=2) + GOOD[12:] * 2, "formerr.counts"),
    ("answer in query", with_counts(an=1) + GOOD[12:], "formerr.counts"),
    ("absurd counts", with_counts(qd=65535, an=65535, ns=65535, ar=65535), "formerr.counts"),
    ("too many additionals", with_counts(ar=9) + GOOD[12:], "formerr.counts"),
    ("label 64", HDR + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", "formerr.label_too_long"),
    ("label type 0x80", HDR + b"\x80abc\x00\x00\x01\x00\x01", "formerr.label_too_long"),
    ("name 256", HDR + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
     "formerr.name_too_long"),
    ("pointer to itself", HDR + b"\xc0\x0c\x00\x01\x00\x01", "formerr.pointer_loop"),
    ("pointer forward", HDR + b"\x01a\xc0\x20\x00\x01\x00\x01" + b"\x00" * 20,
     "formerr.forward_pointer"),
    ("pointer into header", HDR + b"\xc0\x02\x00\x01\x00\x01", "formerr.bad_pointer"),
    ("pointer loop in additional", with_counts(ar=1) + GOOD[12:] + b"\xc0\x23\x00\x29",
     "formerr.pointer_loop"),
    ("truncated label", HDR + b"\x05ab", "formerr.truncated"),
    ("no terminator", HDR + b"\x01a", "formerr.truncated"),
    ("truncated type", GOOD[:-3], "formerr.truncated"),
    ("truncated pointer", HDR + b"\xc0", "formerr.truncated"),
    ("trailing bytes", GOOD + b"\x00", "formerr.trailing"),
    ("two OPTs", query("node5.netboot.lan", edns=1232)[:11] + b"\x02"
     + query("node5.netboot.lan", edns=1232)[12:] + query("x", edns=1232)[-11:],
     "formerr.opt_repeated"),
    ("OPT owner not root", with_counts(ar=1) + GOOD[12:] + b"\x01a\x00\x00\x29\x04\xd0"
     + b"\x00" * 6, "formerr.opt_owner"),
    ("OPT options overrun", with_counts(ar=1) + GOOD[12:] + b"\x00\x00\x29\x04\xd0\x00\x00\x00"
     b"\x00\x00\x05\x00\x0a\x00\x08\x00", "formerr.opt_options"),
    ("OPT rdlen overrun", with_counts(ar=1) + GOOD[12:] + b"\x00\x00\x29\x04\xd0\x00\x00\x00"
     b"\x00\x01\x00", "formerr.truncated"),
]


@pytest.mark.parametrize("name, msg, counter", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_queries_are_answered_formerr_or_dropped_and_counted(engine, name, msg, counter):
    out = ask(engine, msg)
    assert engine.counters[counter] == 1, dict(engine.counters)
    if counter.startswith("drop."):
        assert out is None
    else:
        r = DNSRecord.parse(out)
        assert RCODE[r.header.rcode] == "FORMERR" and r.header.id == 0x4242 and r.header.qr
    with pytest.raises(d.DecodeError) as ei:
        d.parse_query(msg)
    assert ei.value.reason == counter.split(".", 1)[1]


def test_opcode_other_than_query_is_notimp(engine):
    data = bytearray(GOOD)
    data[2] |= 4 << 3                           # NOTIFY
    assert RCODE[DNSRecord.parse(ask(engine, bytes(data))).header.rcode] == "NOTIMP"


def test_backward_pointers_outside_the_question_are_read():
    msg = with_counts(ar=1) + GOOD[12:] + b"\xc0\x12" + b"\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"
    q = d.parse_query(msg)                      # an A record owned by "netboot.lan" (ignored)
    assert q.qname == d.name_wire("node5.netboot.lan") and not q.edns
    assert d.read_name(msg, len(GOOD))[0] == d.name_wire("netboot.lan")


def test_a_pointer_chain_costs_bounded_time():
    # 30,000 backward pointers, each to the one before: rejected after MAX_POINTER_HOPS.
    body = bytearray(GOOD[12:])
    start = 12 + len(body)
    body += b"\x01a\x00"
    for i in range(30000):
        here = 12 + len(body)
        body += struct.pack("!H", 0xC000 | (here - 2 if i else start))
        if here > 0x3FFF:
            break
    msg = with_counts(ar=1) + bytes(body) + b"\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00"
    t = time.perf_counter()
    with pytest.raises(d.DecodeError):
        d.parse_query(msg)
    assert time.perf_counter() - t < 0.05


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_and_replies_parse(data):
    e = make_engine(forwarding=True)
    for _ in range(2):
        out = ask(e, data)
        if isinstance(out, bytes):
            r = oracle(out)
            assert out[:2] == data[:2] and (r is None or r.header.qr == 1)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_queries_never_raise(data):
    e = make_engine(forwarding=True)
    base = bytearray(query("node5.netboot.lan", edns=1232))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    for msg in (bytes(base), bytes(base[:cut])):
        for _ in range(2):
            out = ask(e, msg)
            if isinstance(out, bytes):
                oracle(out)


label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1,
                max_size=20)


@settings(max_examples=200, deadline=None)
@given(st.lists(label, min_size=0, max_size=3),
       st.sampled_from(["netboot.lan", "NETBOOT.lan", "77.10.in-addr.arpa", "example.com"]),
       st.sampled_from(["A", "PTR", "AAAA", "SOA", "NS", "MX", "ANY", "TXT"]),
       st.sampled_from([None, 512, 1232, 4096]), st.booleans(), st.integers(0, 65535))
def test_round_trip_against_dnslib(prefix, suffix, qtype, edns, rd, qid):
    e = make_engine()
    name = ".".join(prefix + [suffix])
    data = query(name, qtype, qid=qid, edns=edns, rd=rd)
    parsed = d.parse_query(data)
    oracle = DNSRecord.parse(data)
    assert parsed.qname == d.name_wire(str(oracle.q.qname)) and parsed.qtype == oracle.q.qtype
    assert parsed.question == data[12:len(data) - (11 if edns is not None else 0)]
    for _ in range(2):
        out = ask(e, data)
        r = DNSRecord.parse(out)
        assert r.header.id == qid and str(r.q.qname) == name + "." and r.header.rd == int(rd)
        ans = e.zone.lookup(name, oracle.q.qtype)
        if ans is None:
            assert RCODE[r.header.rcode] == "REFUSED"
        else:
            assert r.header.rcode == ans.rcode and r.header.aa == 1
            assert len(r.rr) == len(ans.answer) and len(r.auth) == len(ans.authority)
        assert any(x.rtype == QTYPE.OPT for x in r.ar) == (edns is not None)
