"""Enrollment tokens, the signing key ring and agent secrets (netbootd/auth/enroll.py)."""
from __future__ import annotations

import json
import os
import re
import stat

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from netbootd.auth import enroll
from netbootd.auth.enroll import KeyRing, TokenClaims, TokenError

NOW = 1_800_000_000
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._-]+")
# hypothesis reuses a module-level ring: the fixtures are per test, not per example
_SETTINGS = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])

accounts = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp",
                                                                     "Zs", "Cf", "Co", "Cn")),
                   min_size=1, max_size=40)
expiries = st.none() | st.integers(0, 2 ** 63 - 1)


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture
def ring(state):
    return KeyRing.load_or_create(state)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the key ring file --

def test_key_file_is_created_0600_in_a_0700_state_dir(state):
    old = os.umask(0)                     # the most permissive umask: modes still hold
    try:
        KeyRing.load_or_create(state)
    finally:
        os.umask(old)
    assert _mode(state) == 0o700
    assert _mode(os.path.join(state, enroll.KEYS_FILE)) == 0o600
    assert os.listdir(state) == [enroll.KEYS_FILE]       # no temp file left behind


def test_key_file_survives_a_reload(state, ring):
    again = KeyRing.load_or_create(state)
    assert again.keys == ring.keys and again.current == ring.current


def test_a_looser_key_file_is_tightened_with_a_warning(state, ring, caplog):
    path = os.path.join(state, enroll.KEYS_FILE)
    os.chmod(path, 0o644)
    with caplog.at_level("WARNING", logger="netbootd.enroll"):
        KeyRing.load_or_create(state)
    assert _mode(path) == 0o600
    assert "tightened to 0600" in caplog.text
    assert not any(_b in caplog.text for _b in map(enroll._b64e, ring.keys.values()))


def test_a_damaged_key_file_is_named_and_never_replaced(state, ring):
    path = os.path.join(state, enroll.KEYS_FILE)
    with open(path, "w") as f:
        f.write('{"version": 1, "current": "zz", "keys": {}}')
    with pytest.raises(ValueError, match="enroll-keys.json"):
        KeyRing.load_or_create(state)
    with open(path) as f:
        assert '"zz"' in f.read()


def test_rotate_adds_a_current_key_and_keeps_the_old_one(state, ring):
    old = ring.current
    new = ring.rotate(state)
    assert new != old and ring.current == new and old in ring.keys
    disk = KeyRing.load_or_create(state)
    assert disk.current == new and set(disk.keys) == {old, new}
    assert _mode(os.path.join(state, enroll.KEYS_FILE)) == 0o600


def test_rotate_keeps_a_key_another_process_added(state, ring):
    other = KeyRing.load_or_create(state)
    k1 = other.rotate(state)
    k2 = ring.rotate(state)                  # a stale in-memory ring
    assert {k1, k2} <= set(KeyRing.load_or_create(state).keys)


def test_refresh_picks_up_another_process_rotation(state, ring, caplog):
    """A running daemon's ring sees a rotation made by the CLI; nothing changed
    costs one stat; a damaged file keeps the keys in memory."""
    assert ring.refresh(state) is False
    tok_old = enroll.make_token(ring, "acme", "tok-aaaaaaaaaa", None)
    cli = KeyRing.load_or_create(state)
    kid = cli.rotate(state)
    tok_new = enroll.make_token(cli, "acme", "tok-bbbbbbbbbb", None)
    with pytest.raises(TokenError, match="unknown signing key"):
        enroll.verify_token(ring, tok_new, NOW)
    assert ring.refresh(state) is True and ring.current == kid
    assert ring.refresh(state) is False
    assert enroll.verify_token(ring, tok_new, NOW) and enroll.verify_token(ring, tok_old, NOW)
    with open(os.path.join(state, enroll.KEYS_FILE), "w") as f:
        f.write("garbage")
    assert ring.refresh(state) is False and ring.current == kid
    assert "not reloaded" in caplog.text


