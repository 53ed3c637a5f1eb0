"""HTTP connection bounds on real sockets (127.0.0.0/8): request and idle
deadlines, caps per source and in total, event-stream slots per source, the
fd-limit raise.  The site is the daemon's own build_site on the real reactor;
clients are plain sockets and curl in worker threads."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from netbootd.runtime.fdlimit import http_connection_cap
from netbootd.net.http.app import HttpApp
from netbootd.net.http.limits import ConnectionLimits
from netbootd.net.http.site import build_site
from netbootd.policy.boot import Renderer
from netbootd.registry.hosts import Registry

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

MAC = "52:54:00:77:00:20"


def make_server(tmp_path, **kw):
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / "kernel").write_bytes(b"K" * 4096)
    counters: Counter = Counter()
    app = HttpApp(registry=Registry(), submit=lambda writes, reply=None: reply and reply(),
                  renderer=Renderer(discover_cmdline="console=ttyS0"), clock=reactor,
                  token="x" * 40, roots=[str(files)], counters=counters,
                  max_streams_per_source=kw.pop("streams_per_source", 4))
    limits = ConnectionLimits(reactor, total=kw.get("total", 100),
                              per_source=kw.get("per_source", 100),
                              request_timeout=kw.get("request_timeout", 10.0),
                              idle_timeout=kw.get("idle_timeout", 10.0), counters=counters)
    port = reactor.listenTCP(0, build_site(app, limits=limits), interface="127.0.0.1")
    return app, limits, port


@pytest.fixture
def served(tmp_path):
    made = []

    def make(**kw):
        app, limits, port = make_server(tmp_path, **kw)
        made.append(port)
        return app, limits, port.getHost().port
    yield make
    for p in made:
        p.stopListening()


def connect(port: int, src: str = "127.0.0.1", send: bytes = b"") -> socket.socket:
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    if send:
        s.sendall(send)
    return s


def closed_within(s: socket.socket, seconds: float) -> bool:
    """True if the server closed (EOF or reset) within `seconds`; any bytes
    before that (a response) are read and skipped."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            if s.recv(65536) == b"":
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
    return False


def curl(url: str, src: str = "127.0.0.1"):
    def run():
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            "--interface", src, "--max-time", "5", url],
                           capture_output=True, timeout=15)
        return int(r.stdout or 0)
    return threads.deferToThread(run)


def sleep(seconds: float):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_a_request_trickled_byte_by_byte_is_cut_at_the_request_deadline(served):
    """Bytes arriving do not move the deadline (twisted's own timeout is an
    inactivity timer that each byte resets: a slowloris lived for ever)."""
    app, limits, port = served(request_timeout=1.0)
    s = yield threads.deferToThread(connect, port, "127.0.0.1", b"GET /boot/")
    for _ in range(6):                          # a byte every 0.3 s for up to 1.8 s
        try:
            s.send(b"a")
        except OSError:
            break
        yield sleep(0.3)
    gone = yield threads.deferToThread(closed_within, s, 2.0)
    s.close()
    assert gone and app.counters["http.request_timeout"] == 1
    assert limits.open == 0 and not limits.by_source


@pytest_twisted.inlineCallbacks
def test_an_idle_keep_alive_connection_is_closed_but_a_prompt_one_is_served(served):
    app, limits, port = served(idle_timeout=0.5)
    req = b"GET /files/kernel HTTP/1.1\r\nHost: x\r\n\r\n"
    s = yield threads.deferToThread(connect, port, "127.0.0.1", req)
    first = yield threads.deferToThread(s.recv, 65536)
    assert first.startswith(b"HTTP/1.1 200")
    gone = yield threads.deferToThread(closed_within, s, 3.0)
    s.close()
    assert gone and app.counters["http.idle_timeout"] == 1
    assert app.counters["http.request_timeout"] == 0


@pytest_twisted.inlineCallbacks
def test_connections_over_the_per_source_cap_are_closed_at_once(served):
    app, limits, port = served(per_source=3)
    held = []
    for _ in range(3):
        held.append((yield threads.deferToThread(connect, port, "127.0.0.1", b"GET / HTTP/1.1\r\n")))
    extra = yield threads.deferToThread(connect, port, "127.0.0.1")
    gone = yield threads.deferToThread(closed_within, extra, 2.0)
    assert gone and app.counters["http.conn_refused_source"] == 1
    # Another address is not affected, and the held ones are still open.
    code = yield curl(f"http://127.0.0.1:{port}/files/kernel", src="127.0.0.2")
    assert code == 200 and limits.by_source["127.0.0.1"] == 3
    for s in held + [extra]:
        s.close()


