"""``[storage]``: volume pools and iSCSI exports (issue 13, docs/storage.md)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config_fields import ConfigError, _ipv4, _one_of, _port, opt


# -- storage (issue 13): volume pools and iSCSI exports -------------------------------
_POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def _pool_name(v):
    if not _POOL_NAME.fullmatch(v):
        return f"{v!r} is not a pool name (1-32 of a-z 0-9 _ -, starting with a letter or digit)"


def _reflink(v):
    if v not in ("auto", True, False):
        return "must be \"auto\", true or false"


def _iqn_base(v):
    from .policy.iscsi import IscsiNameError, validate_base
    try:
        validate_base(v, "iqn_base")
    except IscsiNameError as e:
        return str(e).partition(": ")[2] or str(e)


@dataclass(frozen=True)
class StoragePoolConfig:
    """One ``[[storage.pools]]``: a ``file`` pool (sparse files under ``root``) or an
    ``lvm`` pool (thin pool ``thin_pool`` in volume group ``vg``, optionally limited
    to ``devices``); free-space thresholds (docs/storage.md)."""
    name: str = opt("", _pool_name)
    backend: str = opt("file", _one_of("file", "lvm"))
    root: str | None = None                 # file
    reflink: bool | str = opt("auto", _reflink)   # file: auto, true (required), false (copies)
    vg: str | None = None                   # lvm
    thin_pool: str | None = None            # lvm
    devices: tuple[str, ...] = ()           # lvm: the PVs lvm2 may scan
    min_free_bytes: int = opt(0, lambda v: None if v >= 0 else "must be >= 0")
    min_free_percent: float = opt(0.0, lambda v: None if 0 <= v < 100 else "must be 0..<100")
    overcommit: float | None = opt(None, lambda v: None if 0 < v <= 1000 else "must be 0..1000")

    def thresholds(self):
        from .policy.volumes import Thresholds
        return Thresholds(self.min_free_bytes, self.min_free_percent, self.overcommit)


@dataclass(frozen=True)
class IscsiConfig:
    """``[storage.iscsi]``: how volumes are exported to the hosts that boot them."""
    backend: str = opt("tgt", _one_of("tgt", "lio", "none"))   # none: volumes, no exports
    portal: str | None = opt(None, _ipv4)   # default: the first served network's address
    port: int = opt(3260, _port)
    iqn_base: str = opt("iqn.2026-01.lan.netboot", _iqn_base)
    tgtd: str = opt("managed", _one_of("managed", "external"))
    tgtd_control: int = opt(7, lambda v: None if 1 <= v <= 32767 else
                            "must be 1..32767 (0 is the system tgtd's)")
    chap: bool = True                       # CHAP per host (secret in its boot script only)


@dataclass(frozen=True)
class StorageConfig:
    """``[storage]``: off (no pools) unless at least one pool is configured."""
    pools: tuple[StoragePoolConfig, ...] = ()
    iscsi: IscsiConfig = field(default_factory=IscsiConfig)

    @property
    def enabled(self) -> bool:
        return bool(self.pools)


_POOL_KEYS = {"file": ("root", "reflink"), "lvm": ("vg", "thin_pool", "devices")}


def check_storage(st: StorageConfig, locate) -> None:
    """Pool names unique, each backend's required keys given and the other
    backend's keys absent, thresholds valid together."""
    names = set()
    for i, p in enumerate(st.pools):
        where = f"storage.pools[{i}]"
        if p.name in names:
            raise ConfigError(locate(f"{where}.name"), f"duplicate pool name {p.name!r}")
        names.add(p.name)
        for key in ("root",) if p.backend == "file" else ("vg", "thin_pool"):
            if not getattr(p, key):
                raise ConfigError(locate(f"{where}.{key}"),
                                  f"is required for a {p.backend} pool")
        default = StoragePoolConfig()
        for other, keys in _POOL_KEYS.items():
            for key in keys:
                if other != p.backend and getattr(p, key) != getattr(default, key):
                    raise ConfigError(locate(f"{where}.{key}"),
                                      f"only for backend {other!r} (this pool is {p.backend!r})")
