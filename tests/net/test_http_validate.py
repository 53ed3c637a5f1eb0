"""The API's validators and the OpenAPI document's patterns are one rule
(net/http/validate.py): on generated strings, a pattern matches exactly
when the code accepts.  The code is the reference (policy/boot.py for
kernel/initrd names, model.normalize_mac, dhcp_engine.sanitize_hostname)."""
from __future__ import annotations

import ipaddress
import re

from hypothesis import given, settings, strategies as st

from netbootd.model import normalize_mac
from netbootd.net.http import validate as v
from netbootd.net.http.errors import BadRequest
from netbootd.policy.boot import ProfileError, validate_args

PATH_CHARS = "abAZ09._+-/:~?=,@%&" + "\\ \x00é"
MAC_CHARS = "0123456789abcdefABCDEFg:-. "


def _code_accepts_kernel(name: str) -> bool:
    try:
        validate_args("linux", {"kernel": name})
        return True
    except ProfileError:
        return False


def _schema_accepts_kernel(name: str) -> bool:
    return (re.fullmatch(v.LOCATION_URL_PATTERN, name) is not None
            and len(name) <= v.LOCATION_URL_MAX) or \
        (re.fullmatch(v.LOCATION_NAME_PATTERN, name) is not None
         and len(name) <= v.LOCATION_NAME_MAX)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(PATH_CHARS, max_size=12),
                 st.lists(st.sampled_from(["..", ".", "", "a", ".a", "..a", "a.."]),
                          min_size=1, max_size=4).map("/".join),
                 st.sampled_from(["http://", "https://", "tftp://", "ftp://"]).flatmap(
                     lambda s: st.text(PATH_CHARS, max_size=8).map(lambda t: s + t))))
def test_kernel_names_the_document_allows_are_those_the_code_accepts(name):
    assert _schema_accepts_kernel(name) == _code_accepts_kernel(name), name


def test_kernel_name_length_limits_agree():
    for n in (255, 256):
        assert _schema_accepts_kernel("k" * n) == _code_accepts_kernel("k" * n)
    url = "http://h/" + "k" * 1015
    assert _schema_accepts_kernel(url) == _code_accepts_kernel(url)


@settings(max_examples=800, deadline=None)
@given(st.text(MAC_CHARS, min_size=11, max_size=18))
def test_mac_pattern_is_what_normalize_mac_accepts(text):
    try:
        normalize_mac(text)
        ok = True
    except ValueError:
        ok = False
    # normalize_mac strips and lower-cases first; the pattern is for the
    # path/query value as sent (no surrounding blanks).
    if text == text.strip():
        assert (re.fullmatch(v.MAC_PATTERN, text) is not None) == ok, text


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.text("0123456789.", max_size=16),
                 st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t)))))
def test_ipv4_check_is_strict_dotted_quad(text):
    try:
        expected = str(ipaddress.IPv4Address(text)) == text
    except ValueError:
        expected = text == ""        # empty: not known (the pattern allows it)
    try:
        v.ipv4(text)
        ok = True
    except BadRequest:
        ok = False
    assert ok == expected == (re.fullmatch(v.IPV4_PATTERN, text) is not None), text


@settings(max_examples=800, deadline=None)
@given(st.text("abZ09-._ ", min_size=1, max_size=20))
def test_hostname_pattern_is_what_the_patch_check_accepts(raw):
    try:
        v.hostname(raw)
        ok = True
    except BadRequest:
        ok = False
    assert (re.fullmatch(v.HOSTNAME_PATTERN, raw) is not None) == ok, raw
