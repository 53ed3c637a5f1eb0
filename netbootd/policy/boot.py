"""Boot profiles: host -> BootSpec -> iPXE script.  Pure (templates are data).

Escaping (DESIGN rule 9): every ``{{ value }}`` in a boot template passes
through ``ipxe_escape`` (Jinja2 ``finalize``), which turns anything that is
not an inert URL-ish character into %XX.  A host-controlled string therefore
always lands as one literal token: no whitespace to start a new argument, no
newline to start a command, no ``${`` to expand settings, no ``||``/``&&``.
Only values the admin configured, validated here, are marked ``IpxeSafe``
and pass through unchanged.
"""
from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ..model import Host, HostState

PROFILES = ("discover", "linux", "localboot", "sanboot", "shell")

# Characters that are never special to iPXE's script parser inside a token.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/=,+@")
_URL_RE = re.compile(r"^(https?|tftp)://[A-Za-z0-9._~:/?=,+@%&-]+$")
_NAME_RE = re.compile(r"^[A-Za-z0-9._+-][A-Za-z0-9._+/-]{0,254}$")
# SAN URIs iPXE understands (ipxe.org/sanuri): iscsi:, aoe:, http(s):, fcp:, ib_srp:
_SAN_RE = re.compile(r"^(iscsi|aoe|http|https|fcp|ib_srp):[A-Za-z0-9._~:/?=,+@%-]+$")
# A UEFI loader path on a SAN volume, iPXE's `sanboot --filename` (backslashes:
# forward slashes fail with 0x7f22208e, docs/storage.md "Sanboot").
EFI_FILENAME_PATTERN = r"^(\\[A-Za-z0-9_.+-]{1,64}){1,8}$"
_EFI_RE = re.compile(EFI_FILENAME_PATTERN)
_IQN_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[A-Za-z0-9.-]+(:[A-Za-z0-9._:-]+)?|eui\.[0-9A-Fa-f]{16})$")


class IpxeSafe(str):
    """A string already vetted as literal iPXE script text."""


class ProfileError(ValueError):
    """A bad profile or profile argument; the message names the key."""


def ipxe_escape(value) -> str:
    if isinstance(value, IpxeSafe):
        return value
    if value is None:
        return ""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in str(value).encode("utf-8"))


def _single_line(key: str, text: str, limit: int = 2048) -> str:
    if not isinstance(text, str):
        raise ProfileError(f"{key}: must be a string")
    if len(text) > limit:
        raise ProfileError(f"{key}: longer than {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ProfileError(f"{key}: control characters (newline, tab, ...) are not allowed")
    return text


def _location(key: str, value) -> str:
    """An admin-given kernel/initrd: a URL, or a file name under /files/."""
    value = _single_line(key, value, 1024)
    if _URL_RE.match(value):
        return value
    if _NAME_RE.match(value) and ".." not in value.split("/"):
        return value
    raise ProfileError(f"{key}: {value!r} is neither an http(s)/tftp URL nor a file name "
                       "under the files root")


def validate_args(profile: str, args: dict) -> dict:
    """Check an assignment's arguments; returns the normalized dict."""
    if profile not in PROFILES:
        raise ProfileError(f"profile: {profile!r} is not one of {', '.join(PROFILES)}")
    if not isinstance(args, dict):
        raise ProfileError("args: must be an object")
    allowed = {"linux": {"kernel", "initrds", "cmdline"},
               "sanboot": {"san_uri", "initiator_iqn", "efi_filename"}}.get(profile, set())
    for k in args:
        if k not in allowed:
            raise ProfileError(f"{k}: not an argument of profile {profile!r}"
                               + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""))
    out: dict = {}
    if profile == "linux":
        if "kernel" not in args:
            raise ProfileError("kernel: required for profile 'linux'")
        out["kernel"] = _location("kernel", args["kernel"])
        initrds = args.get("initrds", [])
        if not isinstance(initrds, list) or len(initrds) > 16:
            raise ProfileError("initrds: must be a list of at most 16 locations")
        out["initrds"] = [_location(f"initrds[{i}]", x) for i, x in enumerate(initrds)]
        out["cmdline"] = _single_line("cmdline", args.get("cmdline", ""))
    elif profile == "sanboot":
        uri = _single_line("san_uri", args.get("san_uri", ""), 1024)
        if not _SAN_RE.match(uri):
            raise ProfileError(f"san_uri: {uri!r} is not a SAN URI like "
                               "iscsi:10.0.0.1::::iqn.2026-01.lan.netboot:vol1")
        out["san_uri"] = uri
        if args.get("initiator_iqn", "") != "":
            iqn = _single_line("initiator_iqn", args["initiator_iqn"], 223)
            if not _IQN_RE.match(iqn):
                raise ProfileError(f"initiator_iqn: {iqn!r} is not an iqn./eui. name")
            out["initiator_iqn"] = iqn
        if "efi_filename" in args:
            efi = args["efi_filename"]
            if not isinstance(efi, str) or not _EFI_RE.match(efi):
                raise ProfileError(f"efi_filename: {efi!r} is not a UEFI path like "
                                   "\\EFI\\debian\\shimx64.efi (backslashes)")
            out["efi_filename"] = efi
    return out


