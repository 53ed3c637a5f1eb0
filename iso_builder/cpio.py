"""A deterministic cpio "newc" (SVR4, magic 070701) writer and reader. Pure: stdlib only.

The Linux kernel unpacks an initramfs from this format (Documentation/driver-api/
early-userspace/buffer-format.rst); GNU cpio calls it ``-H newc``.  One entry is

    110-byte ASCII header: "070701" + 13 fields of 8 upper-case hex digits
        ino mode uid gid nlink mtime filesize devmajor devminor
        rdevmajor rdevminor namesize(check includes the NUL) check(0)
    name + NUL, zero-padded so that header + name ends on a 4-byte boundary
    data, zero-padded to a 4-byte boundary

and the archive ends with an entry named ``TRAILER!!!``.

Determinism: every entry gets the archive's fixed mtime/uid/gid (default 0),
inode numbers are assigned 1, 2, 3 ... in insertion order at serialisation
time, and entries are emitted in insertion order, so the same calls produce the
same bytes.  Parent directories are added automatically (mode 0755) the first
time a path below them is added, so an archive always lists a directory before
its contents (the kernel and ``cpio -i`` need that).  ``gzip_bytes`` compresses
with a zero gzip mtime and no file name, so the compressed bytes are stable too.
"""
from __future__ import annotations

import gzip
import stat
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

MAGIC_NEWC = b"070701"
MAGIC_CRC = b"070702"  # same layout, "check" = byte sum of the data; read only
TRAILER = "TRAILER!!!"
HEADER_LEN = 110
_FIELDS = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor",
           "devminor", "rdevmajor", "rdevminor", "namesize", "check")
_MAX_FIELD = 0xFFFFFFFF  # each field is 8 hex digits


class CpioError(ValueError):
    """Bad input to the writer, or a malformed archive (offset = byte position)."""

    def __init__(self, reason: str, offset: int | None = None):
        self.reason = reason
        self.offset = offset
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")


def _pad4(n: int) -> int:
    return (-n) & 3


@dataclass(frozen=True)
class Entry:
    """One archive member; ``mode`` is a full st_mode (type bits + permissions)."""

    name: str
    mode: int
    data: bytes = b""
    rdevmajor: int = 0
    rdevminor: int = 0
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    nlink: int = 1
    ino: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def is_chardev(self) -> bool:
        return stat.S_ISCHR(self.mode)

    @property
    def is_blockdev(self) -> bool:
        return stat.S_ISBLK(self.mode)

    @property
    def perm(self) -> int:
        return stat.S_IMODE(self.mode)

    @property
    def link_target(self) -> str:
        if not self.is_symlink:
            raise CpioError(f"{self.name!r} is not a symlink")
        return self.data.decode("utf-8", "surrogateescape")


