"""Static file bodies by sendfile(2): from the opened, checked descriptor
straight to the socket, with no copy through Python.

`SendfileFile` is twisted.web.static.File (HEAD, Range, Content-Length,
Last-Modified, 416) whose whole-file and single-Range GETs on a plain TCP
transport are sent by `SendfileProducer`; everything else (TLS transports,
multipart ranges, anything not a `tcp.Connection`) keeps static.File's own
producers, which copy 64 KiB at a time through the transport's buffer.

By default (``THREAD``) the body -- and, on a connection with nothing else
buffered, the headers too -- go by the sender thread of sendthread.py, from
a dup() of the socket, which hands the end back (see there).  With ``CORK``
the socket is corked from the headers to the end of the body (nginx's
tcp_nopush; off by default: measured dearer).  With ``THREAD`` off, the
producer rides the reactor (non-blocking socket, no thread):
* the status line and headers go into the transport's write buffer as usual
  (``request.write(b"")``);
* the producer puts its own ``doWrite`` on the transport *instance* (as
  ``tcp.Connection.abortConnection`` does) and asks for write events.  On
  each event it first lets the transport's own ``doWrite`` flush whatever is
  buffered (the headers), then calls ``os.sendfile`` until the socket is full
  (a short count or EAGAIN) or ``BUDGET`` bytes went out in this turn, so one fast client
  cannot starve the others; epoll (level-triggered) calls again while the
  socket stays writable;
* at the end it takes its ``doWrite`` off and finishes the request
  (keep-alive, pipelining and the connection deadlines of limits.py go on as
  with any response).  A send error (client gone: EPIPE, ECONNRESET) is
  returned to the reactor, which closes the connection; ``loseConnection`` or
  ``abortConnection`` mid-transfer, or a file that shrank under us (the
  promised Content-Length cannot be kept: the connection is closed), end it
  the same way.  The file is closed in every case (``notifyFinish``).

``request.sentLength`` advances with every call, so the status page's
transfers under way show progress as before.
"""
from __future__ import annotations

import os
import socket

from twisted.internet import error, tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.web import http, static

from . import sendthread

# Bytes sent to one connection per write event before the reactor moves on.
BUDGET = 4 << 20
# False: every body takes static.File's copying path (bench/http's
# netbootd-copy diagnostic, to measure what sendfile buys).
ENABLED = True
# True: once the headers are out, the body goes by the sender thread
# (sendthread.py); False: by sendfile calls on the reactor's write events
# (bench/http's netbootd-reactor diagnostic).
THREAD = True
# True: the socket is corked (TCP_CORK, nginx's tcp_nopush) from the headers
# to the end of the body, so the headers ride in the body's first full
# segment and no sendfile call ends in a short segment; uncorked before the
# request finishes (the next response on a keep-alive connection is not held).
# Off: measured on loopback (bench/http/README.md, 2026-12-04), corked
# sockets cost 1.5-1.8x the CPU per GB at 2-20 connections (the sender
# thread hardly ever sleeps) and bought nothing measurable at 200.
CORK = False
# A number: cork (as CORK does) only while at least this many bodies are under
# way in the sender thread -- at many connections the cork makes it serve them
# in turn, as nginx does; at few it costs.  None: CORK alone decides.  Off:
# measured at 32 (bench/http/README.md, 2026-12-04 (3)), within noise at 200
# connections on loopback and on a veth link.
CORK_AT: int | None = None


def sendfile_transport(request):
    """The request's TCP transport when sendfile(2) can write to it, else None
    (TLS, a wrapped transport, a connection already being torn down)."""
    if not ENABLED:
        return None
    channel = getattr(request, "channel", None)
    t = getattr(channel, "transport", None)
    if not isinstance(t, tcp.Connection) or ISSLTransport.providedBy(t) \
            or getattr(t, "TLS", False) or "doWrite" in vars(t):
        return None
    if t.disconnecting or t.disconnected or getattr(t, "_aborting", False):
        return None
    return t


def _no_writes() -> None:
    pass


