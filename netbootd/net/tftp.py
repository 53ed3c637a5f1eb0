"""TFTP over UDP: decode -> resolve/negotiate -> ReadSession -> send.  Nothing else here.

* The listener (port 69, on the reactor) only reads requests.  Each accepted
  RRQ gets a fresh UDP socket on an ephemeral port, its own TID (RFC 1350
  §4), driven by a ``ReadSession`` (policy/tftp_session.py) on the transfer
  thread (``TransferLoop``).
* Transfer sockets are connect()ed to their client, as tftp-hpa does: the
  kernel drops datagrams from any other address/port (RFC 1350 §4's "should
  answer with ERROR 5" is not done: we never hear of the stranger), send()
  skips a route lookup per block, and an ICMP port unreachable (the client
  went away) ends the transfer at once instead of after the retry limit.
* All transfer sockets sit in one epoll set that one thread of its own
  waits on (``TransferLoop``); retransmission deadlines are one heap there.
  As a reader of the reactor (the design until then) every block also paid a
  reactor iteration, and TFTP shared that thread with DHCP and HTTP; on its
  own thread a block is a wake-up, a recv_into and a send (bench/tftp, 50
  parallel transfers: server CPU -12%, wall time -15%).  The reactor and the
  thread meet only at start (an inbox) and end (``on_event`` runs on the
  reactor); see TransferLoop.
* WRQ is refused with ERROR 2; so are names the path policy refuses.  Requests
  over the per-client or total cap get ERROR 0 "busy" (never silence).
* Malformed datagrams are counted as ``drop.<reason>`` and dropped; no
  exception escapes ``datagramReceived`` or the transfer thread.
* Files up to ``cache_limit`` bytes are kept in memory (LRU, ``cache_total``
  bytes in all) keyed by realpath + device/inode + mtime + size; larger files
  are read from the open descriptor (os.pread of page-cached data) in 256 KiB
  chunks that every transfer of the same file shares (``ChunkCache``, LRU
  within ``chunk_total``): 50 hosts booting one kernel cost one read per
  chunk, not fifty.
* Every transfer that ends calls ``on_event(dict)``: client, port, file,
  bytes, blksize, windowsize, duration, outcome ("finished", "failed",
  "aborted" = client refused our OACK, "refused" = answered with an ERROR at
  once, "stopped" = server shut down), error.
"""
from __future__ import annotations

import heapq
import logging
import os
import select
import threading
import time
from collections import Counter, OrderedDict, deque

from ..codec import tftp as w
from ..policy.paths import PathRefused, resolve
from ..policy.tftp_session import (
    BytesSource, Limits, ReadSession, Refused, negotiate,
)
from . import interfaces
from .fileroots import open_in_root
from .udp import UdpEndpoint

log = logging.getLogger("netbootd.tftp")



def _default_socket(interface: str | None, port: int, ip: str):
    return interfaces.udp_socket(interface, port, ip)


# -- files -------------------------------------------------------------------------
class ChunkCache:
    """Chunks of large files, shared by every transfer of the same file
    (a boot storm is many hosts reading one kernel: one pread per chunk
    for all of them, not one per host), LRU within ``total`` bytes.
    Keyed like FileCache (realpath, device, inode, mtime, size), so a
    changed file is read again.  Used from the transfer thread only."""

    def __init__(self, total: int = 32 << 20, chunk: int = 256 << 10):
        self.total = total
        self.chunk = chunk
        self.used = 0
        self.entries: OrderedDict[tuple, memoryview] = OrderedDict()
        self.reads = 0                  # preads done (a counter for /metrics)

    def get(self, key, fd: int, index: int) -> memoryview:
        k = (key, index)
        view = self.entries.get(k)
        if view is not None:
            self.entries.move_to_end(k)
            return view
        view = memoryview(os.pread(fd, self.chunk, index * self.chunk))
        self.reads += 1
        self.entries[k] = view
        self.used += len(view)
        while self.used > self.total and len(self.entries) > 1:
            self.used -= len(self.entries.popitem(last=False)[1])
        return view


