"""Bridges for the networks netbootd serves (`netbootd net bridge add|del`),
made through pyroute2's IPRoute calls (no `ip` commands), as openQRM's
network manager did.

Idempotent: each step is done only when the kernel does not already show it,
and the result lists what was done (empty: nothing to do).  The interface
that carries the host's default route - and a bridge that contains it - is
refused unless forced: moving it into a bridge takes its addresses' traffic
with it and can cut the host off (an SSH session, the API).
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

IFNAMSIZ = 15


class BridgeError(RuntimeError):
    pass


@dataclass
class Result:
    bridge: str
    done: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.done)


def _ipr():
    from pyroute2 import IPRoute  # imported lazily: slow-ish and Linux-only
    return IPRoute()


def _links(ipr) -> dict[str, dict]:
    out = {}
    for m in ipr.get_links():
        info = m.get_attr("IFLA_LINKINFO")
        out[m.get_attr("IFLA_IFNAME")] = {
            "index": m["index"], "master": m.get_attr("IFLA_MASTER"),
            "kind": info.get_attr("IFLA_INFO_KIND") if info is not None else None,
            "up": bool(m["flags"] & 1)}
    return out


def default_route_ifaces(ipr) -> set[int]:
    """Indexes of the interfaces that carry a default route (IPv4 or IPv6)."""
    out = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            routes = ipr.get_default_routes(family=family)
        except Exception:
            continue
        for r in routes:
            oif = r.get_attr("RTA_OIF")
            if oif:
                out.add(oif)
            for hop in r.get_attr("RTA_MULTIPATH") or ():
                out.add(hop["oif"])
    return out


def _protected(links: dict, carriers: set[int], name: str) -> bool:
    """`name` carries the default route, or is a bridge one of whose ports does."""
    link = links.get(name)
    if link is None:
        return False
    if link["index"] in carriers:
        return True
    return any(p["master"] == link["index"] and p["index"] in carriers for p in links.values())


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or name.strip() != name or name in (".",
                                                                                          ".."):
        raise BridgeError(f"{what} {name!r} is not an interface name (1-15 characters, no "
                          "'/' or spaces)")


def add(name: str, port: str, address: str | None = None, vlan: int | None = None,
        force: bool = False, ipr=None) -> Result:
    """Bridge `name` with `port` (or port.VLAN, made here) as a port, up, with
    `address` (CIDR) on the bridge when given."""
    _check_name(name, "bridge")
    _check_name(port, "port")
    iface = None
    if address is not None:
        try:
            if "/" not in address:
                raise ValueError(address)
            iface = ipaddress.ip_interface(address)
        except ValueError:
            raise BridgeError(f"--address {address!r} is not an address with a prefix "
                              "(10.0.0.1/24)") from None
    if vlan is not None and not 1 <= vlan <= 4094:
        raise BridgeError(f"--vlan {vlan} is not a VLAN id (1..4094)")
    own = ipr is None
    ipr = ipr or _ipr()
    try:
        return _add(ipr, name, port, iface, vlan, force)
    finally:
        if own:
            ipr.close()


def _add(ipr, name, port, iface, vlan, force) -> Result:
    res = Result(name)
    links = _links(ipr)
    if port not in links:
        raise BridgeError(f"port {port!r} does not exist")
    member = port if vlan is None else f"{port}.{vlan}"
    if len(member) > IFNAMSIZ:
        raise BridgeError(f"VLAN interface name {member!r} is longer than {IFNAMSIZ}")
    carriers = default_route_ifaces(ipr)
    if not force:
        # with --vlan the port itself is untouched: only its VLAN joins the bridge
        for what in (member, name):
            if _protected(links, carriers, what):
                raise BridgeError(f"{what} carries this host's default route: making it part of "
                                  f"a bridge can cut the host off; use --force if its addresses "
                                  f"and routes are moved too")
    if name in links and links[name]["kind"] != "bridge":
        kind = links[name]["kind"] or "a device"
        raise BridgeError(f"{name} exists and is not a bridge ({kind})")
    # Every refusal before the first change: a refused add leaves nothing behind.
    master = links[member]["master"] if member in links else None
    if master is not None and master != links.get(name, {}).get("index") and not force:
        other = next((n for n, v in links.items() if v["index"] == master), master)
        raise BridgeError(f"{member} is already a port of {other}; use --force to move it")
    if vlan is not None:
        if member not in links:
            try:
                ipr.link("add", ifname=member, kind="vlan", link=links[port]["index"],
                         vlan_id=vlan)
            except Exception as e:
                raise BridgeError(f"cannot create VLAN {vlan} on {port} ({e}); does the kernel "
                                  "have 802.1Q (8021q)?") from None
            res.done.append(f"created VLAN interface {member} (id {vlan} on {port})")
        elif links[member]["kind"] != "vlan":
            raise BridgeError(f"{member} exists and is not a VLAN interface")
        links = _links(ipr)
    if name not in links:
        ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
        res.done.append(f"created bridge {name} (STP off, forward delay 0)")
        links = _links(ipr)
    br = links[name]["index"]
    m = links[member]
    if m["master"] != br:
        ipr.link("set", index=m["index"], master=br)
        res.done.append(f"added {member} to {name}")
    for n in (member, name):
        if not _links(ipr)[n]["up"]:
            ipr.link("set", index=_links(ipr)[n]["index"], state="up")
            res.done.append(f"set {n} up")
    if iface is not None:
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=br)}
        if (str(iface.ip), iface.network.prefixlen) not in have:
            ipr.addr("add", index=br, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            res.done.append(f"added {iface} to {name}")
    return res


def delete(name: str, force: bool = False, ipr=None) -> Result:
    """Remove bridge `name` (its ports are released; a VLAN port named
    PORT.ID - as `add --vlan` makes them - is deleted with it)."""
    _check_name(name, "bridge")
    own = ipr is None
    ipr = ipr or _ipr()
    try:
        res = Result(name)
        links = _links(ipr)
        if name not in links:
            return res
        if links[name]["kind"] != "bridge":
            raise BridgeError(f"{name} is not a bridge ({links[name]['kind'] or 'a device'})")
        if not force and _protected(links, default_route_ifaces(ipr), name):
            raise BridgeError(f"{name} carries this host's default route (or a port of it does): "
                              "deleting it can cut the host off; use --force")
        br = links[name]["index"]
        vlans = [n for n, v in links.items() if v["master"] == br and v["kind"] == "vlan"
                 and "." in n]
        ipr.link("del", index=br)
        res.done.append(f"deleted bridge {name}")
        for n in vlans:
            ipr.link("del", index=links[n]["index"])
            res.done.append(f"deleted VLAN interface {n}")
        return res
    finally:
        if own:
            ipr.close()
