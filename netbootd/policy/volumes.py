"""Volumes: the values, the errors and the rules every volume backend shares.  Pure.

The backends (netbootd/storage/: ``file``, ``lvm``) do the I/O; what a good name is,
what a good size is, when a resize is a shrink that needs ``force`` and when a pool
is too full for one more volume are decided here, once, over plain values.

* Names: ``^[a-z0-9][a-z0-9_-]{0,62}$`` - a file name, an LV name and a piece of an
  iSCSI IQN at once (no slashes, no dots, no upper case, nothing a shell or a URL
  quotes), minus the suffixes lvm2 reserves for its hidden volumes (``_tdata``...),
  so a volume keeps its name whichever backend holds it.
* Sizes: whole 512-byte sectors (a volume is exported as a block device), at least
  one MiB, at most ``MAX_SIZE``.  ``parse_size`` reads "10G", "512MiB", "1048576".
* A shrink is refused unless forced: neither a sparse file nor a thin LV knows which
  blocks the guest's filesystem still uses, so cutting the tail may cut data.
* Free-space thresholds per pool (``Thresholds``): an operation that would leave less
  than ``max(min_free_bytes, min_free_percent of the pool)`` free is refused with the
  numbers; ``overcommit`` optionally caps the sum of virtual sizes.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Literal, Optional

SECTOR = 512
MIN_SIZE = 1 << 20                 # 1 MiB: smaller is a typo, not a disk
MAX_SIZE = 1 << 44                 # 16 TiB: ext4's largest file, lvm2 thin's largest LV
NAME_MAX = 63
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# lvm2 (lib/metadata/metadata.c apply_lvname_restrictions) refuses these inside LV
# names: they mark its hidden sub-volumes.  Refused for every backend, so a volume
# can move between backends under the same name.
LVM_RESERVED = ("_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta", "_iorig",
                "_mimage", "_mlog", "_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta",
                "_vdata", "_vorigin", "_wcorig")
LVM_RESERVED_PREFIX = ("snapshot", "pvmove")

Kind = Literal["volume", "snapshot"]
Progress = Callable[[int, int], None]          # (bytes done, bytes in all)

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE_RE = re.compile(r"\s*([0-9]{1,20})\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)


# ---------------------------------------------------------------- errors

class VolumeError(Exception):
    """A refused volume operation.  ``field`` names the bad value ("name", "size",
    "source"...), ``reason`` says what is wrong with it in a sentence a user can act on;
    ``code`` is stable (the API maps it to a status, metrics count it)."""
    code = "invalid"

    def __init__(self, reason: str, field: str | None = None, value: object = None):
        self.reason = reason
        self.field = field
        self.value = value
        super().__init__(f"{field}: {reason}" if field else reason)


class NotFound(VolumeError):
    code = "not_found"


class Exists(VolumeError):
    code = "exists"


class InUse(VolumeError):
    code = "in_use"


class Unsupported(VolumeError):
    """The backend cannot work here (no device-mapper...) or cannot do this one thing."""
    code = "unsupported"


class NoSpace(VolumeError):
    """The pool is (or would be) too full.  Every number is in bytes."""
    code = "no_space"

    def __init__(self, reason: str, *, need: int, free: int, floor: int, total: int,
                 field: str | None = None, value: object = None):
        self.need, self.free, self.floor, self.total = need, free, floor, total
        super().__init__(reason, field, value)


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Volume:
    name: str
    size: int                      # virtual size in bytes (what the guest sees)
    used: Optional[int]            # bytes allocated to it (shared extents counted); None: unknown
    origin: Optional[str]          # the volume it was cloned/snapshotted from, if any
    kind: Kind                     # "snapshot" volumes are read-only
    created: Optional[float]       # epoch seconds; None: unknown

    def as_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "used": self.used,
                "origin": self.origin, "kind": self.kind, "created": self.created}


@dataclass(frozen=True)
class PoolUsage:
    total: int                     # bytes the pool can hold
    used: int
    free: int
    provisioned: int = 0           # the sum of its volumes' virtual sizes
    volumes: int = 0

    def as_dict(self) -> dict:
        return {"total": self.total, "used": self.used, "free": self.free,
                "provisioned": self.provisioned, "volumes": self.volumes}


@dataclass(frozen=True)
class Thresholds:
    """When a pool counts as full.  ``min_free_bytes`` and ``min_free_percent`` (of the
    pool's total) are floors that free space may not cross; the larger one counts.
    ``overcommit`` (None: unlimited) caps provisioned virtual bytes at total x overcommit."""
    min_free_bytes: int = 0
    min_free_percent: float = 0.0
    overcommit: Optional[float] = None

    def __post_init__(self):
        if (not isinstance(self.min_free_bytes, int) or isinstance(self.min_free_bytes, bool)
                or self.min_free_bytes < 0):
            raise VolumeError("must be a whole number of bytes >= 0", "min_free_bytes",
                              self.min_free_bytes)
        if not (isinstance(self.min_free_percent, (int, float))
                and 0 <= self.min_free_percent < 100):
            raise VolumeError("must be a percentage from 0 up to (not including) 100",
                              "min_free_percent", self.min_free_percent)
        if self.overcommit is not None and not (
                isinstance(self.overcommit, (int, float)) and 0 < self.overcommit <= 1000
                and math.isfinite(self.overcommit)):
            raise VolumeError("must be a ratio above 0 (1.0: no overcommit), at most 1000",
                              "overcommit", self.overcommit)

    def floor(self, total: int) -> int:
        """The free bytes a pool of ``total`` bytes keeps."""
        return max(self.min_free_bytes, math.ceil(total * self.min_free_percent / 100))


# ---------------------------------------------------------------- rules

def check_name(name: object, field: str = "name") -> str:
    """``name`` if it is a good volume name, else ``VolumeError`` naming it and why."""
    if not isinstance(name, str):
        raise VolumeError(f"must be a string, not {type(name).__name__}", field, name)
    shown = _show(name)
    if not name:
        raise VolumeError("must not be empty", field, name)
    if len(name) > NAME_MAX:
        raise VolumeError(f"{shown} is longer than {NAME_MAX} characters", field, name)
    if "/" in name or "\\" in name:
        raise VolumeError(f"{shown} contains a slash (a volume name is one path component)",
                          field, name)
    if name.startswith("."):
        raise VolumeError(f"{shown} starts with a dot", field, name)
    if "." in name:
        raise VolumeError(f"{shown} contains a dot (use '-' or '_')", field, name)
    if not NAME_RE.fullmatch(name):
        bad = next((c for c in name if not (c.isascii() and (c.islower() or c.isdigit()
                                                           or c in "_-"))), None)
        what = (f"the character {bad!r}" if bad is not None
                else f"the first character {name[0]!r} (a letter or digit is needed)")
        raise VolumeError(f"{shown} has {what}; allowed: a-z 0-9 '-' '_', starting with "
                          "a letter or digit", field, name)
    for word in LVM_RESERVED:
        if word in name:
            raise VolumeError(f"{shown} contains {word!r}, reserved by lvm2 for hidden "
                              "volumes", field, name)
    for word in LVM_RESERVED_PREFIX:
        if name.startswith(word):
            raise VolumeError(f"{shown} starts with {word!r}, reserved by lvm2", field, name)
    return name


def check_size(size: object, field: str = "size") -> int:
    """``size`` in bytes if it is a good volume size, else ``VolumeError``."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise VolumeError(f"must be a whole number of bytes, not {type(size).__name__}",
                          field, size)
    if size <= 0:
        raise VolumeError(f"{size} is not a positive number of bytes", field, size)
    if size < MIN_SIZE:
        raise VolumeError(f"{size} bytes is below the minimum of {human(MIN_SIZE)}",
                          field, size)
    if size > MAX_SIZE:
        raise VolumeError(f"{size} bytes ({human(size)}) is above the maximum of "
                          f"{human(MAX_SIZE)}", field, size)
    if size % SECTOR:
        raise VolumeError(f"{size} bytes is not a whole number of {SECTOR}-byte sectors "
                          f"(next: {round_up(size, SECTOR)})", field, size)
    return size


