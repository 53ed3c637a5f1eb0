"""Storage backends: volumes (``file``, ``lvm``; storage/volumes.py is the interface).

Blocking adapters: the daemon runs every call off the reactor (``deferToThread``); no
module here imports Twisted.  ``open_pool(kind, name, **options)`` opens one pool of the
config; it raises ``Unsupported`` (one line: why, e.g. no device-mapper) where the
backend cannot work on this machine.
"""
from __future__ import annotations

from .volumes import Thresholds, Unsupported, VolumeBackend, VolumeError

KINDS = ("file", "lvm")


def open_pool(kind: str, name: str, thresholds: Thresholds = Thresholds(),
              **options) -> VolumeBackend:
    """``file``: root=DIR [, reflink=None|True|False]; ``lvm``: vg=VG, thin_pool=LV
    [, devices=[...]]."""
    if kind == "file":
        from .filepool import FilePool
        if "root" not in options:
            raise VolumeError("a file pool needs root = DIR", "root", None)
        return FilePool(options.pop("root"), name, thresholds, **options)
    if kind == "lvm":
        from .lvm import LvmPool
        return LvmPool.open(name=name, thresholds=thresholds, **options)
    raise Unsupported(f"unknown volume backend {kind!r} (known: {', '.join(KINDS)})",
                      "backend", kind)
