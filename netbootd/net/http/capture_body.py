"""The bodies of capture uploads (net/http/api_capture.py admits them from the headers).

A chunk (POST .../capture/{job}/{offset}): ChunkBody, one preallocated buffer.
A capture stream's body (POST /api/v1/agent/capture/{job}/stream/{offset}; docs/storage.md
"Capture"): every chunk still to send over one connection, each after a frame header
(its sha256 in hex and a newline).  One connection per capture attempt instead of one per
chunk: each new TCP connection restarts with a small window and the sender, ACK-clocked,
keeps sending small segments (14x the packets of ``dd | nc`` at 16 MiB chunks over a
1 Gb/s veth; bench/storage/README.md).

twisted.web writes the body here as it arrives (``write``); frames are parsed on the
reactor, each whole chunk goes to ``Captures.write`` (hashed, checked and written in the
worker thread, committed as a per-chunk POST is).  Two chunk buffers at most per
stream: one being written while the next is received; when the next is whole before
the write returned, the transport is paused (no read, TCP pushes back) until it did.
A frame that is not a sha256 line, a chunk whose bytes do not match it, or a capture
that ended: the stream stops, nothing after the committed offset is written, and the
connection is dropped while the body still arrives (the agent asks GET
.../capture/{job}, whose ``refused`` says why, and restarts from ``committed``), or the
handler answers with the reason when the body was complete."""
from __future__ import annotations

import json
import logging
import socket
from http import HTTPStatus

from twisted.internet import defer

from ...policy import capture as cp
from .errors import Refusal

log = logging.getLogger("netbootd.http")

# Reading a chunk: the reactor is woken when LOWAT bytes wait (SO_RCVLOWAT, never more
# than what is still to come) and reads up to READ at once.  Waking per arriving
# segment costs a reactor turn and a window update per few KiB: over a veth pair at
# 1 Gb/s the server's CPU went from 9.9 to 3-4 s/GB with this (bench/storage/capture.py).
LOWAT = 256 * 1024
READ = 1 << 20


