"""[http] admin_over_plain = "loopback" (the default with TLS) on real sockets: the
site's plain and TLS ports listen inside a network namespace (a veth pair to a
client namespace, addresses only there), the client is curl in the other
namespace, so the daemon sees a peer that is not loopback; the same site on
127.0.0.1 sees a loopback one.  The listening sockets are made in the namespace
by a thread that setns()'s into it and handed to this process's reactor."""
from __future__ import annotations

import ctypes
import os
import socket
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from netbootd.auth import tls
from netbootd.lab import netns
from netbootd.net.http.site import build_site
from netbootd.net.services.http import _TlsFactory

from .test_api import TOKEN, api, curl  # noqa: F401 - the fixture

CLONE_NEWNET = 0x40000000
MAC = "52:54:00:ad:00:01"


def listen_in(ns: str, addr: str) -> socket.socket:
    """A listening TCP socket on addr:0 inside namespace `ns` (this thread's own
    namespace is left alone: a helper thread joins it and ends)."""
    out: dict = {}

    def run():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            s = socket.socket()
            s.bind((addr, 0))
            s.listen(64)
            s.setblocking(False)
            out["sock"] = s
        except OSError as e:
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


def tls_factory(site, pair):
    """The site behind TLS, as net/services/http.listen_tls wraps it."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from twisted.internet import ssl
    with open(pair["key"], "rb") as k, open(pair["cert"], "rb") as c:
        opts = ssl.CertificateOptions(privateKey=load_pem_private_key(k.read(), None),
                                      certificate=x509.load_pem_x509_certificate(c.read()))
    return _TlsFactory(opts, False, site)


@pytest.fixture
def lab():
    if (why := netns.available()):
        pytest.skip(why)
    with netns.Lab() as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        lab.link(srv, "10.79.4.1/24", cli, "10.79.4.2/24")
        yield lab, srv, cli


def ns_curl(lab, cli, *args):
    def run():
        r = lab.ns_exec(cli, "curl", "-sS", "-k", "-w", "\n%{http_code}", "--max-time", "10",
                        *args, check=False, timeout=20)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body
    return threads.deferToThread(run)


@pytest_twisted.inlineCallbacks
def test_admin_token_over_plain_http_only_from_loopback(api, lab, tmp_path):  # noqa: F811
    app, loop_base, store, committer = api
    lab, srv, cli = lab
    plain, secure = listen_in(srv, "10.79.4.1"), listen_in(srv, "10.79.4.1")
    tls_port = secure.getsockname()[1]
    pair = tls.make_selfsigned(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"),
                               cn="plain.test")
    app.admin_over_plain, app.tls_port, app.tls_cert = "loopback", tls_port, pair["cert"]
    site = build_site(app)
    factory = tls_factory(site, pair)
    ports = [reactor.adoptStreamPort(plain.fileno(), socket.AF_INET, site),
             reactor.adoptStreamPort(secure.fileno(), socket.AF_INET, factory),
             reactor.listenTCP(0, site, interface="127.0.0.1")]
    plain.close()
    secure.close()
    base = f"http://10.79.4.1:{ports[0].getHost().port}"
    tbase = f"https://10.79.4.1:{tls_port}"
    lbase = f"http://127.0.0.1:{ports[2].getHost().port}"
    bearer = ("-H", f"Authorization: Bearer {TOKEN}")
    new = ("-X", "POST", "-H", "Content-Type: application/json", "-d")
    try:
        # a good token, plain http, from 10.79.4.2: 403 naming the https URL; nothing made
        code, body = yield ns_curl(lab, cli, *bearer, *new, '{"name": "remote"}',
                                   base + "/api/v1/accounts")
        assert code == 403, body
        assert f"use {tbase}/api/v1/accounts" in body and '\\"loopback\\"' in body, body
        assert app.accounts.get("remote") is None
        # an admin read (the token list), and a Bearer on an open read: refused too
        code, body = yield ns_curl(lab, cli, *bearer, base + "/api/v1/tokens")
        assert code == 403, body
        code, body = yield ns_curl(lab, cli, *bearer, base + "/api/v1/status")
        assert code == 403, body
        # no token at all on an admin route: 403 as well (the token must not follow)
        code, body = yield ns_curl(lab, cli, *new, '{"name": "remote"}',
                                   base + "/api/v1/accounts")
        assert code == 403, body
        # the same call over https from the same peer: done
        code, body = yield ns_curl(lab, cli, *bearer, *new, '{"name": "remote"}',
                                   tbase + "/api/v1/accounts")
        assert code == 200, body
        assert app.accounts.get("remote") is not None
        # booting hosts and agents, plain http from the same peer: unaffected
        code, body = yield ns_curl(lab, cli, base + "/api/v1/status")
        assert code == 200, body
        code, body = yield ns_curl(lab, cli, f"{base}/boot/{MAC}.ipxe")
        assert code == 200 and body.startswith("#!ipxe"), body
        code, body = yield ns_curl(lab, cli, "-H", "Authorization: Agent nba1.x.y",
                                   base + "/api/v1/agent/next")
        assert code == 401, body      # a bad agent secret, judged as always
        # the daemon's own machine over plain http: allowed, from 127.0.0.1 and from the
        # address called (the srv namespace calling 10.79.4.1 from 10.79.4.1)
        code, body = yield curl(*bearer, *new, '{"name": "local"}', lbase + "/api/v1/accounts")
        assert code == 200, body
        code, body = yield ns_curl(lab, srv, *bearer, *new, '{"name": "self"}',
                                   base + "/api/v1/accounts")
        assert code == 200, body
        assert app.counters["http.admin_plain_refused"] == 4
    finally:
        for p in ports:
            yield p.stopListening()
