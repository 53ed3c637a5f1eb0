"""A firmware-like TFTP read (RFC 1350/2347/2348/2349/7440) for the storm
client: one UDP socket bound to the host's leased address, a state machine
driven by the event loop's callbacks (no task per packet), one watchdog timer.

Retransmission as firmware does it: nothing heard for `timeout` -> the last
packet again (RRQ, or the last ACK), the timeout doubling up to 4 s, at most
8 times in a row.  With a window (RFC 7440) the client ACKs every
`windowsize` blocks; a block after a gap gets the last in-order block ACKed
once (the server restarts the window there); the last block of an already
ACKed window arriving again (our ACK was lost) is ACKed again.
"""
from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass

FIRST_TIMEOUT = 1.0
MAX_TIMEOUT = 4.0
MAX_TRIES = 8


class TftpError(OSError):
    def __init__(self, msg: str, retransmits: int = 0):
        super().__init__(msg)
        self.retransmits = retransmits


@dataclass
class Got:
    size: int
    retransmits: int


class TftpGet(asyncio.DatagramProtocol):
    def __init__(self, server: tuple[str, int], name: str, opts: dict, probe: bool):
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.server = server
        self.done: asyncio.Future = loop.create_future()
        self.rrq = (b"\x00\x01" + name.encode() + b"\x00octet\x00"
                    + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in opts.items()))
        self.probe = probe
        self.tid = None
        self.first = b""
        self.blksize, self.window = 512, 1
        self.expect = 1             # next block wanted (mod 65536)
        self.in_window = 0
        self.gap_acked = False
        self.size = 0
        self.tsize = None
        self.last = self.rrq
        self.last_to = server
        self.heard = time.monotonic()
        self.timeout = FIRST_TIMEOUT
        self.tries = 0
        self.retransmits = 0
        self.transport = None
        self.timer = None

    @classmethod
    async def fetch(cls, src: str, server: str, name: str, opts: dict, probe: bool,
                    port: int = 69) -> Got:
        loop = asyncio.get_running_loop()
        tr, p = await loop.create_datagram_endpoint(
            lambda: cls((server, port), name, opts, probe), local_addr=(src, 0))
        try:
            return await p.done
        finally:
            if p.timer:
                p.timer.cancel()
            tr.close()

    def connection_made(self, transport):
        self.transport = transport
        transport.sendto(self.rrq, self.server)
        self.timer = self.loop.call_later(self.timeout, self._watch)

    def _send(self, pkt: bytes) -> None:
        self.last, self.last_to = pkt, self.tid
        self.transport.sendto(pkt, self.tid)

    def _ack(self, block: int) -> None:
        self._send(struct.pack("!HH", 4, block & 0xFFFF))

    def _finish(self, exc: Exception | None = None) -> None:
        if self.done.done():
            return
        if exc is not None:
            self.done.set_exception(exc)
        else:
            if self.tsize is not None and not self.probe and self.size != self.tsize:
                self.done.set_exception(TftpError(f"got {self.size} bytes, tsize {self.tsize}"))
            else:
                self.done.set_result(Got(self.tsize if self.probe else self.size,
                                         self.retransmits))

    def _watch(self) -> None:
        if self.done.done():
            return
        if time.monotonic() - self.heard >= self.timeout * 0.999:
            self.tries += 1
            if self.tries > MAX_TRIES:
                self._finish(TftpError(f"TFTP: nothing heard after {MAX_TRIES} retransmissions "
                                       f"(block {self.expect}, from {self.tid}; "
                                       f"first packet {self.first!r})", self.retransmits))
                return
            self.retransmits += 1
            self.transport.sendto(self.last, self.last_to)
            self.heard = time.monotonic()
            self.timeout = min(self.timeout * 2, MAX_TIMEOUT)
            self.gap_acked = False
        self.timer = self.loop.call_later(max(0.05, self.heard + self.timeout - time.monotonic()),
                                          self._watch)

    def datagram_received(self, data: bytes, addr) -> None:
        if self.done.done() or len(data) < 4:
            return
        if self.tid is None:
            self.tid = addr
            self.first = bytes(data[:24])
        elif addr != self.tid:
            # a second transfer started by our retransmitted RRQ: refuse it
            self.transport.sendto(b"\x00\x05\x00\x05unknown transfer ID\x00", addr)
            return
        op = data[1]
        if op == 6:                                   # OACK
            if self.expect != 1 or self.size:
                return
            fields = data[2:].split(b"\0")
            d = {fields[i].decode().lower(): fields[i + 1].decode()
                 for i in range(0, len(fields) - 1, 2)}
            self.blksize = int(d.get("blksize", 512))
            self.window = int(d.get("windowsize", 1))
            self.tsize = int(d["tsize"]) if "tsize" in d else None
            self._progress()
            if self.probe:
                self.transport.sendto(b"\x00\x05\x00\x08tsize query\x00", self.tid)
                self._finish()
                return
            self._ack(0)
        elif op == 3:                                 # DATA
            block = struct.unpack("!H", data[2:4])[0]
            want = self.expect & 0xFFFF
            if block == want:
                self._progress()
                n = len(data) - 4
                self.size += n
                self.expect += 1
                self.in_window += 1
                self.gap_acked = False
                if n < self.blksize:
                    self._ack(block)
                    self._finish()
                elif self.in_window >= self.window:
                    self.in_window = 0
                    self._ack(block)
            elif block == (want - 1) & 0xFFFF and self.expect > 1:
                self.in_window = 0
                self._ack(block)                      # our ACK was lost: again
            elif ((block - want) & 0xFFFF) < 0x8000 and not self.gap_acked:
                self.gap_acked = True                 # a gap: restart the window here
                self.in_window = 0
                self.retransmits += 1
                self._ack(want - 1)
        elif op == 5:                                 # ERROR
            code = struct.unpack("!H", data[2:4])[0]
            msg = data[4:].split(b"\0", 1)[0].decode("latin-1")
            self._finish(TftpError(f"TFTP error {code}: {msg}"))

    def _progress(self) -> None:
        self.heard = time.monotonic()
        self.tries = 0
        self.timeout = FIRST_TIMEOUT

    def error_received(self, exc) -> None:
        pass                                          # ICMP unreachable: the timer retries
