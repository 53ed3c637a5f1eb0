"""One frozen configuration tree, loaded once from TOML (every key optional).

Unknown keys and bad values raise ``ConfigError`` naming the key path and,
when it can be found, the file line.  Policy never reads this module's
globals: the loaded tree is passed down.
"""
from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field

from .config_fields import (  # noqa: F401 - ConfigError and opt are this module's API too
    ConfigError, _positive, _port, _share, _ipv4, _ipv4_list, _subnet, _mac, _range_list, _one_of, opt,
    _abs_path,
)
from .config_storage import (  # noqa: F401
    IscsiConfig, StorageConfig, StoragePoolConfig, check_storage,
)
from .events import REPORTABLE_KINDS
from .model import normalize_mac

DEFAULT_STATE_DIR = "/var/lib/netbootd"
ADMIN_OVER_PLAIN = ("allow", "loopback", "refuse")     # [http] admin_over_plain


@dataclass(frozen=True)
class RateLimitConfig:
    per_mac_pps: float = opt(20.0, _positive)
    # First-contact MACs per second per interface (burst 2x).  Above what the
    # server can answer (~6k DORA/s here), so a rack powering on is never
    # throttled; it bounds a MAC flood's cost, and the pool share
    # (unknown_share) keeps addresses for known hosts whatever the rate.
    new_clients_per_interface_pps: float = opt(20000.0, _positive)
    unknown_share: float = opt(0.9, _share)


@dataclass(frozen=True)
class DhcpConfig:
    lease_time: int = opt(3600, _positive)
    offer_hold: int = opt(30, _positive)
    decline_probation: int = opt(3600, _positive)
    authoritative: bool = True
    probe: bool = False
    probe_timeout_ms: int = opt(500, _positive)
    commit_window_ms: float = opt(2.0, lambda v: None if 0 <= v <= 1000 else "must be 0..1000")
    sync: str = opt("full", _one_of("full", "normal"))
    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)


@dataclass(frozen=True)
class ReservationConfig:
    mac: str = opt("", _mac)
    ip: str = opt("", _ipv4)
    hostname: str | None = None


@dataclass(frozen=True)
class NetworkConfig:
    name: str = opt("", lambda v: None if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v)
                    else "must be 1-64 characters of A-Z a-z 0-9 _ . -")
    subnet: str = opt("", _subnet)
    ranges: tuple[str, ...] = opt((), _range_list)
    router: str | None = opt(None, _ipv4)
    dns: tuple[str, ...] = opt((), _ipv4_list)
    domain: str | None = None
    lease_time: int | None = opt(None, _positive)
    interface: str | None = None
    reservations: tuple[ReservationConfig, ...] = ()
    # Relay agents (their giaddr) trusted to relay for this network, as Kea's
    # relay ip-addresses: a packet with any other giaddr is dropped.
    relays: tuple[str, ...] = opt((), _ipv4_list)
    # Hosts whose agent registers from this network without a token join this
    # account (its name: `netbootd accounts create`); none: they join none.
    account: str | None = None
    # Answer IPv6 router solicitations with "no router here" (lifetime 0, no
    # prefix): iPXE then skips its ~13 s wait (docs/networks-interfaces.md).
    ipv6_ra_quench: bool = True


@dataclass(frozen=True)
class BootConfig:
    """[boot]: what each client family boots and where it fetches it from.  The
    one type for both the config file and the DHCP engine (policy/pxe.decide
    reads the boot file names, http_port, http_base and tftp_server)."""
    # Which iPXE binary each client family gets (names under the TFTP/HTTP roots).
    bios: str = "undionly.kpxe"
    uefi_x64: str = "ipxe.efi"              # "snponly.efi" selectable
    uefi_x86: str | None = None
    uefi_arm64: str | None = None           # e.g. "arm64-efi/ipxe.efi" when provided
    http_port: int = opt(8080, _port)
    http_listen: str = opt("0.0.0.0", _ipv4)
    # Where clients fetch from (default: the serving interface's address).
    http_base: str | None = None            # e.g. "http://boot.example:8080"
    tftp_server: str | None = opt(None, _ipv4)
    tftp_port: int = opt(69, _port)
    # TFTP transfers at once (ACKed ones; unconfirmed ones apart): over it a
    # request is dropped unanswered and the firmware resends it (net/tftp.py).
    tftp_max_transfers: int = opt(1024, _positive)
    tftp_max_unconfirmed: int = opt(512, _positive)     # RRQs not ACKed yet
    default_profile: str = opt("discover", _one_of("discover", "localboot", "shell"))
    files_root: str | None = None           # default: <state_dir>/files
    ipxe_dir: str = "/usr/lib/ipxe"         # Debian's ipxe package
    templates_dir: str | None = None        # default: the package's netbootd/boot_templates/
    discover_kernel: str | None = None      # default: newest /boot/vmlinuz-*
    discover_initrd: str | None = None      # default: <state_dir>/discover.img
    discover_cmdline: str = "console=ttyS0 console=tty0 quiet"


