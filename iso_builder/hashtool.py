"""The agent tool pack: Debian's openssl with its libraries, fetched by a capturing agent.

The discover agent hashes every chunk of a disk it captures (capture.sh).  busybox's
sha256sum has no SHA-NI (~4.4 s CPU per GB here), openssl's does (~0.8 s/GB).
Packing openssl into the PXE discover initrd would add ~2.5 MB gzip'ed to every
network boot, so it travels apart: one gzip'ed newc cpio beside discover.img

    bin/openssl                     a sh wrapper: runs the binary by the pack's own
                                    ELF interpreter with --library-path, so the pack
                                    works wherever it is unpacked ($NB_RUN/tools)
                                    and whatever the initrd has in /lib64
    usr/bin/openssl                 the binary
    usr/lib/netbootd/<soname>       its libraries (libssl, libcrypto, libc)
    lib64/ld-linux-x86-64.so.2      its ELF interpreter

and a sidecar <pack>.sha256 (the hex digest and the name, sha256sum's format).  The
daemon serves the pack as /files/netbootd/agent-tools.cpio.gz (HTTP and TFTP) and
names it, with its digest, in every capture action; the agent downloads it only then
and checks the digest before it runs anything from it.

A PackedTool (iso_builder/toolpack.py), like curl.  Where openssl comes from, first
found wins: $NETBOOTD_OPENSSL (a path, or "none"), an installed /usr/bin/openssl, our
cache (<cache>/openssl/root), or - only with fetch=True (the install step,
`netbootd initrd build`) - `apt-get download openssl` and the libraries it lacks.
The pack is built there, never by a running daemon (it only serves what it finds).
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from . import cpio
from . import kexec as packer
from .toolpack import PackedTool

SYSTEM_OPENSSL = (Path("/usr/bin/openssl"),)
BIN_PATH = "usr/bin/openssl"
WRAPPER = "bin/openssl"
PACK_NAME = "agent-tools.cpio.gz"         # beside discover.img in the state dir
HTTP_NAME = f"netbootd/{PACK_NAME}"       # its name among the daemon's generated files
URL_PATH = f"/files/{HTTP_NAME}"          # what a capture action names


class HashToolError(RuntimeError):
    pass


OPENSSL = PackedTool("openssl", "NETBOOTD_OPENSSL", SYSTEM_OPENSSL, BIN_PATH, HashToolError)

find_openssl = OPENSSL.find            # the openssl to pack, or None
files_for_initrd = OPENSSL.files       # openssl, its interpreter and libraries (the pack's
                                       # files; the boot media's initrd adds them beside curl)


def wrapper(files: list[tuple[str, bytes, int]]) -> bytes:
    """bin/openssl: the binary run by the pack's interpreter with the pack's libraries."""
    interp = [p for p, _, _ in files if os.path.basename(p).startswith("ld-linux")]
    if len(interp) != 1:
        raise HashToolError(f"openssl: expected one ELF interpreter, found {interp or 'none'}")
    return ("#!/bin/sh\n"
            "# netbootd agent tool pack (iso_builder/hashtool.py)\n"
            "d=${0%/bin/openssl}\n"
            f'exec "$d/{interp[0]}" --library-path "$d/{packer.LIB_DIR}" '
            f'"$d/{BIN_PATH}" "$@"\n').encode()


def pack_archive(binary: Path) -> cpio.Archive:
    files = files_for_initrd(binary)
    a = cpio.Archive()
    for path, data, mode in files:
        a.add_file(path, data, mode)
    a.add_file(WRAPPER, wrapper(files), 0o755)
    return a


def build_pack(out_path, cache: Path, fetch: bool = False) -> dict | None:
    """Write the pack (deterministic gzip'ed cpio) and its .sha256 sidecar; None (and
    any old pack removed) when no openssl is found.  Unchanged bytes are not rewritten."""
    out = Path(out_path)
    side = out.with_name(out.name + ".sha256")
    binary = find_openssl(cache, fetch)
    if binary is None:
        out.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None
    archive = pack_archive(binary)
    raw = archive.to_bytes()
    data = cpio.gzip_bytes(raw)
    digest = hashlib.sha256(data).hexdigest()
    info = {"path": str(out), "openssl": str(binary), "size": len(data),
            "uncompressed_size": len(raw), "sha256": digest,
            "files": sorted(e.name for e in archive if e.is_file)}
    try:
        if out.read_bytes() == data and side.read_text().split()[0] == digest:
            return dict(info, reused=True)
    except (OSError, IndexError):
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    for p, body in ((out, data), (side, f"{digest}  {out.name}\n".encode())):
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(body)
            os.chmod(tmp, 0o644)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
    return dict(info, reused=False)


def for_media(cache: Path) -> Path | None:
    """openssl for the boot media's initrd (beside curl, iso_builder/initrd.py), found
    without fetching, or None (the medium's agent hashes with busybox sha256sum)."""
    try:
        return find_openssl(cache)
    except HashToolError as e:
        print(f"initrd: no openssl (capture hashes with busybox): {e}", file=sys.stderr)
        return None


def beside(initrd: Path, cache: Path) -> dict | None:
    """The pack (re)built beside the discover initrd (`netbootd initrd build`, the
    install step: fetch allowed); None without openssl.  A pack that cannot be built
    is not fatal: capturing agents hash with busybox."""
    try:
        info = build_pack(Path(initrd).with_name(PACK_NAME), cache, fetch=True)
    except (OSError, HashToolError, cpio.CpioError) as e:
        print(f"initrd: no agent tool pack (capture hashes with busybox): {e}", file=sys.stderr)
        return None
    if info is None:
        print("initrd: no openssl: no agent tool pack (capture hashes with busybox)",
              file=sys.stderr)
    return info
