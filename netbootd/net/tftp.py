"""TFTP over UDP: decode -> resolve/negotiate -> ReadSession -> send.  Nothing else here.

* The listener (port 69, on the reactor) only reads requests.  Each accepted
  RRQ gets a fresh UDP socket on an ephemeral port, its own TID (RFC 1350
  §4), driven by a ``ReadSession`` (policy/tftp_session.py) on the transfer
  thread (``TransferLoop``, net/tftp_loop.py; one ``Transfer``: net/tftp_transfer.py).
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
  parallel transfers on one CPU, atftpd's wall time as 1.0: 1.24x before,
  1.13x with the thread, server CPU 4.56 -> 3.97 s; 0.97x with the leaner
  paths after it).  The reactor and the
  thread meet only at start (an inbox) and end (``on_event`` runs on the
  reactor); see TransferLoop.
* WRQ is refused with ERROR 2; so are names the path policy refuses.
* Requests over the total cap (``total``, config ``boot.tftp_max_transfers``,
  default 1024) or the per-client cap (8) are dropped unanswered
  (``drop.cap_total``, ``drop.cap_client``; a warning at most once a
  minute), never answered with an ERROR: EDK2 and iPXE take an ERROR as the
  end of the boot, while an RRQ that hears nothing is resent after the
  firmware's timeout, so over the cap a storm waits in its clients instead
  of failing (issue 15: with ERROR "busy" at 256, 744 of 1,000 hosts
  failed).  dnsmasq does the same at its ``tftp-max``: it stops reading its
  listening socket, and the kernel queues (then drops) the RRQs.  So does
  running out of descriptors (``drop.no_socket``).  Memory per transfer:
  ~3.2 KB of Python objects and ~2 KB of kernel slab for its socket
  (bench/storm/tftp_memory.py): the defaults' 1,536 sockets are ~8 MB.
* Those caps count confirmed transfers only: ones whose client has ACKed
  (policy/tftp_session.py).  Until then a transfer is unconfirmed - its
  source may be forged - and lives in a budget of its own on the transfer
  thread (``first_per_client``, ``first_total``, config
  ``boot.tftp_max_unconfirmed``, default 512: see TransferLoop for who is
  evicted and when a new request is dropped instead), sends at most two
  datagrams and ends after ~4 s.  So a flood of forged RRQs cannot fill the
  caps real clients need.  A client that has ACKed is never refused for
  the total (only for its own per-client cap), so the confirmed may pass
  ``total`` by what was unconfirmed at the time.  Transfer sockets: at most
  ``total`` + ``first_total`` (past that a request is dropped at the door,
  ``drop.unconfirmed_backlog``).
  A transfer that ends without ever hearing its client ("unanswered",
  "evicted", "dropped") is counted and logged at debug level, with no
  event: one event row per forged datagram would let the flood write the
  database.
* A transfer whose last ACK is lost ends "finished" with ``final_ack``
  False in its event (policy/tftp_session.py says when), not "failed".
* Malformed datagrams are counted as ``drop.<reason>`` and dropped; no
  exception escapes ``datagramReceived`` or the transfer thread.
* Files up to ``cache_limit`` bytes are kept in memory (LRU, ``cache_total``
  bytes in all) keyed by realpath + device/inode + mtime + size; larger files
  are read from the open descriptor (os.pread of page-cached data) in 256 KiB
  chunks that every transfer of the same file shares (``ChunkCache``, LRU
  within ``chunk_total``): 50 hosts booting one kernel cost one read per
  chunk, not fifty.  Those caches and ``FileSource``: net/tftp_files.py.
* Every transfer that ends calls ``on_event(dict)``: client, port, file,
  bytes, blksize, windowsize, duration, outcome ("finished", "failed",
  "aborted" = client refused our OACK, "refused" = answered with an ERROR at
  once, "stopped" = server shut down), error.
"""
from __future__ import annotations

import logging
import os
from collections import Counter