@dataclass(frozen=True)
class BootSpec:
    """Everything a boot template needs, already decided."""
    profile: str
    mac: str
    http_base: str
    args: dict = field(default_factory=dict)
    hostname: str | None = None
    uuid: str | None = None
    # sanboot: the host's own CHAP ({username, password, reverse_username,
    # reverse_password}), looked up when its script is rendered; never in
    # args (those are shown in views and events), never in a repr.
    chap: dict | None = field(default=None, repr=False, compare=False)


def boot_spec(host: Host | None, mac: str, http_base: str, default_profile: str) -> BootSpec:
    """Which profile a host boots: its assignment while assigned/booting/
    active, else the default (unknown hosts and idle resources)."""
    profile, args = default_profile, {}
    if host is not None and host.profile and host.state in (
            HostState.ASSIGNED, HostState.BOOTING, HostState.ACTIVE):
        profile, args = host.profile, host.profile_args
    if host is not None and host.state == HostState.RETIRED:
        profile, args = "localboot", {}
    return BootSpec(profile, mac, http_base, args,
                    host.hostname if host else None, host.uuid if host else None)


def _url(base: str, location: str) -> str:
    return location if "://" in location else f"{base}/files/{location}"


def template_context(spec: BootSpec, discover_cmdline: str = "") -> dict:
    base = spec.http_base
    ctx: dict = {"mac": spec.mac, "hostname": spec.hostname, "uuid": spec.uuid,
                 "profile": spec.profile,
                 "script_url": IpxeSafe(f"{base}/boot/{spec.mac.replace(':', '-')}.ipxe"),
                 "server": IpxeSafe(base)}
    if spec.profile == "discover":
        ctx["kernel"] = IpxeSafe(f"{base}/files/netbootd/vmlinuz")
        ctx["initrd"] = IpxeSafe(f"{base}/files/netbootd/discover.img")
        ctx["cmdline"] = IpxeSafe(_single_line("discover_cmdline", discover_cmdline))
    elif spec.profile == "linux":
        a = spec.args
        ctx["kernel"] = IpxeSafe(_url(base, a["kernel"]))
        ctx["initrds"] = [IpxeSafe(_url(base, x)) for x in a.get("initrds", [])]
        # ipxe.efi (Debian's 2019 build) passes an initrd only when named on
        # the command line (REFERENCE.md); harmless for BIOS kernels.
        ctx["initrd_names"] = IpxeSafe(" ".join(
            f"initrd={x.rsplit('/', 1)[-1]}" for x in a.get("initrds", [])))
        ctx["cmdline"] = IpxeSafe(a.get("cmdline", ""))
    elif spec.profile == "sanboot":
        ctx["san_uri"] = IpxeSafe(spec.args["san_uri"])
        ctx["initiator_iqn"] = IpxeSafe(spec.args.get("initiator_iqn", ""))
        # validated above: backslash-separated names of [A-Za-z0-9_.+-] (ipxe_escape
        # would turn the backslashes into %5C, which iPXE does not undo here)
        ctx["efi_filename"] = IpxeSafe(spec.args.get("efi_filename", ""))
        chap = spec.chap or {}
        for key in ("username", "password", "reverse_username", "reverse_password"):
            # CHAP names and secrets are policy/iscsi-validated (A-Z a-z 0-9 _ ~ + = . -
            # and : for names): ipxe_escape leaves them as they are
            ctx[key] = chap.get(key) or ""
    return ctx


def default_templates_dir() -> Path:
    """netbootd/boot_templates/, package data: found in a checkout and in an
    installed wheel alike (a wheel is unpacked on install, so the resource is
    a directory on disk that Jinja2's FileSystemLoader can read)."""
    return Path(str(importlib.resources.files("netbootd") / "boot_templates"))


class Renderer:
    """Jinja2 over netbootd/boot_templates/<profile>.ipxe.j2 with iPXE escaping."""

    def __init__(self, templates_dir: str | Path | None = None, discover_cmdline: str = ""):
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir or default_templates_dir())),
            autoescape=False, finalize=ipxe_escape, undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
        self.discover_cmdline = discover_cmdline
        for p in PROFILES:          # fail at start-up, not at a host's boot
            self.env.get_template(f"{p}.ipxe.j2")

    def render(self, spec: BootSpec) -> str:
        text = self.env.get_template(f"{spec.profile}.ipxe.j2").render(
            template_context(spec, self.discover_cmdline))
        if not text.startswith("#!ipxe"):
            raise ProfileError(f"template {spec.profile}.ipxe.j2 does not start with #!ipxe")
        return text