def _url_list(v):
    for u in v:
        try:
            parts = urllib.parse.urlsplit(u)
        except ValueError as e:
            return f"{u!r} is not a URL ({e})"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"{u!r} is not an http:// or https:// URL"
        if not u.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in u):
            return f"{u!r} has spaces, control or non-ASCII characters"


def _hostname(v):
    if not re.fullmatch(r"[A-Za-z0-9.:_-]{1,253}", v):
        return f"{v!r} is not a host name or address"


_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+(\.[A-Za-z0-9-]+)*")


def _email(v):
    if not _EMAIL.fullmatch(v):
        return f"{v!r} is not a plain mail address like 'ops@example.com'"


def _email_list(v):
    for a in v:
        if (err := _email(a)):
            return err


def _kind_list(v):
    for k in v:
        if not re.fullmatch(r"[a-z][a-z0-9_]*\.[a-z0-9_]+", k):
            return f"{k!r} is not an event kind like 'tftp.failed'"


def _seconds(lo, hi):
    def check(v):
        if not lo < v <= hi:
            return f"must be > {lo} and <= {hi} seconds"
    return check


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True                    # GET /metrics on the HTTP port (Prometheus)
    # A boot (first DHCP/proxy offer) with no agent.register within this many
    # seconds is forgotten, not measured.
    boot_timeout: float = opt(3600.0, _seconds(0, 86400))


# Event kinds the hooks report by default: the catalog's reportable kinds
# (new hosts, boot failures (an http.file counts only with status >= 400),
# exhausted pools).
HOOK_KINDS = REPORTABLE_KINDS


@dataclass(frozen=True)
class HooksConfig:
    webhooks: tuple[str, ...] = opt((), _url_list)       # each gets a JSON POST per batch
    webhook_timeout: float = opt(10.0, _seconds(0, 300))
    webhook_retries: int = opt(3, lambda v: None if 0 <= v <= 10 else "must be 0..10")
    webhook_backoff: float = opt(1.0, _seconds(0, 300))  # first retry delay; doubles each time
    queue_size: int = opt(1000, lambda v: None if 1 <= v <= 100000 else "must be 1..100000")
    smtp_host: str | None = opt(None, _hostname)        # mail relay; None: no mail
    smtp_port: int = opt(25, _port)
    smtp_starttls: bool = False                          # True: STARTTLS required
    smtp_timeout: float = opt(30.0, _seconds(0, 300))
    mail_from: str = opt("netbootd@localhost", _email)
    mail_to: tuple[str, ...] = opt((), _email_list)
    mail_interval: float = opt(60.0, _seconds(0, 86400))  # at most one mail per interval
    kinds: tuple[str, ...] = opt(HOOK_KINDS, _kind_list)

    def __post_init__(self):
        if self.smtp_host and not self.mail_to:
            raise ConfigError("hooks.mail_to", "is required when hooks.smtp_host is set")


def _domain(v):
    # RFC 1123 §2.1 labels; room left for a 63-byte host label (RFC 1035 §2.3.4).
    labels = v.rstrip(".").split(".")
    if not v or len(v) > 190 or not all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", x)
                                        for x in labels):
        return "must be a lower-case domain name like 'netboot.lan' (at most 190 characters)"
    if labels[-1] == "arpa":
        return "must not be under .arpa (reverse zones are derived from the subnets)"


def _listen(v):
    if v != "interfaces" and _ipv4(v):
        return "must be 'interfaces' (each served interface's address) or one IPv4 address"