def test_the_current_key_cannot_be_retired(state, ring):
    with pytest.raises(ValueError, match="rotate"):
        ring.retire(state, ring.current)
    with pytest.raises(KeyError):
        ring.retire(state, "00000000")


# -- tokens --

def test_a_token_is_compact_and_command_line_safe(ring):
    tok = enroll.make_token(ring, "acme", enroll.new_token_id(), NOW + 86400 * 365)
    assert len(tok) < 120 and TOKEN_CHARS.fullmatch(tok) and tok.startswith("nbt1.")
    tok = enroll.make_token(ring, "acme", enroll.new_token_id(), None)
    assert len(tok) < 100


def test_new_token_ids_look_alike_and_differ():
    ids = {enroll.new_token_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"tok-[a-z2-7]{10}", i) for i in ids)


@_SETTINGS
@given(account=accounts, expires=expiries)
def test_token_round_trip(ring, account, expires):
    tid = enroll.new_token_id()
    tok = enroll.make_token(ring, account, tid, expires)
    assert TOKEN_CHARS.fullmatch(tok)
    now = NOW if expires is None else expires - 1
    assert enroll.verify_token(ring, tok, now) == TokenClaims(ring.current, account, tid, expires)


@_SETTINGS
@given(data=st.data())
def test_any_single_byte_tamper_is_refused(ring, data):
    tok = enroll.make_token(ring, data.draw(accounts), enroll.new_token_id(),
                            data.draw(st.none() | st.integers(NOW + 1, NOW + 10 ** 9)))
    i = data.draw(st.integers(0, len(tok) - 1))
    c = data.draw(st.characters(codec="ascii").filter(lambda c: c != tok[i]))
    bad = tok[:i] + c + tok[i + 1:]
    with pytest.raises(TokenError):
        enroll.verify_token(ring, bad, NOW)


def test_every_one_character_change_is_refused(ring):
    """Exhaustively: each position, each token character (the spare bits at the
    end of a base64 part included)."""
    tok = enroll.make_token(ring, "acme", "tok-abcdefghij", None)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    for i in range(len(tok)):
        for c in alphabet:
            if c != tok[i]:
                with pytest.raises(TokenError):
                    enroll.verify_token(ring, tok[:i] + c + tok[i + 1:], NOW)
    for cut in range(len(tok)):
        with pytest.raises(TokenError):
            enroll.verify_token(ring, tok[:cut], NOW)


@_SETTINGS
@given(text=st.text(max_size=600) | st.from_regex(r"nbt1\.[A-Za-z0-9_-]{0,80}\.[A-Za-z0-9_-]{43}",
                                                   fullmatch=True))
def test_random_strings_never_crash_verify(ring, text):
    with pytest.raises(TokenError):
        enroll.verify_token(ring, text, NOW)


@pytest.mark.parametrize("bad", [None, 5, b"nbt1.x.y", "nbt1." + "A" * 600])
def test_non_strings_and_oversize_are_malformed(ring, bad):
    with pytest.raises(TokenError, match="malformed token"):
        enroll.verify_token(ring, bad, NOW)


def test_a_forged_payload_with_a_good_shape_is_a_bad_signature(ring):
    p64 = enroll._b64e(f"{ring.current}\nacme\ntok-aaaaaaaaaa\n".encode())
    with pytest.raises(TokenError, match="bad signature"):
        enroll.verify_token(ring, f"nbt1.{p64}.{'A' * 43}", NOW)


def test_a_token_of_another_ring_is_refused(ring, tmp_path):
    other = KeyRing.load_or_create(str(tmp_path / "other"))
    tok = enroll.make_token(other, "acme", enroll.new_token_id(), None)
    with pytest.raises(TokenError, match="unknown signing key"):
        enroll.verify_token(ring, tok, NOW)


