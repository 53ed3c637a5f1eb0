"""/files bodies by sendfile(2) (netbootd/net/http/sendfile.py): the real
HTTP site on 127.0.0.1, real clients (curl, http.client, raw sockets), the
counters telling which path sent each body, and this process's descriptors
counted before and after."""
from __future__ import annotations

import gc
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, ssl, threads

from netbootd.net.http import sendfile
from netbootd.net.http.app import HttpApp
from netbootd.net.http.site import build_site
from netbootd.net.http.limits import ConnectionLimits

BIG = 32 << 20          # far more than the socket buffers (wmem max 4 MiB, client rcvbuf 64 KiB)
SMALL = 3 << 20


def _blob(n: int, seed: bytes) -> bytes:
    block = hashlib.sha256(seed).digest() * 2048           # 64 KiB, not all one byte
    return (block * (n // len(block) + 1))[:n]


@pytest.fixture(params=["thread", "reactor"])
def site(request, tmp_path, monkeypatch):
    """Every test twice: bodies by the sender thread (sendthread.py, the
    default) and by sendfile calls on the reactor's write events."""
    monkeypatch.setattr(sendfile, "THREAD", request.param == "thread")
    root = tmp_path / "files"
    root.mkdir()
    (root / "initrd.img").write_bytes(_blob(BIG, b"big"))
    (root / "vmlinuz").write_bytes(_blob(SMALL, b"small"))
    (root / "empty").write_bytes(b"")
    submitted = []

    def submit(writes, on_commit=None):
        submitted.extend(writes)
        if on_commit is not None:
            reactor.callLater(0, on_commit)
    app = HttpApp(registry=None, submit=submit, renderer=None, clock=reactor,
                  token="t" * 40, roots=[str(root)])
    limits = ConnectionLimits(reactor, total=400, per_source=200, request_timeout=10.0,
                              idle_timeout=30.0, counters=app.counters)
    s = build_site(app, limits=limits)
    port = reactor.listenTCP(0, s, interface="127.0.0.1")
    yield app, port.getHost().port, root, submitted
    port.stopListening()


def get(port, path, headers=None, method="GET"):
    """(status, headers, body) by http.client, in a thread."""
    def run():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()
    return threads.deferToThread(run)


@pytest.fixture
def logged_errors():
    """Errors twisted logs (an unhandled error in a Deferred shows up when
    the Deferred is collected: gc.collect() before reading)."""
    from twisted.logger import globalLogPublisher
    seen = []

    def observer(ev):
        if ev.get("isError") or ev.get("log_failure") is not None:
            seen.append(ev)
    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@defer.inlineCallbacks
def quiet_fds():
    """The descriptor count once the reactor has closed what an earlier
    client left (the same for 3 turns of 10 ms; bounded: 200 turns)."""
    last, same = fds(), 0
    for _ in range(200):
        d = defer.Deferred()
        reactor.callLater(0.01, d.callback, None)
        yield d
        now = fds()
        same = same + 1 if now == last else 0
        last = now
        if same >= 3:
            break
    return last


@defer.inlineCallbacks
def settle(app, want_fds=None):
    """Let the reactor close what the clients left (bounded: 200 turns)."""
    for _ in range(200):
        if not app.active and (want_fds is None or fds() <= want_fds):
            return
        d = defer.Deferred()
        reactor.callLater(0.01, d.callback, None)
        yield d


@pytest_twisted.inlineCallbacks
def test_whole_file_goes_by_sendfile_with_length_and_validators(site):
    app, port, root, submitted = site
    status, h, body = yield get(port, "/files/initrd.img")
    assert status == 200 and body == (root / "initrd.img").read_bytes()
    assert h["content-length"] == str(BIG) and h["accept-ranges"] == "bytes"
    assert h["etag"].startswith('"') and "last-modified" in h
    assert app.counters["http.file_sendfile"] == 1 and app.counters["http.file_copy"] == 0
    yield settle(app)
    ev = [w for w in submitted if getattr(w, "kind", None) == "http.file"]
    assert ev and json.loads(ev[-1].detail)["bytes"] == BIG and json.loads(ev[-1].detail)["status"] == 200


@pytest_twisted.inlineCallbacks
def test_curl_download_and_keepalive_reuse(site):
    app, port, root, _ = site
    url = f"http://127.0.0.1:{port}/files/vmlinuz"

    def run():
        return subprocess.run(["curl", "-sS", "--max-time", "30", "-o", "/dev/stdout", url,
                               "-o", "/dev/stdout", url, "-w", "%{num_connects} "],
                              capture_output=True, timeout=60)
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    r = yield threads.deferToThread(run)
    assert r.returncode == 0, r.stderr
    data = (root / "vmlinuz").read_bytes()
    # two bodies; curl's -w text lands after both: 1 connect, then 0 (reused)
    assert r.stdout == data + data + b"1 0 "
    assert app.counters["http.file_sendfile"] == 2


@pytest_twisted.inlineCallbacks
def test_single_ranges_first_middle_suffix_and_unsatisfiable(site):
    app, port, root, _ = site
    data = (root / "initrd.img").read_bytes()
    status, h, body = yield get(port, "/files/initrd.img", {"Range": "bytes=0-99"})
    assert status == 206 and body == data[:100]
    assert h["content-range"] == f"bytes 0-99/{BIG}" and h["content-length"] == "100"
    status, h, body = yield get(port, "/files/initrd.img", {"Range": "bytes=5000000-9000000"})
    assert status == 206 and body == data[5000000:9000001]
    status, h, body = yield get(port, "/files/initrd.img", {"Range": "bytes=-777"})
    assert status == 206 and body == data[-777:]
    assert h["content-range"] == f"bytes {BIG - 777}-{BIG - 1}/{BIG}"
    status, h, body = yield get(port, "/files/initrd.img", {"Range": f"bytes={BIG}-"})
    assert status == 416 and body == b"" and h["content-range"] == f"bytes */{BIG}"
    assert app.counters["http.file_sendfile"] == 4 and app.counters["http.file_copy"] == 0


@pytest_twisted.inlineCallbacks
def test_head_and_empty_file(site):
    app, port, _, _ = site
    status, h, body = yield get(port, "/files/initrd.img", method="HEAD")
    assert status == 200 and body == b"" and h["content-length"] == str(BIG)
    status, h, body = yield get(port, "/files/empty")
    assert status == 200 and body == b"" and h["content-length"] == "0"


@pytest_twisted.inlineCallbacks
def test_if_none_match_gives_304_and_a_changed_file_a_new_etag(site):
    app, port, root, _ = site
    _, h, _ = yield get(port, "/files/vmlinuz")
    etag = h["etag"]
    status, h2, body = yield get(port, "/files/vmlinuz", {"If-None-Match": f'"other", {etag}'})
    assert status == 304 and body == b"" and h2["etag"] == etag
    status, _, body = yield get(port, "/files/vmlinuz", {"If-None-Match": '"other"'})
    assert status == 200 and len(body) == SMALL
    (root / "vmlinuz").write_bytes(b"new kernel")
    status, h3, body = yield get(port, "/files/vmlinuz", {"If-None-Match": etag})
    assert status == 200 and body == b"new kernel" and h3["etag"] != etag


@pytest_twisted.inlineCallbacks
def test_multipart_ranges_fall_back_to_the_copying_producer(site):
    app, port, root, _ = site
    data = (root / "vmlinuz").read_bytes()
    status, h, body = yield get(port, "/files/vmlinuz", {"Range": "bytes=0-9,100-109"})
    assert status == 206 and h["content-type"].startswith("multipart/byteranges")
    assert data[:10] in body and data[100:110] in body
    assert app.counters["http.file_copy"] == 1 and app.counters["http.file_sendfile"] == 0


def _half_read(port, path, nbytes):
    """Read the headers and `nbytes` of the body with a 64 KiB receive
    buffer, then close (unread data: the kernel answers with RST)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = b""
    while len(got) < nbytes:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    return got


@pytest_twisted.inlineCallbacks
def test_client_gone_mid_transfer_leaks_no_descriptor(site, logged_errors):
    app, port, _, submitted = site
    yield get(port, "/files/vmlinuz")             # warm up: lazily opened things stay open
    yield settle(app)
    before = yield quiet_fds()
    for _ in range(5):
        got = yield threads.deferToThread(_half_read, port, "/files/initrd.img", 300000)
        assert got.startswith(b"HTTP/1.1 200")
    yield settle(app, before)
    assert not app.active
    assert fds() == before
    gc.collect()
    assert not logged_errors, "a client leaving is not an error"
    assert app.counters["http.file_sendfile"] == 6
    # the transfers that died are logged with what the headers promised (as before)
    assert len([w for w in submitted if getattr(w, "kind", None) == "http.file"]) == 6


@pytest_twisted.inlineCallbacks
def test_server_side_abort_and_close_mid_transfer(site):
    app, port, _, _ = site
    yield get(port, "/files/vmlinuz")
    yield settle(app)
    before = yield quiet_fds()
    for how in ("abortConnection", "loseConnection"):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /files/initrd.img HTTP/1.1\r\nHost: x\r\n\r\n")
        first = yield threads.deferToThread(s.recv, 65536)
        assert first.startswith(b"HTTP/1.1 200")
        (t,) = app.active.values()
        getattr(t["request"].channel.transport, how)()

        def drain():
            n = len(first)
            try:
                while True:
                    c = s.recv(1 << 20)
                    if not c:
                        return n
                    n += len(c)
            except ConnectionResetError:
                return n
        n = yield threads.deferToThread(drain)
        s.close()
        assert n < BIG                                    # cut short, not hung
        yield settle(app, before)
        assert not app.active and fds() == before, how


@pytest_twisted.inlineCallbacks
def test_file_shrinking_under_a_transfer_closes_the_connection(site):
    app, port, root, _ = site
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /files/initrd.img HTTP/1.1\r\nHost: x\r\n\r\n")
    first = yield threads.deferToThread(s.recv, 65536)
    assert first.startswith(b"HTTP/1.1 200")
    os.truncate(root / "initrd.img", 8 << 20)

    def drain():
        n = 0
        while True:
            c = s.recv(1 << 20)
            if not c:
                return n
            n += len(c)
    n = yield threads.deferToThread(drain)
    s.close()
    assert n < BIG
    yield settle(app)
    assert app.counters["http.file_truncated"] == 1


@pytest_twisted.inlineCallbacks
def test_many_concurrent_transfers_all_complete_intact(site):
    app, port, root, _ = site
    want = hashlib.sha256((root / "vmlinuz").read_bytes()).hexdigest()
    results = yield defer.gatherResults([get(port, "/files/vmlinuz") for _ in range(40)])
    assert all(st == 200 and hashlib.sha256(b).hexdigest() == want for st, _, b in results)
    assert app.counters["http.file_sendfile"] == 40
    yield settle(app)
    assert not app.active


@pytest.fixture
def tls_port(site, tmp_path):
    """The same site behind TLS (twisted's TLSMemoryBIO transport)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    app, _, root, _ = site
    s = build_site(app, limits=ConnectionLimits(reactor, total=50, per_source=50,
                                               request_timeout=10.0, idle_timeout=30.0))
    p = reactor.listenSSL(0, s, ssl.DefaultOpenSSLContextFactory(str(key), str(cert)),
                          interface="127.0.0.1")
    yield p.getHost().port
    p.stopListening()


@pytest_twisted.inlineCallbacks
def test_tls_transport_falls_back_to_copying(site, tls_port):
    app, _, root, _ = site
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")

    def run():
        return subprocess.run(["curl", "-sSk", "--max-time", "30", "-H", "Range: bytes=10-",
                               f"https://127.0.0.1:{tls_port}/files/vmlinuz"],
                              capture_output=True, timeout=60)
    r = yield threads.deferToThread(run)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (root / "vmlinuz").read_bytes()[10:]
    assert app.counters["http.file_copy"] == 1 and app.counters["http.file_sendfile"] == 0


def _raw(port, payload: bytes) -> bytes:
    """Send `payload`, read until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(payload)
    out = []
    while True:
        c = s.recv(1 << 20)
        if not c:
            break
        out.append(c)
    s.close()
    return b"".join(out)


@pytest_twisted.inlineCallbacks
def test_pipelined_requests_and_http10_close(site):
    app, port, root, _ = site
    data = (root / "vmlinuz").read_bytes()
    two = (b"GET /files/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /files/vmlinuz HTTP/1.1\r\nHost: x\r\nRange: bytes=1-4\r\n"
           b"Connection: close\r\n\r\n")
    raw = yield threads.deferToThread(_raw, port, two)
    head1, _, rest = raw.partition(b"\r\n\r\n")
    assert head1.startswith(b"HTTP/1.1 200") and rest[:SMALL] == data
    head2, _, body2 = rest[SMALL:].partition(b"\r\n\r\n")
    assert head2.startswith(b"HTTP/1.1 206") and body2 == data[1:5]
    raw = yield threads.deferToThread(_raw, port, b"GET /files/vmlinuz HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and body == data
    assert app.counters["http.file_sendfile"] == 3


@pytest_twisted.inlineCallbacks
def test_a_small_budget_takes_turns_and_every_body_arrives_whole(site, monkeypatch):
    """64 KiB per connection per turn: both paths come back to a connection
    that used its budget on the next poll; 12 bodies at once, all intact."""
    from netbootd.net.http import sendthread
    monkeypatch.setattr(sendthread, "BUDGET", 64 << 10)
    monkeypatch.setattr(sendfile, "BUDGET", 64 << 10)
    app, port, root, _ = site
    want = hashlib.sha256((root / "vmlinuz").read_bytes()).hexdigest()
    results = yield defer.gatherResults([get(port, "/files/vmlinuz") for _ in range(12)])
    assert [st for st, _, _ in results] == [200] * 12
    assert all(hashlib.sha256(b).hexdigest() == want for _, _, b in results)
    yield settle(app)
    assert not app.active


@pytest_twisted.inlineCallbacks
def test_the_body_goes_by_the_sender_thread_and_its_descriptors_are_closed(site, monkeypatch):
    """With THREAD on, every sendfile(2) runs in the one 'netbootd-sendfile'
    thread (on the reactor thread otherwise); after transfers that end every
    way (whole, client gone) none of the dups or files is left open."""
    import threading
    callers = set()
    real = os.sendfile

    def spy(*a):
        callers.add(threading.current_thread().name)
        return real(*a)
    monkeypatch.setattr(os, "sendfile", spy)
    app, port, _, _ = site
    yield get(port, "/files/vmlinuz")
    yield settle(app)
    before = yield quiet_fds()
    if sendfile.THREAD:
        assert callers == {"netbootd-sendfile"}
        assert [t.name for t in threading.enumerate()].count("netbootd-sendfile") == 1
    else:
        assert callers == {threading.main_thread().name}
    for _ in range(3):
        status, _, body = yield get(port, "/files/vmlinuz")
        assert status == 200 and len(body) == SMALL
        got = yield threads.deferToThread(_half_read, port, "/files/initrd.img", 200000)
        assert got.startswith(b"HTTP/1.1 200")
    yield settle(app, before)
    assert fds() == before and not app.active


@pytest_twisted.inlineCallbacks
@pytest.mark.parametrize("how", ["always", "at-0"])
def test_the_cork_is_released_after_every_body_on_a_keepalive_connection(site, monkeypatch, how):
    """With TCP_CORK (sendfile.CORK, off by default) the headers wait for the
    body's first segment; a 1-byte body, a Range and a whole file on one keep-alive
    connection each arrive complete, and the socket is left uncorked (a
    corked socket would hold the next response's last segment up to 200 ms)."""
    if how == "always":
        monkeypatch.setattr(sendfile, "CORK", True)
    else:       # CORK_AT 0: corked at any number of bodies under way (by the thread only)
        monkeypatch.setattr(sendfile, "CORK_AT", 0)
        if not sendfile.THREAD:
            pytest.skip("CORK_AT counts the sender thread's bodies")
    app, port, root, _ = site
    (root / "one").write_bytes(b"x")
    data = (root / "vmlinuz").read_bytes()
    transports, corks = [], []
    real_start, real_cork = sendfile.SendfileProducer.start, sendfile._cork

    def start(self):
        transports.append(self.transport)
        return real_start(self)

    def cork(t, on):
        corks.append(on)
        return real_cork(t, on)
    monkeypatch.setattr(sendfile.SendfileProducer, "start", start)
    monkeypatch.setattr(sendfile, "_cork", cork)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def run():
        out = []
        for path, hdrs in [("/files/one", {}), ("/files/vmlinuz", {"Range": "bytes=10-20"}),
                           ("/files/vmlinuz", {})]:
            c.request("GET", path, headers=hdrs)
            r = c.getresponse()
            out.append((r.status, r.read()))
        return out
    try:
        out = yield threads.deferToThread(run)
        assert out == [(200, b"x"), (206, data[10:21]), (200, data)]
        yield settle(app)
        assert len(transports) == 3 and len({id(t) for t in transports}) == 1, "one connection"
        assert corks.count(1) == 3, "corked for each body"
        t = transports[0]
        assert t.connected and t.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
    finally:
        c.close()


@pytest_twisted.inlineCallbacks
def test_a_symlink_swapped_out_of_the_root_after_it_was_served_is_refused(site, tmp_path):
    """Nothing about a name is kept between requests: served through a
    symlink inside the root, then the link points out -> 403, no byte of the
    target; a file replaced by rename is served fresh with a new ETag."""
    app, port, root, _ = site
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET")
    (root / "alias").symlink_to("vmlinuz")
    status, h1, body = yield get(port, "/files/alias")
    assert status == 200 and body == (root / "vmlinuz").read_bytes()
    os.unlink(root / "alias")
    os.symlink(secret, root / "alias")
    status, _, body = yield get(port, "/files/alias")
    assert status == 403 and b"TOP SECRET" not in body
    os.unlink(root / "alias")
    os.symlink("../secret.txt", root / "alias")
    status, _, body = yield get(port, "/files/alias")
    assert status == 403 and b"TOP SECRET" not in body
    (root / "new.tmp").write_bytes(b"a new kernel")
    os.replace(root / "new.tmp", root / "vmlinuz")
    status, h2, body = yield get(port, "/files/vmlinuz")
    assert status == 200 and body == b"a new kernel" and h2["etag"] != h1["etag"]