@dataclass(frozen=True)
class DnsConfig:
    """Authoritative DNS for the managed hosts (and optional forwarding)."""
    enabled: bool = True
    port: int = opt(53, _port)
    domain: str = opt("netboot.lan", _domain)
    forwarders: tuple[str, ...] = opt((), _ipv4_list)   # empty: names not ours are REFUSED
    ttl: int = opt(60, lambda v: None if 0 <= v <= 86400 else "must be 0..86400 seconds")
    rate_limit_qps: float = opt(200.0, _positive)        # per source address
    listen: str = opt("interfaces", _listen)


@dataclass(frozen=True)
class HostsConfig:
    """MACs only seen on DHCP are kept in memory, not stored, until they get a
    lease, a boot script or an agent call (a random-MAC flood made a row each)."""
    seen_max: int = opt(10000, lambda v: None if 1 <= v <= 1000000 else "must be 1..1000000")
    seen_ttl: float = opt(3600.0, _seconds(0, 7 * 86400))    # forgotten after this silence
    # New hosts made by unauthenticated HTTP (boot script, agent) per second:
    # per source address, and in total for MACs DHCP never saw (429 above).
    new_per_source_pps: float = opt(1.0, _positive)
    new_total_pps: float = opt(20.0, _positive)


@dataclass(frozen=True)
class HttpConfig:
    """Bounds on HTTP connections (the listen address is boot.http_listen).  A
    held connection costs a file descriptor: ~1,000 slow clients trickling a
    byte now and then used to exhaust a 1,024-fd process (Errno 24 for TFTP,
    DNS, SQLite).  0 for max_connections: derived from the fd limit."""
    max_connections: int = opt(0, lambda v: None if 0 <= v <= 1000000 else "must be 0..1000000")
    max_per_source: int = opt(32, lambda v: None if 1 <= v <= 100000 else "must be 1..100000")
    request_timeout: float = opt(10.0, _seconds(0, 3600))  # request line+headers+body
    idle_timeout: float = opt(30.0, _seconds(0, 3600))     # keep-alive: next request due
    max_streams: int = opt(32, lambda v: None if 1 <= v <= 10000 else "must be 1..10000")
    max_streams_per_source: int = opt(4, lambda v: None if 1 <= v <= 10000 else "must be 1..10000")
    # HTTPS: the same site on tls_port when both are set (net/services/http.py; the key
    # file must be 0600; `netbootd tls selfsigned` makes a pair, `netbootd tls pin` its pin).
    tls_cert: str | None = opt(None, _abs_path)
    tls_key: str | None = opt(None, _abs_path)
    tls_port: int = opt(8443, _port)
    # Who may send the admin token (Authorization: Bearer) over plain http: "allow"
    # anyone, "loopback" only this machine, "refuse" nobody (https only).  Unset:
    # "loopback" with TLS configured, else "allow" (admin_plain(); net/http/routes.py).
    admin_over_plain: str | None = opt(None, _one_of(*ADMIN_OVER_PLAIN))

    def admin_plain(self) -> str:
        """admin_over_plain as it applies (the default follows tls_cert)."""
        if self.admin_over_plain is not None:
            return self.admin_over_plain
        return "allow" if self.tls_cert is None else "loopback"