def test_expired_tokens_are_refused_at_the_second(ring):
    tok = enroll.make_token(ring, "acme", enroll.new_token_id(), NOW)
    assert enroll.verify_token(ring, tok, NOW - 0.5).expires == NOW
    with pytest.raises(TokenError, match="expired"):
        enroll.verify_token(ring, tok, NOW)


def test_tokens_survive_a_rotation_and_die_with_their_key(state, ring):
    old_tok = enroll.make_token(ring, "acme", enroll.new_token_id(), None)
    old_kid = ring.current
    ring.rotate(state)
    new_tok = enroll.make_token(ring, "acme", enroll.new_token_id(), None)
    fresh = KeyRing.load_or_create(state)            # as a restarted daemon sees it
    assert enroll.verify_token(fresh, old_tok, NOW).kid == old_kid
    assert enroll.verify_token(fresh, new_tok, NOW).kid == fresh.current
    ring.retire(state, old_kid)
    for r in (ring, KeyRing.load_or_create(state)):
        with pytest.raises(TokenError, match="unknown signing key"):
            enroll.verify_token(r, old_tok, NOW)
        assert enroll.verify_token(r, new_tok, NOW)


@pytest.mark.parametrize("account,token_id,expires", [
    ("", "tok-a", None), ("a\nb", "tok-a", None), ("acme", "", None),
    ("x" * 129, "tok-a", None), ("acme", "tok-a", -1), ("acme", "tok-a", True),
    ("acme", "tok-a", 2 ** 63), ("acme", "tok-a", 1.5), (3, "tok-a", None)])
def test_make_token_refuses_bad_claims(ring, account, token_id, expires):
    with pytest.raises(ValueError):
        enroll.make_token(ring, account, token_id, expires)


def test_token_hash_is_sha256_hex_and_not_the_token(ring):
    tok = enroll.make_token(ring, "acme", enroll.new_token_id(), None)
    h = enroll.token_hash(tok)
    assert re.fullmatch(r"[0-9a-f]{64}", h) and tok not in h
    assert h == enroll.token_hash(tok) != enroll.token_hash(tok + "x")


def test_the_key_file_holds_no_tokens(state, ring):
    with open(os.path.join(state, enroll.KEYS_FILE)) as f:
        doc = json.load(f)
    assert doc["version"] == 1 and doc["current"] == ring.current


# -- agent secrets --

def test_agent_secret_names_its_mac():
    s = enroll.new_agent_secret("52-54-00-AA-BB-CC")
    assert re.fullmatch(r"nba1\.525400aabbcc\.[A-Za-z0-9_-]{43}", s)
    assert enroll.secret_mac(s) == "52:54:00:aa:bb:cc"
    assert s != enroll.new_agent_secret("52:54:00:aa:bb:cc")


def test_agent_secret_matches_only_its_hash():
    s = enroll.new_agent_secret("52:54:00:aa:bb:cc")
    h = enroll.secret_hash(s)
    assert enroll.secret_matches(s, h)
    assert not enroll.secret_matches(s, None)
    assert not enroll.secret_matches(s, "")
    assert not enroll.secret_matches(s[:-1] + ("A" if s[-1] != "A" else "B"), h)
    assert not enroll.secret_matches(enroll.new_agent_secret("52:54:00:aa:bb:cc"), h)


@pytest.mark.parametrize("bad", [
    "", "nba1", "nba1.525400aabbcc.", "nba1.525400AABBCC." + "A" * 43,
    "nba1.525400aabbc." + "A" * 43, "nba2.525400aabbcc." + "A" * 43,
    "nba1.525400aabbcc." + "A" * 42, "nba1.525400aabbcc." + "A" * 43 + "\n", None])
def test_malformed_agent_secrets_are_refused(bad):
    with pytest.raises(TokenError, match="malformed agent secret"):
        enroll.secret_mac(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_random_agent_secrets_never_crash(text):
    try:
        assert enroll.secret_mac(text).count(":") == 5
    except TokenError:
        pass
    assert enroll.secret_matches(text, "0" * 64) is False