@pytest_twisted.inlineCallbacks
def test_at_the_total_cap_a_waiting_connection_makes_room_for_a_prompt_client(served):
    """Slow connections from many addresses fill the total cap; a client that
    sends its request at once still gets its answer (the connection that has
    waited longest for its request is closed, counted)."""
    app, limits, port = served(total=6, per_source=2)
    held = []
    for i in range(6):
        held.append((yield threads.deferToThread(connect, port, f"127.0.1.{i + 1}", b"GET /")))
    yield sleep(0.1)
    assert limits.open == 6
    for n in range(3):     # the first takes a slot; each gives it back when curl exits
        code = yield curl(f"http://127.0.0.1:{port}/files/kernel")
        assert code == 200
    assert app.counters["http.conn_evicted"] == 1
    gone = yield threads.deferToThread(closed_within, held[0], 1.0)
    assert gone                               # the oldest waiting one went first
    kept = yield threads.deferToThread(closed_within, held[1], 0.3)
    assert not kept and limits.open == 5
    for s in held:
        s.close()


def test_with_nothing_waiting_the_total_cap_refuses_and_counts():
    limits = ConnectionLimits(task.Clock(), total=2, per_source=5, request_timeout=1,
                              idle_timeout=1)
    assert limits.admit("10.0.0.1") and limits.admit("10.0.0.2")
    assert not limits.admit("10.0.0.3")
    assert limits.counters["http.conn_refused_total"] == 1
    limits.release("10.0.0.1")
    assert limits.admit("10.0.0.3") and limits.open == 2


@pytest_twisted.inlineCallbacks
def test_event_stream_slots_are_capped_per_source(served):
    app, limits, port = served(streams_per_source=2)
    req = b"GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n\r\n"
    streams = []
    for _ in range(2):
        s = yield threads.deferToThread(connect, port, "127.0.0.1", req)
        head = yield threads.deferToThread(s.recv, 4096)
        assert head.startswith(b"HTTP/1.1 200")
        streams.append(s)
    s3 = yield threads.deferToThread(connect, port, "127.0.0.1", req)
    head = yield threads.deferToThread(s3.recv, 4096)
    assert head.startswith(b"HTTP/1.1 429")
    s4 = yield threads.deferToThread(connect, port, "127.0.0.3", req)
    head = yield threads.deferToThread(s4.recv, 4096)
    assert head.startswith(b"HTTP/1.1 200")
    assert app.counters["http.stream_refused_source"] == 1
    for s in streams + [s3, s4]:
        s.close()
    yield sleep(0.2)
    assert not app.streams                     # slots are given back on close


def test_the_http_cap_leaves_a_reserve_of_descriptors():
    """Two fds per connection (socket + an open file), a quarter of the limit
    (at least 512) kept for DHCP, DNS, TFTP and SQLite."""
    assert http_connection_cap(1024) == 256
    assert http_connection_cap(1024, configured=5000) == 256    # never above the room
    assert http_connection_cap(1024, configured=100) == 100
    assert http_connection_cap(1 << 20) == 4096


def test_serve_raises_the_soft_fd_limit_to_the_hard_limit():
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) is not installed")
    code = ("import resource; from netbootd.runtime.fdlimit import raise_nofile; "
            "print(raise_nofile(), resource.getrlimit(resource.RLIMIT_NOFILE))")
    r = subprocess.run(["prlimit", "--nofile=1024:4096", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "(4096, 4096) (4096, 4096)", r.stderr


def test_an_admitted_large_body_gets_time_for_its_length_and_is_not_evicted():
    """A capture chunk admitted by its handler (allow_body): the request
    deadline becomes request_timeout + length at MIN_BODY_RATE, and the
    connection leaves the list a flood evicts from."""
    from twisted.internet.testing import StringTransport
    from netbootd.net.http.limits import MIN_BODY_RATE, LimitedChannel
    clock = task.Clock()
    limits = ConnectionLimits(clock, total=5, per_source=5, request_timeout=10,
                              idle_timeout=10)
    assert limits.admit("10.0.0.5")
    ch = LimitedChannel()
    ch.limits, ch.source = limits, "10.0.0.5"
    ch.makeConnection(StringTransport())
    assert ch in limits.waiting
    clock.advance(5)
    ch.allow_body(20 * MIN_BODY_RATE)                 # 10 s + 20 s from now
    assert ch not in limits.waiting
    clock.advance(29.9)
    assert limits.counters["http.body_timeout"] == 0
    clock.advance(0.2)
    assert limits.counters["http.body_timeout"] == 1 and limits.open == 0
