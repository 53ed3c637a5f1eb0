"""TFTP over UDP: decode -> resolve/negotiate -> ReadSession -> send.  Nothing else here.

* The listener (port 69) only reads requests.  Each accepted RRQ gets a fresh
  UDP socket on an ephemeral port, its own TID (RFC 1350 §4), driven by a
  ``ReadSession`` (policy/tftp_session.py) and one reactor timer.
* Transfer sockets are connect()ed to their client, as tftp-hpa does: the
  kernel drops datagrams from any other address/port (RFC 1350 §4's "should
  answer with ERROR 5" is not done: we never hear of the stranger), send()
  skips a route lookup per block, and an ICMP port unreachable (the client
  went away) ends the transfer at once instead of after the retry limit.
* All transfer sockets sit in one private epoll set (``TransferPoller``),
  which is a single reader of the reactor: one wake-up serves every transfer
  with an ACK waiting, one recv() each.  Twisted's per-descriptor dispatch
  (context, logger, a recvfrom until EAGAIN) cost more than the protocol work
  (bench/tftp, 50 parallel transfers).
* WRQ is refused with ERROR 2; so are names the path policy refuses.  Requests
  over the per-client or total cap get ERROR 0 "busy" (never silence).
* Malformed datagrams are counted as ``drop.<reason>`` and dropped; no
  exception escapes ``datagramReceived``.
* Files up to ``cache_limit`` bytes are kept in memory (LRU, ``cache_total``
  bytes in all) keyed by realpath + device/inode + mtime + size; larger files
  are read from the open descriptor at offsets (os.pread of page-cached data,
  one window at a time, as tftp-hpa does).
* Every transfer that ends calls ``on_event(dict)``: client, port, file,
  bytes, blksize, windowsize, duration, outcome ("finished", "failed",
  "aborted" = client refused our OACK, "refused" = answered with an ERROR at
  once, "stopped" = server shut down), error.
"""
from __future__ import annotations

