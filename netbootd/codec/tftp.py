"""TFTP message codec (RFC 1350, 2347, 2348, 2349, 7440).  Pure: bytes in, bytes out.

``decode`` reads one datagram into a ``Request`` (RRQ/WRQ), ``Data``, ``Ack``,
``Error`` or ``OAck``; any structural fault raises ``DecodeError`` naming the
reason (a short token, usable as a counter label) and the byte offset.  The
``encode_*`` functions write the same messages.

Strings on the wire are NUL-terminated (RFC 1350 §5).  Filenames, modes and
option names/values are accepted only as printable ASCII: a boot server has no
use for anything else, and refusing control characters here keeps them out of
logs, paths and the boot timeline.  Option names are case-insensitive
(RFC 2347); they are kept as sent (``Request.options``) so an OACK can echo
the client's own spelling, and ``Request.option_dict()`` gives them lowercased.
"""
from __future__ import annotations

from .errors import DecodeError  # noqa: F401 - re-exported: codec.<x>.DecodeError

import struct
from dataclasses import dataclass

TFTP_PORT = 69                      # RFC 1350 §4: the server's well-known port

# Opcodes: RFC 1350 §5; OACK: RFC 2347.
OP_RRQ = 1
OP_WRQ = 2
OP_DATA = 3
OP_ACK = 4
OP_ERROR = 5
OP_OACK = 6

# Error codes: RFC 1350 appendix "Error Codes"; 8: RFC 2347.
ERR_NOT_DEFINED = 0                 # "Not defined, see error message (if any)"
ERR_NOT_FOUND = 1                   # "File not found"
ERR_ACCESS = 2                      # "Access violation"
ERR_DISK_FULL = 3                   # "Disk full or allocation exceeded"
ERR_ILLEGAL_OP = 4                  # "Illegal TFTP operation"
ERR_UNKNOWN_TID = 5                 # "Unknown transfer ID"
ERR_FILE_EXISTS = 6                 # "File already exists"
ERR_NO_SUCH_USER = 7                # "No such user"
ERR_OPTION_REFUSED = 8              # RFC 2347: "terminate transfer due to option negotiation"

ERROR_TEXT = {
    ERR_NOT_DEFINED: "Not defined",
    ERR_NOT_FOUND: "File not found",
    ERR_ACCESS: "Access violation",
    ERR_DISK_FULL: "Disk full or allocation exceeded",
    ERR_ILLEGAL_OP: "Illegal TFTP operation",
    ERR_UNKNOWN_TID: "Unknown transfer ID",
    ERR_FILE_EXISTS: "File already exists",
    ERR_NO_SUCH_USER: "No such user",
    ERR_OPTION_REFUSED: "Option negotiation refused",
}

# Transfer modes, RFC 1350 §1 (case-insensitive on the wire).
MODE_NETASCII = "netascii"
MODE_OCTET = "octet"
MODE_MAIL = "mail"                  # obsolete; decodable, never served
MODES = frozenset((MODE_NETASCII, MODE_OCTET, MODE_MAIL))

DEFAULT_BLKSIZE = 512               # RFC 1350 §2
BLKSIZE_MIN, BLKSIZE_MAX = 8, 65464           # RFC 2348
TIMEOUT_MIN, TIMEOUT_MAX = 1, 255             # RFC 2349, timeout option (seconds)
WINDOWSIZE_MIN, WINDOWSIZE_MAX = 1, 65535     # RFC 7440
OPT_BLKSIZE = "blksize"             # RFC 2348
OPT_TIMEOUT = "timeout"             # RFC 2349
OPT_TSIZE = "tsize"                 # RFC 2349
OPT_WINDOWSIZE = "windowsize"       # RFC 7440

MAX_FILENAME = 255                  # our limit: boot file names are short
# Block numbers are 16 bits (RFC 1350 §5); past 65535 they wrap to 0.
MAX_OPTIONS = 32                    # our limit: RFC 2347 requests fit 512 bytes anyway

_HDR = struct.Struct("!HH")         # opcode + block number / error code



Options = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Request:
    """RRQ or WRQ (RFC 1350 §5) with RFC 2347 options, in the order sent."""
    opcode: int
    filename: str
    mode: str                       # lowercased, one of MODES
    options: Options = ()

    @property
    def is_write(self) -> bool:
        return self.opcode == OP_WRQ

    def option_dict(self) -> dict[str, str]:
        """Options by lowercased name; the first of repeated names wins."""
        out: dict[str, str] = {}
        for name, value in self.options:
            out.setdefault(name.lower(), value)
        return out


@dataclass(frozen=True, slots=True)
class Data:
    block: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    block: int