class _Lowat:
    """SO_RCVLOWAT on a plain TCP socket (not TLS, not a test's transport): the reactor
    wakes when LOWAT bytes wait (never more than what is still to come) and reads up
    to READ at once."""

    sock, lowat = None, 1

    def _setup(self, transport, left: int) -> None:
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            self.sock = handle
            if getattr(transport, "bufferSize", READ) < READ:
                transport.bufferSize = READ
            self._lowat(left)

    def _lowat(self, left: int) -> None:
        want = max(1, min(LOWAT, left))
        if want != self.lowat and self.sock is not None:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                self.lowat = want
            except OSError:
                self.sock = None

    # what twisted.web's Request calls on its content besides write()
    def tell(self) -> int:
        return 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0               # twisted seeks to 0 before dispatch; the handler reads buf

    def read(self, n: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


class ChunkBody(_Lowat):
    """A request body of a known length, in one preallocated buffer (what
    twisted.web's Request writes to and the handler reads)."""

    def __init__(self, length: int, transport=None):
        self.buf = bytearray(length)
        self.pos = 0
        self._setup(transport, length)

    def write(self, data: bytes) -> None:
        end = self.pos + len(data)
        if end <= len(self.buf):
            self.buf[self.pos:end] = data
        self.pos = end
        if self.sock is not None:
            self._lowat(len(self.buf) - self.pos)

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.pos

    def close(self) -> None:
        self.buf = bytearray()


class StreamBody(_Lowat):
    """A stream's body (the module's docstring): frames parsed on the reactor as they
    arrive, whole chunks handed to ``captures.write`` one at a time, two buffers."""

    def __init__(self, captures, host, cap, offset: int, length: int, transport=None):
        self.captures, self.host, self.cap = captures, host, cap
        self.transport = transport
        self.left = length             # body bytes still to come
        self.off = offset              # where the chunk being received goes
        self.head = bytearray()        # its frame header, as it arrives
        self.buf, self.pos, self.n, self.sha = None, 0, 0, ""
        self.spare: list[bytearray] = []
        self.made = 0                  # chunk buffers allocated
        self.writing = False           # a chunk is in Captures.write
        self.ready = None              # a whole chunk waiting for the writer
        self.paused, self.held = False, b""
        self.error = None              # Refusal once stopped
        self.result = None             # the last write's {"committed", "bytes"}
        self.waiting = None            # the handler's Deferred (the body is complete)
        self._setup(transport, length)

    # -- twisted.web's side ------------------------------------------------------------
    def write(self, data: bytes) -> None:
        self.left -= len(data)
        if self.error is None:
            if self.paused:            # a TLS layer may still hand over decrypted bytes
                self.held += data
            else:
                self._feed(memoryview(data))
        if self.sock is not None:
            self._lowat(self.left)

    def lost(self, reason: str = "the connection was lost") -> None:
        """The request ended before the body did (notifyFinish's errback): a chunk
        received whole is still written (its sha256 decides), the partial one is not."""
        if self.error is None and (self.left > 0 or self.waiting is None):
            self.stop(Refusal(400, reason), drop=False, keep_ready=True)

    def outcome(self) -> defer.Deferred:
        """The handler's answer: {"committed", "bytes"} once every chunk is committed."""
        if self.error is not None:
            return defer.fail(self.error)
        if self._complete():
            return defer.succeed(self.result)
        self.waiting = defer.Deferred()
        return self.waiting

    # -- frames ------------------------------------------------------------------------
    def _feed(self, mv: memoryview) -> None:
        i, end, total = 0, len(mv), self.cap.total
        while i < end and self.error is None:
            if self.buf is None:
                if self.off >= total:
                    self.stop(Refusal(400, "body: bytes after the last chunk"))
                    return
                take = min(cp.FRAME - len(self.head), end - i)
                self.head += mv[i:i + take]
                i += take
                if len(self.head) < cp.FRAME:
                    return
                try:
                    self.sha = cp.frame_sha(bytes(self.head), self.off)
                except cp.CaptureError as e:
                    self.stop(Refusal(e.status, e.reason))
                    return
                self.head.clear()
                self.n = cp.expected_length(total, self.cap.chunk, self.off)
                if self.spare:
                    self.buf = self.spare.pop()
                else:
                    self.buf = bytearray(self.cap.chunk)
                    self.made += 1          # at most 2 (tests/net/test_capture_stream.py)
                self.pos = 0
            take = min(self.n - self.pos, end - i)
            self.buf[self.pos:self.pos + take] = mv[i:i + take]
            self.pos += take
            i += take
            if self.pos == self.n:
                self._received()
                if self.paused:
                    self.held = bytes(mv[i:])
                    return

    def _received(self) -> None:
        item = (self.off, self.buf, self.n, self.sha)
        self.off += self.n
        self.buf = None
        if not self.writing:
            self._write(item)
        else:
            self.ready = item
            if self.off < self.cap.total:      # no buffer left for the next chunk
                self.paused = True
                if self.transport is not None:
                    self.transport.pauseProducing()

    def _write(self, item) -> None:
        off, buf, n, sha = item
        data = buf if n == len(buf) else memoryview(buf)[:n]
        self.writing = True
        try:
            d = self.captures.write(self.host, self.cap, off, data, sha)
        except Exception as e:
            self.writing = False
            self.stop(_refusal(e))
            return
        d.addCallbacks(self._written, self._refused, callbackArgs=(buf,))

    def _written(self, result, buf) -> None:
        self.writing = False
        self.result = result
        if self.error is not None:
            if self.ready is not None:         # whole before the connection went
                item, self.ready = self.ready, None
                self._write(item)
            return
        self.spare.append(buf)
        if self.ready is not None:
            item, self.ready = self.ready, None
            self._write(item)
            if self.paused:
                self._resume()
        elif self._complete() and self.waiting is not None:
            d, self.waiting = self.waiting, None
            d.callback(result)

    def _refused(self, f) -> None:
        self.writing = False                  # its buffer is not used again
        self.ready = None                     # nothing after a refused chunk
        self.stop(_refusal(f.value))

    def _complete(self) -> bool:
        return (self.off >= self.cap.total and not self.writing and self.ready is None
                and self.result is not None)

    def _resume(self) -> None:
        held, self.held = self.held, b""
        self.paused = False
        self._feed(memoryview(held))
        if not self.paused and self.error is None and self.transport is not None:
            self.transport.resumeProducing()

    def stop(self, err: Refusal, drop: bool = True, keep_ready: bool = False) -> None:
        """Stop taking chunks (the one in the writer still commits, and with
        ``keep_ready`` the whole one waiting for it): answer with the reason when the
        body is complete, else drop the connection."""
        if self.error is not None:
            return
        self.error = err
        if not keep_ready:
            self.ready = None
        self.held, self.buf, self.spare = b"", None, []
        self.cap.refused = err.reason
        log.warning("capture %s: stream stopped at %d: %s", self.cap.job.id, self.off,
                    err.reason)
        if self.waiting is not None:
            d, self.waiting = self.waiting, None
            d.errback(err)
        elif drop and self.left > 0 and self.transport is not None:
            self.transport.abortConnection()


def _refusal(e) -> Refusal:
    if isinstance(e, Refusal):
        return e
    return Refusal(getattr(e, "status", 500), getattr(e, "reason", str(e)))


class RefusedBody(_Lowat):
    """A stream refused from its headers: the answer goes out at once and the sending
    side of the connection is closed (the agent's nc prints it and ends), so a body of
    gigabytes is not read first; what still arrives is discarded."""

    def __init__(self, transport, err: Refusal):
        self.error = err
        body = json.dumps({"error": err.reason, "status": err.status}).encode() + b"\n"
        try:
            phrase = HTTPStatus(err.status).phrase
        except ValueError:
            phrase = "Error"
        transport.write(f"HTTP/1.1 {err.status} {phrase}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                        "Connection: close\r\n\r\n".encode() + body)
        getattr(transport, "loseWriteConnection", transport.loseConnection)()

    def write(self, data: bytes) -> None:
        pass