class FileSource:
    """A large file read at offsets from its open descriptor, a chunk at a
    time through ``cache`` (a ChunkCache shared with the other transfers of
    the same file; without one, a private one-chunk cache).  A transfer
    reads forward; a retransmission may step back.  Not mmap: a file
    truncated in place while mapped would kill the daemon with SIGBUS."""

    __slots__ = ("fd", "size", "key", "cache", "buf", "buf_at", "buf_end")

    def __init__(self, fd: int, size: int, chunk: int = 256 << 10, *, key=None,
                 cache: ChunkCache | None = None):
        self.fd = fd
        self.size = size
        self.key = key if cache is not None else ("private", fd)
        self.cache = cache if cache is not None else ChunkCache(total=chunk, chunk=chunk)
        self.buf = memoryview(b"")      # the chunk last used
        self.buf_at = 0
        self.buf_end = 0                # buf_at + len(buf)

    def read(self, offset: int, n: int):
        if self.buf_at <= offset and offset + n <= self.buf_end:
            start = offset - self.buf_at
            return self.buf[start:start + n]
        chunk = self.cache.chunk
        index = offset // chunk
        view = self.cache.get(self.key, self.fd, index)
        at = index * chunk
        self.buf, self.buf_at, self.buf_end = view, at, at + len(view)
        start = offset - at
        if offset + n <= self.buf_end or len(view) < chunk:
            return view[start:start + n]        # inside the chunk, or the file's end
        # Across a chunk boundary: the one copy, once per chunk per transfer.
        head = bytes(view[start:])
        nxt = self.cache.get(self.key, self.fd, index + 1)
        self.buf, self.buf_at, self.buf_end = nxt, at + chunk, at + chunk + len(nxt)
        return head + bytes(nxt[:n - len(head)])

    def close(self) -> None:
        self.buf = memoryview(b"")
        self.buf_at = self.buf_end = 0
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def error_code(refusal: PathRefused) -> int:
    """The TFTP error for a refused path (RFC 1350 §5)."""
    return w.ERR_NOT_FOUND if refusal.reason == "not_found" else w.ERR_ACCESS


def _read_all(fd: int, size: int) -> bytes:
    parts, off = [], 0
    while off < size:
        chunk = os.pread(fd, min(size - off, 1 << 20), off)
        if not chunk:
            break                       # the file shrank: serve what is there
        parts.append(chunk)
        off += len(chunk)
    return b"".join(parts)


