"""Building the DHCP server's replies (a mixin of DhcpEngine).  Pure.

The options a reply carries, and in which order, depend on a few things
(reply type, server address, lease time, network, hostname, boot answer, the
client's parameter request list), not on the client: ``_reply`` encodes them
once per such key and packs each reply from that template, the client's UUID
and relay agent option slotted in (codec.dhcp.encode_reply).  The per-exchange
event of the host's log is built here too, without json.dumps per packet.
"""
from __future__ import annotations

import json
import socket

from ..codec import dhcp_options as o
from ..codec.dhcp import Packet, encode, encode_reply, option_tlv
from ..writes import EventWrite, event_json
from . import pxe
from .dhcp_values import max_message
from .leases import Network

_ZERO = b"\0\0\0\0"
# PXE 2.1 §2.4.2 option 43 sub-option 6 PXE_DISCOVERY_CONTROL = 8: "if a boot
# file name is present in the offer, download it" (no menu, no discovery).
PXE_VENDOR_OPTS = bytes((6, 1, 8, 255))
# RFC 2131 §4.3.1: options a server may always include; order after the
# client's own parameter request list.
_FIRST = (o.OPT_MESSAGE_TYPE, o.OPT_SERVER_ID, o.OPT_LEASE_TIME, o.OPT_RENEWAL_T1,
          o.OPT_REBINDING_T2)
_MSG_TYPE_BYTES = {t: bytes((t,)) for t in o.MSG_NAMES}

_json_cache: dict = {}
_event_heads: dict = {}


def renewal_time(lease_time: int) -> int:
    """T1, the time (seconds after the ACK) at which a client renews: half
    its lease, RFC 2131 §4.4.5's default, sent in option 58."""
    return lease_time // 2


def rebinding_time(lease_time: int) -> int:
    """T2, when a client that could not renew starts to rebind (any
    server): 7/8 of its lease (RFC 2131 §4.4.5), option 59."""
    return lease_time * 7 // 8


def _json(value) -> str:
    """json.dumps for the few distinct server-side strings (file names,
    interface names) that go into hot-path events; memoized."""
    j = _json_cache.get(value)
    if j is None:
        if len(_json_cache) > 1024:
            _json_cache.clear()
        j = _json_cache[value] = json.dumps(value)
    return j


