"""Classify a DHCP client and decide what it boots.  Pure functions.

Sources: RFC 4578 (options 93, 94, 97), PXE 2.1 (option 60 "PXEClient", option
43 discovery control), UEFI 2.x HTTP Boot (option 60 "HTTPClient", URL boot
file), iPXE (option 77 "iPXE", option 175); ../shared/REFERENCE.md.
"""
from __future__ import annotations

from typing import NamedTuple

from ..codec.dhcp_options import (
    OPT_CLIENT_ARCH, OPT_CLIENT_NDI, OPT_CLIENT_UUID, OPT_IPXE_ENCAP, OPT_USER_CLASS,
    OPT_VENDOR_CLASS,
)
from ..config import BootConfig
from ..model import HTTP_ARCHES, arch_name


class Client(NamedTuple):
    """What a DHCP client told us about itself (a NamedTuple: built, hashed
    and compared in C on the DHCP hot path; immutable like the dataclass it
    was)."""
    arch: int | None            # first entry of option 93
    vendor_class: str | None    # option 60, printable
    pxe: bool                   # PXEClient firmware
    http: bool                  # UEFI HTTP Boot firmware (HTTPClient)
    ipxe: bool                  # already running iPXE
    uuid: str | None            # SMBIOS UUID from option 97, canonical form
    undi: tuple[int, int, int] | None  # option 94: type, major, minor
    # Names of wire values that were out of range or malformed and are
    # treated as absent (the engine counts them): "arch", "undi", "uuid".
    rejected: tuple[str, ...] = ()

    @property
    def netboot(self) -> bool:
        return self.pxe or self.http or self.ipxe

    @property
    def arch_name(self) -> str:
        return arch_name(self.arch)


# RFC 4578 §2.1: option 93 entries are 16-bit; PXE 2.1 §2.2.5 writes the same
# type in option 60 as five decimal digits ("Arch:00007").  Anything longer or
# larger cannot be an architecture type (and once overflowed SQLite INTEGER:
# "PXEClient:Arch:99999999999999999999" failed a whole group commit).
ARCH_MAX = 0xFFFF
_ARCH_DIGITS = 5
# PXE 2.1 §2.2.5: "UNDI:MMMmmm", major and minor as three digits each.
_UNDI_DIGITS = 6
VENDOR_CLASS_MAX = 128     # printable chars kept of option 60 (255 on the wire)


def printable(raw: bytes | None, limit: int = 128) -> str | None:
    """Host-controlled bytes as safe text: printable ASCII only, bounded."""
    if raw is None:
        return None
    return "".join(chr(b) if 32 <= b < 127 else "?" for b in raw[:limit])


def decode_uuid(raw: bytes | None) -> str | None:
    """Option 97 (RFC 4578 §2.3): type 0 + 16-byte GUID.  EDK2 and iPXE put
    the SMBIOS UUID's first three fields in little-endian (GUID layout), so
    swap them back to get the UUID that dmidecode prints."""
    if raw is None or len(raw) != 17 or raw[0] != 0:
        return None
    g = raw[1:]
    b = g[3::-1] + g[5:3:-1] + g[7:5:-1] + g[8:]
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _decimal(raw: bytes, digits: int, top: int) -> int | None:
    """A field of at most `digits` ASCII digits whose value is <= top, else None."""
    if not raw or len(raw) > digits or not raw.isdigit():
        return None
    v = int(raw)
    return v if v <= top else None


# classify() depends only on these options' values; a returning client sends
# the same ones every time, so its Client is looked up, not rebuilt (bounded:
# a flood of distinct values costs at most _CACHE_MAX entries).
_CACHE_MAX = 16384
_cache: dict[tuple, Client] = {}


def classify(options: dict[int, bytes]) -> Client:
    """What the client says about itself, every value bounded and typed:
    an out-of-range number or malformed field is treated as absent and
    named in `rejected` (never stored, never a crash)."""
    get = options.get
    key = (get(OPT_VENDOR_CLASS), get(OPT_CLIENT_ARCH), get(OPT_USER_CLASS),
           OPT_IPXE_ENCAP in options, get(OPT_CLIENT_NDI), get(OPT_CLIENT_UUID))
    c = _cache.get(key)
    if c is None:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        c = _cache[key] = _classify(options)
    return c


