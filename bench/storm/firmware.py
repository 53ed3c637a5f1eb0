"""What real firmware sends, read from the captured packets (no scapy: the
storm client stays light).

tests/fixtures/firmware-dhcp/*.pcap hold DHCP exchanges of real firmware
under qemu (SUMMARY.md there).  For each simulated family this module takes
the first DISCOVER and the first REQUEST of each boot stage with their
options in the captured order, so a simulated host sends exactly the option
set and order of the firmware, with its own MAC, client-id and UUID slotted in:

  uefi  EDK2 x64 UEFI PXE (arch 7, 'PXEClient:Arch:00007:UNDI:003000', no
        user class), then the ipxe.efi it loaded (user class 'iPXE')
  bios  SeaBIOS's iPXE PXE ROM (arch 0, user class 'PXE-ROM'), then the
        undionly.kpxe it loaded (user class 'iPXE')

The TFTP read requests are the captured ones too (uefi: a tsize probe that
the client aborts with ERROR 8, then the transfer with blksize 1468 and
windowsize 4; bios: blksize 1432 + tsize).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "firmware-dhcp"
MAGIC = b"\x63\x82\x53\x63"

# family -> (pcap, user class of stage 1 (None: absent), of stage 2)
SOURCES = {
    "uefi": ("uefi-pxe-ipxe.efi-virtio.pcap", None, b"iPXE"),
    "bios": ("bios-chain-undionly-virtio.pcap", b"PXE-ROM", b"iPXE"),
}
# The captured RRQs (tests/fixtures/firmware-dhcp, udp port 69): a list of
# (options, probe) - probe: the client aborts after the OACK (ERROR 8).
RRQS = {
    "uefi": [({"tsize": "0", "blksize": "1468", "windowsize": "4"}, True),
             ({"blksize": "1468", "windowsize": "4"}, False)],
    "bios": [({"blksize": "1432", "tsize": "0"}, False)],
}


@dataclass(frozen=True)
class Stage:
    discover: tuple[tuple[int, bytes], ...]
    request: tuple[tuple[int, bytes], ...]


def read_pcap(path: Path):
    """Every Ethernet/IPv4/UDP payload in a classic pcap: (sport, dport, payload)."""
    raw = path.read_bytes()
    magic = raw[:4]
    end = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(end + "I", raw[20:24])[0]
    if linktype != 1:
        raise ValueError(f"{path.name}: link type {linktype}, expected Ethernet")
    off = 24
    while off + 16 <= len(raw):
        incl = struct.unpack(end + "I", raw[off + 8:off + 12])[0]
        frame = raw[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue
        ihl = (frame[14] & 0x0F) * 4
        udp = 14 + ihl
        sport, dport = struct.unpack("!HH", frame[udp:udp + 4])
        yield sport, dport, frame[udp + 8:]


def options(bootp: bytes) -> list[tuple[int, bytes]]:
    """DHCP options in wire order (pad skipped, end stops)."""
    if len(bootp) < 240 or bootp[236:240] != MAGIC:
        raise ValueError("not a DHCP message")
    out, i = [], 240
    while i < len(bootp):
        code = bootp[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        n = bootp[i + 1]
        out.append((code, bootp[i + 2:i + 2 + n]))
        i += 2 + n
    return out


def _stage(msgs, user_class) -> Stage:
    found: dict[int, tuple] = {}
    for opts in msgs:
        d = dict(opts)
        if d.get(77) != user_class or not d.get(60, b"").startswith(b"PXEClient"):
            continue
        mtype = d.get(53, b"\0")[0]
        if mtype in (1, 3) and mtype not in found:
            found[mtype] = tuple(opts)
    if 1 not in found or 3 not in found:
        raise ValueError(f"no DISCOVER+REQUEST with user class {user_class!r}")
    return Stage(found[1], found[3])


def load(family: str) -> tuple[Stage, Stage]:
    """(firmware stage, iPXE stage) of `family` from its capture."""
    pcap, uc1, uc2 = SOURCES[family]
    msgs = [options(p) for sp, dp, p in read_pcap(FIXTURES / pcap)
            if sp == 68 and dp == 67 and p[:1] == b"\x01"]
    return _stage(msgs, uc1), _stage(msgs, uc2)


def host_options(template, mac: bytes, uuid: bytes, requested: bytes | None = None,
                 server: bytes | None = None) -> list[tuple[int, bytes]]:
    """The captured options with this host's identity: 61 = 01 + MAC,
    97 = type 0 + UUID; in a REQUEST 50/54 = the offer's address/server
    (added after 53 when the capture did not carry them)."""
    out, seen = [], set()
    for code, val in template:
        if code == 61:
            val = b"\x01" + mac
        elif code == 97:
            val = b"\x00" + uuid
        elif code == 50 and requested is not None:
            val = requested
        elif code == 54 and server is not None:
            val = server
        seen.add(code)
        out.append((code, val))
    extra = [(c, v) for c, v in ((50, requested), (54, server)) if v is not None and c not in seen]
    return out[:1] + extra + out[1:]


def dhcp_message(xid: int, secs: int, mac: bytes, opts, broadcast: bool = True) -> bytes:
    """A client BOOTP/DHCP message (padded to 300 bytes, as firmware sends)."""
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, min(secs, 0xFFFF),
                       0x8000 if broadcast else 0, bytes(4), bytes(4), bytes(4), bytes(4),
                       mac + bytes(10), b"", b"")
    body = b"".join(bytes((c, len(v))) + v for c, v in opts) + b"\xff"
    msg = head + MAGIC + body
    return msg + bytes(max(0, 300 - len(msg)))


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ether_frame(mac: bytes, payload: bytes, ident: int) -> bytes:
    """Broadcast Ethernet/IPv4/UDP 0.0.0.0:68 -> 255.255.255.255:67, from `mac`
    (UDP checksum 0: allowed for IPv4, as some ROMs send)."""
    udp = struct.pack("!HHHH", 68, 67, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0,
                     bytes(4), b"\xff\xff\xff\xff")
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp


@dataclass
class Reply:
    mtype: int
    xid: int
    chaddr: bytes
    yiaddr: str
    siaddr: str
    server_id: str | None
    bootfile: str
    next_server: str | None


def parse_reply(data: bytes) -> Reply | None:
    """A server's BOOTREPLY (None for anything else)."""
    if len(data) < 240 or data[0] != 2 or data[236:240] != MAGIC:
        return None
    try:
        opts = dict(options(data))
    except (ValueError, IndexError):
        return None
    xid = struct.unpack("!I", data[4:8])[0]
    ip = lambda b: ".".join(str(x) for x in b)   # noqa: E731
    f = (opts.get(67) or data[108:236]).split(b"\0", 1)[0]     # dnsmasq sends 67 with a NUL
    sid = opts.get(54)
    nxt = opts.get(66)
    return Reply(opts.get(53, b"\0")[0], xid, data[28:34], ip(data[16:20]), ip(data[20:24]),
                 ip(sid) if sid and len(sid) == 4 else None,
                 f.decode("latin-1"), nxt.decode("latin-1") if nxt else None)