@dataclass(frozen=True)
class Config:
    mode: str = opt("proxy", _one_of("proxy", "full"))
    interfaces: tuple[str, ...] = ()
    state_dir: str = DEFAULT_STATE_DIR
    log_level: str = opt("info", _one_of("debug", "info", "warn", "error"))
    dhcp: DhcpConfig = field(default_factory=DhcpConfig)
    boot: BootConfig = field(default_factory=BootConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    networks: tuple[NetworkConfig, ...] = ()
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    hosts: HostsConfig = field(default_factory=HostsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)


def _type_ok(value, tp) -> tuple[bool, object]:
    """Check/convert a TOML value against a field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        for a in args:
            if a is type(None):
                continue
            ok, v = _type_ok(value, a)
            if ok:
                return True, v
        return False, value
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, value
        out = []
        for item in value:
            ok, v = _type_ok(item, inner)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, (float(value) if ok else value)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    return False, value


def _type_name(tp) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls, data: dict, path: str, locate):
    if not isinstance(data, dict):
        raise ConfigError(locate(path), "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(locate(where), f"unknown key{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kw[key] = _build(tp, value, where, locate)
            continue
        if typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            sub = typing.get_args(tp)[0]
            if not isinstance(value, list):
                raise ConfigError(locate(where), "must be an array of tables ([[...]])")
            kw[key] = tuple(_build(sub, v, f"{where}[{i}]", locate) for i, v in enumerate(value))
            continue
        ok, conv = _type_ok(value, tp)
        if not ok:
            raise ConfigError(locate(where), f"{value!r} is not of type {_type_name(tp)}")
        check = fields[key].metadata.get("check")
        if check and conv is not None and (err := check(conv)):
            raise ConfigError(locate(where), err)
        kw[key] = conv
    obj = cls(**kw)
    for name, f in fields.items():   # required-by-validator fields left empty
        check = f.metadata.get("check")
        v = getattr(obj, name)
        if check and v == "" and name not in kw:
            raise ConfigError(locate(f"{path}.{name}" if path else name), "is required")
    return obj


def _locator(text: str | None, filename: str):
    lines = text.splitlines() if text else []

    def locate(where: str) -> str:
        if not lines:
            return f"{filename}: {where}"
        parts = re.sub(r"\[\d+\]", "", where).split(".")
        key = parts[-1]
        start = 0
        if len(parts) > 1:
            table = ".".join(parts[:-1])
            for i, ln in enumerate(lines):
                if re.match(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?", ln):
                    start = i
                    break
        for i in range(start, len(lines)):
            if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]) or \
                    re.match(rf"^\s*\[\[?\s*{re.escape('.'.join(parts))}\s*\]\]?", lines[i]):
                return f"{filename}:{i + 1}: {where}"
        return f"{filename}: {where}"
    return locate


def parse(text: str, filename: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(filename, f"not valid TOML: {e}") from None
    cfg = _build(Config, data, "", _locator(text, filename))
    _cross_check(cfg, _locator(text, filename))
    return cfg


def load(path: str | None) -> Config:
    """Load a config file; None means embedded defaults."""
    if path is None:
        return Config()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read: {e.strerror}") from None
    return parse(text, path)


def _cross_check(cfg: Config, locate) -> None:
    names = set()
    for i, n in enumerate(cfg.networks):
        where = f"networks[{i}]"
        if n.name in names:
            raise ConfigError(locate(f"{where}.name"), f"duplicate network name {n.name!r}")
        names.add(n.name)
        subnet = ipaddress.IPv4Network(n.subnet)
        for r in n.ranges:
            lo, _, hi = r.partition("-")
            for a in (lo.strip(), hi.strip()):
                if ipaddress.IPv4Address(a) not in subnet:
                    raise ConfigError(locate(f"{where}.ranges"), f"{a} is outside {subnet}")
        if n.router and ipaddress.IPv4Address(n.router) not in subnet:
            raise ConfigError(locate(f"{where}.router"), f"{n.router} is outside {subnet}")
        seen = set()
        for j, r in enumerate(n.reservations):
            if ipaddress.IPv4Address(r.ip) not in subnet:
                raise ConfigError(locate(f"{where}.reservations[{j}].ip"),
                                  f"{r.ip} is outside {subnet}")
            mac = normalize_mac(r.mac)
            if mac in seen:
                raise ConfigError(locate(f"{where}.reservations[{j}].mac"),
                                  f"duplicate reservation for {mac}")
            seen.add(mac)
    if (cfg.http.tls_cert is None) != (cfg.http.tls_key is None):
        missing = "tls_key" if cfg.http.tls_key is None else "tls_cert"
        raise ConfigError(locate(f"http.{missing}"), "is required with "
                          f"http.{'tls_cert' if missing == 'tls_key' else 'tls_key'} (HTTPS)")
    if cfg.http.tls_cert is not None and cfg.http.tls_port == cfg.boot.http_port:
        raise ConfigError(locate("http.tls_port"), f"{cfg.http.tls_port} is boot.http_port")
    if cfg.http.admin_over_plain == "refuse" and cfg.http.tls_cert is None:
        raise ConfigError(locate("http.admin_over_plain"), '"refuse" needs http.tls_cert and '
                          "http.tls_key (without https no admin call could be made)")
    check_storage(cfg.storage, locate)