class ReplyBuilder:
    """DhcpEngine's reply building; the engine owns the caches it uses
    (_lease_cache, _net_cache, _reply_cache: set_networks drops them)."""

    @staticmethod
    def _exchange_event(now, mac, kind, boot, ing, yiaddr: bytes) -> EventWrite:
        """The per-exchange event of the host's log (hot path: no json.dumps;
        the JSON up to the address is built once per boot file and interface)."""
        head = _event_heads.get((boot.filename, ing.iface))
        if head is None:
            if len(_event_heads) >= 1024:
                _event_heads.clear()
            head = _event_heads[(boot.filename, ing.iface)] = '{"file":%s,"iface":%s,"ip":"' % (
                _json(boot.filename), _json(ing.iface))
        return event_json(now, mac, kind, head + socket.inet_ntoa(yiaddr) + '"}')

    def _lease_opts(self, lease_time: int) -> dict[int, bytes]:
        opts = self._lease_cache.get(lease_time)
        if opts is None:
            opts = self._lease_cache[lease_time] = {
                o.OPT_LEASE_TIME: o.u32(lease_time),
                o.OPT_RENEWAL_T1: o.u32(renewal_time(lease_time)),   # RFC 2131 §4.4.5
                o.OPT_REBINDING_T2: o.u32(rebinding_time(lease_time))}
        return opts

    def _net_opts(self, net: Network) -> dict[int, bytes]:
        """A network's options, encoded once (the hot path only copies them)."""
        opts = self._net_cache.get(net.name)
        if opts is None:
            opts = {o.OPT_SUBNET_MASK: net.subnet.netmask.packed}
            if net.router:
                opts[o.OPT_ROUTER] = o.ip_bytes(net.router)
            if net.dns:
                opts[o.OPT_DNS] = o.ip_list(net.dns)
            if net.domain:
                opts[o.OPT_DOMAIN_NAME] = net.domain.encode()
            opts[o.OPT_BROADCAST] = net.subnet.broadcast_address.packed
            self._net_cache[net.name] = opts
        return opts

    def _reply(self, pkt, rtype, yiaddr, ing, net, client, lease_time, hostname,
               boot: pxe.BootAnswer, proxy: bool = False) -> bytes:
        popts = pkt.options
        uuid = popts.get(o.OPT_CLIENT_UUID) if proxy or boot.filename else None
        # Which options a reply carries, and in which order, depends on the
        # few things in this key, not on the client: the encoded options are
        # built once per key (the hot path of a boot storm), the client's
        # UUID (echoed) and relay agent option (echoed last) slotted in.
        key = (rtype, ing.server_ip, lease_time, net.name if net is not None else None,
               hostname, boot, proxy, proxy and client.http, proxy and client.pxe,
               uuid is not None, popts.get(o.OPT_PARAM_REQUEST, b""))
        tpl = self._reply_cache.get(key)
        if tpl is None:
            if len(self._reply_cache) >= 512:
                self._reply_cache.clear()
            tpl = self._reply_cache[key] = self._reply_template(
                rtype, ing, net, client, lease_time, hostname, boot, proxy,
                uuid is not None, popts.get(o.OPT_PARAM_REQUEST, b""))
        siaddr, file, before, after = tpl
        tlvs = before if uuid is None else before + option_tlv(o.OPT_CLIENT_UUID, uuid) + after
        relay = popts.get(o.OPT_RELAY_AGENT)
        if relay is not None:                                     # RFC 3046: echo, last
            tlvs += option_tlv(o.OPT_RELAY_AGENT, relay)
        size = max_message(popts)
        out = encode_reply(pkt, yiaddr, siaddr, file, tlvs, size)
        if out is None:
            # Too big for the options field: the general encoder overloads
            # file/sname or leaves the lowest-priority options out.
            r = Packet(o.BOOTREPLY, pkt.htype, pkt.hlen, 0, pkt.xid, 0, pkt.flags, pkt.ciaddr,
                       yiaddr, siaddr, pkt.giaddr, pkt.chaddr, b"", file)
            r.options = self._reply_options(rtype, ing, net, client, lease_time, hostname,
                                            boot, proxy, uuid, popts)
            out = encode(r, size)
        return out

    def _reply_template(self, rtype, ing, net, client, lease_time, hostname, boot, proxy,
                        has_uuid, prl) -> tuple[bytes, bytes, bytes, bytes]:
        """(siaddr, file, options before the UUID, options after it)."""
        mark = b"\0" * 16 if has_uuid else None
        opts = self._reply_options(rtype, ing, net, client, lease_time, hostname, boot, proxy,
                                   mark, {o.OPT_PARAM_REQUEST: prl} if prl else {})
        before, after, seen = [], [], False
        for code, val in opts.items():
            if code == o.OPT_CLIENT_UUID:
                seen = True
                continue
            (after if seen else before).append(option_tlv(code, val))
        siaddr, file = _ZERO, b""
        if boot.filename:
            fn = boot.filename.encode()
            if len(fn) < 128:
                file = fn
            if boot.next_server:
                siaddr = socket.inet_aton(boot.next_server)
        return siaddr, file, b"".join(before), b"".join(after)

    def _reply_options(self, rtype, ing, net, client, lease_time, hostname, boot, proxy,
                       uuid, popts) -> dict[int, bytes]:
        """The reply's options in wire order: _FIRST, then the client's
        option 55 order, then the rest; the relay agent option last."""
        avail: dict[int, bytes] = {o.OPT_MESSAGE_TYPE: _MSG_TYPE_BYTES[rtype],
                                   o.OPT_SERVER_ID: socket.inet_aton(ing.server_ip)}
        if lease_time is not None:
            avail.update(self._lease_opts(lease_time))
        if net is not None:
            avail.update(self._net_opts(net))
        if hostname:
            avail[o.OPT_HOSTNAME] = hostname.encode()
        if boot.filename:
            avail[o.OPT_BOOTFILE] = boot.filename.encode()
            if boot.next_server:
                avail[o.OPT_TFTP_SERVER] = boot.next_server.encode()
        if proxy:
            avail[o.OPT_VENDOR_CLASS] = b"HTTPClient" if client.http else b"PXEClient"
            if client.pxe:
                avail[o.OPT_VENDOR_SPECIFIC] = PXE_VENDOR_OPTS
        elif boot.vendor_class:
            avail[o.OPT_VENDOR_CLASS] = boot.vendor_class
        if uuid is not None:
            avail[o.OPT_CLIENT_UUID] = uuid                 # PXE 2.1: echo the UUID
        opts: dict[int, bytes] = {}
        for code in _FIRST:
            if code in avail:
                opts[code] = avail[code]
        for code in popts.get(o.OPT_PARAM_REQUEST, b""):    # option 55 order
            if code in avail and code not in opts:
                opts[code] = avail[code]
        for code, val in avail.items():
            if code not in opts:
                opts[code] = val
        if o.OPT_RELAY_AGENT in popts:
            opts[o.OPT_RELAY_AGENT] = popts[o.OPT_RELAY_AGENT]
        return opts