@dataclass(frozen=True, slots=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class OAck:
    options: Options


Message = Request | Data | Ack | Error | OAck


# -- decode --------------------------------------------------------------
def decode(data: bytes) -> Message:
    n = len(data)
    if n < 2:
        raise DecodeError("short", n)
    op = (data[0] << 8) | data[1]
    # ACK first: it is the server's hot path.
    if op == OP_ACK:
        if n < 4:
            raise DecodeError("short", n)
        # Trailing bytes are ignored, as tftp-hpa does.
        return Ack((data[2] << 8) | data[3])
    if op == OP_RRQ or op == OP_WRQ:
        return _decode_request(op, data)
    if op == OP_DATA:
        if n < 4:
            raise DecodeError("short", n)
        if n - 4 > BLKSIZE_MAX:
            raise DecodeError("data_too_long", 4 + BLKSIZE_MAX)
        return Data((data[2] << 8) | data[3], bytes(data[4:]))
    if op == OP_ERROR:
        if n < 4:
            raise DecodeError("short", n)
        code = (data[2] << 8) | data[3]
        end = data.find(b"\0", 4)
        # A missing terminator is tolerated: an ERROR only ends a transfer,
        # and ignoring one would keep us retransmitting to a client that quit.
        raw = bytes(data[4:] if end < 0 else data[4:end])
        msg = "".join(c if c.isprintable() else "?" for c in raw.decode("ascii", "replace"))
        return Error(code, msg)
    if op == OP_OACK:
        options, _ = _decode_options(data, 2)
        return OAck(options)
    raise DecodeError("bad_opcode", 0, str(op))


def _field(data: bytes, pos: int, reason: str) -> tuple[str, int]:
    """One NUL-terminated printable-ASCII string at pos -> (text, next pos)."""
    end = data.find(b"\0", pos)
    if end < 0:
        raise DecodeError("unterminated", len(data))
    raw = data[pos:end]
    if raw.isascii():
        text = raw.decode("ascii")
        if text.isprintable():
            return text, end + 1
    bad = next(i for i, b in enumerate(raw) if b < 0x20 or b >= 0x7F)
    raise DecodeError(reason, pos + bad)


def _decode_request(op: int, data: bytes) -> Request:
    end = data.find(b"\0", 2)
    if end < 0:
        raise DecodeError("unterminated", len(data))
    if end == 2:
        raise DecodeError("empty_filename", 2)
    if end - 2 > MAX_FILENAME:
        raise DecodeError("filename_too_long", 2 + MAX_FILENAME)
    filename, pos = _field(data, 2, "bad_filename")
    mode_at = pos
    mode, pos = _field(data, pos, "bad_mode")
    mode = mode.lower()
    if mode not in MODES:
        raise DecodeError("bad_mode", mode_at, mode[:20])
    options, _ = _decode_options(data, pos)
    return Request(op, filename, mode, options)


def _decode_options(data: bytes, pos: int) -> tuple[Options, int]:
    """name NUL value NUL pairs up to the end (RFC 2347).  An empty name
    ends the list if only NUL padding follows (tftp-hpa stops there too)."""
    n = len(data)
    out = []
    while pos < n:
        if data[pos] == 0:
            if data.count(0, pos) != n - pos:
                raise DecodeError("trailing_garbage", pos)
            break
        if len(out) == MAX_OPTIONS:
            raise DecodeError("too_many_options", pos)
        name, pos = _field(data, pos, "bad_option")
        if pos >= n:
            raise DecodeError("option_unpaired", pos)
        value, pos = _field(data, pos, "bad_option")
        out.append((name, value))
    return tuple(out), pos


# -- encode --------------------------------------------------------------
def _ascii(text: str, what: str) -> bytes:
    raw = text.encode("ascii")
    if b"\0" in raw:
        raise ValueError(f"{what} contains NUL")
    return raw


def _encode_options(options) -> bytes:
    return b"".join(_ascii(k, "option name") + b"\0" + _ascii(str(v), "option value") + b"\0"
                    for k, v in options)


def encode_request(opcode: int, filename: str, mode: str = MODE_OCTET, options=()) -> bytes:
    if opcode not in (OP_RRQ, OP_WRQ):
        raise ValueError("not a request opcode")
    return (struct.pack("!H", opcode) + _ascii(filename, "filename") + b"\0"
            + _ascii(mode, "mode") + b"\0" + _encode_options(options))


def encode_rrq(filename: str, mode: str = MODE_OCTET, options=()) -> bytes:
    return encode_request(OP_RRQ, filename, mode, options)


def encode_wrq(filename: str, mode: str = MODE_OCTET, options=()) -> bytes:
    return encode_request(OP_WRQ, filename, mode, options)


def encode_data(block: int, data) -> bytes:
    """``data`` may be any bytes-like object (a memoryview slice avoids a copy)."""
    return _HDR.pack(OP_DATA, block & 0xFFFF) + data


def encode_ack(block: int) -> bytes:
    return _HDR.pack(OP_ACK, block & 0xFFFF)


def encode_error(code: int, message: str | None = None) -> bytes:
    text = ERROR_TEXT.get(code, "") if message is None else message
    raw = text.encode("ascii", "replace").replace(b"\0", b"?")
    return _HDR.pack(OP_ERROR, code) + raw + b"\0"


def encode_oack(options) -> bytes:
    return struct.pack("!H", OP_OACK) + _encode_options(options)


def encode(msg: Message) -> bytes:
    if isinstance(msg, Request):
        return encode_request(msg.opcode, msg.filename, msg.mode, msg.options)
    if isinstance(msg, Data):
        return encode_data(msg.block, msg.data)
    if isinstance(msg, Ack):
        return encode_ack(msg.block)
    if isinstance(msg, Error):
        return encode_error(msg.code, msg.message)
    if isinstance(msg, OAck):
        return encode_oack(msg.options)
    raise TypeError(f"not a TFTP message: {type(msg).__name__}")
