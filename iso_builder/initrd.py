"""Assemble the netbootd *discover initrd*: busybox + our agent + the guest's drivers.

Contents (a gzip'ed cpio newc archive the kernel unpacks as its initramfs):

    /init, /etc/udhcpc.script        from iso_builder/agent/ (package data)
    /lib/netbootd/*.sh, json.awk     the agent's helpers, sourced by /init
    /usr/sbin/kexec + its libraries  optional (iso_builder/kexec.py): `boot` actions kexec
    /usr/bin/curl + its libraries    optional, boot media only (iso_builder/tlsclient.py):
                                     HTTPS with a pinned public key
    /bin/busybox + applet symlinks   a *static* busybox (Debian's busybox-static)
    /lib/modules/<kver>/...ko        NIC and disk drivers (DEFAULT_MODULES) + deps, decompressed
                                     (load order: iso_builder/guest_kernel.py)
    /etc/netbootd/modules            those module paths in load order (init insmods them)
    /etc/netbootd/kernel-version     <kver>, so init can warn about a kernel mismatch
    /etc/netbootd/server             optional default server URL (command line wins)
    /dev/console c 5 1, /dev/null c 1 3   the kernel opens /dev/console before /init runs

Blocking: the daemon calls it off the reactor thread, with fetch=False.  Only the
install step and ``netbootd initrd build`` / ``python -m iso_builder.initrd`` pass
fetch=True, which may ``apt-get download`` busybox-static and kexec-tools once (into
the cache, never installed): a running daemon never fetches packages.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.resources
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from . import debs
from . import hashtool
from . import kexec as kexec_mod
from . import tlsclient
from .cpio import Archive, gzip_bytes
from .guest_kernel import (BOOT_DIR, MODULES_ROOT, guest_kernels, module_name, parse_builtin,
                           parse_modules_dep, resolve_modules, uncompressed_name)
from .toolpack import PackedTool

# The agent's sources (init, udhcpc.script) are package data of iso_builder,
# so an installed wheel builds the same initrd as a checkout.
INITRD_SRC = Path(str(importlib.resources.files("iso_builder") / "agent"))
# Where an installed static busybox may be (Debian's busybox-static: /bin/busybox).
SYSTEM_BUSYBOX = (Path("/bin/busybox"), Path("/usr/bin/busybox"))

DEFAULT_MODULES = ("virtio_net", "e1000", "virtio_blk", "virtio_scsi", "ahci", "sd_mod", "nvme",
                   "efivarfs")   # Secure Boot state (init loads it on UEFI only)

# (source file in agent/, path in the archive, mode)
SOURCES = (("init", "init", 0o755), ("udhcpc.script", "etc/udhcpc.script", 0o755),
           ("lib.sh", "lib/netbootd/lib.sh", 0o644), ("json.awk", "lib/netbootd/json.awk", 0o644),
           ("inventory.sh", "lib/netbootd/inventory.sh", 0o644),
           ("actions.sh", "lib/netbootd/actions.sh", 0o644),
           ("capture.sh", "lib/netbootd/capture.sh", 0o644))


class InitrdError(RuntimeError):
    pass


# -- the guest kernel (iso_builder/guest_kernel.py reads its module tables) -------
def default_kernel_version(modules_root: Path = MODULES_ROOT, boot_dir: Path = BOOT_DIR) -> str:
    ks = guest_kernels(modules_root, boot_dir)
    if not ks:
        raise InitrdError(
            f"no guest kernel: need /boot/vmlinuz-<kver> and {modules_root}/<kver>/modules.dep "
            "(Debian: apt-get install linux-image-amd64)")
    return ks[-1]["version"]


def read_module(path: Path) -> bytes:
    """Module bytes, decompressed: busybox insmod cannot read .ko.xz/.ko.zst/.ko.gz."""
    name = path.name
    raw = path.read_bytes()
    if name.endswith(".ko.xz"):
        return lzma.decompress(raw)
    if name.endswith(".ko.gz"):
        return gzip.decompress(raw)
    if name.endswith(".ko.zst"):
        zstd = shutil.which("zstd")
        if zstd is None:
            raise InitrdError(f"{path}: zstd-compressed module but no zstd tool "
                              "(apt-get install zstd)")
        r = subprocess.run([zstd, "-q", "-d", "-c", str(path)], capture_output=True)
        if r.returncode != 0:
            raise InitrdError(f"zstd -d {path}: {r.stderr.decode(errors='replace').strip()}")
        return r.stdout
    return raw



# -- busybox ---------------------------------------------------------------------
def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a PT_INTERP header (statically linked)."""
    try:
        with open(path, "rb") as f:
            ident = f.read(64)
            if ident[:4] != b"\x7fELF":
                return False
            is64 = ident[4] == 2
            end = "<" if ident[5] == 1 else ">"
            if is64:
                phoff, = struct.unpack_from(end + "Q", ident, 0x20)
                phentsize, phnum = struct.unpack_from(end + "HH", ident, 0x36)
            else:
                phoff, = struct.unpack_from(end + "I", ident, 0x1C)
                phentsize, phnum = struct.unpack_from(end + "HH", ident, 0x2A)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except (OSError, struct.error):
        return False
    for i in range(phnum):
        p_type, = struct.unpack_from(end + "I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def cache_dir() -> Path:
    base = os.environ.get("NETBOOTD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "netbootd")
    return Path(base)


def _fetch_busybox_static(dest: Path) -> Path:
    """apt-get download busybox-static and unpack it (dpkg -x) under `dest`.

    Not `apt-get install`: Debian's busybox-static conflicts with the dynamic
    busybox package other tests use, so we only unpack it into our cache.
    """
    try:
        debs.require_tools("apt-get", "dpkg", what="busybox-static (no static busybox found)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            found = debs.download(["busybox-static"], Path(tmp))
            debs.unpack(found[0], Path(tmp) / "root")
            return debs.publish(Path(tmp) / "root", dest, "bin/busybox")
    except debs.DebError as e:
        raise InitrdError(str(e)) from None


def find_busybox(fetch: bool = False) -> Path:
    """A statically linked busybox: $NETBOOTD_BUSYBOX, the system's if static,
    our cache, or (fetch=True) Debian's busybox-static unpacked into the cache.
    With fetch=False no process is started: InitrdError says what to install."""
    env = os.environ.get("NETBOOTD_BUSYBOX")
    if env:
        if not is_static_elf(Path(env)):
            raise InitrdError(f"NETBOOTD_BUSYBOX={env} is not a statically linked ELF")
        return Path(env)
    cached = cache_dir() / "busybox-static" / "bin" / "busybox"
    for cand in (*SYSTEM_BUSYBOX, cached):
        if cand.is_file() and is_static_elf(cand):
            return cand
    if not fetch:
        raise InitrdError(
            "no statically linked busybox (Debian: apt-get install busybox-static, or run "
            "`netbootd initrd build`, which fetches it into the cache)")
    return _fetch_busybox_static(cached.parent.parent)


def busybox_applets(busybox: Path) -> list[str]:
    """Install paths of the applets ('usr/bin/wget', 'sbin/udhcpc', ...)."""
    r = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or not r.stdout.strip():
        raise InitrdError(f"{busybox} --list-full failed: {r.stderr.strip()}")
    out = []
    for line in r.stdout.split():
        line = line.strip("/")
        # 'linuxrc' is busybox's own init-on-initrd entry: our /init is the init.
        if not line or "/" not in line or line == "bin/busybox":
            continue
        out.append(line)
    return sorted(set(out))


def busybox_version(busybox: Path) -> str:
    r = subprocess.run([str(busybox)], capture_output=True, text=True, timeout=30)
    first = (r.stdout or r.stderr).splitlines()[:1]
    return first[0].strip() if first else "unknown"


# -- assembly --------------------------------------------------------------------
_URL_RE = re.compile(r"^https?://[^\s\"'\\`$]+$")


def _add_tool(a: Archive, tool: PackedTool, binary: Path | None, what: str) -> int:
    """`binary` packed into `a` as `tool` (iso_builder/toolpack.py); the bytes added."""
    if binary is None:
        return 0
    try:
        return tool.add_to(a, binary)
    except (OSError, tool.error) as e:
        raise InitrdError(f"{what}: {e}") from None


def build_archive(*, kernel_version: str, busybox: Path, modules=DEFAULT_MODULES,
                  server_url: str | None = None, source_dir: Path = INITRD_SRC,
                  modules_root: Path = MODULES_ROOT,
                  kexec: Path | None = None,
                  tls_client: Path | None = None) -> tuple[Archive, dict]:
    """The initrd as an Archive, plus facts about it (no file written).
    kexec: Debian's kexec binary, packed with its libraries (None: no kexec).
    tls_client: Debian's curl, packed the same way (None: the agent has no
    verifying TLS client and refuses https:// without netbootd.insecure=1)."""
    kdir = modules_root / kernel_version
    dep_file = kdir / "modules.dep"
    if not dep_file.is_file():
        raise InitrdError(f"{dep_file} is missing (modules for kernel {kernel_version})")
    deps = parse_modules_dep(dep_file.read_text())
    builtin_file = kdir / "modules.builtin"
    builtin = parse_builtin(builtin_file.read_text()) if builtin_file.is_file() else set()
    order, built, missing = resolve_modules(modules, deps, builtin)
    if missing:
        raise InitrdError(f"kernel {kernel_version} has no module {', '.join(missing)}")
    if server_url is not None and not _URL_RE.match(server_url):
        raise InitrdError(f"server_url must be http(s)://host[:port][/path], got {server_url!r}")

    a = Archive()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc/netbootd", "proc", "sys", "dev",
              "run", "var", "lib/netbootd", f"lib/modules/{kernel_version}"):
        a.add_dir(d)
    a.add_dir("tmp", 0o1777)
    a.add_dir("root", 0o700)
    # The kernel opens /dev/console for init's stdio before /init runs (and
    # before init mounts devtmpfs), so the initramfs must carry the node.
    a.add_chardev("dev/console", 5, 1, 0o600)
    a.add_chardev("dev/null", 1, 3, 0o666)

    a.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = busybox_applets(busybox)
    for app in applets:
        if app not in a:
            a.add_symlink(app, "/bin/busybox")

    for src, dst, mode in SOURCES:
        p = source_dir / src
        if not p.is_file():
            raise InitrdError(f"{p} is missing")
        a.add_file(dst, p.read_bytes(), mode)

    if kexec is not None:
        try:
            for path, data, mode in kexec_mod.files_for_initrd(kexec):
                a.add_file(path, data, mode)   # parents are added implicitly
        except (OSError, kexec_mod.KexecError) as e:
            raise InitrdError(f"kexec: {e}") from None
    # A library kexec brought already (libc) is packed once.
    tls_bytes = _add_tool(a, tlsclient.CURL, tls_client, "TLS client")
    # Beside curl, whose libraries (libcrypto, libssl) are packed already, openssl
    # costs its binary (~1 MB): the medium's agent hashes a capture with SHA-NI.
    ossl = hashtool.for_media(cache_dir()) if tls_client is not None else None
    ossl_bytes = _add_tool(a, hashtool.OPENSSL, ossl, "openssl")

    loaded = []
    for rel in order:
        dst = f"lib/modules/{kernel_version}/{uncompressed_name(rel)}"
        a.add_file(dst, read_module(kdir / rel), 0o644)
        loaded.append("/" + dst)
    a.add_file("etc/netbootd/modules", "".join(p + "\n" for p in loaded).encode())
    a.add_file("etc/netbootd/kernel-version", (kernel_version + "\n").encode())
    if server_url is not None:
        a.add_file("etc/netbootd/server", (server_url + "\n").encode())

    info = {
        "kernel_version": kernel_version,
        "modules": [module_name(p) for p in order],
        "module_files": loaded,
        "builtin": built,
        "busybox": str(busybox),
        "busybox_version": busybox_version(busybox),
        "applets": len(applets),
        "entries": len(a),
        "server_url": server_url,
        "kexec": str(kexec) if kexec is not None else None,
        "tls_client": str(tls_client) if tls_client is not None else None,
        "tls_client_bytes": tls_bytes,
        "openssl": str(ossl) if ossl is not None else None,
        "openssl_bytes": ossl_bytes,
    }
    return a, info


def build_discover_initrd(out_path, *, kernel_version: str | None = None,
                          modules=DEFAULT_MODULES, server_url: str | None = None,
                          busybox: Path | str | None = None, compress: bool = True,
                          fetch: bool = False, kexec: Path | str | None | bool = True) -> dict:
    """Write the discover initrd (gzip'ed newc cpio) to `out_path`; returns facts about it.

    kernel_version defaults to the newest kernel that has both /boot/vmlinuz-<kver>
    and /lib/modules/<kver>; the initrd only works with that kernel.  fetch: may
    apt-get download busybox-static / kexec-tools when not installed (never from the
    daemon).  kexec: True finds it (iso_builder.kexec), a path uses it, None/False: none.
    """
    kver = kernel_version or default_kernel_version()
    bb = Path(busybox) if busybox else find_busybox(fetch)
    kx = find_kexec(fetch) if kexec is True else (Path(kexec) if kexec else None)
    archive, info = build_archive(kernel_version=kver, busybox=bb, modules=modules,
                                  server_url=server_url, kexec=kx)
    raw = archive.to_bytes()
    data = gzip_bytes(raw) if compress else raw
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    vmlinuz = BOOT_DIR / f"vmlinuz-{kver}"
    info.update(path=str(out), size=len(data), uncompressed_size=len(raw), compressed=compress,
                sha256=hashlib.sha256(data).hexdigest(),
                vmlinuz=str(vmlinuz) if vmlinuz.is_file() else None)
    return info


def find_kexec(fetch: bool = False) -> Path | None:
    """Debian's kexec (iso_builder.kexec), or None: the initrd is still useful without it."""
    path, why = kexec_mod.pick(cache_dir(), fetch)
    if why:
        print(f"initrd: no kexec in the initrd (boot actions reboot): {why}", file=sys.stderr)
    return path


def find_tls_client(fetch: bool = False) -> Path | None:
    """Debian's curl (iso_builder.tlsclient) for boot media, or None."""
    path, why = tlsclient.pick(cache_dir(), fetch)
    if why:
        print(f"initrd: no TLS client (https:// needs netbootd.insecure=1): {why}",
              file=sys.stderr)
    return path


def _inputs(kernel_version: str, busybox: Path, modules, server_url: str | None,
            kexec: Path | None, tls_client: Path | None = None) -> dict:
    """Everything the (deterministic) image depends on, cheaply: file
    identities for the big inputs, content hashes for our small sources."""
    def ident(p: Path) -> list:
        st = p.stat()
        return [str(p), st.st_size, st.st_mtime_ns]
    return {
        "kernel_version": kernel_version,
        "modules_dep": ident(MODULES_ROOT / kernel_version / "modules.dep"),
        "busybox": ident(busybox),
        "kexec": ident(kexec) if kexec is not None else None,
        **({"tls_client": ident(tls_client)} if tls_client is not None else {}),
        "sources": {src: hashlib.sha256((INITRD_SRC / src).read_bytes()).hexdigest()
                    for src, _, _ in SOURCES},
        "modules": list(modules),
        "server_url": server_url,
    }


def ensure_discover_initrd(out_path, *, modules=DEFAULT_MODULES,
                           server_url: str | None = None, fetch: bool = False) -> dict:
    """The discover initrd at `out_path`, built only when its inputs changed
    since the last build (recorded beside it in <out_path>.json) or the image
    no longer matches its recorded sha256 (a restart costs a hash, not a rebuild).
    fetch=False (the daemon): a missing busybox is an InitrdError, no apt-get.
    fetch=True (the install step, `netbootd initrd build`) also builds the agent tool
    pack beside it (iso_builder/hashtool.py; info["tools"]); the daemon never does."""
    out = Path(out_path)
    tools = hashtool.beside(out, cache_dir()) if fetch else None
    side = out.with_name(out.name + ".json")
    kver = default_kernel_version()
    bb = find_busybox(fetch)
    kx = find_kexec(fetch)
    inputs = _inputs(kver, bb, modules, server_url, kx)
    try:
        rec = json.loads(side.read_text())
        info = rec["info"]
        if rec["inputs"] == inputs and \
                hashlib.sha256(out.read_bytes()).hexdigest() == info["sha256"] and \
                (info.get("vmlinuz") is None or Path(info["vmlinuz"]).is_file()):
            return dict(info, reused=True, **({"tools": tools} if fetch else {}))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    info = build_discover_initrd(out, kernel_version=kver, modules=modules,
                                 server_url=server_url, busybox=bb, kexec=kx)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"inputs": inputs, "info": info}, indent=1, default=str))
    os.replace(tmp, side)
    return dict(info, reused=False, **({"tools": tools} if fetch else {}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m iso_builder.initrd",
                                 description="Build the netbootd discover initrd.")
    ap.add_argument("--out", required=True, help="output file (gzip'ed cpio newc)")
    ap.add_argument("--kernel-version", help="guest kernel (default: newest with /boot/vmlinuz-*)")
    ap.add_argument("--module", action="append", dest="modules", metavar="NAME",
                    help=f"NIC module to include, repeatable (default: {' '.join(DEFAULT_MODULES)})")
    ap.add_argument("--server-url", help="default netbootd URL baked in "
                                         "(netbootd.server= on the kernel command line wins)")
    ap.add_argument("--busybox", help="static busybox to use (default: found or fetched)")
    ap.add_argument("--no-fetch", action="store_true",
                    help="never apt-get download busybox-static; fail if none is installed")
    ap.add_argument("--no-gzip", action="store_true", help="write the plain cpio archive")
    ap.add_argument("--json", action="store_true", help="print the facts as JSON")
    args = ap.parse_args(argv)
    try:
        info = build_discover_initrd(args.out, kernel_version=args.kernel_version,
                                     modules=tuple(args.modules or DEFAULT_MODULES),
                                     server_url=args.server_url, busybox=args.busybox,
                                     compress=not args.no_gzip, fetch=not args.no_fetch)
    except InitrdError as exc:
        print(f"initrd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{info['path']}: {info['size']} bytes ({info['uncompressed_size']} unpacked), "
              f"kernel {info['kernel_version']}, modules {' '.join(info['modules'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
