"""Which file a TFTP or HTTP request names.  Pure: no filesystem access.

Refused (``PathRefused.reason`` is a stable counter label): empty names,
names over 255 bytes, NUL or other control characters, backslashes (no DOS
path mapping: some PXE ROMs send them; they are refused, not translated), and
any '..' component, even a harmless one.  A leading '/' is root-relative,
like tftp-hpa --secure: firmware asks for "/undionly.kpxe", and "/etc/passwd"
means <root>/etc/passwd.  '.' and empty components are dropped.

The look-up is the I/O side's: net/tftp.py and net/http/files.py try the
generated files (the daemon's own) first, then net/fileroots.open_in_roots
each root in order; a name present in a root is answered from it (a symlink
leading out of the root is refused, not skipped in favour of a later root).
Where openat2 cannot keep the open beneath the root, fileroots checks the
realpath of what it opens with ``within``.
"""
from __future__ import annotations

import posixpath

MAX_NAME = 255


class PathRefused(Exception):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


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


def within(root_real: str, target_real: str) -> bool:
    """Whether a resolved path lies inside a resolved root (both realpaths,
    computed by the caller, so this stays pure)."""
    root = posixpath.normpath(root_real)
    target = posixpath.normpath(target_real)
    if root == "/":
        return target.startswith("/")
    return target == root or target.startswith(root + "/")