import logging
import os
import select
from collections import Counter, OrderedDict

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
class FileSource:
    """A large file read at offsets from its open descriptor, through a
    read-ahead buffer: one os.pread() per ``chunk`` bytes instead of one
    per block (a transfer reads forward; a retransmission may step back
    into the buffer or before it).  Not mmap: a file truncated in place
    while mapped would kill the daemon with SIGBUS."""

    __slots__ = ("fd", "size", "chunk", "buf", "buf_at")

    def __init__(self, fd: int, size: int, chunk: int = 64 << 10):
        self.fd = fd
        self.size = size
        self.chunk = chunk
        self.buf = memoryview(b"")
        self.buf_at = 0

    def read(self, offset: int, n: int):
        start = offset - self.buf_at
        if start < 0 or start + n > len(self.buf):
            data = os.pread(self.fd, max(n, self.chunk), offset)
            self.buf = memoryview(data)
            self.buf_at = offset
            if len(data) <= n:
                return data
            start = 0
        return self.buf[start:start + n]

    def close(self) -> None:
        self.buf = memoryview(b"")
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
            self.server.counters["drop.internal_error"] += 1
            log.exception("tftp: internal error on a request from %s", addr)

    def send(self, data: bytes, addr) -> None:
        self.server._sendto(self.transport.socket, data, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TransferPoller:
    """Every transfer socket in one epoll set; the set's descriptor is one
    reader of the reactor (an IReadDescriptor).  ``handler.readable()`` is
    called for each socket with a datagram waiting (level-triggered: what is
    not read now is reported again on the next wake-up)."""

    def __init__(self, reactor, rounds: int = 8):
        self.reactor = reactor
        self.ep = select.epoll()
        self.handlers: dict[int, object] = {}
        self.reading = False
        self.rounds = rounds

    def add(self, sock, handler) -> None:
        fd = sock.fileno()
        self.ep.register(fd, select.EPOLLIN)
        self.handlers[fd] = handler
        if not self.reading:
            self.reactor.addReader(self)
            self.reading = True

    def remove(self, sock) -> None:
        """Before the socket is closed (epoll forgets closed descriptors
        only when no other reference to the file is left)."""
        fd = sock.fileno()
        if self.handlers.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def close(self) -> None:
        if self.reading:
            self.reactor.removeReader(self)
            self.reading = False
        self.handlers.clear()
        self.ep.close()

    # IReadDescriptor --------------------------------------------------------------
    def fileno(self) -> int:
        return self.ep.fileno()

    def logPrefix(self) -> str:
        return "TftpTransfers"

    def connectionLost(self, reason) -> None:
        pass

    def doRead(self) -> None:
        # Look again before going back to the reactor: the ACKs that our own
        # DATA provoked while we were busy are served in this wake-up instead
        # of costing a reactor iteration each.  Bounded, so other services
        # on the reactor (DHCP, HTTP) wait at most ``rounds`` passes.
        get = self.handlers.get
        poll = self.ep.poll
        for _ in range(self.rounds):
            ready = poll(0)
            if not ready:
                return
            for fd, _ev in ready:
                handler = get(fd)
                if handler is not None:
                    handler.readable()


_RX_SIZE = 1024          # an ACK is 4 bytes, an ERROR's text may be cut short


class _Transfer:
    """One read transfer on its own socket (its TID), connected to the client."""

    def __init__(self, server: TftpServer, addr, filename: str, options,
                 session: ReadSession, sock):
        self.server = server
        self.addr = addr
        self.filename = filename
        self.options = options
        self.session = session
        self.sock = sock
        self.timer = None
        self.closed = False

    def readable(self) -> None:
        """The poller saw a datagram: read one (the next wake-up reads more)."""
        try:
            data = self.sock.recv(_RX_SIZE)
        except BlockingIOError:
            return
        except ConnectionRefusedError:
            self._unreachable()
            return
        except OSError as e:
            self.server.counters["rx.error"] += 1
            log.debug("tftp: read error on the transfer to %s: %s", self.addr, e)
            return
        self.datagramReceived(data)

    def datagramReceived(self, data: bytes) -> None:
        try:
            self._handle(data)
        except Exception:
            self.server.counters["drop.internal_error"] += 1
            log.exception("tftp: internal error in the transfer to %s", self.addr)
            if not self.closed:
                self.finish("failed", "internal error")

    def _handle(self, data: bytes) -> None:
        if self.closed:
            return
        now = self.server.clock.seconds()
        if len(data) == 4 and data[0] == 0 and data[1] == w.OP_ACK:
            # The common datagram, decoded in place (w.decode is the oracle:
            # tests/unit/test_tftp_codec.py).
            self.apply(self.session.ack((data[2] << 8) | data[3], now))
            return
        c = self.server.counters
        try:
            pkt = w.decode(data)
        except w.DecodeError as e:
            c["drop." + e.reason] += 1
            return
        if type(pkt) is w.Ack:
            self.apply(self.session.ack(pkt.block, now))
        elif type(pkt) is w.Error:
            c["rx.client_error"] += 1
            self.apply(self.session.error(now, pkt.code, pkt.message))
        else:
            c["drop.unexpected_opcode"] += 1

    def _unreachable(self) -> None:
        # ICMP port unreachable for an earlier datagram: nobody is listening.
        self.server.counters["rx.unreachable"] += 1
        if not self.closed:
            self.finish("failed", "client port unreachable")

    def apply(self, step) -> None:
        send = self.sock.send
        for pkt in step.send:
            try:
                send(pkt)
            except BlockingIOError:
                self.server.counters["tx.dropped_buffer_full"] += 1   # the timeout resends it
            except ConnectionRefusedError:
                self._unreachable()
                return
            except OSError as e:
                self.server.counters["tx.error"] += 1
                log.debug("tftp: cannot send to %s: %s", self.addr, e)
        if step.outcome is not None:
            self.finish(step.outcome, step.error)
        elif step.deadline is not None and self.timer is None:
            # One lazy timer: it re-arms itself while the deadline moves on,
            # instead of a cancel + callLater per ACK.
            delay = max(0.0, step.deadline - self.server.clock.seconds())
            self.timer = self.server.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        self.timer = None
        try:
            if self.closed:
                return
            now = self.server.clock.seconds()
            deadline = self.session.deadline
            if deadline is None:
                return
            if now < deadline:
                self.timer = self.server.reactor.callLater(deadline - now, self._fire)
                return
            self.server.counters["tx.timeout"] += 1
            self.apply(self.session.timeout(now))
        except Exception:
            self.server.counters["drop.internal_error"] += 1
            log.exception("tftp: internal error on a timer for %s", self.addr)
            if not self.closed:
                self.finish("failed", "internal error")

    def finish(self, outcome: str, error: str | None) -> None:
        self.closed = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.server._release(self.sock)
        try:
            self.session.source.close()
        finally:
            self.server._ended(self, outcome, error)


# -- the server ----------------------------------------------------------------
class TftpServer:
    """Read-only TFTP service over ``roots`` (searched in order) and the
    ``generated`` in-memory files (looked up first; the dict is kept by
    reference, so the daemon may change it while serving)."""

    def __init__(self, reactor, roots: list[str], generated: dict[str, bytes] | None = None, *,
                 max_blksize: int = 1468, max_windowsize: int = 64, per_client: int = 8,
                 total: int = 256, cache_limit: int = 4 << 20, cache_total: int = 64 << 20,
                 timeout: float = 1.0, retries: int = 5, on_event=None, clock=None,
                 socket_factory=_default_socket, poller=None):
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor
        self.roots = list(roots)
        self.generated = generated if generated is not None else {}
        self.limits = Limits(max_blksize, max_windowsize, timeout, retries)
        self.per_client = per_client
        self.total = total
        self.cache_limit = cache_limit
        self.cache = FileCache(cache_total)
        self.on_event = on_event
        self.socket_factory = socket_factory
        self._poller = poller                 # None: our own, made at the first transfer
        self._own_poller = poller is None
        self.counters: Counter = Counter()
        self.listeners: list[TftpListener] = []
        self.transfers: dict[int, _Transfer] = {}        # id(transfer) -> transfer
        self.per_ip: Counter = Counter()
        self._latest: dict[tuple, _Transfer] = {}        # client addr -> its newest transfer

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
        for xfer in list(self.transfers.values()):
            xfer.finish("stopped", "server stopping")
        if self._poller is not None and self._own_poller:
            self._poller.close()
            self._poller = None

    @property
    def poller(self):
        if self._poller is None:
            self._poller = TransferPoller(self.reactor)
        return self._poller

    def _release(self, sock) -> None:
        if sock.fileno() >= 0:
            if self._poller is not None:
                self._poller.remove(sock)
            sock.close()

    # -- requests ------------------------------------------------------------------
    def _request(self, listener: TftpListener, data: bytes, addr) -> None:
        c = self.counters
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
        now = self.clock.seconds()
        neg = negotiate(req.options, req.mode, source.size, self.limits)
        session = ReadSession(source, neg, now, max_retries=self.limits.max_retries)
        xfer = _Transfer(self, addr, req.filename, req.options, session, sock)
        self.poller.add(sock, xfer)
        self.transfers[id(xfer)] = xfer
        self.per_ip[addr[0]] += 1
        self._latest[addr] = xfer
        c["transfer.started"] += 1
        xfer.apply(session.start())

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
            self.counters["file.generated"] += 1
            return BytesSource(self.generated[res.rel])
        fd, st, real = open_in_root(res.root, res.rel)
        if st.st_size > self.cache_limit:
            self.counters["file.direct"] += 1
            return FileSource(fd, st.st_size)
        try:
            key = (real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            data = self.cache.get(key)
            if data is None:
                self.counters["cache.miss"] += 1
                data = _read_all(fd, st.st_size)
                self.cache.put(key, data)
            else:
                self.counters["cache.hit"] += 1
        except OSError:
            raise Refused("read_failed", w.ERR_ACCESS, "cannot read file") from None
        finally:
            os.close(fd)
        return BytesSource(data)

    def _refuse(self, listener, addr, filename: str, reason: str, code: int, message: str):
        self.counters["refused." + reason] += 1
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
        self.counters["transfer." + outcome] += 1
        self.counters["tx.retransmit"] += session.retransmits
        self.counters["rx.duplicate_ack"] += session.duplicate_acks
        duration = self.clock.seconds() - session.started
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
            self.counters["event.error"] += 1
            log.exception("tftp: on_event failed")

    def _sendto(self, sock, data: bytes, addr) -> None:
        try:
            # The socket directly: twisted's Port.write re-validates the
            # address on every datagram (see net/dhcp.py).
            sock.sendto(data, addr)
        except BlockingIOError:
            self.counters["tx.dropped_buffer_full"] += 1   # the timeout resends it
        except OSError as e:
            self.counters["tx.error"] += 1
            log.debug("tftp: cannot send to %s: %s", addr, e)
