"""[http] admin_over_plain: who may send the admin token over plain http
(net/http/routes.admin_plain_refusal, config.HttpConfig.admin_plain).  The real
sockets, a peer in a network namespace: tests/net/test_admin_plain.py."""
from __future__ import annotations

import pytest

from netbootd import config
from netbootd.net.http.routes import admin_plain_refusal, is_loopback

URL = "https://192.0.2.1:8443/api/v1/hosts/x"


@pytest.mark.parametrize("peer,loop", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("127.255.0.9", True), ("::1", True),
    ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("192.0.2.1", False), ("::", False),
    ("fe80::1%eth0", False), ("::ffff:10.0.0.1", False), ("localhost", False), ("", False),
    (None, False),
])
def test_loopback_is_127_8_and_1_and_their_mapped_forms_only(peer, loop):
    assert is_loopback(peer) is loop


@pytest.mark.parametrize("policy,peer,allowed", [
    ("allow", "192.0.2.7", True), ("allow", "127.0.0.1", True),
    ("loopback", "127.0.0.1", True), ("loopback", "::1", True),
    ("loopback", "192.0.2.7", False), ("loopback", None, False),
    ("refuse", "127.0.0.1", False), ("refuse", "192.0.2.7", False),
])
def test_the_policy_decides_by_the_peer(policy, peer, allowed):
    why = admin_plain_refusal(policy, peer, URL)
    assert (why is None) is allowed
    if not allowed:
        assert f'admin_over_plain = "{policy}"' in why and f"use {URL}" in why
        assert "netbootd token rotate" in why


def test_a_peer_that_is_the_address_called_is_this_machine():
    """A connection from 10.0.0.1 to 10.0.0.1 never left the machine (the CLI with
    --server http://<its own address>)."""
    assert admin_plain_refusal("loopback", "10.0.0.1", URL, "10.0.0.1") is None
    assert admin_plain_refusal("loopback", "10.0.0.2", URL, "10.0.0.1") is not None
    assert admin_plain_refusal("loopback", None, URL, None) is not None
    assert admin_plain_refusal("refuse", "10.0.0.1", URL, "10.0.0.1") is not None


def test_without_tls_the_refusal_says_to_call_from_the_machine():
    why = admin_plain_refusal("loopback", "192.0.2.7", None)
    assert "from this machine only" in why and "127.0.0.1" in why and "https" not in why


def test_the_default_follows_tls_and_bad_values_are_named_with_their_line():
    assert config.parse("").http.admin_plain() == "allow"
    tls = '[http]\ntls_cert = "/etc/c.pem"\ntls_key = "/etc/k.pem"\n'
    assert config.parse(tls).http.admin_plain() == "loopback"
    assert config.parse(tls + 'admin_over_plain = "allow"\n').http.admin_plain() == "allow"
    assert config.parse(tls + 'admin_over_plain = "refuse"\n').http.admin_plain() == "refuse"
    assert config.parse('[http]\nadmin_over_plain = "loopback"\n').http.admin_plain() == \
        "loopback"
    with pytest.raises(config.ConfigError) as e:
        config.parse('[http]\nadmin_over_plain = "never"\n', "n.toml")
    assert str(e.value) == ("n.toml:2: http.admin_over_plain: must be one of 'allow', "
                            "'loopback', 'refuse'")
    with pytest.raises(config.ConfigError) as e:
        config.parse('[http]\n\nadmin_over_plain = "refuse"\n', "n.toml")
    assert str(e.value).startswith('n.toml:3: http.admin_over_plain: "refuse" needs '
                                   "http.tls_cert")


def test_config_check_shows_the_policy_that_applies(tmp_path, capsys):
    from netbootd.cli import build_parser
    conf = tmp_path / "n.toml"
    conf.write_text('[http]\ntls_cert = "/etc/c.pem"\ntls_key = "/etc/k.pem"\n')
    args = build_parser().parse_args(["config", "check", str(conf)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().endswith("admin token over plain http: loopback)")