def normalize_name(path: str) -> str:
    """Archive member name for `path`: relative, no '.'/'..'/empty components.

    Leading '/' and './' are dropped (initramfs names are relative to the root
    the kernel unpacks into; GNU cpio refuses absolute names without
    --absolute-filenames).
    """
    if not isinstance(path, str):
        raise CpioError(f"name must be str, not {type(path).__name__}")
    if "\0" in path:
        raise CpioError(f"NUL in name {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise CpioError(f"empty name {path!r}")
    if ".." in parts:
        raise CpioError(f"'..' in name {path!r}")
    name = "/".join(parts)
    if name == TRAILER:
        raise CpioError(f"{TRAILER!r} is reserved for the end of the archive")
    return name


def _encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _check_field(label: str, value: int) -> int:
    if not isinstance(value, int) or value < 0 or value > _MAX_FIELD:
        raise CpioError(f"{label}={value!r} does not fit a newc field (0..0xFFFFFFFF)")
    return value


def encode_entry(e: Entry, ino: int) -> bytes:
    """Header + padded name + padded data for one entry."""
    name = _encode_name(e.name) + b"\0"
    values = (ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, len(e.data), 0, 0,
              e.rdevmajor, e.rdevminor, len(name), 0)
    for label, v in zip(_FIELDS, values):
        _check_field(f"{e.name}: {label}", v)
    head = MAGIC_NEWC + b"".join(b"%08X" % v for v in values)
    return b"".join((head, name, b"\0" * _pad4(HEADER_LEN + len(name)),
                     e.data, b"\0" * _pad4(len(e.data))))


def encode_trailer() -> bytes:
    # GNU cpio writes the trailer with nlink 1 and every other field 0.
    return encode_entry(Entry(TRAILER, 0, nlink=1), 0)


class Archive:
    """An ordered set of entries; ``to_bytes()`` serialises it deterministically."""

    def __init__(self, *, mtime: int = 0, uid: int = 0, gid: int = 0):
        self.mtime = _check_field("mtime", mtime)
        self.uid = _check_field("uid", uid)
        self.gid = _check_field("gid", gid)
        self._entries: dict[str, Entry] = {}

    # -- building -------------------------------------------------------------
    def _put(self, path: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
             nlink: int = 1) -> str:
        name = normalize_name(path)
        if name in self._entries:
            raise CpioError(f"duplicate entry {name!r}")
        self._parents(name)
        _check_field(f"{name}: size", len(data))
        self._entries[name] = Entry(name, mode, bytes(data), rdev[0], rdev[1], self.uid,
                                    self.gid, self.mtime, nlink)
        return name

    def _parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            have = self._entries.get(d)
            if have is None:
                self._entries[d] = Entry(d, stat.S_IFDIR | 0o755, uid=self.uid, gid=self.gid,
                                         mtime=self.mtime, nlink=2)
            elif not have.is_dir:
                raise CpioError(f"{d!r} is not a directory (needed for {name!r})")

    @staticmethod
    def _perm(mode: int) -> int:
        if not isinstance(mode, int) or mode & ~0o7777:
            raise CpioError(f"permission bits expected (0..0o7777), got {mode!r}")
        return mode

    def add_dir(self, path: str, mode: int = 0o755) -> str:
        """Add a directory; re-adding one (e.g. an implicit parent) just sets its mode."""
        name = normalize_name(path)
        have = self._entries.get(name)
        if have is not None:
            if not have.is_dir:
                raise CpioError(f"duplicate entry {name!r}")
            self._entries[name] = Entry(name, stat.S_IFDIR | self._perm(mode), uid=self.uid,
                                        gid=self.gid, mtime=self.mtime, nlink=2)
            return name
        return self._put(name, stat.S_IFDIR | self._perm(mode), nlink=2)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> str:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CpioError(f"{path!r}: file contents must be bytes")
        return self._put(path, stat.S_IFREG | self._perm(mode), bytes(data))

    def add_symlink(self, path: str, target: str) -> str:
        if not target or "\0" in target:
            raise CpioError(f"{path!r}: bad symlink target {target!r}")
        return self._put(path, stat.S_IFLNK | 0o777, target.encode("utf-8", "surrogateescape"))

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> str:
        return self._put(path, stat.S_IFCHR | self._perm(mode),
                         rdev=(_check_field("major", major), _check_field("minor", minor)))

    def add_blockdev(self, path: str, major: int, minor: int, mode: int = 0o600) -> str:
        return self._put(path, stat.S_IFBLK | self._perm(mode),
                         rdev=(_check_field("major", major), _check_field("minor", minor)))

    # -- reading back ----------------------------------------------------------
    def __contains__(self, path: str) -> bool:
        return normalize_name(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def get(self, path: str) -> Entry | None:
        return self._entries.get(normalize_name(path))

    # -- output ------------------------------------------------------------------
    def write(self, fp: BinaryIO) -> int:
        """Write the archive (with trailer) to `fp`; returns the byte count."""
        n = 0
        for ino, e in enumerate(self._entries.values(), start=1):
            n += fp.write(encode_entry(e, ino))
        n += fp.write(encode_trailer())
        return n

    def to_bytes(self) -> bytes:
        parts = [encode_entry(e, ino) for ino, e in enumerate(self._entries.values(), start=1)]
        parts.append(encode_trailer())
        return b"".join(parts)

    def to_gzip(self, level: int = 9) -> bytes:
        return gzip_bytes(self.to_bytes(), level)


def gzip_bytes(data: bytes, level: int = 9) -> bytes:
    """gzip with mtime 0 and no file name: identical input gives identical output."""
    return gzip.compress(data, compresslevel=level, mtime=0)


def _maybe_gunzip(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise CpioError(f"bad gzip stream: {exc}", 0) from None
    return data


def read_archive(data: bytes, *, check_padding: bool = True) -> list[Entry]:
    """Parse a newc archive (gzip-compressed or not) up to its trailer.

    Returns the entries in archive order (the trailer excluded).  Raises
    CpioError with the byte offset on a bad magic, a non-hex field, a missing
    NUL, truncation, non-zero padding (when check_padding) or a missing trailer.
    """
    buf = memoryview(_maybe_gunzip(bytes(data)))
    out: list[Entry] = []
    off = 0
    while True:
        if off + HEADER_LEN > len(buf):
            raise CpioError("truncated archive: no TRAILER!!! entry", off)
        magic = bytes(buf[off:off + 6])
        if magic not in (MAGIC_NEWC, MAGIC_CRC):
            raise CpioError(f"bad magic {magic!r}", off)
        fields = {}
        for i, label in enumerate(_FIELDS):
            raw = bytes(buf[off + 6 + 8 * i: off + 14 + 8 * i])
            try:
                fields[label] = int(raw, 16)
            except ValueError:
                raise CpioError(f"field {label} is not hex: {raw!r}", off + 6 + 8 * i) from None
        namesize, filesize = fields["namesize"], fields["filesize"]
        name_off = off + HEADER_LEN
        if namesize < 1 or name_off + namesize > len(buf):
            raise CpioError(f"bad namesize {namesize}", off + 94)
        raw_name = bytes(buf[name_off:name_off + namesize])
        if raw_name[-1:] != b"\0" or b"\0" in raw_name[:-1]:
            raise CpioError("name is not NUL-terminated", name_off)
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        data_off = name_off + namesize + _pad4(HEADER_LEN + namesize)
        end = data_off + filesize
        if end > len(buf):
            raise CpioError(f"truncated data of {name!r}", data_off)
        if check_padding:
            for lo, hi in ((name_off + namesize, data_off), (end, end + _pad4(filesize))):
                if any(buf[lo:min(hi, len(buf))]):
                    raise CpioError(f"non-zero padding after {name!r}", lo)
        if name == TRAILER:
            return out
        out.append(Entry(name, fields["mode"], bytes(buf[data_off:end]), fields["rdevmajor"],
                         fields["rdevminor"], fields["uid"], fields["gid"], fields["mtime"],
                         fields["nlink"], fields["ino"]))
        off = end + _pad4(filesize)
