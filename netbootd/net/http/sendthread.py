"""The sender thread: file bodies by sendfile(2) off the reactor thread.

Why: driven by the reactor, every write event of a file transfer costs a turn
of Twisted's loop in Python (doPoll, callWithLogger's context, doWrite,
the producer) -- about 30 us per wake-up, ~460 wake-ups per GB: a CPU cost
per GB 1.3-1.4x nginx's at 20-200 connections (bench/http/README.md).  Here
one thread with its own epoll does only ``poll -> sendfile``
for every body under way; the reactor keeps everything else.

The hand-over (sendfile.SendfileProducer):
* the reactor builds the status line and headers; when its transport's
  buffer is empty (always, on a keep-alive connection between responses) it
  takes them out of the buffer and gives them to the thread, which writes
  them before the body (no write event on the reactor, no epoll_ctl there);
  otherwise it writes them itself and waits until the buffer is empty.  Then
  it submits a `Job`: a dup() of the socket's descriptor, the open file, the
  byte range, the headers if any, and the callback for the end;
* with sendfile.CORK (off by default: measured dearer) the socket is corked
  (TCP_CORK) from the headers on, and the thread uncorks it after the last
  byte, before it tells the reactor;
* from then on the thread alone owns the dup and the file (it closes both),
  so no descriptor can be closed under it or reused: the reactor closing or
  aborting its own descriptor leaves the socket alive through the dup;
* the thread sends until the socket is full (a short count or EAGAIN) or
  ``BUDGET`` bytes went to one connection in this round, at most ``CHUNK``
  per sendfile call (nginx's sendfile_max_chunk); its epoll is
  level-triggered, so a socket with room left is reported again at the next
  poll, after the others (edge-triggered would need one more call per
  wake-up, to see EAGAIN: measured, more sendfile calls and no fewer wake-ups);
* at the end -- the whole range sent, a send error (client gone), or the file
  shorter than promised -- it closes its descriptors and hands the outcome to
  the reactor with callFromThread: the reactor then finishes the request (or
  closes the connection) and only then writes anything on the socket again;
* the reactor cancels a job when the request ends early (connection lost,
  abortConnection, loseConnection, shutdown): the thread drops it at once.
  A close after abortConnection's SO_LINGER(0) still sends the reset when the
  thread closes the last descriptor.
"""
from __future__ import annotations

import collections
import logging
import os
import select
import socket
import threading

log = logging.getLogger("netbootd.http")

# Bytes sent to one connection per round before the thread serves the others.
# 256 KiB was measured (bench/http/README.md, 2026-12-04 (3)): the same order
# of service at 200 connections, more sendfile calls, dearer per GB.
BUDGET = 4 << 20
# Bytes asked of one sendfile(2) call (nginx: sendfile_max_chunk 2m).
CHUNK = 2 << 20
TRUNCATED = "file shorter than its Content-Length"
_OUT = select.EPOLLOUT


class Job:
    """One body: bytes [pos, pos + left) of `file` to the socket `sock` (a
    dup the thread closes).  `done(why)` runs in the reactor thread at the
    end: why is None (all sent), TRUNCATED, or the send error's text."""

    __slots__ = ("sock", "file", "fd", "pos", "left", "start", "request", "reactor", "done",
                 "uncork", "head")

    def __init__(self, sock: int, file_obj, pos: int, left: int, request, reactor, done,
                 uncork: bool = False, head: bytes = b""):
        self.sock = sock
        self.file = file_obj
        self.fd = file_obj.fileno()
        self.pos = self.start = pos
        self.left = left
        self.request = request
        self.reactor = reactor
        self.done = done
        self.uncork = uncork          # TCP_CORK off once all is sent (sendfile.CORK)
        self.head = head              # status line and headers not written yet


class Sender:
    """The thread and its epoll; `submit` and `cancel` are called from the
    reactor thread, everything else runs in the sender thread."""

    def __init__(self):
        self.ep = select.epoll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self.wake_r, select.EPOLLIN)
        self.inbox: collections.deque = collections.deque()   # (add?, job), thread-safe ends
        self.jobs: dict[int, Job] = {}                        # sender thread only
        self.thread = threading.Thread(target=self._run, name="netbootd-sendfile", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        self.inbox.append((True, job))
        self._wake()

    def cancel(self, job: Job) -> None:
        self.inbox.append((False, job))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:       # the pipe is full: the thread is due to read it anyway
            pass

    # -- the sender thread ------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                for fd, _ev in self.ep.poll():
                    if fd == self.wake_r:
                        self._inbox()
                        continue
                    job = self.jobs.get(fd)
                    if job is not None:
                        self._send(job)
            except Exception:         # noqa: BLE001 - the thread must live on
                log.exception("sendfile thread")

    def _inbox(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self.inbox:
            add, job = self.inbox.popleft()
            if add:
                self.jobs[job.sock] = job
                self.ep.register(job.sock, _OUT)
            elif job.sock >= 0:
                self._end(job, None, tell=False)

    def _send(self, job: Job) -> None:
        sent = 0
        why = None
        if job.head:
            try:
                n = os.write(job.sock, job.head)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._end(job, f"send: {e.strerror or e}", tell=True)
                return
            job.head = job.head[n:]
            if job.head:              # full already: the rest at the next event
                return
        while job.left > 0 and sent < BUDGET:
            want = min(job.left, BUDGET - sent, CHUNK)
            try:
                n = os.sendfile(job.sock, job.fd, job.pos, want)
            except BlockingIOError:   # full: epoll reports it when there is room
                break
            except InterruptedError:
                continue
            except OSError as e:      # EPIPE, ECONNRESET: the client is gone
                why = f"sendfile: {e.strerror or e}"
                break
            if n == 0:                # the file shrank: Content-Length cannot be kept
                why = TRUNCATED
                break
            job.pos += n
            job.left -= n
            sent += n
            if n < want:              # full (or the file ends: the next call says 0)
                break
        if sent:
            job.request.sentLength = job.pos - job.start   # progress for the status page
        if why is None and job.left <= 0 and job.uncork:
            _uncork(job.sock)         # the last short segment goes now, not at the reactor's turn
        if why is not None or job.left <= 0:
            self._end(job, why, tell=True)

    def _end(self, job: Job, why, tell: bool) -> None:
        self.jobs.pop(job.sock, None)
        try:
            self.ep.unregister(job.sock)
        except (OSError, ValueError):
            pass
        os.close(job.sock)
        job.sock = -1
        job.file.close()
        if tell:
            job.reactor.callFromThread(job.done, why)


def _uncork(fd: int) -> None:
    s = socket.socket(fileno=fd)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    except OSError:
        pass
    finally:
        s.detach()


_sender: Sender | None = None
_lock = threading.Lock()


def active() -> int:
    """Bodies under way in the sender thread (0 before it starts); read from
    the reactor thread without the lock: a count a moment old is good enough
    for sendfile.CORK_AT."""
    return len(_sender.jobs) if _sender is not None else 0


def sender() -> Sender:
    """The process's sender thread, started on first use."""
    global _sender
    if _sender is None:
        with _lock:
            if _sender is None:
                _sender = Sender()
    return _sender
