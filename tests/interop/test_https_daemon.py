"""`netbootd serve` with [http] tls_cert/tls_key in a namespace: the HTTPS listener
answers curl with the right pin (and only then), the log and /metrics show it; a
key file others can read keeps the daemon from starting, with the reason."""
from __future__ import annotations

import os
import subprocess

import pytest

from netbootd.auth import tls

from .harness import build_pair, netbootd_bin, write_config

WRONG_PIN = "sha256//" + "C" * 43 + "="


def _config(tmp_path, pair) -> str:
    return str(write_config(tmp_path / "nb.toml", f'''
[http]
tls_cert = "{pair["cert"]}"
tls_key = "{pair["key"]}"
tls_port = 8443
'''))


@pytest.mark.interop
def test_the_daemon_serves_https_with_the_configured_key(lab, netbootd_factory, tmp_path):
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    srv, cli, srv_if = lan.ns["srv"], lan.ns["cli"], lan.ifs["srv"]
    pair = tls.make_selfsigned(str(tmp_path / "tls/c.pem"), str(tmp_path / "tls/k.pem"),
                               cn="10.77.0.1")
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", srv_if,
                                "--config", _config(tmp_path, pair)]).start()
    log = nb.log_path.read_text()
    assert "https: listening on 0.0.0.0:8443" in log and pair["pin"] in log

    def curl(*args):
        return lab.ns_exec(cli, "curl", "-sS", "--max-time", "10", *args, check=False)
    r = curl("-k", "--pinnedpubkey", pair["pin"], "https://10.77.0.1:8443/api/v1/status")
    assert r.returncode == 0 and '"mode": "full"' in r.stdout.replace('":"', '": "'), r.stderr
    r = curl("-k", "--pinnedpubkey", WRONG_PIN, "https://10.77.0.1:8443/api/v1/status")
    assert r.returncode == 90, r.stderr
    r = curl("--cacert", pair["cert"], "https://10.77.0.1:8443/metrics")
    assert 'netbootd_http_listener{address="0.0.0.0",port="8443",scheme="https"} 1.0' in r.stdout
    assert 'scheme="http"' in r.stdout
    r = curl("http://10.77.0.1:8080/api/v1/status")
    assert r.returncode == 0, "plain http stays on"
    # [http] admin_over_plain defaults to "loopback" with TLS: the admin token from
    # another machine over plain http gets 403 naming the https URL; over https it works
    assert "admin token over plain http: loopback" in log
    token = (nb.state_dir / "admin.token").read_text().strip()
    bearer = ("-H", f"Authorization: Bearer {token}")
    r = curl(*bearer, "-w", "\n%{http_code}", "http://10.77.0.1:8080/api/v1/tokens")
    assert r.stdout.endswith("\n403") and "use https://10.77.0.1:8443/api/v1/tokens" in r.stdout
    r = curl(*bearer, "-w", "\n%{http_code}", "-k", "--pinnedpubkey", pair["pin"],
             "https://10.77.0.1:8443/api/v1/tokens")
    assert r.stdout.endswith("\n200"), r.stdout


@pytest.mark.interop
def test_a_key_others_can_read_keeps_the_daemon_from_starting(lab, tmp_path):
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    pair = tls.make_selfsigned(str(tmp_path / "tls/c.pem"), str(tmp_path / "tls/k.pem"),
                               cn="10.77.0.1")
    os.chmod(pair["key"], 0o644)
    p = lab.popen(lan.ns["srv"], [netbootd_bin(), "serve", "--mode", "full", "--interface",
                                  lan.ifs["srv"], "--config", _config(tmp_path, pair),
                                  "--state-dir", str(tmp_path / "state")],
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=60)
    assert p.returncode != 0
    assert f"http.tls_key: {pair['key']} is readable by others (mode 0644); chmod 600 it" in out