class FileCache:
    """Small files' contents, LRU within ``total`` bytes.  A changed file
    (other inode, mtime or size) has another key; its old entry is dropped."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self.entries: OrderedDict[tuple, bytes] = OrderedDict()
        self.by_path: dict[str, tuple] = {}

    def get(self, key: tuple) -> bytes | None:
        data = self.entries.get(key)
        if data is not None:
            self.entries.move_to_end(key)
        return data

    def put(self, key: tuple, data: bytes) -> None:
        old = self.by_path.pop(key[0], None)
        if old is not None and old in self.entries:
            self.used -= len(self.entries.pop(old))
        if len(data) > self.total:
            return
        while self.used + len(data) > self.total and self.entries:
            k, v = self.entries.popitem(last=False)
            self.used -= len(v)
            self.by_path.pop(k[0], None)
        self.entries[key] = data
        self.by_path[key[0]] = key
        self.used += len(data)


# -- protocol objects ------------------------------------------------------------
class TftpListener:
    """Handler of one listening socket (see net/udp.py): requests only."""

    transport = None

    def __init__(self, server: TftpServer, interface: str | None, ip: str):
        self.server = server
        self.interface = interface
        self.ip = ip

    @property
    def port(self) -> int:
        return self.transport.socket.getsockname()[1]

    def datagramsReceived(self, batch: list) -> None:
        for data, addr in batch:
            self.datagramReceived(data, addr)

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            self.server._request(self, data, addr)
        except Exception:
            self.server._counters["drop.internal_error"] += 1
            log.exception("tftp: internal error on a request from %s", addr)

    def send(self, data: bytes, addr) -> None:
        self.server._sendto(self.transport.socket, data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_RX_SIZE = 1024          # an ACK is 4 bytes, an ERROR's text may be cut short
_OP_ACK = w.OP_ACK


class TransferLoop:
    """The transfer thread: every transfer socket in one epoll set, every
    retransmission deadline in one heap, and the only code that touches a
    transfer once it has started.

    Why a thread of its own: a block of a lock-step transfer is an ACK in and
    a DATA out, a few microseconds of work; dispatched by the reactor it also
    paid a reactor iteration, and it shared that thread with DHCP and HTTP.
    Here a wake-up is one ``epoll.poll`` (the GIL released while it blocks)
    and a call per ready socket; the reactor keeps DHCP, HTTP and DNS, and a
    cold file read (``os.pread``) blocks only this thread.

    Hand-offs, the only points where the threads meet:
      * ``submit(xfer)`` (reactor) -> inbox + eventfd -> the thread registers
        the socket and sends the first datagram;
      * an ended transfer -> ``ended`` + one ``callFromThread`` -> the reactor
        runs ``on_ended`` (caps, counters, the event that lands in SQLite);
      * counters of rare events (drops, errors, timeouts) live in
        ``counters``, written by this thread only; ``TftpServer.counters``
        reads a copy (one C-level dict copy under the GIL).

    ``threaded=False`` runs the same code on the caller's thread, for tests
    with fake sockets and a fake clock: ``submit`` admits at once, endings
    are reported at once and ``fire_due()`` is called by the test.
    """

    def __init__(self, reactor, on_ended, *, now=time.monotonic, threaded: bool = True,
                 epoll=select.epoll, name: str = "tftp-transfers"):
        self.reactor = reactor
        self.on_ended = on_ended
        self.now = now
        self.threaded = threaded
        self.name = name
        self.ep = epoll()
        self.efd = -1                                   # the inbox's bell (threaded only)
        if threaded:
            self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.ep.register(self.efd, select.EPOLLIN)
        self.handlers: dict[int, _Transfer] = {}       # fd -> transfer (this thread)
        self.heap: list = []                            # (deadline, seq, transfer)
        self.seq = 0
        self.inbox: deque = deque()                     # submitted, not yet started
        self.ended: deque = deque()                     # (transfer, outcome, error)
        self._report_pending = False
        self.counters: Counter = Counter()              # written by this thread only
        self.rxbuf = bytearray(_RX_SIZE)                # this thread's receive buffer
        self.thread: threading.Thread | None = None
        self.stopping = False

    # -- the reactor's side ---------------------------------------------------------
    def submit(self, xfer: _Transfer) -> None:
        """Start a transfer (its socket open, its session made).  After
        stop() it ends at once as "stopped"."""
        if self.stopping:
            xfer.finish("stopped", "server stopping", self.now())   # reported here
            return
        if not self.threaded:
            self._admit(xfer)
            return
        self.inbox.append(xfer)
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self.thread.start()
        os.eventfd_write(self.efd, 1)

    def stop(self, timeout: float = 5.0) -> None:
        """End every transfer ("stopped") and the thread; report them all
        before returning.  Once; later calls do nothing."""
        if self.stopping:
            return
        self.stopping = True
        if self.thread is not None:
            os.eventfd_write(self.efd, 1)
            self.thread.join(timeout)
            if self.thread.is_alive():
                # Stuck in a read of a dead file system: leave its transfers
                # to it rather than race it; the process is ending anyway.
                log.warning("tftp: the transfer thread did not stop within %.0fs", timeout)
                return
        now = self.now()
        while self.inbox:
            self.inbox.popleft().finish("stopped", "server stopping", now)
        for xfer in list(self.handlers.values()):
            xfer.finish("stopped", "server stopping", now)
        self.heap.clear()
        self._drain()
        self.ep.close()
        if self.efd >= 0:
            os.close(self.efd)
            self.efd = -1

    def _drain(self) -> None:
        self._report_pending = False           # first: a later ending schedules again
        ended = self.ended
        while ended:
            xfer, outcome, error = ended.popleft()
            self.on_ended(xfer, outcome, error)

    # -- this thread's side -------------------------------------------------------
    def _run(self) -> None:
        poll = self.ep.poll
        handlers = self.handlers
        heap = self.heap
        now = self.now
        efd = self.efd
        t = now()
        while not self.stopping:
            try:
                # Until the first deadline, from the clock read at the last
                # wake-up (late by at most that wake-up's work).
                timeout = -1
                if heap:
                    timeout = heap[0][0] - t
                    if timeout < 0:
                        timeout = 0
                # maxevents: CPython allocates room for that many per call
                # (default 1023: 12 KiB each wake-up); what is left waits
                # for the next call (level-triggered).
                ready = poll(timeout, 64)
                t = now()
                for fd, _ev in ready:
                    xfer = handlers.get(fd)
                    if xfer is not None:
                        xfer.readable(t)
                    elif fd == efd:
                        self._wake()
                if heap and heap[0][0] <= t:
                    self.fire_due(t)
            except Exception:
                self.counters["drop.internal_error"] += 1
                log.exception("tftp: internal error in the transfer thread")
                time.sleep(0.01)               # a bug that repeats must not spin

    def _wake(self) -> None:
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass
        while self.inbox and not self.stopping:
            self._admit(self.inbox.popleft())

    def _admit(self, xfer: _Transfer) -> None:
        fd = xfer.sock.fileno()
        self.handlers[fd] = xfer
        try:
            self.ep.register(fd, select.EPOLLIN)
        except OSError as e:
            del self.handlers[fd]
            log.warning("tftp: cannot watch the transfer socket for %s: %s", xfer.addr, e)
            xfer.finish("failed", "server cannot watch the transfer socket", self.now())
            return
        xfer.start(self.now())

    def arm(self, xfer: _Transfer, deadline: float) -> None:
        """Be woken for ``xfer`` at ``deadline``.  Lazy: one entry per
        transfer; when it comes due and the session's deadline has moved on
        (ACKs came), it is pushed again instead of a push per ACK."""
        xfer.armed = True
        self.seq += 1
        heapq.heappush(self.heap, (deadline, self.seq, xfer))

    def fire_due(self, now: float | None = None) -> None:
        """Call every transfer whose wake-up time has come."""
        if now is None:
            now = self.now()
        heap = self.heap
        while heap and heap[0][0] <= now:
            xfer = heapq.heappop(heap)[2]
            xfer.armed = False
            xfer.deadline_due(now)

    def release(self, xfer: _Transfer) -> None:
        """Stop watching ``xfer``'s socket and close it."""
        sock = xfer.sock
        fd = sock.fileno()
        if fd >= 0:
            if self.handlers.pop(fd, None) is not None:
                try:
                    self.ep.unregister(fd)
                except OSError:
                    pass
            sock.close()

    def report(self, xfer: _Transfer, outcome: str, error: str | None) -> None:
        self.ended.append((xfer, outcome, error))
        if threading.current_thread() is not self.thread:
            self._drain()                      # not threaded, or the thread has ended
        elif not self._report_pending:
            self._report_pending = True
            self.reactor.callFromThread(self._drain)