def _cork(t, on: int) -> bool:
    try:
        t.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, on)
        return True
    except OSError:                          # closed under us: nothing to hold or flush
        return False


def _pending(t) -> int:
    return len(t.dataBuffer) - t.offset + t._tempDataLen


class SendfileProducer:
    """Sends bytes [offset, offset + size) of an open file to the request's
    TCP socket with os.sendfile (see the module docstring)."""

    def __init__(self, request, file_obj, offset: int, size: int, transport, counters=None):
        self.request = request
        self.file = file_obj
        self.fd = file_obj.fileno()
        self.pos = offset
        self.left = size
        self.transport = transport
        self.counters = counters
        self.hooked = None                   # the doWrite we put on the transport
        self.job = None                      # the sender thread's, while it sends
        self.corked = False

    def start(self) -> None:
        req = self.request
        if req._disconnected or req.finished:   # gone already: nothing will fire
            self._close_file()
            return
        req.notifyFinish().addBoth(self._closed)
        if self.counters is not None:
            self.counters["http.file_sendfile"] += 1
        if self.left <= 0:                   # a 416 or an empty file: headers only
            self._finish()
            return
        t = self.transport
        if CORK or (CORK_AT is not None and THREAD and sendthread.active() >= CORK_AT):
            self.corked = _cork(t, 1)
        if THREAD and not _pending(t):       # the headers go with the body, by the thread
            self._hand_over(self._headers())
            return
        req.write(b"")                       # status line + headers, into the buffer
        if req._disconnected:
            return
        self._hook(self._do_write)           # our handler for this transport's write events
        t.startWriting()

    # IProducer, for anyone who asks (the channel never gets us registered).
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        self._unhook()
        self._cancel()
        self._close_file()

    def _do_write(self):
        t = self.transport
        flushed = False
        if _pending(t):
            why = type(t).doWrite(t)         # flush the headers (or anything buffered)
            if why is not None or _pending(t):
                return why
            flushed = True                   # ... which stopped the write events
        if t.disconnecting:                  # loseConnection() mid-transfer: let it close
            self._unhook()
            return type(t).doWrite(t)
        if THREAD:
            self._hand_over()
            return None
        sent = 0
        sock = t.fileno()
        while self.left > 0 and sent < BUDGET:
            want = min(self.left, BUDGET - sent)
            try:
                n = os.sendfile(sock, self.fd, self.pos, want)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:             # EPIPE, ECONNRESET: the client is gone
                self._unhook()
                return error.ConnectionLost(f"sendfile: {e.strerror or e}")
            if n == 0:                       # the file shrank: Content-Length cannot be kept
                self._unhook()
                if self.counters is not None:
                    self.counters["http.file_truncated"] += 1
                return error.ConnectionLost("file shorter than its Content-Length")
            self.pos += n
            self.left -= n
            sent += n
            if n < want:                     # the socket is full: no EAGAIN round trip
                break
        if sent:
            self.request.sentLength += sent
        if self.left > 0:
            if flushed:
                t.startWriting()             # more when the socket has room again
            return None
        self._unhook()
        if not _pending(t):
            t.stopWriting()
        self._finish()
        return None

    def _headers(self) -> bytes:
        """The status line and headers, taken from the transport's buffer
        (empty before: `_pending`) instead of being written by the reactor,
        which then needs no write event (2 epoll_ctl and a turn of its loop
        per request saved)."""
        t = self.transport
        t.startWriting = _no_writes          # (instance attribute, taken off below)
        try:
            self.request.write(b"")
        finally:
            del t.startWriting
        head = b"".join(t._tempDataBuffer)
        t._tempDataBuffer = []
        t._tempDataLen = 0
        return head

    def _hand_over(self, head: bytes = b"") -> None:
        """The headers are out (or in `head`): the body goes by the sender
        thread, which owns a dup of the socket and the file from now on
        (sendthread.py)."""
        t = self.transport
        self._unhook()
        t.stopWriting()
        self.job = sendthread.Job(os.dup(t.fileno()), self.file, self.pos, self.left,
                                  self.request, t.reactor, self._sent, uncork=self.corked,
                                  head=head)
        self.corked = False                  # the thread uncorks after the last byte
        self.file = None                     # the thread closes it
        # loseConnection waits for a write event on the socket the thread keeps
        # full: stop the thread first (the client then sees a cut body and FIN,
        # as on the reactor path).
        t.loseConnection = self._lose_connection
        sendthread.sender().submit(self.job)

    def _lose_connection(self) -> None:
        self._cancel()
        type(self.transport).loseConnection(self.transport)

    def _sent(self, why) -> None:
        """The sender thread's end of the body (in the reactor thread): why is
        None when all went out, else the connection is closed as a send error
        returned to the reactor would close it."""
        if self.job is None or self.request is None:   # cancelled: the request is gone
            return
        self.job = None
        self._cancel()                       # (only takes the loseConnection hook off)
        if why is None:
            self._finish()
            return
        if why == sendthread.TRUNCATED and self.counters is not None:
            self.counters["http.file_truncated"] += 1
        t = self.transport
        if t.disconnected or t.disconnecting or getattr(t, "_aborting", False):
            return

        def lost():
            self._unhook()
            return error.ConnectionLost(why)
        self._hook(lost)
        t.startWriting()

    def _cancel(self) -> None:
        t = self.transport
        if vars(t).get("loseConnection") == self._lose_connection:
            del t.loseConnection
        if self.job is not None:
            sendthread.sender().cancel(self.job)
            self.job = None

    def _finish(self) -> None:
        if self.corked:
            self.corked = False
            _cork(self.transport, 0)         # out goes the last short segment
        req = self.request
        if req is not None and not req.finished and not req._disconnected:
            req.finish()
        self._close_file()

    def _hook(self, fn) -> None:
        self.transport.doWrite = fn
        self.hooked = fn

    def _unhook(self) -> None:
        if self.hooked is not None:
            fn, self.hooked = self.hooked, None
            t = self.transport
            if vars(t).get("doWrite") is fn:   # abortConnection puts its own
                del t.doWrite

    def _closed(self, _result) -> None:
        """The request finished or its connection was lost (a lost connection
        is the client's business, not an error: nothing is passed on)."""
        self._unhook()
        self._cancel()
        self._close_file()
        self.request = None

    def _close_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class SendfileFile(static.File):
    """static.File that sends whole-file and single-Range bodies with
    sendfile(2) where the transport allows (module docstring); ``counters``
    (a Counter, optional) gets http.file_sendfile / http.file_copy per body."""

    counters = None

    def makeProducer(self, request, fileForReading):
        producer = super().makeProducer(request, fileForReading)
        kind = type(producer)
        if kind not in (static.NoRangeStaticProducer, static.SingleRangeStaticProducer):
            return self._copied(producer)
        t = sendfile_transport(request)
        if t is None:
            return self._copied(producer)
        if kind is static.SingleRangeStaticProducer:
            offset, size = producer.offset, producer.size
        else:
            offset, size = 0, self.getsize()
        return SendfileProducer(request, fileForReading, offset, size, t, self.counters)

    def _copied(self, producer):
        if self.counters is not None:
            self.counters["http.file_copy"] += 1
        return producer


def not_modified(request, etag: bytes) -> bool:
    """Set `etag` on the response; True when the request's If-None-Match
    names it or is "*" (the response is then a bodiless 304)."""
    request.setHeader(b"etag", etag)
    raw = request.getHeader(b"if-none-match")
    if not raw:
        return False
    tags = {t.strip().removeprefix(b"W/") for t in raw.split(b",")}
    if etag in tags or b"*" in tags:
        request.setResponseCode(http.NOT_MODIFIED)
        return True
    return False


def file_etag(st: os.stat_result) -> bytes:
    """A strong validator from the file's identity, size and mtime (nginx
    uses mtime-size; the inode covers a file replaced within one second)."""
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'.encode()