from ..codec import tftp as w
from ..policy.paths import PathRefused, normalize
from ..policy.ratelimit import Buckets
from ..policy.tftp_session import (
    UNANSWERED, BytesSource, Limits, ReadSession, Refused, negotiate,
)
from . import interfaces
from .fileroots import open_in_root, open_in_roots
from .tftp_files import ChunkCache, FileCache, FileSource, error_code, read_all
from .tftp_loop import DROPPED, EVICTED, TransferLoop
from .tftp_transfer import Transfer
from .udp import UdpEndpoint

log = logging.getLogger("netbootd.tftp")



def _default_socket(interface: str | None, port: int, ip: str):
    return interfaces.udp_socket(interface, port, ip)


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


# -- the server ----------------------------------------------------------------
class TftpServer:
    """Read-only TFTP service over ``roots`` (searched in order) and the
    ``generated`` files (looked up first; bytes in memory, or a str: the
    path of a file served under that name, as the discover kernel and
    initrd are; the mapping is kept by reference, so the daemon may change
    it while serving)."""

    def __init__(self, reactor, roots: list[str], generated: dict[str, bytes] | None = None, *,
                 max_blksize: int = 1468, max_windowsize: int = 64, per_client: int = 8,
                 total: int = 1024, cache_limit: int = 4 << 20, cache_total: int = 64 << 20,
                 chunk_total: int = 32 << 20,
                 timeout: float = 1.0, retries: int = 5, first_timeout: float = 1.0,
                 first_retries: int = 1, first_per_client: int = 4, first_total: int = 512,
                 first_grace: float = 0.1,
                 on_event=None, clock=None, socket_factory=_default_socket, loop=None):
        self.reactor = reactor
        self.clock = clock if clock is not None else reactor     # wall clock: started_at
        self.roots = list(roots)
        self.generated = generated if generated is not None else {}
        self.limits = Limits(max_blksize, max_windowsize, timeout, retries,
                             first_timeout, first_retries)
        if first_per_client < 1 or first_total < 1:
            raise ValueError("first_per_client and first_total must be >= 1")
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
        self.loop.on_confirmed = self._confirmed
        self.loop.first_per_client = first_per_client
        self.loop.per_client = per_client
        self.loop.first_total = first_total
        self.loop.first_grace = first_grace
        self.first_total = first_total
        self._counters: Counter = Counter()     # the reactor thread's; see counters
        self.listeners: list[TftpListener] = []
        self.transfers: dict[int, Transfer] = {}        # id(transfer) -> transfer, all
        self.confirmed = 0                              # of them, whose client has ACKed
        self.per_ip: Counter = Counter()                # confirmed transfers per client
        self._latest: dict[tuple, Transfer] = {}        # client addr -> its newest transfer
        # Refusals are events (a host's timeline shows its missing file), but a
        # flood of RRQs for missing names from forged sources must not cost a
        # stored row each: per source and in total, the rest only counted.
        self._refusal_events = Buckets(2.0, 20.0, max_keys=4096)
        self._refusal_events_total = Buckets(50.0, 200.0, max_keys=1)
        self._busy_logged = float("-inf")

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
        # Over a cap: silence, never an ERROR.  Firmware takes an ERROR as
        # the end of its boot (EDK2, iPXE) but resends an unanswered RRQ
        # after its timeout, so a storm queues in the clients (module doc).
        if self.confirmed >= self.total:
            self._busy("cap_total")
            return
        if self.per_ip[addr[0]] >= self.per_client:
            self._busy("cap_client")
            return
        if len(self.transfers) >= self.total + self.first_total:
            # The sockets' bound.  Only unconfirmed transfers can bring us
            # here (the caps above hold the confirmed).
            self._busy("unconfirmed_backlog")
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
            log.debug("tftp: no socket for a transfer to %s: %s", addr, e)
            self._busy("no_socket")            # out of descriptors: the client retries
            return
        neg = negotiate(req.options, req.mode, source.size, self.limits)
        lim = self.limits
        session = ReadSession(source, neg, self.loop.now(), max_retries=lim.max_retries,
                              first_timeout=lim.first_timeout, first_retries=lim.first_retries)
        xfer = Transfer(self.loop, addr, req.filename, req.options, session, sock,
                         self.clock.seconds())
        self.transfers[id(xfer)] = xfer
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
        rel = normalize(name)
        if self.generated and rel in self.generated:   # the daemon's own answers win
            self._counters["file.generated"] += 1
            data = self.generated[rel]
            if not isinstance(data, str):
                return BytesSource(data)
            fd, st, real = open_in_root(*os.path.split(data))   # a generated name, by path
        else:
            fd, st, real = open_in_roots(self.roots, rel)
        key = (real, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if st.st_size > self.cache_limit:
            self._counters["file.direct"] += 1
            return FileSource(fd, st.st_size, key=key, cache=self.chunks)
        try:
            data = self.cache.get(key)
            if data is None:
                self._counters["cache.miss"] += 1
                data = read_all(fd, st.st_size)
                self.cache.put(key, data)
            else:
                self._counters["cache.hit"] += 1
        except OSError:
            raise Refused("read_failed", w.ERR_ACCESS, "cannot read file") from None
        finally:
            os.close(fd)
        return BytesSource(data)

    def _busy(self, reason: str) -> None:
        """An RRQ dropped unanswered at a cap (``drop.<reason>``); a warning
        at most once a minute says so."""
        self._counters["drop." + reason] += 1
        now = self.reactor.seconds()
        if now >= self._busy_logged + 60.0:
            self._busy_logged = now
            log.warning("tftp: at a cap (%s: %d transfers, %d per client; boot.tftp_max_"
                        "transfers): requests are dropped unanswered until one ends, and "
                        "clients resend them", reason, self.total, self.per_client)

    def _refuse(self, listener, addr, filename: str, reason: str, code: int, message: str):
        self._counters["refused." + reason] += 1
        # Not-found is routine (pxelinux walks a list of config names): debug.
        log.log(logging.DEBUG if reason == "not_found" else logging.INFO,
                "tftp: %s:%d %r refused: %s", addr[0], addr[1], filename, message)
        # From the listening socket: no TID exists yet, and every client
        # takes an ERROR from any port before its first reply.
        listener.send(w.encode_error(code, message), addr)
        now = self.reactor.seconds()
        if not (self._refusal_events.allow(addr[0], now)
                and self._refusal_events_total.allow(None, now)):
            self._counters["event.refused_suppressed"] += 1
            return
        self._emit({"client": addr[0], "port": addr[1], "file": filename, "bytes": 0,
                    "blksize": None, "windowsize": None, "duration": 0.0,
                    "outcome": "refused", "error": message})

    # -- bookkeeping ---------------------------------------------------------------
    def _confirmed(self, xfer: Transfer) -> None:
        """The client ACKed (the transfer thread says): under the caps now."""
        if id(xfer) in self.transfers and not xfer.counted:
            xfer.counted = True
            self.confirmed += 1
            self.per_ip[xfer.addr[0]] += 1

    def _ended(self, xfer: Transfer, outcome: str, error: str | None) -> None:
        if self.transfers.pop(id(xfer), None) is None:
            return
        ip = xfer.addr[0]
        if xfer.counted:
            self.confirmed -= 1
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
        if outcome is UNANSWERED or outcome is EVICTED or outcome is DROPPED:
            # Never heard from its client: maybe forged (module doc).  No event.
            log.debug("tftp: %s:%d %r %s (%s)", ip, xfer.addr[1], xfer.filename, outcome, error)
            return
        log.log(logging.DEBUG if outcome == "finished" else logging.INFO,
                "tftp: %s:%d %r %s: %d bytes in %.3fs%s", xfer.addr[0], xfer.addr[1],
                xfer.filename, outcome, session.bytes_acked, duration,
                f" ({error})" if error else "")
        neg = session.neg
        ev = {"client": ip, "port": xfer.addr[1], "file": xfer.filename,
              "bytes": session.bytes_acked, "blksize": neg.blksize,
              "windowsize": neg.windowsize, "duration": round(duration, 6),
              "outcome": outcome, "error": error, "retransmits": session.retransmits}
        if not session.final_ack:
            # Every byte sent, the last ACK lost (policy/tftp_session.py).
            c["transfer.finished_unacked"] += 1
            ev["final_ack"] = False
            ev["note"] = session.reason
        self._emit(ev)

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
