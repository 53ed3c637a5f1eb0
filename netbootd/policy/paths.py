"""Which file a TFTP or HTTP request names.  Pure: no filesystem access.

Refused (``PathRefused.reason`` is a stable counter label): empty names,
names over 255 bytes, NUL or other control characters, backslashes (no DOS
path mapping: some PXE ROMs send them; they are refused, not translated), and
any '..' component, even a harmless one.  A leading '/' is root-relative,
like tftp-hpa --secure: firmware asks for "/undionly.kpxe", and "/etc/passwd"
means <root>/etc/passwd.  '.' and empty components are dropped.

Generated files (the daemon's own) win over files on disk; then each root
in order.  The I/O side (net/fileroots.py) checks the realpath of what it
opens with ``within``, so a symlink leading out of its root is refused, not
skipped in favour of a later root.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

MAX_NAME = 255


class PathRefused(Exception):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


@dataclass(frozen=True)
class Resolved:
    root: str | None               # None: the in-memory generated file ``rel``
    rel: str                       # normalized, '/'-separated, relative


def normalize(name: str) -> str:
    """A request's filename as a clean relative path, or ``PathRefused``.

    Refused: empty, longer than 255 bytes, NUL or other control characters,
    backslashes (no DOS path mapping), and any '..' component (even a harmless
    one).  A leading '/' is root-relative (module doc); '.' and empty
    components are dropped."""
    if not name:
        raise PathRefused("empty_name", "empty file name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME:
        raise PathRefused("name_too_long", "file name too long")
    if "\0" in name:
        raise PathRefused("nul_in_name", "NUL in file name")
    if not name.isprintable():
        raise PathRefused("control_char", "control character in file name")
    if "\\" in name:
        raise PathRefused("backslash", "backslash in file name")
    parts = name.split("/")
    if ".." in parts:
        raise PathRefused("dotdot", "'..' in file name")
    parts = [p for p in parts if p not in ("", ".")]
    if not parts:
        raise PathRefused("empty_name", "no file named")
    return "/".join(parts)


def resolve(name: str, roots: Sequence[str], generated: Mapping[str, object] | None = None,
            exists: Callable[[str, str], bool] = lambda root, rel: True) -> Resolved:
    """The first place that has ``name``: generated files first (the daemon's
    own answers win over files on disk), then each root in order.  ``exists``
    (root, rel) is the caller's look-up (the I/O side passes lexists, so a
    symlink that points out of its root is found here and refused on open,
    never skipped in favour of a later root)."""
    rel = normalize(name)
    if generated and rel in generated:
        return Resolved(None, rel)
    for root in roots:
        if exists(root, rel):
            return Resolved(root, rel)
    raise PathRefused("not_found", "file not found")


def within(root_real: str, target_real: str) -> bool:
    """Whether a resolved path lies inside a resolved root (both realpaths,
    computed by the caller, so this stays pure)."""
    root = posixpath.normpath(root_real)
    target = posixpath.normpath(target_real)
    if root == "/":
        return target.startswith("/")
    return target == root or target.startswith(root + "/")
