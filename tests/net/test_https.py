"""The HTTPS listener (net/services/http.py listen_tls) on 127.0.0.1 with real
clients: curl with the right and a wrong --pinnedpubkey, openssl s_client; the
site's connection caps hold on the TLS port; the transport under TLS is not a
plain tcp.Server (file sending must not sendfile(2) around TLS)."""
from __future__ import annotations

import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor, tcp, threads
from twisted.internet.interfaces import ISSLTransport

from netbootd.auth import tls
from netbootd.net.http.site import build_site
from netbootd.net.services.http import listen_tls

from .test_api import api, auth, curl  # noqa: F401 - `api` is the fixture

WRONG_PIN = "sha256//" + "A" * 43 + "="


@pytest.fixture
def certpair(tmp_path):
    d = tmp_path / "tls"
    facts = tls.make_selfsigned(str(d / "cert.pem"), str(d / "key.pem"), cn="netbootd.test",
                                sans=["127.0.0.1"])
    return facts


@pytest.fixture
def https(api, certpair):  # noqa: F811
    app, base, store, committer = api
    site = build_site(app)
    port = listen_tls(reactor, 0, site, certpair["cert"], certpair["key"], "127.0.0.1")
    yield app, f"https://127.0.0.1:{port.getHost().port}", certpair, site
    port.stopListening()


@pytest_twisted.inlineCallbacks
def test_curl_with_the_right_pin_gets_answers_and_a_wrong_pin_sends_nothing(https):
    app, url, certpair, _ = https
    code, body = yield curl("-k", "--pinnedpubkey", certpair["pin"], url + "/api/v1/status")
    assert code == 200 and body["mode"] == "full"
    code, body = yield curl(*auth("-k", "--pinnedpubkey", certpair["pin"],
                                  url + "/api/v1/tokens"))
    assert code == 200, "admin calls work over TLS"
    before = dict(app.counters)

    def wrong():
        return subprocess.run(["curl", "-sS", "-k", "--max-time", "10", "--pinnedpubkey",
                               WRONG_PIN, "-H", "Authorization: Agent nba1.secret.x",
                               url + "/api/v1/agent/next"], capture_output=True, text=True)
    r = yield threads.deferToThread(wrong)
    assert r.returncode == 90, r.stderr       # CURLE_SSL_PINNEDPUBKEYNOTMATCH
    assert "pinned" in r.stderr.lower()
    assert dict(app.counters) == before, "a client refusing the pin sent no request"
    # the CA path: the self-signed certificate as the trust anchor
    code, body = yield curl("--cacert", certpair["cert"], url + "/api/v1/status")
    assert code == 200


@pytest_twisted.inlineCallbacks
def test_openssl_s_client_sees_the_certificate_and_tls12_or_better(https):
    _, url, certpair, _ = https
    port = url.rsplit(":", 1)[1]

    def run(*extra):
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                               "-CAfile", certpair["cert"], "-verify_return_error", "-ign_eof",
                               *extra],
                              input="GET /api/v1/status HTTP/1.0\r\n\r\n", capture_output=True,
                              text=True, timeout=20)
    r = yield threads.deferToThread(run)
    assert r.returncode == 0, r.stderr
    assert "Verify return code: 0 (ok)" in r.stdout
    assert "HTTP/1.0 200" in r.stdout or "HTTP/1.1 200" in r.stdout
    assert "CN = netbootd.test" in r.stdout or "CN=netbootd.test" in r.stdout
    r = yield threads.deferToThread(run, "-tls1_1")
    assert r.returncode != 0, "TLS 1.1 is refused"


@pytest_twisted.inlineCallbacks
def test_the_tls_transport_is_not_a_plain_tcp_server_and_caps_hold(https):
    app, url, certpair, site = https
    seen = []
    orig = site.buildProtocol

    def spy(addr):
        ch = orig(addr)
        if ch is not None:
            seen.append(ch)
        return ch
    site.buildProtocol = spy
    code, _ = yield curl("-k", url + "/api/v1/status")
    assert code == 200 and seen
    transport = seen[0].transport
    assert not isinstance(transport, tcp.Server), type(transport)
    assert ISSLTransport.providedBy(transport), type(transport)   # BufferingTLSTransport
    # the site's per-source cap applies to the TLS port too (refused at accept)
    site.limits.per_source = 0
    code, _ = yield curl("-k", url + "/api/v1/status")
    assert code == 0
    assert app.counters["http.conn_refused_source"] >= 1


@pytest_twisted.inlineCallbacks
def test_a_file_over_tls_arrives_whole_and_in_ranges(https, tmp_path):
    app, url, certpair, _ = https
    root = tmp_path / "files"
    root.mkdir()
    data = bytes(range(256)) * 4096 + b"tail"          # 1 MiB + 4: several TLS records
    (root / "kernel").write_bytes(data)
    app.roots = [str(root)]
    out = tmp_path / "got"

    def get(*extra):
        return subprocess.run(["curl", "-sS", "--max-time", "20", "--pinnedpubkey",
                               certpair["pin"], "-k", "-o", str(out), *extra,
                               url + "/files/kernel"], capture_output=True, text=True)
    r = yield threads.deferToThread(get)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    r = yield threads.deferToThread(get, "-r", "1048570-")
    assert r.returncode == 0 and out.read_bytes() == data[1048570:]


@pytest_twisted.inlineCallbacks
def test_an_agent_on_tls_is_sent_to_download_over_https_even_with_a_plain_http_base(https):
    """An assigned host's boot action names kernel URLs on the base the agent
    reached: https on the TLS port, even with a configured plain-http base
    ([boot] http_base): a pinned medium's agent must not be sent to fetch its
    kernel in cleartext."""
    import json as _json
    app, url, certpair, _ = https
    pin = ("-k", "--pinnedpubkey", certpair["pin"])
    mac = "52:54:00:77:00:42"
    code, body = yield curl(*pin, "-X", "POST", "--data", _json.dumps({"mac": mac}),
                            url + "/api/v1/agent/register")
    assert code == 200, body
    agent = ("-H", f"Authorization: Agent {body['secret']}")
    yield curl(*pin, *agent, url + "/api/v1/agent/next")                 # -> idle
    code, _ = yield curl(*auth(*pin, "-X", "POST", "--data", _json.dumps(
        {"profile": "linux", "args": {"kernel": "debian/vmlinuz"}}),
        f"{url}/api/v1/hosts/{mac}/assign"))
    assert code == 200
    app.http_base = "http://192.0.2.1:8080"          # the site below binds it
    port = listen_tls(reactor, 0, build_site(app), certpair["cert"], certpair["key"],
                      "127.0.0.1")
    try:
        url2 = f"https://127.0.0.1:{port.getHost().port}"
        code, nxt = yield curl(*pin, *agent, url2 + "/api/v1/agent/next")
        assert code == 200 and nxt["kernel"] == f"{url2}/files/debian/vmlinuz", nxt
    finally:
        port.stopListening()
