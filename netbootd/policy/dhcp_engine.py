"""The DHCP server's decisions, sans I/O (RFC 2131 §4.3; PXE 2.1 proxyDHCP).

``DhcpEngine.handle(packet, ingress, now)`` returns an ``Outcome``: the reply
bytes and where they go, the writes the store must commit first (for an ACK:
the lease), and whether the address should be probed before the OFFER
leaves.  The lease table and the registry are in-memory state owned by the
engine; the Twisted protocol around it only moves bytes and commits writes.
"""
from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field

from ..codec import dhcp_options as o
from ..codec.dhcp import Packet, encode
from ..config import BootConfig
from ..model import Lease, LeaseState
from ..registry.hosts import Registry
from ..writes import LeaseWrite, event
from . import pxe
from .dhcp_values import (  # noqa: F401 (sanitize_hostname re-exported)
    client_id_ok, max_message, option_hostname, sanitize_hostname,
)
from .dhcp_networks import BootByNetwork, NetworkSet
from .dhcp_reply import PXE_VENDOR_OPTS, ReplyBuilder, rebinding_time  # noqa: F401 (re-exported)
from .leases import LeaseTable, Network, PoolExhausted, client_key, int2ip
from .ratelimit import Buckets

_BCAST = "255.255.255.255"
_ZERO = b"\0\0\0\0"
_ACTIVE = LeaseState.ACTIVE
_RX_NAMES = {t: "rx." + n for t, n in o.MSG_NAMES.items()}
_TX_NAMES = {n: "tx." + n for n in o.MSG_NAMES.values()}


@dataclass(frozen=True)
class Ingress:
    """Where a packet came in: interface, our address there, its network."""
    iface: str
    server_ip: str
    network: str | None
    port: int = o.SERVER_PORT
    src: tuple[str, int] = ("0.0.0.0", o.CLIENT_PORT)


@dataclass(slots=True)
class Outcome:
    reply: bytes | None = None
    dest: tuple[str, int] | None = None
    arp: tuple[str, bytes] | None = None     # (ip, chaddr): unicast before ARP works
    writes: list = field(default_factory=list)
    must_commit: bool = False                # the reply waits for the writes
    probe: int | None = None                 # ICMP-probe this address before replying
    kind: str = ""                           # reply type name, for counters
    # An ACK: the lease it binds, whose write net/dhcp.py numbers (Lease.seq).
    lease: Lease | None = None
    # An ACK that only extends a binding: the lease it extends, whose expiry
    # still reaches past the new lease's rebinding time (T2).  When that lease
    # is stored, the ACK need not wait for its commit (net/dhcp.py).
    renews: Lease | None = None


@dataclass(frozen=True)
class EngineSettings:
    mode: str = "full"
    lease_time: int = 3600
    offer_hold: int = 30
    decline_probation: int = 3600
    authoritative: bool = True
    probe: bool = False
    per_mac_pps: float = 20.0
    new_clients_per_interface_pps: float = 20000.0



def _ip_or_none(raw: bytes | None) -> int | None:
    return int.from_bytes(raw, "big") if raw is not None and len(raw) == 4 else None