def _classify(options: dict[int, bytes]) -> Client:
    rejected = []
    vc = options.get(OPT_VENDOR_CLASS)
    arch_raw = options.get(OPT_CLIENT_ARCH)
    # RFC 4578 §2.1: a list of 16-bit types; the first is the one in use.
    arch = None
    if arch_raw is not None:
        if len(arch_raw) >= 2:
            arch = int.from_bytes(arch_raw[:2], "big")
        else:
            rejected.append("arch")
    pxe = bool(vc) and vc.startswith(b"PXEClient")
    http = bool(vc) and vc.startswith(b"HTTPClient")
    if vc and (pxe or http):
        # "PXEClient:Arch:00007:UNDI:003000" carries the arch too (PXE 2.1).
        parts = vc.split(b":")
        if len(parts) >= 3 and parts[1] == b"Arch":
            vc_arch = _decimal(parts[2], _ARCH_DIGITS, ARCH_MAX)
            if vc_arch is None:
                rejected.append("arch")
            elif arch is None:
                arch = vc_arch
        if len(parts) >= 5 and parts[3] == b"UNDI" and \
                _decimal(parts[4], _UNDI_DIGITS, 999999) is None:
            rejected.append("undi")
    uc = options.get(OPT_USER_CLASS)
    # iPXE sends option 77 raw ("iPXE"); RFC 3004 form is length-prefixed.
    # An explicit other user class wins over option 175: it is how a site (or
    # a ROM told `set user-class ...`) asks for the plain-PXE chain.
    ipxe = uc in (b"iPXE", b"\x04iPXE") or (uc is None and OPT_IPXE_ENCAP in options)
    ndi = options.get(OPT_CLIENT_NDI)
    # RFC 4578 §2.2: exactly three bytes, type (1 = UNDI), major, minor.
    undi = tuple(ndi) if ndi and len(ndi) == 3 else None
    if ndi is not None and undi is None:
        rejected.append("undi")
    raw_uuid = options.get(OPT_CLIENT_UUID)
    uuid = decode_uuid(raw_uuid)
    if raw_uuid is not None and uuid is None:
        rejected.append("uuid")
    return Client(arch, printable(vc, VENDOR_CLASS_MAX), pxe, http, ipxe, uuid, undi,
                  tuple(dict.fromkeys(rejected)))


class BootAnswer(NamedTuple):
    """What a client boots (a NamedTuple: part of the engine's reply-cache key)."""
    filename: str | None            # file field / option 67; a URL for HTTP clients
    next_server: str | None         # siaddr / option 66 (TFTP)
    vendor_class: bytes | None      # option 60 to echo: PXEClient / HTTPClient
    event: str | None = None        # why nothing could be offered, for the host's log


NO_BOOT = BootAnswer(None, None, None)      # not a netboot client: nothing to boot


def script_url(base: str, mac: str) -> str:
    return f"{base}/boot/{mac.replace(':', '-')}.ipxe"


def _http_base(cfg: BootConfig, server_ip: str) -> str:
    return cfg.http_base or f"http://{server_ip}:{cfg.http_port}"


def decide(client: Client, mac: str, server_ip: str, cfg: BootConfig) -> BootAnswer:
    """What `client` should boot next.  iPXE gets its boot script over HTTP
    (so there is no chainload loop); firmware gets the right iPXE binary."""
    if not (client.ipxe or client.http or client.pxe) and client.arch not in HTTP_ARCHES:
        return NO_BOOT                    # the common non-netboot client: nothing to build
    tftp = cfg.tftp_server or server_ip
    # No option 60 "PXEClient" in a plain DHCP reply: EDK2 reads PXEClient
    # without option 43 as a BINL offer and asks a boot server on UDP 4011
    # instead of fetching the file (seen with OVMF; dnsmasq sends none).
    # Proxy and port-4011 replies add it (dhcp_engine._reply, proxy=True).
    if client.ipxe:
        return BootAnswer(script_url(_http_base(cfg, server_ip), mac), tftp, None)
    if client.http or (client.arch in HTTP_ARCHES and not client.pxe):
        http_base = _http_base(cfg, server_ip)
        name = None
        if client.arch in (16, 17):       # x64 (EBC-labelled too)
            name = cfg.uefi_x64
        elif client.arch == 19:
            name = cfg.uefi_arm64
        elif client.arch == 15:
            name = cfg.uefi_x86
        if not name:
            return BootAnswer(None, None, None,
                              f"no HTTP boot file for arch {client.arch_name}")
        return BootAnswer(f"{http_base}/files/{name}", None, b"HTTPClient")
    if client.arch == 0:                  # a PXE client (the first test above)
        name = cfg.bios
    elif client.arch in (7, 9):
        name = cfg.uefi_x64
    elif client.arch == 6:
        name = cfg.uefi_x86
    elif client.arch == 11:
        name = cfg.uefi_arm64
    else:
        name = None
    if not name:
        return BootAnswer(None, None, None,
                          f"no boot file configured for arch {client.arch_name}")
    return BootAnswer(name, tftp, None)