def parse_size(text: object, field: str = "size") -> int:
    """Bytes from "10G", "10GiB", "512M", "1048576" (binary units: K=1024), checked
    with ``check_size``.  An int passes straight to ``check_size``."""
    if isinstance(text, int) and not isinstance(text, bool):
        return check_size(text, field)
    if not isinstance(text, str):
        raise VolumeError(f"must be a size like '10G', not {type(text).__name__}", field, text)
    m = _SIZE_RE.fullmatch(text)
    if not m:
        raise VolumeError(f"{_show(text)} is not a size (examples: 1073741824, 512M, 10G, "
                          "2TiB)", field, text)
    return check_size(int(m.group(1)) * _UNITS[m.group(2).lower()], field)


def check_resize(current: int, new: int, force: bool = False, field: str = "size") -> int:
    """The new size of a resize, if allowed.  Growing is always allowed; shrinking only
    with ``force``: the backend cannot see which blocks the guest still uses."""
    new = check_size(new, field)
    if new < current and not force:
        raise VolumeError(
            f"shrinking from {current} ({human(current)}) to {new} ({human(new)}) bytes "
            "would cut off the end of the disk, and the pool cannot know whether the guest "
            "keeps data there; shrink the guest's filesystem first, then resize with force",
            field, new)
    return new


