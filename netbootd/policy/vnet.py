"""Networks as objects (issue 14): the ``Vnet`` definition, built from a
template's fields (vnet_template.py) or a stored JSON document, checked alone
(``build``) and as a set (``check_set``), and turned into the lease table's
``Network`` (``to_network``).  Pure.

FIXED: an explicit list of leases, each an IP with an optional MAC; a lease
without one gets MAC_PREFIX (default 02:00) followed by the IP's four bytes
(10.0.0.1 -> 02:00:0a:00:00:01), as OpenNebula does.  Only those MACs get
addresses.  RANGED: NETWORK_ADDRESS + NETWORK_SIZE (a host count or class
A/B/C), or a CIDR; explicit ranges optional (IP_START/IP_END, RANGE vectors,
RANGES = "lo-hi"); LEASES there are reservations.  POLICY picks how a fresh
address is allocated (policy/leases.py): lru (the default: never-used first,
then the one free longest), sequential (the lowest free), random.
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import asdict, dataclass, replace

from ..model import Reservation, ip2int, normalize_mac
from .leases import Network
from .vnet_template import Field, VnetError, from_toml, parse_template

__all__ = ["Vnet", "VnetLease", "VnetError", "VnetConflict", "build", "check_set", "from_template",
           "from_doc", "to_network", "from_config", "POLICIES", "TYPES"]

TYPES = ("FIXED", "RANGED")
POLICIES = ("lru", "sequential", "random")
ORIGINS = ("api", "config")
MAX_LEASES = 1 << 16
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")
_PREFIX = re.compile(r"[0-9a-f]{2}:[0-9a-f]{2}")
_CLASSES = {"A": 8, "B": 16, "C": 24}


@dataclass(frozen=True)
class VnetLease:
    ip: str
    mac: str | None = None           # None: MAC_PREFIX + the IP's bytes
    hostname: str | None = None


@dataclass(frozen=True)
class Vnet:
    name: str
    type: str = "RANGED"
    subnet: str = ""                 # CIDR, always set once built
    ranges: tuple[str, ...] = ()     # "lo-hi"; RANGED without ranges: every host address
    leases: tuple[VnetLease, ...] = ()
    interface: str | None = None     # interface or bridge it is served on
    relays: tuple[str, ...] = ()     # giaddrs that select it
    router: str | None = None
    dns: tuple[str, ...] = ()
    domain: str | None = None
    lease_time: int | None = None
    boot_server: str | None = None   # next-server (TFTP) for this network's clients
    boot_profile: str | None = None  # default boot profile of hosts first seen here
    account: str | None = None       # account agents registering from here join
    vlan: int | None = None
    mac_prefix: str = "02:00"
    policy: str = "lru"
    origin: str = "api"              # "config": reconciled from [[networks]] at start
    description: str | None = None

    def lease_mac(self, lease: VnetLease) -> str:
        if lease.mac:
            return lease.mac
        return self.mac_prefix + "".join(f":{b:02x}" for b in ipaddress.IPv4Address(lease.ip).packed)

    def to_doc(self) -> dict:
        d = asdict(self)
        d["leases"] = [{k: v for k, v in asdict(x).items() if v is not None} for x in self.leases]
        return {k: v for k, v in d.items() if v not in (None, (), [])}


def from_template(text: str, origin: str = "api") -> Vnet:
    return build(parse_template(text), origin)


def from_doc(doc: dict, origin: str | None = None) -> Vnet:
    """A JSON object (the API's body, a stored row) -> Vnet, checked as a template."""
    if not isinstance(doc, dict):
        raise VnetError("a network is a JSON object")
    doc = dict(doc)
    stored_origin = doc.pop("origin", None)
    return build(from_toml(doc), origin or stored_origin or "api")


# -- one network -------------------------------------------------------------
_ALIASES = {"BRIDGE": "INTERFACE", "PHYDEV": "INTERFACE", "GATEWAY": "ROUTER",
            "SEARCH_DOMAIN": "DOMAIN", "VLAN_ID": "VLAN", "RELAY": "RELAYS",
            "CIDR": "SUBNET", "LEASE": "LEASES", "ALLOCATION": "POLICY",
            "DEFAULT_ACCOUNT": "ACCOUNT", "BOOT_PROFILE_DEFAULT": "BOOT_PROFILE",
            "AR": "RANGE"}
KNOWN = frozenset(("NAME", "TYPE", "INTERFACE", "RELAYS", "ROUTER", "DNS", "DOMAIN",
                   "LEASE_TIME", "BOOT_SERVER", "BOOT_PROFILE", "ACCOUNT", "VLAN",
                   "MAC_PREFIX", "NETWORK_ADDRESS", "NETWORK_SIZE", "NETWORK_MASK", "SUBNET",
                   "IP_START", "IP_END", "RANGES", "RANGE", "LEASES", "POLICY", "DESCRIPTION"))


# What a network may boot its unassigned hosts into: the profiles that need no
# arguments (config.py's [boot] default_profile takes the same).
DEFAULT_PROFILES = ("discover", "localboot", "shell")


def profile_for(vnets, ip: str) -> str | None:
    """The BOOT_PROFILE of the network whose subnet holds ip (None: no such
    network, or it sets none)."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return None
    for v in vnets:
        if v.boot_profile and v.subnet and addr in ipaddress.IPv4Network(v.subnet):
            return v.boot_profile
    return None


def build(fields: dict[str, Field], origin: str = "api") -> Vnet:
    """Template fields -> a checked Vnet.  Every error names the key (and the
    line when the fields came from text)."""
    f: dict[str, Field] = {}
    for key, fld in fields.items():
        canon = _ALIASES.get(key, key)
        if canon not in KNOWN:
            raise VnetError(f"unknown key (known: {', '.join(sorted(KNOWN))})", key, fld.line)
        if canon in f:
            raise VnetError(f"given twice (as {f[canon].key} too)", key, fld.line)
        f[canon] = Field(key, fld.value, fld.line, fld.item_lines)
    g = _Getter(f)
    name = g.text("NAME", required=True)
    if not _NAME.fullmatch(name):
        g.fail("NAME", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
    vtype = (g.text("TYPE") or "RANGED").upper()
    if vtype not in TYPES:
        g.fail("TYPE", f"must be FIXED or RANGED, not {vtype!r}")
    policy = (g.text("POLICY") or "lru").lower()
    if policy not in POLICIES:
        g.fail("POLICY", f"must be one of {', '.join(POLICIES)}")
    prefix = (g.text("MAC_PREFIX") or "02:00").lower()
    if not _PREFIX.fullmatch(prefix):
        g.fail("MAC_PREFIX", "must be two hex bytes, like 02:00")
    if origin not in ORIGINS:
        raise VnetError(f"origin must be one of {ORIGINS}")
    iface = g.text("INTERFACE")
    if iface is not None and not _IFNAME.fullmatch(iface):
        g.fail("INTERFACE", "not an interface name (1-15 of A-Z a-z 0-9 _ . : @ -)")
    profile = g.text("BOOT_PROFILE")
    if profile is not None and profile not in DEFAULT_PROFILES:
        g.fail("BOOT_PROFILE", f"must be one of {', '.join(DEFAULT_PROFILES)} (a host's "
                               "own assignment picks the others)")
    leases = g.leases()
    subnet = _subnet(g, vtype, leases)
    v = Vnet(
        name=name, type=vtype, subnet=str(subnet), leases=leases, interface=iface,
        relays=tuple(g.ip_list("RELAYS")), router=g.ip("ROUTER"), dns=tuple(g.ip_list("DNS")),
        domain=g.text("DOMAIN"), lease_time=g.int("LEASE_TIME", 10, 10 ** 8),
        boot_server=g.ip("BOOT_SERVER"), boot_profile=profile,
        account=g.text("ACCOUNT"), vlan=g.int("VLAN", 1, 4094), mac_prefix=prefix,
        policy=policy, origin=origin, description=g.text("DESCRIPTION"))
    v = replace(v, ranges=_ranges(g, vtype, subnet))
    _check_inside(g, v, subnet)
    return v


class _Getter:
    def __init__(self, f: dict[str, Field]):
        self.f = f

    def fail(self, key: str, msg: str, line: int | None = None):
        fld = self.f.get(key)
        raise VnetError(msg, fld.key if fld else key, line or (fld.line if fld else None))

    def text(self, key: str, required: bool = False) -> str | None:
        fld = self.f.get(key)
        if fld is None:
            if required:
                raise VnetError("missing (every network needs one)", key)
            return None
        if not isinstance(fld.value, str):
            self.fail(key, "must be a single value")
        v = fld.value.strip()
        if not v or len(v) > 253 or any(ord(c) < 32 for c in v):
            self.fail(key, "must be 1-253 printable characters")
        return v

    def ip(self, key: str, value: str | None = None) -> str | None:
        v = self.text(key) if value is None else value
        if v is None:
            return None
        try:
            ip2int(v)
        except ValueError:
            self.fail(key, f"not an IPv4 address: {v[:40]!r}")
        return v

    def ip_list(self, key: str) -> list[str]:
        fld = self.f.get(key)
        if fld is None:
            return []
        raw = fld.value if isinstance(fld.value, list) else re.split(r"[\s,]+", str(fld.value))
        if not all(isinstance(x, str) for x in raw):
            self.fail(key, "must be addresses")
        return [self.ip(key, x.strip()) for x in raw if x.strip()]

    def int(self, key: str, lo: int, hi: int) -> int | None:
        v = self.text(key)
        if v is None:
            return None
        if not v.isdigit() or not lo <= int(v) <= hi:
            self.fail(key, f"must be a whole number from {lo} to {hi}")
        return int(v)

    def leases(self) -> tuple[VnetLease, ...]:
        fld = self.f.get("LEASES")
        if fld is None:
            return ()
        items = fld.value if isinstance(fld.value, list) else [fld.value]
        if len(items) > MAX_LEASES:
            self.fail("LEASES", f"{len(items)} leases, at most {MAX_LEASES}")
        out = []
        for i, item in enumerate(items):
            where = f"LEASES[{i}]"
            line = fld.item_lines[i] if i < len(fld.item_lines) else fld.line
            if isinstance(item, str):
                item = {"IP": item}
            if not isinstance(item, dict):
                raise VnetError("must be a vector like [IP=10.0.0.5, MAC=...]", where, line)
            bad = set(item) - {"IP", "MAC", "HOSTNAME"}
            if bad:
                raise VnetError(f"unknown {', '.join(sorted(bad))} (IP, MAC, HOSTNAME)",
                                where, line)
            ip = item.get("IP")
            if not isinstance(ip, str):
                raise VnetError("a lease needs an IP", where, line)
            try:
                ip2int(ip.strip())
            except ValueError:
                raise VnetError(f"not an IPv4 address: {ip[:40]!r}", where + ".IP",
                                line) from None
            mac = item.get("MAC")
            if mac is not None:
                try:
                    mac = normalize_mac(str(mac))
                except ValueError as e:
                    raise VnetError(str(e), where + ".MAC", line) from None
            host = item.get("HOSTNAME")
            if host is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}", str(host)):
                raise VnetError("not a host name", where + ".HOSTNAME", line)
            out.append(VnetLease(ip.strip(), mac, host))
        return tuple(out)


def _subnet(g: _Getter, vtype: str, leases) -> ipaddress.IPv4Network:
    cidr = g.text("SUBNET")
    addr = g.ip("NETWORK_ADDRESS")
    size = g.text("NETWORK_SIZE")
    mask = g.text("NETWORK_MASK")
    if cidr is not None:
        if addr or size or mask:
            g.fail("SUBNET", "give a CIDR or NETWORK_ADDRESS with a size/mask, not both")
        try:
            return ipaddress.IPv4Network(cidr, strict=True)
        except ValueError as e:
            g.fail("SUBNET", f"not a network in CIDR form: {e}")
    if addr is None:
        if size or mask:
            g.fail("NETWORK_SIZE" if size else "NETWORK_MASK", "needs NETWORK_ADDRESS")
        if vtype == "FIXED" and leases:
            # OpenNebula's FIXED networks name only their leases: the /24 around the first.
            return ipaddress.IPv4Network(f"{leases[0].ip}/24", strict=False)
        raise VnetError("a network needs SUBNET (a CIDR) or NETWORK_ADDRESS with "
                        "NETWORK_SIZE or NETWORK_MASK", "SUBNET")
    if size and mask:
        g.fail("NETWORK_MASK", "give NETWORK_SIZE or NETWORK_MASK, not both")
    if mask:
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            g.fail("NETWORK_MASK", f"not a netmask: {mask[:40]!r}")
    elif size:
        if size.upper() in _CLASSES:
            prefix = _CLASSES[size.upper()]
        elif size.isdigit() and 1 <= int(size) <= (1 << 24):
            prefix = 32 - math.ceil(math.log2(int(size) + 2))
        else:
            g.fail("NETWORK_SIZE", "must be a host count (1-16777216) or A, B or C")
    else:
        prefix = 24
    try:
        return ipaddress.IPv4Network(f"{addr}/{prefix}", strict=True)
    except ValueError:
        g.fail("NETWORK_ADDRESS", f"{addr} is not the first address of a /{prefix}")


def _ranges(g: _Getter, vtype: str, subnet) -> tuple[str, ...]:
    out: list[tuple[str, str, str]] = []       # (lo, hi, key)
    start, end = g.ip("IP_START"), g.ip("IP_END")
    if (start is None) != (end is None):
        g.fail("IP_START" if start is None else "IP_END", "IP_START and IP_END go together")
    if start is not None:
        out.append((start, end, "IP_START"))
    fld = g.f.get("RANGE")
    for i, item in enumerate((fld.value if isinstance(fld.value, list) else [fld.value])
                             if fld else []):
        if not isinstance(item, dict) or set(item) - {"IP_START", "IP_END", "IP", "SIZE"}:
            raise VnetError("must be a vector [IP_START=..., IP_END=...] or [IP=..., SIZE=n]",
                            f"RANGE[{i}]", fld.line)
        lo = item.get("IP_START") or item.get("IP")
        hi = item.get("IP_END")
        if hi is None and str(item.get("SIZE", "")).isdigit() and lo:
            try:
                hi = str(ipaddress.IPv4Address(ip2int(lo) + int(item["SIZE"]) - 1))
            except ValueError:
                hi = None
        if not lo or not hi:
            raise VnetError("needs IP_START and IP_END (or IP and SIZE)", f"RANGE[{i}]", fld.line)
        out.append((lo, hi, f"RANGE[{i}]"))
    fld = g.f.get("RANGES")
    if fld is not None:
        raw = fld.value if isinstance(fld.value, list) else re.split(r"[\s,]+", fld.value)
        for r in raw:
            if not isinstance(r, str) or "-" not in r:
                g.fail("RANGES", f"each range is \"lo-hi\", not {str(r)[:40]!r}")
            lo, _, hi = r.partition("-")
            out.append((lo.strip(), hi.strip(), "RANGES"))
    if out and vtype == "FIXED":
        raise VnetError("a FIXED network has LEASES only, no ranges", out[0][2],
                        g.f[out[0][2].split("[")[0]].line)
    ranges = []
    for lo, hi, key in out:
        for a in (lo, hi):
            try:
                ip = ipaddress.IPv4Address(a)
            except ValueError:
                raise VnetError(f"not an IPv4 address: {a[:40]!r}", key,
                                g.f[key.split("[")[0]].line) from None
            if ip not in subnet:
                raise VnetError(f"{a} is outside {subnet}", key, g.f[key.split("[")[0]].line)
        if ip2int(lo) > ip2int(hi):
            raise VnetError(f"range {lo}-{hi} ends before it starts", key,
                            g.f[key.split("[")[0]].line)
        ranges.append(f"{lo}-{hi}")
    return tuple(ranges)


def _check_inside(g: _Getter, v: Vnet, subnet) -> None:
    if v.router and ipaddress.IPv4Address(v.router) not in subnet:
        g.fail("ROUTER", f"{v.router} is outside {subnet}")
    seen_ip: dict[str, int] = {}
    seen_mac: dict[str, int] = {}
    fld = g.f.get("LEASES")
    for i, lease in enumerate(v.leases):
        line = fld.item_lines[i] if fld and i < len(fld.item_lines) else (fld.line if fld
                                                                           else None)
        if ipaddress.IPv4Address(lease.ip) not in subnet:
            raise VnetError(f"{lease.ip} is outside {subnet}", f"LEASES[{i}].IP", line)
        if lease.ip in seen_ip:
            raise VnetError(f"{lease.ip} is given twice (LEASES[{seen_ip[lease.ip]}] too): "
                            "one IP, one MAC", f"LEASES[{i}].IP", line)
        seen_ip[lease.ip] = i
        mac = v.lease_mac(lease)
        if mac in seen_mac:
            raise VnetError(f"{mac} has two addresses in this network (LEASES[{seen_mac[mac]}] "
                            "too)", f"LEASES[{i}].MAC", line)
        seen_mac[mac] = i


# -- the set of networks --------------------------------------------------------
class VnetConflict(VnetError):
    """The definition is fine alone but conflicts with another network."""


def check_set(vnets: list[Vnet]) -> None:
    """Refuse a set where two networks share a name, overlap, claim one relay
    address or one interface.  The error names both networks."""
    names: dict[str, Vnet] = {}
    relays: dict[str, str] = {}
    ifaces: dict[str, str] = {}
    nets = []
    for v in vnets:
        if v.name in names:
            raise VnetConflict(f"a network named {v.name!r} exists already", "NAME")
        names[v.name] = v
        sub = ipaddress.IPv4Network(v.subnet)
        for other, osub in nets:
            if sub.overlaps(osub):
                raise VnetConflict(f"{v.name} ({sub}) overlaps {other} ({osub})", "SUBNET")
        nets.append((v.name, sub))
        for r in v.relays:
            if r in relays:
                raise VnetConflict(f"relay {r} of {v.name} already selects {relays[r]}", "RELAYS")
            relays[r] = v.name
        if v.interface:
            if v.interface in ifaces:
                raise VnetConflict(f"interface {v.interface} of {v.name} already serves "
                                f"{ifaces[v.interface]}", "INTERFACE")
            ifaces[v.interface] = v.name


def to_network(v: Vnet, server_ips, default_lease: int) -> Network:
    """The lease table's view.  Never handed out: network, broadcast, our own
    addresses in the subnet, the router, the relays."""
    subnet = ipaddress.IPv4Network(v.subnet)
    lo_net, hi_net = int(subnet.network_address), int(subnet.broadcast_address)
    excluded = {lo_net, hi_net}
    excluded |= {ip2int(ip) for ip in server_ips if ipaddress.IPv4Address(ip) in subnet}
    if v.router:
        excluded.add(ip2int(v.router))
    if v.type == "FIXED":
        ranges: tuple = ()
    elif v.ranges:
        ranges = tuple((ip2int(lo), ip2int(hi)) for lo, hi in (r.split("-") for r in v.ranges))
    else:
        ranges = ((lo_net + 1, hi_net - 1),) if hi_net - lo_net >= 2 else ((lo_net, hi_net),)
    return Network(
        name=v.name, subnet=subnet, ranges=ranges, router=v.router, dns=v.dns, domain=v.domain,
        lease_time=v.lease_time or default_lease,
        reservations=tuple(Reservation(v.lease_mac(x), ip2int(x.ip), x.hostname)
                           for x in v.leases),
        interface=v.interface, excluded=frozenset(excluded),
        relays=frozenset(ip2int(r) for r in v.relays), policy=v.policy, kind=v.type,
        boot_server=v.boot_server)


def from_config(nc) -> Vnet:
    """A config [[networks]] entry (config.NetworkConfig, already checked by
    the config loader) as a RANGED network of origin "config"."""
    return Vnet(name=nc.name, type="RANGED", subnet=str(ipaddress.IPv4Network(nc.subnet)),
                ranges=tuple(r.replace(" ", "") for r in nc.ranges),
                leases=tuple(VnetLease(r.ip, normalize_mac(r.mac), r.hostname)
                             for r in nc.reservations),
                interface=nc.interface, relays=tuple(nc.relays), router=nc.router,
                dns=tuple(nc.dns), domain=nc.domain, lease_time=nc.lease_time,
                account=nc.account, origin="config")


def with_leases(v: Vnet, add: list[VnetLease] = (), remove: list[str] = ()) -> Vnet:
    """A copy with leases added (an IP given again replaces its lease) and
    removed by IP; checked again by the caller (from_doc(to_doc()))."""
    drop = set(remove) | {x.ip for x in add}
    return replace(v, leases=tuple(x for x in v.leases if x.ip not in drop) + tuple(add))


def recheck(v: Vnet) -> Vnet:
    """Run a changed Vnet through the same checks as a template."""
    return from_doc(v.to_doc(), v.origin)

