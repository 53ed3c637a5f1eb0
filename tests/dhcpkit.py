"""Builders for DHCP client packets in tests (real encodings via our codec)."""
from __future__ import annotations

import socket

from netbootd.codec import dhcp
from netbootd.codec import dhcp_options as o

SERVER = "10.77.0.1"


def mac_bytes(i: int) -> bytes:
    return bytes([0x52, 0x54, 0x00, (i >> 16) & 255, (i >> 8) & 255, i & 255])


def client_packet(mtype: int, mac: bytes, xid: int = 0x1234, *, requested: str | None = None,
                  server_id: str | None = None, ciaddr: str = "0.0.0.0",
                  giaddr: str = "0.0.0.0", flags: int = 0, prl: bytes | None = b"\x01\x03\x06",
                  extra: dict[int, bytes] | None = None) -> dhcp.Packet:
    opts: dict[int, bytes] = {o.OPT_MESSAGE_TYPE: bytes([mtype])}
    if requested:
        opts[o.OPT_REQUESTED_IP] = socket.inet_aton(requested)
    if server_id:
        opts[o.OPT_SERVER_ID] = socket.inet_aton(server_id)
    if prl is not None:
        opts[o.OPT_PARAM_REQUEST] = prl
    if extra:
        opts.update(extra)
    return dhcp.Packet(op=1, htype=1, hlen=6, xid=xid, flags=flags,
                       ciaddr=socket.inet_aton(ciaddr), giaddr=socket.inet_aton(giaddr),
                       chaddr=mac, options=opts)


def wire(pkt: dhcp.Packet) -> bytes:
    return dhcp.encode(pkt, 1500)


PXE_UEFI = {o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00007:UNDI:003000", o.OPT_CLIENT_ARCH: b"\x00\x07",
            o.OPT_CLIENT_UUID: bytes.fromhex("005e3f7c8a2d1b3e4c9f1077aa00bb0010")}
PXE_BIOS = {o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001", o.OPT_CLIENT_ARCH: b"\x00\x00"}
IPXE_BIOS = {**PXE_BIOS, o.OPT_USER_CLASS: b"iPXE", o.OPT_IPXE_ENCAP: b"\x13\x01\x01"}
HTTP_UEFI = {o.OPT_VENDOR_CLASS: b"HTTPClient:Arch:00016:UNDI:003000", o.OPT_CLIENT_ARCH: b"\x00\x10"}
