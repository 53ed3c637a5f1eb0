"""netbootd/auth/tls.py and `netbootd tls`: the pin is what curl and openssl
compute, a self-signed pair is written with the key 0600, the listener's checks
refuse a key others can read or that is not the certificate's, and the [http]
TLS config fields name the bad key."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from netbootd import config
from netbootd.__main__ import main
from netbootd.auth import tls


@pytest.fixture
def pair(tmp_path):
    return tls.make_selfsigned(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), cn="boot.lab",
                               sans=["10.0.0.1"])


def test_the_pin_is_the_sha256_of_the_spki_as_openssl_computes_it(pair):
    r = subprocess.run(f"openssl x509 -in {pair['cert']} -pubkey -noout | openssl pkey -pubin "
                       "-outform der | openssl dgst -sha256 -binary | base64", shell=True,
                       capture_output=True, text=True, check=True)
    assert tls.pubkey_pin(pair["cert"]) == "sha256//" + r.stdout.strip() == pair["pin"]
    assert tls.valid_pin(pair["pin"]) and not tls.valid_pin("sha256//short=")


def test_selfsigned_writes_a_private_key_and_names_and_refuses_to_overwrite(pair, tmp_path):
    assert os.stat(pair["key"]).st_mode & 0o777 == 0o600
    assert pair["sans"] == ["boot.lab", "10.0.0.1"]
    text = subprocess.run(["openssl", "x509", "-in", pair["cert"], "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:boot.lab" in text and "IP Address:10.0.0.1" in text
    with pytest.raises(tls.TlsError, match="exists"):
        tls.make_selfsigned(pair["cert"], pair["key"], cn="x")
    with pytest.raises(tls.TlsError, match="--san"):
        tls.make_selfsigned(str(tmp_path / "a"), str(tmp_path / "b"), cn="x", sans=["a b"])
    again = tls.make_selfsigned(pair["cert"], pair["key"], cn="boot.lab", overwrite=True)
    assert again["pin"] != pair["pin"], "a new key, a new pin"


def test_the_listener_refuses_a_readable_key_a_foreign_key_and_garbage(pair, tmp_path):
    assert tls.check_pair(pair["cert"], pair["key"])["pin"] == pair["pin"]
    os.chmod(pair["key"], 0o644)
    with pytest.raises(tls.TlsError, match=r"http.tls_key: .* readable by others \(mode 0644\)"):
        tls.check_pair(pair["cert"], pair["key"])
    os.chmod(pair["key"], 0o600)
    other = tls.make_selfsigned(str(tmp_path / "o.pem"), str(tmp_path / "o.key"), cn="other")
    with pytest.raises(tls.TlsError, match="is not the key of"):
        tls.check_pair(pair["cert"], other["key"])
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    bad.chmod(0o600)
    with pytest.raises(tls.TlsError, match="not an unencrypted PEM private key"):
        tls.check_pair(pair["cert"], str(bad))
    with pytest.raises(tls.TlsError, match="not a PEM or DER"):
        tls.check_pair(str(bad), pair["key"])
    with pytest.raises(tls.TlsError, match="No such file"):
        tls.check_pair(pair["cert"], str(tmp_path / "missing"))


@pytest.mark.parametrize("text,err", [
    ('[http]\ntls_cert = "/a.pem"\n', "http.tls_key: is required with http.tls_cert"),
    ('[http]\ntls_key = "/a.key"\n', "http.tls_cert: is required with http.tls_key"),
    ('[http]\ntls_cert = "a.pem"\ntls_key = "/k"\n', "x.toml:2: http.tls_cert: 'a.pem' must be"),
    ('[http]\ntls_cert = "/c"\ntls_key = "/k"\ntls_port = 0\n', "x.toml:4: http.tls_port: must"),
    ('[http]\ntls_cert = "/c"\ntls_key = "/k"\ntls_port = 8080\n', "8080 is boot.http_port"),
])
def test_tls_config_errors_name_the_key(text, err):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "x.toml")
    assert err in str(e.value)


def test_tls_config_defaults_off_and_parses():
    assert config.parse("").http.tls_cert is None
    h = config.parse('[http]\ntls_cert = "/c"\ntls_key = "/k"\n').http
    assert (h.tls_cert, h.tls_key, h.tls_port) == ("/c", "/k", 8443)


def test_cli_selfsigned_then_pin_json_and_table(tmp_path, capsys):
    state = str(tmp_path / "state")
    assert main(["tls", "selfsigned", "--cn", "10.1.2.3", "--state-dir", state, "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["configured"] is False and made["key"].endswith("tls/netbootd.key")
    assert main(["tls", "pin", "--state-dir", state, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pin"] == made["pin"]
    assert main(["tls", "pin", "--cert", made["cert"]]) == 0
    assert capsys.readouterr().out.strip() == made["pin"]
    assert main(["tls", "selfsigned", "--cn", "10.1.2.3", "--state-dir", state]) == 2
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert main(["tls", "pin", "--state-dir", str(tmp_path / "none")]) == 2
    assert "netbootd tls selfsigned" in capsys.readouterr().err
    cfg = tmp_path / "n.toml"
    cfg.write_text(f'[http]\ntls_cert = "{tmp_path}/c/x.crt"\ntls_key = "{tmp_path}/c/x.key"\n')
    assert main(["tls", "selfsigned", "--cn", "boot", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "HTTPS is on once" not in out and os.path.exists(f"{tmp_path}/c/x.key")
