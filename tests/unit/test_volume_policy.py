"""Volume names, sizes, resizes and free-space thresholds (netbootd/policy/volumes.py)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from netbootd.policy.volumes import (LVM_RESERVED, MAX_SIZE, MIN_SIZE, SECTOR, NoSpace,
                                     PoolUsage, Thresholds, Volume, VolumeError, check_name,
                                     check_resize, check_size, check_space, human,
                                     parse_size)

GiB = 1 << 30
GOOD = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


@pytest.mark.parametrize("name", ["a", "golden", "host-01", "web_2", "0", "x" * 63,
                                  "debian-12-golden"])
def test_good_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name,words", [
    ("a/b", "slash"), ("/etc/passwd", "slash"), ("../x", "slash"), ("a\\b", "slash"),
    ("..", "dot"), (".", "dot"), (".hidden", "dot"), ("a.img", "dot"), ("a..b", "dot"),
    ("", "empty"), ("x" * 64, "longer than 63"), ("Golden", "'G'"), ("a b", "' '"),
    ("a\nb", "'\\n'"), ("a\0b", "'\\x00'"), ("-x", "first character"),
    ("_x", "first character"), ("é", "'é'"), ("a;rm", "';'"), ("a$b", "'$'"),
    ("pool_tdata", "_tdata"), ("x_tmeta", "_tmeta"), ("snapshot1", "snapshot"),
    ("pvmove0", "pvmove"),
])
def test_bad_names_are_refused_naming_the_field_and_why(name, words):
    with pytest.raises(VolumeError) as e:
        check_name(name)
    assert e.value.field == "name" and e.value.code == "invalid"
    assert words in str(e.value)
    assert str(e.value).startswith("name: ")


def test_a_name_that_is_not_a_string_is_refused():
    for value in (None, 5, b"abc", ["a"]):
        with pytest.raises(VolumeError, match="must be a string"):
            check_name(value)


def test_the_field_in_the_error_is_the_callers():
    with pytest.raises(VolumeError) as e:
        check_name("a/b", "new_name")
    assert e.value.field == "new_name" and str(e.value).startswith("new_name: ")


@settings(max_examples=400)
@given(st.text(max_size=80))
def test_any_text_passes_only_if_it_is_a_safe_single_component(name):
    try:
        check_name(name)
    except VolumeError as e:
        assert e.field == "name"
        assert not GOOD.fullmatch(name) or any(w in name for w in LVM_RESERVED) \
            or name.startswith(("snapshot", "pvmove"))
        return
    assert GOOD.fullmatch(name)
    assert "/" not in name and "." not in name and "\0" not in name
    assert name == name.strip() and name.isascii()


@settings(max_examples=200)
@given(st.from_regex(GOOD, fullmatch=True))
def test_every_name_of_the_rule_passes_unless_lvm_reserves_it(name):
    reserved = any(w in name for w in LVM_RESERVED) or name.startswith(("snapshot", "pvmove"))
    if reserved:
        with pytest.raises(VolumeError):
            check_name(name)
    else:
        assert check_name(name) == name


# ---------------------------------------------------------------- sizes

@pytest.mark.parametrize("size", [MIN_SIZE, GiB, 10 * GiB, MAX_SIZE, MIN_SIZE + SECTOR])
def test_good_sizes_pass(size):
    assert check_size(size) == size


@pytest.mark.parametrize("size,words", [
    (0, "not a positive"), (-1, "not a positive"), (-GiB, "not a positive"),
    (1, "below the minimum"), (MIN_SIZE - SECTOR, "below the minimum"),
    (MAX_SIZE + SECTOR, "above the maximum"), (2 ** 64, "above the maximum"),
    (10 ** 30, "above the maximum"), (GiB + 1, "sectors"), (GiB + 511, "next: 1073742336"),
])
def test_bad_sizes_are_refused_naming_the_size(size, words):
    with pytest.raises(VolumeError) as e:
        check_size(size)
    assert e.value.field == "size" and words in str(e.value)


@pytest.mark.parametrize("value", [1.5, "1G", None, True, False, float("nan")])
def test_a_size_must_be_an_int(value):
    with pytest.raises(VolumeError, match="whole number of bytes"):
        check_size(value)


@settings(max_examples=300)
@given(st.integers(min_value=-(2 ** 80), max_value=2 ** 80))
def test_any_integer_passes_only_in_range_and_sector_aligned(n):
    try:
        assert check_size(n) == n
    except VolumeError as e:
        assert e.field == "size"
        assert n < MIN_SIZE or n > MAX_SIZE or n % SECTOR
    else:
        assert MIN_SIZE <= n <= MAX_SIZE and n % SECTOR == 0


@pytest.mark.parametrize("text,expect", [
    ("1G", GiB), ("1g", GiB), ("1GiB", GiB), ("1GB", GiB), ("10G", 10 * GiB),
    ("512M", 512 << 20), ("1048576", 1 << 20), (" 2 T ", 2 << 40), ("4096k", 4 << 20),
    ("16T", 16 << 40), (GiB, GiB),
])
def test_parse_size_reads_binary_units(text, expect):
    assert parse_size(text) == expect


@pytest.mark.parametrize("text,words", [
    ("", "not a size"), ("G", "not a size"), ("1.5G", "not a size"), ("-1G", "not a size"),
    ("1X", "not a size"), ("0x10", "not a size"), ("1e9", "not a size"),
    ("99999999999999999999T", "above the maximum"), ("17T", "above the maximum"),
    ("1K", "below the minimum"), ("0", "not a positive"), ("1\x00G", "not a size"),
])
def test_parse_size_refuses_junk_and_overflow(text, words):
    with pytest.raises(VolumeError) as e:
        parse_size(text)
    assert e.value.field == "size" and words in str(e.value)


@settings(max_examples=200)
@given(st.text(max_size=30))
def test_parse_size_never_raises_anything_but_volume_error(text):
    try:
        n = parse_size(text)
    except VolumeError:
        return
    assert MIN_SIZE <= n <= MAX_SIZE


# ---------------------------------------------------------------- resize

def test_growing_is_allowed():
    assert check_resize(GiB, 2 * GiB) == 2 * GiB
    assert check_resize(GiB, GiB) == GiB


def test_shrinking_is_refused_without_force_with_both_sizes():
    with pytest.raises(VolumeError) as e:
        check_resize(2 * GiB, GiB)
    msg = str(e.value)
    assert e.value.field == "size" and "2147483648" in msg and "1073741824" in msg
    assert "force" in msg


def test_shrinking_with_force_is_allowed():
    assert check_resize(2 * GiB, GiB, force=True) == GiB


def test_a_resize_to_a_bad_size_is_refused_even_with_force():
    with pytest.raises(VolumeError, match="sectors"):
        check_resize(GiB, GiB + 1, force=True)


@given(st.integers(MIN_SIZE // SECTOR, MAX_SIZE // SECTOR),
       st.integers(MIN_SIZE // SECTOR, MAX_SIZE // SECTOR), st.booleans())
def test_resize_refuses_exactly_the_unforced_shrinks(cur, new, force):
    cur, new = cur * SECTOR, new * SECTOR
    if new < cur and not force:
        with pytest.raises(VolumeError):
            check_resize(cur, new, force)
    else:
        assert check_resize(cur, new, force) == new


# ---------------------------------------------------------------- space

def usage(total=100 * GiB, free=50 * GiB, provisioned=0):
    return PoolUsage(total=total, used=total - free, free=free, provisioned=provisioned)


def test_the_floor_is_the_larger_of_bytes_and_percent():
    assert Thresholds(min_free_bytes=GiB, min_free_percent=5).floor(100 * GiB) == 5 * GiB
    assert Thresholds(min_free_bytes=10 * GiB, min_free_percent=5).floor(100 * GiB) == 10 * GiB
    assert Thresholds().floor(100 * GiB) == 0


def test_an_operation_that_stays_above_the_floor_passes():
    check_space("clone", "h1", usage(), Thresholds(min_free_percent=10), need=39 * GiB)


def test_an_operation_that_crosses_the_floor_is_refused_with_the_numbers():
    with pytest.raises(NoSpace) as e:
        check_space("clone", "h1", usage(), Thresholds(min_free_percent=10), need=41 * GiB,
                    pool="fast")
    err = e.value
    assert (err.need, err.free, err.floor, err.total) == (41 * GiB, 50 * GiB, 10 * GiB,
                                                         100 * GiB)
    msg = str(err)
    for text in ("clone 'h1'", "pool 'fast'", str(41 * GiB), str(50 * GiB), str(10 * GiB),
                 str(100 * GiB), "10%", "refused"):
        assert text in msg
    assert err.code == "no_space"


def test_a_pool_already_below_its_floor_refuses_even_a_thin_create():
    with pytest.raises(NoSpace, match="keeps at least"):
        check_space("create", "v", usage(free=GiB), Thresholds(min_free_bytes=2 * GiB),
                    need=0, grow=GiB)


def test_overcommit_caps_the_provisioned_size():
    t = Thresholds(overcommit=2.0)
    check_space("create", "v", usage(provisioned=150 * GiB), t, grow=50 * GiB)
    with pytest.raises(NoSpace) as e:
        check_space("create", "v", usage(provisioned=150 * GiB), t, grow=51 * GiB)
    assert "200 GiB" in str(e.value) and "150 GiB" in str(e.value)


@pytest.mark.parametrize("kwargs,field", [
    ({"min_free_bytes": -1}, "min_free_bytes"), ({"min_free_bytes": 1.5}, "min_free_bytes"),
    ({"min_free_percent": 100}, "min_free_percent"),
    ({"min_free_percent": -1}, "min_free_percent"),
    ({"min_free_percent": float("nan")}, "min_free_percent"),
    ({"overcommit": 0}, "overcommit"), ({"overcommit": float("inf")}, "overcommit"),
])
def test_bad_thresholds_are_refused_naming_the_key(kwargs, field):
    with pytest.raises(VolumeError) as e:
        Thresholds(**kwargs)
    assert e.value.field == field


@given(st.integers(0, 2 ** 50), st.integers(0, 2 ** 50), st.integers(0, 2 ** 50),
       st.floats(0, 99.9), st.integers(0, 2 ** 50))
def test_check_space_refuses_exactly_when_free_would_cross_the_floor(total, free, floor_b,
                                                                    pct, need):
    t = Thresholds(min_free_bytes=floor_b, min_free_percent=pct)
    u = PoolUsage(total=total, used=0, free=free)
    try:
        check_space("create", "v", u, t, need=need)
    except NoSpace as e:
        assert free - need < t.floor(total) and e.need == need and e.free == free
    else:
        assert free - need >= t.floor(total)


def test_values_serialize():
    v = Volume("a", GiB, 0, None, "volume", 1.0)
    assert v.as_dict()["kind"] == "volume"
    assert usage().as_dict()["free"] == 50 * GiB


def test_human_sizes():
    assert human(GiB) == "1 GiB" and human(1536) == "1.5 KiB" and human(5) == "5 B"
