"""The capture stream (POST /api/v1/agent/capture/{job}/stream/{offset}) over the real
twisted.web site, a real SQLite store and a real file pool, over real loopback sockets:
a whole capture over one connection; the transport paused while both chunk buffers are
taken (never a third); a connection dropped mid-stream resumes at the committed offset;
a frame whose sha256 does not match its chunk, or is not a sha256 line, stops the stream
with nothing written past the committed offset; a wrong offset, Content-Length or
secret is answered from the headers, before any body byte is sent.  And the stream
body's state machine driven directly (a stand-in writer whose calls the test answers):
a chunk whole when the connection goes is still written, a refused chunk drops the one
waiting, the socket is read again once the writer took the waiting chunk."""
from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest_twisted
from twisted.internet import threads

from netbootd.policy import capture as cp
from tests.net.test_api_storage import sleep
from tests.net.test_capture_api import (MAC, MIB, OTHER, SIZE, admin, agent, capi,  # noqa: F401
                                        captures_of, enroll, hold_writes, source)


def frames(data: bytes, start: int = 0, bad: dict | None = None) -> tuple[bytes, list[str]]:
    """The stream's body from ``start``: per chunk its sha256 line, then its bytes
    (``bad``: offset -> a header to send instead); and the chunks' sha256s."""
    out, shas = bytearray(), []
    for off, n in cp.plan(len(data), MIB):
        if off < start:
            continue
        chunk = data[off:off + n]
        sha = hashlib.sha256(chunk).hexdigest()
        shas.append(sha)
        out += (bad or {}).get(off, sha.encode() + b"\n") + chunk
    return bytes(out), shas


def raw(base: str, secret: str, path: str, length: int, body: bytes = b"",
        close_after: int | None = None) -> threads.deferToThread:
    """One POST over a raw socket: the headers, then ``body`` (all of it, or its first
    ``close_after`` bytes and then the socket is closed); the answer's status and JSON
    (None, None when the connection was closed or reset without one)."""
    def run():
        host, port = base.rsplit("/", 1)[-1].split(":")
        s = socket.create_connection((host, int(port)), timeout=30)
        try:
            s.sendall(f"POST {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Agent {secret}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n"
                      "Connection: close\r\n\r\n".encode())
            try:
                if close_after is not None:
                    s.sendall(body[:close_after])
                    return None, None
                s.sendall(body)
            except OSError:
                pass                   # refused mid-body: the answer may still be there
            got = b""
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    got += b
            except OSError:
                pass
            if not got.startswith(b"HTTP/1."):
                return None, None
            head, _, rest = got.partition(b"\r\n\r\n")
            return int(head.split()[1]), json.loads(rest) if rest.strip() else None
        finally:
            s.close()
    return threads.deferToThread(run)


@pytest_twisted.inlineCallbacks
def start(tmp_path, capi, volume):
    """A capture of the source disk queued into ``volume``: app, base URL, the disk's
    bytes, the agent's secret, the job id and the capture's state."""
    app, base = capi[0], capi[1]
    data = source(tmp_path).read_bytes()
    secret = enroll(app, MAC)
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                            {"disk": "vdz", "volume": volume})
    assert code == 200, job
    return app, base, data, secret, job["id"], captures_of(app).by_job[job["id"]]


@pytest_twisted.inlineCallbacks
def finish(app, base, secret, job, shas):
    nxt = app.registry.hosts[MAC].action
    code, rep = yield agent(base, secret, "POST", "/api/v1/agent/report", json.dumps(
        {"id": nxt["id"], "action": "capture", "status": "done",
         "detail": {"sha256": cp.list_digest(shas), "bytes": SIZE}}).encode())
    assert (code, rep["status"]) == (200, "done"), rep
    code, view = yield agent(base, secret, "GET", f"/api/v1/jobs/{job}")
    assert view["state"] == "done", view
    return view


@pytest_twisted.inlineCallbacks
def idle(cap):
    for _ in range(200):
        if not (cap.busy or cap.receiving):
            return
        yield sleep(0.02)
    raise AssertionError("the capture stayed busy")


@pytest_twisted.inlineCallbacks
def test_a_whole_capture_over_one_connection_with_two_buffers_at_most(tmp_path, capi):  # noqa: F811
    """The writer is held on the first chunk: the second is received, the third waits
    in the paused socket; released, the stream ends with every byte committed."""
    app, base, data, secret, job, cap = yield start(tmp_path, capi, "s1")
    gate, entered = hold_writes(cap)
    body, shas = frames(data)
    path = f"/api/v1/agent/capture/{job}/stream/0"
    pending = raw(base, secret, path, len(body), body)
    yield threads.deferToThread(entered.wait, 10)
    for _ in range(250):           # chunk 2 received, chunk 3 waits: the socket paused
        streams = _streams()
        if streams and streams[0].paused:
            break
        yield sleep(0.02)
    assert streams and streams[0].paused and streams[0].made == 2, streams
    assert cap.committed == 0
    gate.set()
    code, reply = yield pending
    assert (code, reply) == (200, {"committed": SIZE, "bytes": SIZE}), reply
    assert streams[0].made == 2
    view = yield finish(app, base, secret, job, shas)
    assert view["result"]["sha256"] == cp.list_digest(shas)
    vol = tmp_path / "pool" / "volumes" / "s1"
    assert vol.read_bytes() == data
    assert os.stat(vol).st_blocks * 512 <= SIZE - MIB       # the zero MiB is a hole


