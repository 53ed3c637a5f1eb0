"""GET /api/v1/accounts/{name}/media for an https `full` medium without pin=: the pin
of the daemon's own certificate ([http] tls_cert), as `netbootd media build` takes it
(auth/tls.medium_pin, one rule for both); without a certificate, a 400 saying how to
get one.  Real site on 127.0.0.1, real curl, a real build when this box has the
Debian inputs."""
from __future__ import annotations

import urllib.parse

import pytest
import pytest_twisted
from twisted.internet import reactor

from iso_builder import initrd as initrd_mod
from netbootd.auth import tls
from netbootd.net.http.site import build_site
from tests.unit.test_media import _can_build

from .test_api import api, auth, curl  # noqa: F401 - the fixture

HTTPS = "https://192.0.2.10:8443"


def media_url(base: str, **q) -> str:
    return f"{base}/api/v1/accounts/acme/media?" + urllib.parse.urlencode(q)


def can_build() -> str | None:
    why = _can_build()
    if why is None and initrd_mod.find_tls_client() is None:
        return "no curl to pack"
    return why


@pytest_twisted.inlineCallbacks
def test_without_pin_or_certificate_the_api_says_how_to_get_one(api, tmp_path):  # noqa: F811
    app, base, store, committer = api
    code, body = yield curl(*auth("-X", "POST", "-d", '{"name": "acme"}',
                                  base + "/api/v1/accounts"))
    assert code == 200, body
    code, body = yield curl(*auth(media_url(base, flavour="full", server_url=HTTPS)))
    assert code == 400, body
    assert body["error"] == ("an https server_url needs pin sha256//... (netbootd tls pin), "
                             "or [http] tls_cert in the config to take it from"), body
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    app.tls_cert = str(bad)
    port = reactor.listenTCP(0, build_site(app), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}"
        code, body = yield curl(*auth(media_url(url, flavour="full", server_url=HTTPS)))
        assert code == 400 and body["error"].startswith("[http] tls_cert: ") and \
            str(bad) in body["error"], body
        # the net flavour is plain http only: no pin is taken (media.py refuses one)
        code, body = yield curl(*auth(media_url(url, flavour="net", server_url=HTTPS)))
        assert code == 400 and "tls_cert" not in body["error"], body
    finally:
        yield port.stopListening()


@pytest.mark.skipif(can_build() is not None, reason=f"cannot build media here: {can_build()}")
@pytest_twisted.inlineCallbacks
def test_an_https_full_medium_carries_the_daemons_pin(api, tmp_path):  # noqa: F811
    app, base, store, committer = api
    pair = tls.make_selfsigned(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"),
                               cn="media.test")
    app.tls_cert = pair["cert"]
    port = reactor.listenTCP(0, build_site(app), interface="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{port.getHost().port}"
        code, body = yield curl(*auth("-X", "POST", "-d", '{"name": "acme"}',
                                      url + "/api/v1/accounts"))
        assert code == 200, body
        img = tmp_path / "acme.img"
        code, body = yield curl(*auth("-o", str(img), media_url(
            url, flavour="full", server_url=HTTPS)), timeout=300)
        assert code == 200, body
        assert f'set nb_pin="{pair["pin"]}"'.encode() in img.read_bytes()
        other = "sha256//" + "C" * 43 + "="
        code, body = yield curl(*auth("-o", str(img), media_url(
            url, flavour="full", server_url=HTTPS, pin=other)), timeout=300)
        assert code == 200, body
        data = img.read_bytes()   # a pin given wins
        assert f'set nb_pin="{other}"'.encode() in data and pair["pin"].encode() not in data
    finally:
        yield port.stopListening()
