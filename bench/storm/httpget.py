"""iPXE-like HTTP/1.1 downloads for the storm client: one keep-alive
connection per host from its leased address, the body counted (not kept)
through one receive buffer shared by every connection (the event loop runs
one callback at a time), so a 1,000-host storm costs little client CPU.

A request that fails (connection refused or reset, a closed keep-alive
connection, no byte for `idle` seconds, a 5xx/429) reconnects and asks again
after 1, 2, 4 s - 4 tries in all, as iPXE's script does ('|| goto failed',
retry) and the firmware's HTTP stack does on a reset.
"""
from __future__ import annotations

import asyncio
import time
import urllib.parse

BUF = memoryview(bytearray(256 * 1024))
TRIES = 4
CONNECT_TIMEOUT = 10.0


class HttpFailed(Exception):
    pass


class _Conn(asyncio.BufferedProtocol):
    def __init__(self):
        self.transport = None
        self.closed = asyncio.get_running_loop().create_future()
        self.reply: asyncio.Future | None = None
        self.head = bytearray()
        self.status = 0
        self.length = -1
        self.got = 0
        self.body: bytearray | None = None
        self.keep_body = False
        self.heard = time.monotonic()

    def connection_made(self, transport):
        self.transport = transport

    def start(self, request: bytes, keep_body: bool) -> asyncio.Future:
        self.reply = asyncio.get_running_loop().create_future()
        self.head.clear()
        self.status, self.length, self.got = 0, -1, 0
        self.keep_body = keep_body
        self.body = bytearray() if keep_body else None
        self.heard = time.monotonic()
        self.transport.write(request)
        return self.reply

    def get_buffer(self, sizehint):
        return BUF

    def buffer_updated(self, n: int) -> None:
        self.heard = time.monotonic()
        if self.reply is None or self.reply.done():
            return
        data = BUF[:n]
        if self.length < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 16384:
                    self.reply.set_exception(HttpFailed("header too long"))
                return
            lines = bytes(self.head[:end]).decode("latin-1").split("\r\n")
            try:
                self.status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                self.reply.set_exception(HttpFailed(f"bad status line {lines[0]!r}"))
                return
            self.length = 0
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                if k.strip().lower() == "content-length":
                    self.length = int(v.strip())
            data = memoryview(bytes(self.head[end + 4:]))
        self.got += len(data)
        if self.keep_body:
            self.body += data
        if self.got >= self.length:
            self.reply.set_result(self.status)

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(HttpFailed(f"connection closed after {self.got} body bytes"
                                                + (f" ({exc})" if exc else "")))


class HttpClient:
    def __init__(self, src: str, idle: float):
        self.src = src
        self.idle = idle
        self.conn: _Conn | None = None
        self.where = None
        self.retries = 0

    async def _connect(self, host: str, port: int) -> _Conn:
        if self.conn and self.where == (host, port) and not self.conn.closed.done():
            return self.conn
        self.close()
        loop = asyncio.get_running_loop()
        _, c = await asyncio.wait_for(loop.create_connection(
            _Conn, host, port, local_addr=(self.src, 0)), CONNECT_TIMEOUT)
        self.conn, self.where = c, (host, port)
        return c

    async def get(self, url: str, keep: bool = False):
        """The body (keep=True) or its length; HttpFailed after TRIES tries."""
        u = urllib.parse.urlsplit(url)
        port = u.port or 80
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        req = (f"GET {path} HTTP/1.1\r\nConnection: keep-alive\r\nUser-Agent: iPXE/1.21.1+\r\n"
               f"Host: {u.netloc}\r\n\r\n").encode()
        last = ""
        for attempt in range(TRIES):
            if attempt:
                self.retries += 1
                self.close()
                await asyncio.sleep(2 ** (attempt - 1))
            try:
                c = await self._connect(u.hostname, port)
                fut = c.start(req, keep)
                while not fut.done():
                    left = c.heard + self.idle - time.monotonic()
                    if left <= 0:
                        raise HttpFailed(f"no byte for {self.idle:g} s after {c.got} body bytes")
                    await asyncio.wait([fut], timeout=left)
                status = fut.result()
            except (OSError, asyncio.TimeoutError, HttpFailed) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if status == 200 and c.got == c.length:
                return bytes(c.body) if keep else c.got
            last = f"HTTP {status} for {path}"
            if status < 500 and status != 429:
                break
        raise HttpFailed(f"GET {url}: {last}")

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None