def _streams():
    """The stream bodies the site holds now (its open requests' big_body)."""
    import gc

    from netbootd.net.http.capture_body import StreamBody
    return [o for o in gc.get_objects() if isinstance(o, StreamBody) and o.error is None]


@pytest_twisted.inlineCallbacks
def test_a_dropped_stream_resumes_at_the_committed_offset(tmp_path, capi):  # noqa: F811
    app, base, data, secret, job, cap = yield start(tmp_path, capi, "s2")
    body, shas = frames(data)
    path = f"/api/v1/agent/capture/{job}/stream/0"
    # two whole frames and half of the third, then the connection goes: the whole
    # ones are committed (the second one, if it waited for the writer when the server
    # saw the connection go, is written still), the half one is not - unless a reset
    # (an orphaned socket's, under load) discarded bytes the server had not read yet
    yield raw(base, secret, path, len(body), body, close_after=2 * (MIB + 65) + MIB // 2)
    for _ in range(500):           # the server saw the stream stop and the writer is done
        if cap.refused and not (cap.busy or cap.receiving):
            break
        yield sleep(0.02)
    code, st = yield agent(base, secret, "GET", f"/api/v1/agent/capture/{job}")
    at = st["committed"]
    assert code == 200 and at in (0, MIB, 2 * MIB), st
    assert "connection" in st["refused"] and "lost" in st["refused"], st
    assert (tmp_path / "pool" / "volumes" / "s2").read_bytes()[at:] == bytes(SIZE - at)
    # a stream from elsewhere: not the committed offset, answered from the headers
    wrong = at + MIB
    code, r = yield raw(base, secret, f"/api/v1/agent/capture/{job}/stream/{wrong}",
                        cp.stream_length(SIZE, MIB, wrong))
    assert code == 409 and f"not the committed offset {at}" in r["error"], r
    rest, _ = frames(data, start=at)
    code, r = yield raw(base, secret, f"/api/v1/agent/capture/{job}/stream/{at}",
                        len(rest), rest)
    assert (code, r["committed"]) == (200, SIZE), r
    yield finish(app, base, secret, job, shas)
    assert (tmp_path / "pool" / "volumes" / "s2").read_bytes() == data


@pytest_twisted.inlineCallbacks
def test_a_corrupt_frame_stops_the_stream_at_the_committed_offset(tmp_path, capi):  # noqa: F811
    app, base, data, secret, job, cap = yield start(tmp_path, capi, "s3")
    vol = tmp_path / "pool" / "volumes" / "s3"
    zero = b"0" * 64 + b"\n"
    # (bad frames, answer: None = the connection is dropped while the body still
    # arrives, the committed offset after, what GET's "refused" says)
    cases = [({MIB: zero}, None, MIB, "do not match"),            # a wrong sha256
             ({MIB: b"Z" * 64 + b"\n"}, None, MIB, "not a sha256 line"),
             ({5 * MIB: zero}, 422, 5 * MIB, "do not match")]    # the last one: answered
    for bad, status, committed, words in cases:
        body, _ = frames(data, start=cap.committed, bad=bad)
        code, r = yield raw(base, secret, f"/api/v1/agent/capture/{job}/stream/"
                            f"{cap.committed}", len(body), body)
        assert code == status, (code, r)
        if code is not None:
            assert words in r["error"], r
        yield idle(cap)
        code, st = yield agent(base, secret, "GET", f"/api/v1/agent/capture/{job}")
        assert st["committed"] == committed and words in st["refused"], st
        # nothing past the committed offset was written
        assert vol.read_bytes()[committed:] == bytes(SIZE - committed)
        assert vol.read_bytes()[:committed] == data[:committed]
    rest, _ = frames(data, start=5 * MIB)
    code, r = yield raw(base, secret, f"/api/v1/agent/capture/{job}/stream/{5 * MIB}",
                        len(rest), rest)
    assert (code, r["committed"]) == (200, SIZE), r
    assert vol.read_bytes() == data


@pytest_twisted.inlineCallbacks
def test_a_wrong_stream_is_refused_from_its_headers(tmp_path, capi):  # noqa: F811
    """No body byte is sent: the answer comes from the headers alone."""
    app, base, data, secret, job, _ = yield start(tmp_path, capi, "s4")
    other = enroll(app, OTHER)
    right = cp.stream_length(SIZE, MIB, 0)
    assert right == SIZE + 6 * 65
    p = f"/api/v1/agent/capture/{job}/stream"
    checks = [(secret, f"{p}/0", right + 1, 400, "Content-Length: 5767559 bytes"),
              (secret, f"{p}/0", right - 65, 400, "the framed chunks from 0 are 5767558"),
              (secret, f"{p}/{MIB}", cp.stream_length(SIZE, MIB, MIB), 409,
               "not the committed offset 0"),
              (secret, f"{p}/{MIB + 512}", right, 400, "not a multiple of the chunk size"),
              (secret, f"{p}/{SIZE}", right, 400, "past the end"),
              (other, f"{p}/0", right, 404, "no capture"),
              ("nba1.525400130099.nope", f"{p}/0", right, 401, "credential")]
    for who, path, length, status, words in checks:
        code, r = yield raw(base, who, path, length)
        assert (code, words in (r or {}).get("error", "")) == (status, True), (path, r)
    code, st = yield agent(base, secret, "GET", f"/api/v1/agent/capture/{job}")
    assert st["committed"] == 0
    # the right stream is still taken after all that
    body, shas = frames(data)
    code, r = yield raw(base, secret, f"{p}/0", len(body), body)
    assert (code, r["committed"]) == (200, SIZE), r
    yield finish(app, base, secret, job, shas)


class _Writes:
    """Captures.write's stand-in: each call's Deferred is fired by the test."""

    def __init__(self):
        self.calls = []

    def write(self, host, cap, off, data, sha):
        from twisted.internet import defer
        d = defer.Deferred()
        self.calls.append((off, bytes(data), sha, d))
        return d


class _Transport:
    def __init__(self):
        self.log = []

    def pauseProducing(self):
        self.log.append("pause")

    def resumeProducing(self):
        self.log.append("resume")

    def abortConnection(self):
        self.log.append("abort")


def _body(total=4 * MIB):
    from types import SimpleNamespace

    from netbootd.net.http.capture_body import StreamBody
    cap = SimpleNamespace(total=total, chunk=MIB, refused=None, job=SimpleNamespace(id="j"))
    writes, transport = _Writes(), _Transport()
    data = os.urandom(total)
    body, _ = frames(data)
    return StreamBody(writes, None, cap, 0, len(body), transport), writes, transport, body, data


def test_a_chunk_whole_when_the_connection_goes_is_still_written():
    """Chunk 0 in the writer, chunk 1 whole and waiting (the socket paused), half of
    chunk 2 held: the connection goes; chunk 1 is written after chunk 0, not chunk 2."""
    s, writes, transport, body, data = _body()
    s.write(body[:2 * (MIB + 65) + MIB // 2])
    assert [c[0] for c in writes.calls] == [0] and transport.log == ["pause"]
    assert s.ready[0] == MIB and s.made == 2
    s.lost()
    assert "connection was lost" in s.cap.refused
    writes.calls[0][3].callback({"committed": MIB})
    assert [c[0] for c in writes.calls] == [0, MIB]
    assert writes.calls[1][1] == data[MIB:2 * MIB]
    writes.calls[1][3].callback({"committed": 2 * MIB})
    assert len(writes.calls) == 2 and "resume" not in transport.log and s.made == 2


def test_a_refused_chunk_drops_the_one_waiting_and_the_connection():
    from netbootd.net.http.errors import Refusal
    s, writes, transport, body, data = _body()
    s.write(body[:2 * (MIB + 65) + 100])
    writes.calls[0][3].errback(Refusal(422, "sha256: the chunk's bytes do not match"))
    assert len(writes.calls) == 1 and s.ready is None
    assert transport.log == ["pause", "abort"] and "do not match" in s.cap.refused
    s.write(body[2 * (MIB + 65) + 100:])      # what still arrives is dropped
    assert len(writes.calls) == 1
    failed = []
    s.outcome().addErrback(failed.append)
    assert failed[0].value.status == 422


def test_the_socket_is_read_again_once_the_writer_took_the_waiting_chunk():
    s, writes, transport, body, data = _body()
    s.write(body[:2 * (MIB + 65) + 10])
    assert transport.log == ["pause"] and s.held == body[2 * (MIB + 65):2 * (MIB + 65) + 10]
    writes.calls[0][3].callback({"committed": MIB})
    assert transport.log == ["pause", "resume"] and s.held == b""
    s.write(body[2 * (MIB + 65) + 10:])
    done = s.outcome()
    for i in range(1, 4):
        assert writes.calls[i][0] == i * MIB and writes.calls[i][1] == data[i * MIB:(i + 1) * MIB]
        writes.calls[i][3].callback({"committed": (i + 1) * MIB, "bytes": 4 * MIB})
    assert done.result == {"committed": 4 * MIB, "bytes": 4 * MIB} and s.made == 2
