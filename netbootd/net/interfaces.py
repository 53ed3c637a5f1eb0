"""Interface facts (pyroute2) and interface-bound sockets.

Linux specifics, each for a reason:
* SO_BINDTODEVICE gives one DHCP socket per served interface, so a broadcast
  DISCOVER is answered with the address of the interface it arrived on and our
  broadcasts leave by that interface only (dnsmasq uses IP_PKTINFO for this;
  one socket per interface keeps the protocol object interface-aware for free).
* SIOCSARP installs the client's MAC for the address we are offering, so a
  unicast reply to a client without an address can leave without an ARP
  exchange (RFC 2131 §4.1; dnsmasq does the same).
"""
from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
SIOCSARP = 0x8955          # <linux/sockios.h>
ATF_COM = 0x02             # <linux/if_arp.h>: completed entry
ARPHRD_ETHER = 1


@dataclass(frozen=True)
class IfAddr:
    name: str
    ip: str
    prefix: int


class InterfaceError(RuntimeError):
    pass


def ipv4_interfaces() -> dict[str, list[IfAddr]]:
    """Every interface with an IPv4 address, in kernel order."""
    from pyroute2 import IPRoute  # imported lazily: slow-ish and Linux-only
    out: dict[str, list[IfAddr]] = {}
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for a in ipr.get_addr(family=socket.AF_INET):
            name = names.get(a["index"])
            ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            if name and ip:
                out.setdefault(name, []).append(IfAddr(name, ip, a["prefixlen"]))
    return out


IFF_UP = 0x1


@dataclass(frozen=True)
class Link:
    """One interface as netlink reports it (net show, the netlink watcher)."""
    index: int
    name: str
    mac: str | None
    up: bool                        # administratively up (IFF_UP)
    state: str                      # operstate: UP, DOWN, LOWERLAYERDOWN, UNKNOWN...
    kind: str | None                # bridge, vlan, veth, tun... (None: a plain device)
    master: int | None              # the bridge it is a port of
    vlan_id: int | None
    ipv4: tuple[IfAddr, ...]
    ipv6_linklocal: str | None


def _attr(msg, name, default=None):
    value = msg.get_attr(name)
    return default if value is None else value


def links(ipr=None) -> dict[str, Link]:
    """Every interface with its addresses, in kernel order (one dump of links
    and one of addresses: a few milliseconds)."""
    if ipr is None:
        from pyroute2 import IPRoute  # imported lazily: slow-ish and Linux-only
        with IPRoute() as own:
            return links(own)
    v4: dict[int, list] = {}
    ll6: dict[int, str] = {}
    for a in ipr.get_addr():
        ip = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
        if not ip:
            continue
        if a["family"] == socket.AF_INET:
            v4.setdefault(a["index"], []).append((ip, a["prefixlen"]))
        elif a["family"] == socket.AF_INET6 and ip.lower().startswith("fe80:"):
            ll6.setdefault(a["index"], ip)
    out: dict[str, Link] = {}
    for link in ipr.get_links():
        name, index = link.get_attr("IFLA_IFNAME"), link["index"]
        kind, vlan = None, None
        info = link.get_attr("IFLA_LINKINFO")
        if info is not None:
            kind = info.get_attr("IFLA_INFO_KIND")
            data = info.get_attr("IFLA_INFO_DATA")
            if kind == "vlan" and data is not None and hasattr(data, "get_attr"):
                vlan = data.get_attr("IFLA_VLAN_ID")
        out[name] = Link(index, name, link.get_attr("IFLA_ADDRESS"),
                         bool(link["flags"] & IFF_UP), _attr(link, "IFLA_OPERSTATE", "UNKNOWN"),
                         kind, link.get_attr("IFLA_MASTER"), vlan,
                         tuple(IfAddr(name, ip, p) for ip, p in v4.get(index, ())),
                         ll6.get(index))
    return out


def link_rows(have: dict[str, Link]) -> list[dict]:
    """Each interface as a JSON row (net show, GET /api/v1/net/interfaces)."""
    by_index = {link.index: link.name for link in have.values()}
    return [{"name": link.name, "index": link.index, "mac": link.mac, "up": link.up,
             "state": link.state, "kind": link.kind, "master": by_index.get(link.master),
             "vlan": link.vlan_id, "ipv4": [f"{a.ip}/{a.prefix}" for a in link.ipv4],
             "ipv6_linklocal": link.ipv6_linklocal} for link in have.values()]


def is_pattern(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def served(requested: tuple[str, ...], have: dict[str, Link]) -> list[IfAddr]:
    """The interfaces to serve now, each with its primary IPv4 address: the
    requested names and fnmatch patterns (a pattern: any matching interface)
    that are up with an IPv4 address; none requested: every such interface
    but loopback.  Missing ones are simply not served (the watcher adds them
    when they appear)."""
    import fnmatch
    out = []
    for link in have.values():
        if not link.up or not link.ipv4:
            continue
        if requested:
            if not any(fnmatch.fnmatchcase(link.name, r) if is_pattern(r) else link.name == r
                       for r in requested):
                continue
        elif link.name == "lo" or link.ipv4[0].ip.startswith("127."):
            continue
        out.append(link.ipv4[0])
    return out


def resolve(requested: tuple[str, ...]) -> list[IfAddr]:
    """The primary IPv4 address of each requested interface; with none
    requested, every interface with IPv4 except loopback.  A requested name
    must exist at start (a pattern may match nothing yet)."""
    if any(is_pattern(r) for r in requested):
        have_links = links()
        for name in requested:
            if not is_pattern(name) and not (name in have_links and have_links[name].ipv4):
                raise InterfaceError(f"interface {name!r} does not exist or has no IPv4 address")
        return served(requested, have_links)
    have = ipv4_interfaces()
    if not requested:
        chosen = [addrs[0] for name, addrs in have.items()
                  if name != "lo" and not addrs[0].ip.startswith("127.")]
        if not chosen:
            raise InterfaceError("no interface with an IPv4 address to serve on")
        return chosen
    out = []
    for name in requested:
        if name not in have:
            raise InterfaceError(f"interface {name!r} does not exist or has no IPv4 address")
        out.append(have[name][0])
    return out


def udp_socket(iface: str | None, port: int, ip: str = "0.0.0.0",
               bufsize: int = 256 << 10, reuse: bool = True) -> socket.socket:
    """A bound, non-blocking UDP socket.  `reuse` (SO_REUSEADDR) is for
    well-known ports shared per interface; never with port 0: Linux may then
    hand out a port another socket already holds (seen in bench/tftp: two
    TFTP transfers on one port, one client's transfer failing)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if reuse and port != 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            s.setsockopt(socket.SOL_SOCKET, opt, bufsize)
        if iface:
            s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, iface.encode())
        s.bind((ip, port))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def set_arp(fd: int, iface: str, ip: str, mac: bytes) -> None:
    """Install a complete ARP entry ip -> mac on iface (struct arpreq)."""
    pa = struct.pack("=H2s4s8s", socket.AF_INET, b"\0\0", socket.inet_aton(ip), b"\0" * 8)
    ha = struct.pack("=H14s", ARPHRD_ETHER, mac[:6].ljust(14, b"\0"))
    req = pa + ha + struct.pack("=i", ATF_COM) + b"\0" * 16 + iface.encode()[:15].ljust(16, b"\0")
    fcntl.ioctl(fd, SIOCSARP, req)