class _Transfer:
    """One read transfer on its own socket (its TID), connected to the client.
    Made on the reactor thread; from ``start`` on, run by the TransferLoop."""

    def __init__(self, loop: TransferLoop, addr, filename: str, options,
                 session: ReadSession, sock, started_at: float):
        self.loop = loop
        self.addr = addr
        self.filename = filename
        self.options = options
        self.session = session
        self.sock = sock
        self.started_at = started_at    # wall clock, for the status page
        self.armed = False              # an entry in the loop's heap
        self.closed = False
        self.duration = 0.0

    def start(self, now: float) -> None:
        self.apply(self.session.start(), now)

    def readable(self, now: float) -> None:
        """The loop saw a datagram: read one (the next wake-up reads more),
        into the loop's buffer (no bytes object per ACK).  The ACK of the
        block in flight - nearly every datagram of a lock-step transfer -
        is answered here; anything else goes through _received."""
        buf = self.loop.rxbuf
        try:
            n = self.sock.recv_into(buf)
        except BlockingIOError:
            return
        except ConnectionRefusedError:
            self._unreachable(now)
            return
        except OSError as e:
            self.loop.counters["rx.error"] += 1
            log.debug("tftp: read error on the transfer to %s: %s", self.addr, e)
            return
        if n == 4 and buf[1] == _OP_ACK and buf[0] == 0 and not self.closed:
            try:
                pkt = self.session.ack_next((buf[2] << 8) | buf[3], now)
            except Exception:
                pkt = None                     # ack() meets it again and ends the transfer
            if pkt is not None:
                try:
                    self.sock.send(pkt)
                except OSError as e:
                    self._send_failed(e, now)
                return                         # armed: a running transfer always is
        self._received(buf, n, now)

    def datagramReceived(self, data: bytes, now: float | None = None) -> None:
        """A datagram handed in (tests with fake sockets; the loop calls readable)."""
        self._received(data, len(data), self.loop.now() if now is None else now)

    def _received(self, data, n: int, now: float) -> None:
        """``data[:n]`` came from the client."""
        try:
            if self.closed:
                return
            if n == 4 and data[1] == w.OP_ACK and data[0] == 0:
                # The common datagram, decoded in place (w.decode is the
                # oracle: tests/unit/test_tftp_codec.py).
                block = (data[2] << 8) | data[3]
                pkt = self.session.ack_next(block, now)
                if pkt is None:
                    self.apply(self.session.ack(block, now), now)
                    return
                try:
                    self.sock.send(pkt)
                except OSError as e:
                    if self._send_failed(e, now):
                        return
                if not self.armed:
                    self.loop.arm(self, self.session.deadline)
            else:
                self._other(bytes(data[:n]), now)
        except Exception:
            self.loop.counters["drop.internal_error"] += 1
            log.exception("tftp: internal error in the transfer to %s", self.addr)
            if not self.closed:
                self.finish("failed", "internal error", now)

    def _other(self, data: bytes, now: float) -> None:
        c = self.loop.counters
        try:
            pkt = w.decode(data)
        except w.DecodeError as e:
            c["drop." + e.reason] += 1
            return
        if type(pkt) is w.Ack:
            self.apply(self.session.ack(pkt.block, now), now)
        elif type(pkt) is w.Error:
            c["rx.client_error"] += 1
            self.apply(self.session.error(now, pkt.code, pkt.message), now)
        else:
            c["drop.unexpected_opcode"] += 1

    def _unreachable(self, now: float) -> None:
        # ICMP port unreachable for an earlier datagram: nobody is listening.
        self.loop.counters["rx.unreachable"] += 1
        if not self.closed:
            self.finish("failed", "client port unreachable", now)

    def apply(self, step, now: float) -> None:
        send = self.sock.send
        for pkt in step.send:
            try:
                send(pkt)
            except OSError as e:
                if self._send_failed(e, now):
                    return
        if step.outcome is not None:
            self.finish(step.outcome, step.error, now)
        elif step.deadline is not None and not self.armed:
            self.loop.arm(self, step.deadline)

    def _send_failed(self, e: OSError, now: float) -> bool:
        """Count a failed send; True if it ended the transfer."""
        if isinstance(e, BlockingIOError):
            self.loop.counters["tx.dropped_buffer_full"] += 1   # the timeout resends it
            return False
        if isinstance(e, ConnectionRefusedError):
            self._unreachable(now)
            return True
        self.loop.counters["tx.error"] += 1
        log.debug("tftp: cannot send to %s: %s", self.addr, e)
        return False

    def deadline_due(self, now: float) -> None:
        """The loop's wake-up for this transfer (maybe early: see arm)."""
        try:
            if self.closed:
                return
            deadline = self.session.deadline
            if deadline is None:
                return
            if now < deadline:
                self.loop.arm(self, deadline)
                return
            self.loop.counters["tx.timeout"] += 1
            self.apply(self.session.timeout(now), now)
        except Exception:
            self.loop.counters["drop.internal_error"] += 1
            log.exception("tftp: internal error on a timer for %s", self.addr)
            if not self.closed:
                self.finish("failed", "internal error", now)

    def finish(self, outcome: str, error: str | None, now: float) -> None:
        self.closed = True
        self.duration = max(0.0, now - self.session.started)
        self.loop.release(self)
        try:
            self.session.source.close()
        finally:
            self.loop.report(self, outcome, error)


