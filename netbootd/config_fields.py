"""The config tree's building blocks: ConfigError, `opt` (a default with its
check) and the value checks shared by every section (config.py,
config_storage.py).  A leaf: stdlib and model only."""
from __future__ import annotations

import ipaddress
from dataclasses import field

from .model import normalize_mac


class ConfigError(ValueError):
    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where}: {message}")


def _positive(v):
    if v <= 0:
        return "must be > 0"


def _port(v):
    if not 1 <= v <= 65535:
        return "must be a port number 1..65535"


def _share(v):
    if not 0.0 < v <= 1.0:
        return "must be a fraction in (0, 1]"


def _ipv4(v):
    try:
        ipaddress.IPv4Address(v)
    except ValueError:
        return f"{v!r} is not an IPv4 address"


def _ipv4_list(v):
    for a in v:
        if (err := _ipv4(a)):
            return err


def _subnet(v):
    try:
        ipaddress.IPv4Network(v, strict=True)
    except ValueError as e:
        return f"{v!r} is not an IPv4 subnet ({e})"


def _mac(v):
    try:
        normalize_mac(v)
    except ValueError as e:
        return str(e)


def _range_list(v):
    for r in v:
        lo, sep, hi = r.partition("-")
        if not sep or _ipv4(lo.strip()) or _ipv4(hi.strip()):
            return f"{r!r} is not a range like '10.0.0.100-10.0.0.200'"
        if ipaddress.IPv4Address(lo.strip()) > ipaddress.IPv4Address(hi.strip()):
            return f"range {r!r} ends before it starts"


def _abs_path(v):
    if not v.startswith("/") or "\0" in v or "\n" in v:
        return f"{v!r} must be an absolute path"


def _one_of(*choices):
    def check(v):
        if v not in choices:
            return f"must be one of {', '.join(map(repr, choices))}"
    return check


def opt(default, check=None):
    """A config field with a default and an optional validator."""
    if isinstance(default, (list, dict)):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata={"check": check} if check else {})
