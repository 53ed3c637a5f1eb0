"""Which file a TFTP/HTTP request names.  Pure: no filesystem access.

A requested name is split into components and refused when it could leave
its root: '..' or '.' components, backslashes (Windows-style separators some
PXE ROMs send are *refused*, not translated), NUL or control characters,
empty components, empty or huge names.  One leading '/' is accepted and
means root-relative (firmware often asks for "/undionly.kpxe").  The I/O side
must still check the realpath (symlinks) with ``inside``.
"""
from __future__ import annotations

MAX_NAME = 1024
MAX_COMPONENT = 255


class PathRefused(ValueError):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def split_request(name: str) -> list[str]:
    if not name:
        raise PathRefused("empty name")
    if len(name) > MAX_NAME:
        raise PathRefused(f"name longer than {MAX_NAME} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise PathRefused("control character in name")
    if "\\" in name:
        raise PathRefused("backslash in name")
    if name.startswith("/"):
        name = name[1:]
    parts = name.split("/")
    for p in parts:
        if p in ("", ".", ".."):
            raise PathRefused(f"bad path component {p!r}")
        if len(p) > MAX_COMPONENT:
            raise PathRefused(f"path component longer than {MAX_COMPONENT} characters")
    return parts


def inside(root_real: str, candidate_real: str) -> bool:
    """Is the resolved candidate the root or below it?  (Both realpaths.)"""
    root = root_real.rstrip("/") or "/"
    return candidate_real == root or candidate_real.startswith(root if root == "/" else root + "/")
