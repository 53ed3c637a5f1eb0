"""Debian packages fetched for the initrd, never installed: `apt-get download` into a
directory, `dpkg -x` into a root, published into the cache atomically.

Only the install step and `netbootd initrd build` (fetch=True) get here; a running
daemon never fetches packages.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class DebError(RuntimeError):
    pass


def require_tools(*tools: str, what: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            raise DebError(f"no {tool} to fetch {what}")


def download(pkgs: list[str], into: Path) -> list[Path]:
    """apt-get download `pkgs` into `into` (0755, so apt's _apt sandbox user may write)."""
    os.chmod(into, 0o755)
    r = subprocess.run(["apt-get", "download", "-q", *pkgs], cwd=into, capture_output=True,
                       text=True, timeout=600)
    debs = sorted(into.glob("*.deb"))
    if r.returncode != 0 or not debs:
        raise DebError(f"apt-get download {' '.join(pkgs)} failed: {r.stderr.strip()}")
    return debs


def unpack(deb: Path, root: Path) -> None:
    r = subprocess.run(["dpkg", "-x", str(deb), str(root)], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise DebError(f"dpkg -x {deb.name}: {r.stderr.strip()}")


def publish(root: Path, dest: Path, marker: str) -> Path:
    """Move the unpacked `root` to `dest`; a concurrent build that got there first
    (dest/marker exists) wins.  Returns dest/marker."""
    try:
        os.replace(root, dest)
    except OSError:
        if not (dest / marker).is_file():
            raise
    return dest / marker