# -- the server ----------------------------------------------------------------
class TftpServer:
    """Read-only TFTP service over ``roots`` (searched in order) and the
    ``generated`` in-memory files (looked up first; the dict is kept by
    reference, so the daemon may change it while serving)."""

    def __init__(self, reactor, roots: list[str], generated: dict[str, bytes] | None = None, *,
                 max_blksize: int = 1468, max_windowsize: int = 64, per_client: int = 8,
                 total: int = 256, cache_limit: int = 4 << 20, cache_total: int = 64 << 20,
                 chunk_total: int = 32 << 20,
                 timeout: float = 1.0, retries: int = 5, on_event=None, clock=None,
                 socket_factory=_default_socket, loop=None):
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor     # wall clock: started_at
        self.roots = list(roots)
        self.generated = generated if generated is not None else {}
        self.limits = Limits(max_blksize, max_windowsize, timeout, retries)
        self.per_client = per_client
        self.total = total
        self.cache_limit = cache_limit
        self.cache = FileCache(cache_total)
        self.chunks = ChunkCache(chunk_total)    # large files' chunks (transfer thread)
        self.on_event = on_event
        self.socket_factory = socket_factory
        # ``loop``: a factory (on_ended -> TransferLoop), for tests; None:
        # the transfer thread, started at the first transfer.
        self.loop = (loop or (lambda on_ended: TransferLoop(reactor, on_ended)))(self._ended)
        self._counters: Counter = Counter()     # the reactor thread's; see counters
        self.listeners: list[TftpListener] = []
        self.transfers: dict[int, _Transfer] = {}        # id(transfer) -> transfer
        self.per_ip: Counter = Counter()
        self._latest: dict[tuple, _Transfer] = {}        # client addr -> its newest transfer

    @property
    def counters(self) -> Counter:
        """This server's counters: the reactor thread's and the transfer
        thread's, added up (a snapshot)."""
        c = Counter(self._counters)
        c.update(dict(self.loop.counters))
        if self.chunks.reads:
            c["file.chunk_reads"] = self.chunks.reads
        return c

    def listen(self, port: int = w.TFTP_PORT, interface: str | None = None,
               ip: str = "0.0.0.0") -> TftpListener:
        """Serve requests on ip:port (bound to ``interface`` if given).  Each
        transfer's socket is bound to the same ip and interface, so replies
        leave from the address the client asked."""
        listener = TftpListener(self, interface, ip)
        UdpEndpoint(self.reactor, self.socket_factory(interface, port, ip), listener)
        self.listeners.append(listener)
        return listener

    def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners = []
        self.loop.stop()

    # -- requests ------------------------------------------------------------------
    def _request(self, listener: TftpListener, data: bytes, addr) -> None:
        c = self._counters
        try:
            req = w.decode(data)
        except w.DecodeError as e:
            c["drop." + e.reason] += 1
            log.debug("tftp: dropped malformed datagram from %s: %s", addr, e)
            return
        if type(req) is not w.Request:
            c["drop.not_a_request"] += 1
            return
        if req.is_write:
            c["rx.wrq"] += 1
            self._refuse(listener, addr, req.filename, "write", w.ERR_ACCESS,
                         "write requests are not accepted")
            return
        c["rx.rrq"] += 1
        if req.mode == w.MODE_MAIL:
            self._refuse(listener, addr, req.filename, "mail_mode", w.ERR_ILLEGAL_OP,
                         "mail mode is not supported")
            return
        prev = self._latest.get(addr)
        if (prev is not None and not prev.closed and prev.filename == req.filename
                and prev.options == req.options and prev.session.base == 1):
            # The client repeated its RRQ before our first reply reached it:
            # the transfer under way retransmits on its own timer.
            c["rx.rrq_duplicate"] += 1
            return
        if len(self.transfers) >= self.total:
            self._refuse(listener, addr, req.filename, "cap_total", w.ERR_NOT_DEFINED,
                         "server busy, too many transfers")
            return
        if self.per_ip[addr[0]] >= self.per_client:
            self._refuse(listener, addr, req.filename, "cap_client", w.ERR_NOT_DEFINED,
                         "too many transfers from this client")
            return
        try:
            source = self._open(req.filename)
        except Refused as r:
            self._refuse(listener, addr, req.filename, r.reason, r.code, r.message)
            return
        try:
            sock = self._transfer_socket(listener, addr)
        except OSError as e:
            source.close()
            log.warning("tftp: no socket for a transfer to %s: %s", addr, e)
            self._refuse(listener, addr, req.filename, "no_socket", w.ERR_NOT_DEFINED,
                         "server cannot open a transfer socket")
            return
        neg = negotiate(req.options, req.mode, source.size, self.limits)
        session = ReadSession(source, neg, self.loop.now(), max_retries=self.limits.max_retries)
        xfer = _Transfer(self.loop, addr, req.filename, req.options, session, sock,
                         self.clock.seconds())
        self.transfers[id(xfer)] = xfer
        self.per_ip[addr[0]] += 1
        self._latest[addr] = xfer
        c["transfer.started"] += 1
        self.loop.submit(xfer)

    def _transfer_socket(self, listener: TftpListener, addr):
        """A new socket (the transfer's TID) on the listener's address and
        interface, connected to the client."""
        sock = self.socket_factory(listener.interface, 0, listener.ip)
        try:
            sock.connect(addr)
        except OSError:
            sock.close()
            raise
        return sock

    def _open(self, name: str):
        try:
            return self._open_source(name)
        except PathRefused as e:
            raise Refused(e.reason, error_code(e), e.message) from None

    def _open_source(self, name: str):
        res = resolve(name, self.roots, self.generated,
                      lambda root, rel: os.path.lexists(os.path.join(root, rel)))
        if res.root is None:
            self._counters["file.generated"] += 1
            return BytesSource(self.generated[res.rel])
        fd, st, real = open_in_root(res.root, res.rel)
        key = (real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if st.st_size > self.cache_limit:
            self._counters["file.direct"] += 1
            return FileSource(fd, st.st_size, key=key, cache=self.chunks)
        try:
            data = self.cache.get(key)
            if data is None:
                self._counters["cache.miss"] += 1
                data = _read_all(fd, st.st_size)
                self.cache.put(key, data)
            else:
                self._counters["cache.hit"] += 1
        except OSError:
            raise Refused("read_failed", w.ERR_ACCESS, "cannot read file") from None
        finally:
            os.close(fd)
        return BytesSource(data)

    def _refuse(self, listener, addr, filename: str, reason: str, code: int, message: str):
        self._counters["refused." + reason] += 1
        # Not-found is routine (pxelinux walks a list of config names): debug.
        log.log(logging.DEBUG if reason == "not_found" else logging.INFO,
                "tftp: %s:%d %r refused: %s", addr[0], addr[1], filename, message)
        # From the listening socket: no TID exists yet, and every client
        # takes an ERROR from any port before its first reply.
        listener.send(w.encode_error(code, message), addr)
        self._emit({"client": addr[0], "port": addr[1], "file": filename, "bytes": 0,
                    "blksize": None, "windowsize": None, "duration": 0.0,
                    "outcome": "refused", "error": message})

    # -- bookkeeping ---------------------------------------------------------------
    def _ended(self, xfer: _Transfer, outcome: str, error: str | None) -> None:
        if self.transfers.pop(id(xfer), None) is None:
            return
        ip = xfer.addr[0]
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]
        if self._latest.get(xfer.addr) is xfer:
            del self._latest[xfer.addr]
        session = xfer.session
        c = self._counters
        c["transfer." + outcome] += 1
        c["tx.retransmit"] += session.retransmits
        c["rx.duplicate_ack"] += session.duplicate_acks
        duration = xfer.duration
        log.log(logging.DEBUG if outcome == "finished" else logging.INFO,
                "tftp: %s:%d %r %s: %d bytes in %.3fs%s", xfer.addr[0], xfer.addr[1],
                xfer.filename, outcome, session.bytes_acked, duration,
                f" ({error})" if error else "")
        neg = session.neg
        self._emit({"client": ip, "port": xfer.addr[1], "file": xfer.filename,
                    "bytes": session.bytes_acked, "blksize": neg.blksize,
                    "windowsize": neg.windowsize, "duration": round(duration, 6),
                    "outcome": outcome, "error": error, "retransmits": session.retransmits})

    def _emit(self, ev: dict) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(ev)
        except Exception:
            self._counters["event.error"] += 1
            log.exception("tftp: on_event failed")

    def _sendto(self, sock, data: bytes, addr) -> None:
        try:
            # The socket directly: twisted's Port.write re-validates the
            # address on every datagram (see net/dhcp.py).
            sock.sendto(data, addr)
        except BlockingIOError:
            self._counters["tx.dropped_buffer_full"] += 1   # the timeout resends it
        except OSError as e:
            self._counters["tx.error"] += 1
            log.debug("tftp: cannot send to %s: %s", addr, e)
