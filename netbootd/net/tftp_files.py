"""The files TFTP serves, as net/tftp.py reads them: small files' contents in memory
(``FileCache``, LRU), large files read from their open descriptor (``FileSource``)
in chunks that every transfer of the same file shares (``ChunkCache``), and the
TFTP error for a refused path (``error_code``).  Sizes and limits: net/tftp.py's
module doc."""
from __future__ import annotations

import os
from collections import OrderedDict

from ..codec import tftp as w
from ..policy.paths import PathRefused


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

    def get(self, key, fd: int, index: int, size: int) -> memoryview:
        """Chunk ``index`` of the file ``size`` bytes long open at ``fd``."""
        k = (key, index)
        view = self.entries.get(k)
        if view is not None:
            self.entries.move_to_end(k)
            return view
        at = index * self.chunk
        view = memoryview(os.pread(fd, self.chunk, at))
        self.reads += 1
        if len(view) < self.chunk and at + len(view) < size:
            return view     # the file shrank under us: this transfer ends short, no other
        self.entries[k] = view
        self.used += len(view)
        while self.used > self.total and len(self.entries) > 1:
            self.used -= len(self.entries.popitem(last=False)[1])
        return view


class FileSource:
    """A large file read at offsets from its open descriptor, a chunk at a
    time through ``cache`` (a ChunkCache shared with the other transfers of
    the same file; without one, a private one-chunk cache).  A transfer
    reads forward; a retransmission may step back.  A read is at most one
    chunk long (a block: <= 65464 bytes < 256 KiB).  Not mmap: a file
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
        view = self.cache.get(self.key, self.fd, index, self.size)
        at = index * chunk
        self.buf, self.buf_at, self.buf_end = view, at, at + len(view)
        start = offset - at
        if offset + n <= self.buf_end or len(view) < chunk:
            return view[start:start + n]        # inside the chunk, or the file's end
        # Across a chunk boundary: the one copy, once per chunk per transfer.
        head = bytes(view[start:])
        nxt = self.cache.get(self.key, self.fd, index + 1, self.size)
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


def read_all(fd: int, size: int) -> bytes:
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