class DhcpEngine(ReplyBuilder):
    def __init__(self, settings: EngineSettings, networks: list[Network], leases: LeaseTable,
                 registry: Registry, boot: BootConfig, counters: Counter | None = None):
        self.s = settings
        self.netset = NetworkSet(networks)
        self.leases = leases
        self.registry = registry
        self.boot = boot                       # the setter makes self.boots
        self._last_no_network: dict[str, float] = {}
        self.counters = counters if counters is not None else Counter()
        self.mac_buckets = Buckets(settings.per_mac_pps)
        self.new_buckets = Buckets(settings.new_clients_per_interface_pps, max_keys=4096)
        self._last_exhausted: dict[str, float] = {}
        self._lease_cache: dict[int, dict[int, bytes]] = {}
        self._net_cache: dict[str, dict[int, bytes]] = {}
        self._reply_cache: dict[tuple, tuple] = {}
        self._relay_dest: dict[bytes, tuple[str, int]] = {}

    @property
    def networks(self) -> dict[str, Network]:
        return self.netset.networks

    @property
    def boot(self) -> BootConfig:
        return self.boots.boot

    @boot.setter
    def boot(self, boot: BootConfig) -> None:
        self.boots = BootByNetwork(boot)

    def set_networks(self, networks: list[Network],
                     attached: dict[str, str | None] | None = None) -> None:
        """Serve a new set of networks (and interface attachments) from the
        next packet on; the encoded options of the old ones are dropped."""
        self.netset = NetworkSet(networks, attached)
        self._net_cache = {}
        self._reply_cache = {}
        self._relay_dest = {}

    # -- entry point ----------------------------------------------------
    def handle(self, pkt: Packet, ing: Ingress, now: float) -> Outcome | None:
        c = self.counters
        mtype = pkt.msg_type
        if pkt.op != o.BOOTREQUEST:
            c["drop.not_request"] += 1
            return None
        if mtype is None:
            c["drop.bootp_or_no_type"] += 1
            return None
        c[_RX_NAMES.get(mtype, "rx.other")] += 1
        if pkt.hlen == 0 or pkt.hlen > 16:
            c["drop.bad_hlen"] += 1
            return None
        giaddr, opts = pkt.giaddr, pkt.options
        if giaddr != _ZERO and giaddr not in self.netset.relay_of:
            # RFC 2131 §4.1 trusts giaddr blindly; anyone on the segment can
            # set it.  Only relays the config names are believed (as Kea and
            # ISC dhcpd do): before anything else, so a spoofed giaddr spends
            # no rate-limit token, creates no host and holds no address.
            c["drop.untrusted_relay"] += 1
            return None
        mac = pkt.mac
        if not self.mac_buckets.allow(mac, now):
            c["drop.rate_mac"] += 1
            return None
        if o.OPT_RELAY_AGENT in opts and giaddr == _ZERO:
            # RFC 3046 §2.1: option 82 without a relay (giaddr 0) is not from
            # a trusted relay: never echo it or act on it.
            del opts[o.OPT_RELAY_AGENT]
            c["drop.option82_untrusted"] += 1
        client = pxe.classify(opts)
        if client.rejected:
            for name in client.rejected:
                c["bad_value." + name] += 1      # treated as absent, never stored
        if o.OPT_CLIENT_ID in opts and not client_id_ok(opts):
            del opts[o.OPT_CLIENT_ID]      # fall back to chaddr
            c["bad_value.client_id"] += 1
        proxy = self.s.mode == "proxy" or ing.port == o.PXE_PORT
        if proxy and not client.netboot:
            c["ignored.proxy_not_pxe"] += 1
            return None
        writes: list = []
        if self.registry.get(mac) is None and not self.new_buckets.allow(ing.iface, now):
            c["drop.rate_new_clients"] += 1
            return None
        self.registry.observe(mac, now, ing.iface, client.arch, client.vendor_class,
                              client.uuid, writes)
        if proxy:
            # PXE 2.1 boot server: proxyDHCP, and port 4011 in either mode
            # (some firmware asks the boot server even after a full offer).
            out = self._proxy(pkt, mtype, client, ing, now, writes)
        else:
            out = self._full(pkt, mtype, client, ing, now, writes, mac)
        if out is None:
            if writes:
                return Outcome(writes=writes)
            return None
        if out.kind:
            c[_TX_NAMES.get(out.kind) or "tx." + out.kind] += 1
        return out

    # -- full DHCP server ------------------------------------------------
    def _full(self, pkt, mtype, client, ing, now, writes, mac) -> Outcome | None:
        c = self.counters
        net = self.netset.select(pkt, ing)      # policy/dhcp_networks.py
        if net is None:
            c["drop.no_network"] += 1
            if now - self._last_no_network.get(ing.iface, -1e9) > 10:   # one per 10 s
                self._last_no_network[ing.iface] = now
                writes.append(event(now, pkt.mac, "dhcp.no_network", iface=ing.iface,
                                    giaddr=pkt.giaddr_ip if pkt.giaddr != _ZERO else None))
            return None
        key = client_key(pkt.options, pkt.htype, pkt.chaddr)
        if mtype == o.DISCOVER:
            return self._discover(pkt, client, ing, net, key, mac, now, writes)
        if mtype == o.REQUEST:
            return self._request(pkt, client, ing, net, key, mac, now, writes)
        if mtype == o.RELEASE:
            lease = self.leases.release(net.name, key, int.from_bytes(pkt.ciaddr, "big"), now)
            if lease is not None:
                writes += [LeaseWrite(lease), event(now, mac, "dhcp.release",
                                                   ip=pkt.ciaddr_ip, iface=ing.iface)]
            else:
                c["ignored.release_unknown"] += 1
            return None
        if mtype == o.DECLINE:
            sid = pkt.options.get(o.OPT_SERVER_ID)
            addr = _ip_or_none(pkt.options.get(o.OPT_REQUESTED_IP))
            if addr is None or (sid is not None and sid != socket.inet_aton(ing.server_ip)):
                c["ignored.decline"] += 1
                return None
            lease = self.leases.decline(net.name, key, addr, now, self.s.decline_probation)
            if lease is not None:
                writes += [LeaseWrite(lease), event(now, mac, "dhcp.decline", ip=int2ip(addr),
                                                   probation=self.s.decline_probation)]
            else:
                c["ignored.decline"] += 1
            return None
        if mtype == o.INFORM:
            # RFC 2131 §4.3.5: options only; no lease, no lease time, no yiaddr.
            reply = self._reply(pkt, o.ACK, _ZERO, ing, net, client, lease_time=None,
                                hostname=None, boot=self._boot(client, mac, ing, now, writes,
                                                               net))
            return self._out(pkt, reply, o.ACK, writes, ing)
        c["ignored.type"] += 1
        return None

    def _discover(self, pkt, client, ing, net, key, mac, now, writes) -> Outcome | None:
        known = mac in net.reservation_of or self.registry.is_known(mac)
        requested = _ip_or_none(pkt.options.get(o.OPT_REQUESTED_IP))
        prev = self.leases.lease_of(net.name, key)
        try:
            addr = self.leases.choose(net.name, key, mac, requested, now, known)
        except PoolExhausted as e:
            self.counters["drop.pool_exhausted"] += 1
            if now - self._last_exhausted.get(net.name, -1e9) > 10:
                self._last_exhausted[net.name] = now
                writes.append(event(now, mac, "pool.exhausted", network=net.name, reason=str(e)))
            return None
        lease = self.leases.offer(net.name, addr, key, mac, now, self.s.offer_hold, known)
        fresh = prev is None or prev.address != addr
        hostname = self._hostname(pkt, net, mac)
        boot = self._boot(client, mac, ing, now, writes, net)
        yiaddr = addr.to_bytes(4, "big")
        reply = self._reply(pkt, o.OFFER, yiaddr, ing, net, client, self._lease_time(net),
                            hostname, boot)
        self.registry.exchange_event(
            mac, self._exchange_event(now, mac, "dhcp.offer", boot, ing, yiaddr), writes)
        out = self._out(pkt, reply, o.OFFER, writes, ing)
        if self.s.probe and fresh and lease.state == LeaseState.OFFERED:
            out.probe = addr
        return out

    def _request(self, pkt, client, ing, net, key, mac, now, writes) -> Outcome | None:
        c = self.counters
        sid = pkt.options.get(o.OPT_SERVER_ID)
        requested = _ip_or_none(pkt.options.get(o.OPT_REQUESTED_IP))
        ciaddr = int.from_bytes(pkt.ciaddr, "big")
        if sid is not None:                         # SELECTING
            if sid != socket.inet_aton(ing.server_ip):
                self.leases.forget_offer(net.name, key)
                c["ignored.request_other_server"] += 1
                return None
            addr = requested if requested is not None else (ciaddr or None)
        elif requested is not None and not ciaddr:  # INIT-REBOOT
            addr = requested
        elif ciaddr:                                # RENEWING / REBINDING
            addr = ciaddr
        else:
            c["drop.request_no_address"] += 1
            return None
        reason = None
        res = net.reservation_of.get(mac)
        if addr is None or not net.contains(addr):
            reason = "address not on this network"
        elif res is not None and res.address != addr:
            reason = "client has a reservation for another address"
        elif not self.leases.free_for(net.name, addr, key, mac, now):
            reason = "address belongs to another client"
        if reason is not None:
            have_record = self.leases.lease_of(net.name, key) is not None
            if not self.s.authoritative and not have_record:
                c["ignored.request_no_record"] += 1   # RFC 2131 §4.3.2: stay silent
                return None
            writes.append(event(now, mac, "dhcp.nak", ip=int2ip(addr) if addr else None,
                                reason=reason))
            return self._nak(pkt, ing, reason, writes)
        hostname = self._hostname(pkt, net, mac)
        lease_time = self._lease_time(net)
        prev = self.leases.by_client.get((net.name, key))
        lease = self.leases.bind(net.name, addr, key, mac, now, lease_time, hostname,
                                 self.registry.is_known(mac) or res is not None)
        boot = self._boot(client, mac, ing, now, writes, net)
        n = len(writes)
        self.registry.promote(mac, now, writes)     # a lease makes a seen MAC a stored host
        yiaddr = addr.to_bytes(4, "big")
        writes += [LeaseWrite(lease),
                   self._exchange_event(now, mac, "dhcp.ack", boot, ing, yiaddr)]
        reply = self._reply(pkt, o.ACK, yiaddr, ing, net, client, lease_time, hostname, boot)
        out = self._out(pkt, reply, o.ACK, writes, ing)
        out.must_commit = True
        out.lease = lease
        if prev is not None and prev.state is _ACTIVE and prev.address == addr \
                and prev.mac == mac and prev.hostname == hostname \
                and prev.ends >= now + rebinding_time(lease_time) and len(writes) == n + 2:
            # Only an extension: the binding a restart would load holds this
            # address for this client past the new lease's T2 (no new host
            # either), so the client renews (T1) and rebinds before it ends.
            out.renews = prev
        return out

    def _nak(self, pkt, ing, reason, writes) -> Outcome:
        r = Packet(o.BOOTREPLY, pkt.htype, pkt.hlen, 0, pkt.xid, 0, pkt.flags, _ZERO, _ZERO,
                   _ZERO, pkt.giaddr, pkt.chaddr)
        r.options[o.OPT_MESSAGE_TYPE] = bytes((o.NAK,))
        r.options[o.OPT_SERVER_ID] = socket.inet_aton(ing.server_ip)
        r.options[o.OPT_MESSAGE] = reason.encode()
        if o.OPT_RELAY_AGENT in pkt.options:
            r.options[o.OPT_RELAY_AGENT] = pkt.options[o.OPT_RELAY_AGENT]
        if pkt.giaddr != _ZERO:
            r.flags |= o.FLAG_BROADCAST   # RFC 2131 §4.3.2: relay must broadcast a NAK
            dest = (pkt.giaddr_ip, o.SERVER_PORT)
        else:
            dest = (_BCAST, o.CLIENT_PORT)
        return Outcome(encode(r, max_message(pkt.options)), dest, None, writes, kind="NAK")

    # -- proxyDHCP (PXE 2.1) ---------------------------------------------
    def _proxy(self, pkt, mtype, client, ing, now, writes) -> Outcome | None:
        c = self.counters
        if mtype == o.DISCOVER and ing.port == o.SERVER_PORT:
            rtype = o.OFFER
        elif mtype == o.REQUEST and (ing.port == o.PXE_PORT or pkt.options.get(
                o.OPT_SERVER_ID) == socket.inet_aton(ing.server_ip)):
            rtype = o.ACK
        else:
            c["ignored.proxy_type"] += 1
            return None
        boot = self._boot(client, pkt.mac, ing, now, writes)
        if boot.filename is None:
            return None
        reply = self._reply(pkt, rtype, _ZERO, ing, None, client, None, None, boot, proxy=True)
        self.registry.exchange_event(pkt.mac, event(
            now, pkt.mac, "proxy." + o.MSG_NAMES[rtype].lower(), file=boot.filename,
            port=ing.port, iface=ing.iface), writes)
        if ing.port == o.PXE_PORT:
            # PXE 2.1 §2.2.2: the 4011 reply goes back where the request came from.
            return Outcome(reply, ing.src, None, writes, kind="PROXY_" + o.MSG_NAMES[rtype])
        out = self._out(pkt, reply, rtype, writes, ing)
        out.kind = "PROXY_" + o.MSG_NAMES[rtype]
        return out

    # -- what goes into a reply (dhcp_reply.py builds it) ------------------
    def _lease_time(self, net: Network) -> int:
        return net.lease_time or self.s.lease_time

    def _hostname(self, pkt, net, mac) -> str | None:
        res = net.reservation_of.get(mac)
        if res is not None and res.hostname:
            return res.hostname
        return option_hostname(pkt.options.get(o.OPT_HOSTNAME))

    def _boot(self, client, mac, ing, now, writes, net=None) -> pxe.BootAnswer:
        ans = pxe.decide(client, mac, ing.server_ip, self.boots.of(net))
        if ans.event:
            self.counters["boot.no_file"] += 1
            writes.append(event(now, mac, "boot.unsupported", arch=client.arch,
                                arch_name=client.arch_name, reason=ans.event))
        return ans

    def _out(self, pkt, reply: bytes, rtype: int, writes, ing) -> Outcome:
        """RFC 2131 §4.1: relay -> giaddr:67; ciaddr -> unicast; broadcast
        bit or no address -> broadcast; else unicast to yiaddr at chaddr."""
        if pkt.giaddr != _ZERO:
            dest = self._relay_dest.get(pkt.giaddr)     # only trusted relays get here
            if dest is None:
                dest = self._relay_dest[pkt.giaddr] = (socket.inet_ntoa(pkt.giaddr),
                                                        o.SERVER_PORT)
            arp = None
        elif pkt.ciaddr != _ZERO:
            dest, arp = (socket.inet_ntoa(pkt.ciaddr), o.CLIENT_PORT), None
        else:
            yiaddr = reply[16:20]
            if pkt.flags & o.FLAG_BROADCAST or yiaddr == _ZERO or pkt.htype != 1 \
                    or pkt.hlen != 6:
                dest, arp = (_BCAST, o.CLIENT_PORT), None
            else:
                ip = socket.inet_ntoa(yiaddr)
                dest, arp = (ip, o.CLIENT_PORT), (ip, pkt.chaddr)
        # Positional: keyword arguments cost ~0.1 us more, per packet.
        return Outcome(reply, dest, arp, writes, False, None, o.MSG_NAMES[rtype])

