"""Disk capture (issue 13 item 4): the pure rules of a capture job.

The agent streams a local disk into a volume in chunks (docs/storage.md, Capture):
all the chunks still to send in one request, POST /api/v1/agent/capture/{job}/stream/
{offset}, each after a FRAME-byte line holding its sha256 (``stream_length``,
``check_stream``, ``frame_sha``); or one chunk per request, POST
/api/v1/agent/capture/{job}/{offset}?sha256=HEX (or the sha256 in an ``X-Sha256``
header).  Chunks are sent in order; the server commits a chunk only at the offset it
expects (its ``committed`` offset), so after a dropped connection the agent asks for
that offset and continues from there.

Integrity: each chunk's sha256 is checked by the server on the bytes it writes
(a mismatch refuses the chunk; the agent sends it again).  The capture's digest
is a hash list: sha256 over the chunks' hex digests, one per line ("<hex>\\n"),
which the agent computes from what it read (``sha256sum`` per chunk) and the
server from what it wrote; a capture is done only when the two are equal and
every byte is committed.

Nothing here does I/O: values in, values or ``CaptureError`` out.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Optional

MiB = 1 << 20
CHUNK = 16 * MiB                 # default chunk: ~0.1 s on a 1 Gb/s link
CHUNK_MIN = 1 * MiB
CHUNK_MAX = 64 * MiB             # the largest body the server buffers per upload
STEP = 10                        # progress events every STEP percent
_DISK = re.compile(r"^(?:/dev/)?([A-Za-z0-9_-]{1,32})$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class CaptureError(ValueError):
    """A capture request or chunk refused: ``field`` names the bad value, ``status``
    is the HTTP status the API answers with."""

    def __init__(self, reason: str, field: str = "", status: int = 400):
        super().__init__(reason)
        self.reason, self.field, self.status = reason, field, status


def disk_name(disk) -> str:
    """``/dev/vda`` or ``vda`` -> ``vda`` (a name as the inventory lists it)."""
    m = _DISK.match(disk) if isinstance(disk, str) else None
    if m is None:
        raise CaptureError("disk: a disk name as the inventory lists it (vda, sda, nvme0n1, "
                           "or /dev/<name>)", "disk")
    return m.group(1)


def check_chunk_size(chunk) -> int:
    if type(chunk) is not int or not CHUNK_MIN <= chunk <= CHUNK_MAX or chunk % MiB:
        raise CaptureError(f"chunk: a whole number of MiB from {CHUNK_MIN >> 20} to "
                           f"{CHUNK_MAX >> 20} MiB", "chunk")
    return chunk


def check_total(total) -> int:
    """A disk size the agent can capture: whole 512-byte sectors, more than none."""
    if type(total) is not int or total <= 0 or total % 512:
        raise CaptureError("bytes: the disk's size in bytes (whole 512-byte sectors) from the "
                           "host's inventory", "bytes")
    return total


def plan(total: int, chunk: int) -> list[tuple[int, int]]:
    """Every (offset, length) of a capture, in order (the last one may be short)."""
    return [(off, min(chunk, total - off)) for off in range(0, total, chunk)]


def expected_length(total: int, chunk: int, offset: int) -> int:
    """The body length of the chunk at ``offset``."""
    return min(chunk, total - offset)


def _check_start(total: int, chunk: int, committed: int, offset) -> None:
    if type(offset) is not int or offset < 0:
        raise CaptureError("offset: a non-negative whole number of bytes", "offset")
    if offset >= total:
        raise CaptureError(f"offset: {offset} is at or past the end of the disk ({total} "
                           "bytes)", "offset")
    if offset % chunk:
        raise CaptureError(f"offset: {offset} is not a multiple of the chunk size {chunk}",
                           "offset")
    if offset != committed:
        raise CaptureError(f"offset: {offset} is not the committed offset {committed}: "
                           "resume from there", "offset", 409)


def check_offset(total: int, chunk: int, committed: int, offset, length) -> int:
    """The chunk at ``offset`` of ``length`` bytes may be written now: it is the next
    one (``committed``), aligned and whole.  409 for an offset other than the
    committed one (the agent asks GET .../capture/{job} and resumes there)."""
    _check_start(total, chunk, committed, offset)
    want = expected_length(total, chunk, offset)
    if length != want:
        raise CaptureError(f"body: {length} bytes, the chunk at {offset} is {want} bytes",
                           "body")
    return want


FRAME = 65                       # a stream frame's header: the chunk's sha256 hex + "\n"


def stream_length(total: int, chunk: int, offset: int) -> int:
    """The body of a stream from ``offset``: every chunk still to send, each after
    its FRAME-byte header."""
    left = total - offset
    return left + FRAME * (-(-left // chunk))


def check_stream(total: int, chunk: int, committed: int, offset, length) -> int:
    """A stream from ``offset`` declaring ``length`` body bytes may start now: the
    offset is the committed one and the length exactly the framed remainder."""
    _check_start(total, chunk, committed, offset)
    want = stream_length(total, chunk, offset)
    if length != want:
        raise CaptureError(f"Content-Length: {length} bytes, the framed chunks from {offset} "
                           f"are {want} bytes ({FRAME}-byte sha256 line before each chunk)",
                           "Content-Length")
    return want


def frame_sha(head: bytes, offset: int) -> str:
    """The sha256 of a stream frame's header (64 lowercase hex digits and a newline)."""
    if len(head) != FRAME or head[-1:] != b"\n" or not _HEX.match(
            head[:-1].decode("ascii", "replace")):
        raise CaptureError(f"frame at {offset}: not a sha256 line (64 lowercase hex digits "
                           "and a newline) before the chunk", "body")
    return head[:-1].decode("ascii")


def check_sha(value) -> str:
    if not isinstance(value, str) or not _HEX.match(value.strip().lower()):
        raise CaptureError("sha256: the chunk's sha256, 64 hex digits (?sha256= or X-Sha256)",
                           "sha256")
    return value.strip().lower()


def list_digest(chunk_hexes: Iterable[str]) -> str:
    """The capture's digest: sha256 of the chunks' hex digests, one per line (what
    ``sha256sum`` of the agent's list file prints)."""
    h = hashlib.sha256()
    for x in chunk_hexes:
        h.update(x.encode("ascii") + b"\n")
    return h.hexdigest()


def steps_crossed(before: int, after: int, total: int, step: int = STEP) -> list[int]:
    """The progress percentages (multiples of ``step``, 0 < p < 100) first reached
    when ``committed`` moved from ``before`` to ``after``."""
    if total <= 0:
        return []
    lo, hi = before * 100 // total, after * 100 // total
    return [p for p in range(step, 100, step) if lo < p <= hi]


def rate_mb_s(nbytes: int, seconds: float) -> Optional[float]:
    """MB/s (10^6 bytes per second), rounded; None when no time passed."""
    if seconds <= 0:
        return None
    return round(nbytes / seconds / 1e6, 1)


def verdict(total: int, committed: int, server_digest: str, agent_digest,
            agent_bytes) -> Optional[str]:
    """None when the capture is whole and the digests agree, else why not (one line)."""
    if committed != total:
        return f"only {committed} of {total} bytes were committed"
    if agent_bytes is not None and agent_bytes != total:
        return f"the agent read {agent_bytes} bytes, the disk is {total}"
    if not isinstance(agent_digest, str) or not _HEX.match(agent_digest):
        return "the agent sent no sha256 of what it read"
    if agent_digest != server_digest:
        return (f"sha256 mismatch: the agent read {agent_digest[:16]}..., the server wrote "
                f"{server_digest[:16]}...")
    return None