def check_space(op: str, name: str, usage: PoolUsage, thresholds: Thresholds,
                need: int = 0, grow: int = 0, pool: str = "pool") -> None:
    """Refuse (``NoSpace``, with every number) an operation on ``pool`` that allocates
    ``need`` bytes now and adds ``grow`` bytes of virtual size, when it would leave free
    space below the pool's floor or provisioned space above its overcommit cap."""
    floor = thresholds.floor(usage.total)
    left = usage.free - need
    if left < floor:
        why = (f"{op} {name!r} needs {_num(need)}; pool {pool!r} has {_num(usage.free)} free "
               f"of {_num(usage.total)} and keeps at least {_num(floor)} free"
               + (f" ({thresholds.min_free_percent:g}%)"
                  if floor and floor != thresholds.min_free_bytes else "")
               + ": refused")
        raise NoSpace(why, need=need, free=usage.free, floor=floor, total=usage.total,
                      field="size", value=need)
    if thresholds.overcommit is not None and grow > 0:
        cap = int(usage.total * thresholds.overcommit)
        if usage.provisioned + grow > cap:
            why = (f"{op} {name!r} adds {_num(grow)} of virtual size; pool {pool!r} has "
                   f"{_num(usage.provisioned)} provisioned, capped at {_num(cap)} "
                   f"({thresholds.overcommit:g} x {_num(usage.total)}): refused")
            raise NoSpace(why, need=grow, free=cap - usage.provisioned, floor=0,
                          total=usage.total, field="size", value=grow)


# ---------------------------------------------------------------- helpers

def round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def human(n: int) -> str:
    """1073741824 -> '1 GiB', 1536 -> '1.5 KiB' (binary units, for messages)."""
    for unit, div in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30),
                      ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.4g} {unit}"
    return f"{n} B"


def _num(n: int) -> str:
    return f"{n} bytes ({human(n)})" if abs(n) >= 1024 else f"{n} bytes"


def _show(value: str) -> str:
    """A user's string for a message: quoted, control characters escaped, bounded."""
    s = repr(value[:80])
    return s if len(value) <= 80 else s + "..."
