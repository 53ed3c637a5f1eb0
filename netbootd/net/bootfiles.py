"""Files the daemon serves that it finds rather than is given: the files
root, the iPXE binaries of boot.ipxe_dir and the discover kernel + initrd.

The discover initrd is built from local files only: a running daemon never
fetches packages (apt-get download).  When a build input is missing it logs
one line naming `netbootd initrd build`, which may fetch them.
"""
from __future__ import annotations

import glob
import logging
import os

from twisted.internet import threads

from ..config import Config

log = logging.getLogger("netbootd")

# iPXE binaries looked for in boot.ipxe_dir (Debian: /usr/lib/ipxe).
IPXE_NAMES = ("undionly.kpxe", "undionly.kkpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi",
              "ipxe.lkrn")


def files_root(cfg: Config) -> str:
    return cfg.boot.files_root or os.path.join(cfg.state_dir, "files")


def ipxe_binaries(cfg: Config) -> dict[str, str]:
    """name -> real path of the iPXE binaries (and configured boot files)
    found in boot.ipxe_dir.  Debian's are symlinks into /boot and qemu/, i.e.
    out of the directory: they are trusted here, once, by name, instead of
    serving the directory as a root (whose symlinks would rightly be refused)."""
    b = cfg.boot
    names = set(IPXE_NAMES) | {n for n in (b.bios, b.uefi_x64, b.uefi_x86, b.uefi_arm64) if n}
    found = {}
    for name in sorted(names):
        path = os.path.realpath(os.path.join(b.ipxe_dir, name))
        if os.path.isfile(path):
            found[name] = path
    return found


def newest_kernel() -> str | None:
    found = sorted(glob.glob("/boot/vmlinuz-*"), key=os.path.getmtime)
    return found[-1] if found else None


def discover_media(cfg: Config, generated: dict[str, str]):
    """Add the discover initrd and its kernel to `generated` (HTTP name ->
    path): the configured ones at once, else the state dir's image, (re)built
    off the reactor thread (DESIGN rule 8) only when its inputs changed; its
    kernel is served with it, since the modules inside must match.  Returns
    the build's Deferred (None when nothing is built)."""
    b = cfg.boot
    agent_tools(cfg, generated)
    if b.discover_initrd:
        generated["netbootd/discover.img"] = b.discover_initrd
        kernel = b.discover_kernel or newest_kernel()
        if kernel:
            generated["netbootd/vmlinuz"] = kernel
        return None
    try:
        from iso_builder.initrd import ensure_discover_initrd
    except ImportError as e:
        log.warning("discover initrd: iso_builder unavailable (%s)", e)
        return None

    def done(info):
        generated["netbootd/discover.img"] = info["path"]
        if info.get("vmlinuz"):
            generated["netbootd/vmlinuz"] = info["vmlinuz"]
        log.info("discover initrd: %s (%d bytes, %s) for kernel %s", info["path"],
                 info["size"], "unchanged" if info.get("reused") else "built",
                 info.get("vmlinuz"))

    def failed(f):
        log.error("discover initrd: cannot build it from local files (%s); unassigned hosts "
                  "cannot boot the agent until `netbootd initrd build` has made it",
                  f.getErrorMessage())
    path = os.path.join(cfg.state_dir, "discover.img")
    return threads.deferToThread(ensure_discover_initrd, path,
                                 fetch=False).addCallbacks(done, failed)


def agent_tools(cfg: Config, generated: dict[str, str]) -> None:
    """The agent tool pack (iso_builder/hashtool.py: openssl, fetched by a capturing
    agent) beside discover.img, when the install step or `netbootd initrd build` made
    it: served as is, never built here (net/capture.py names it in capture actions)."""
    from iso_builder.hashtool import HTTP_NAME, PACK_NAME
    path = os.path.join(cfg.state_dir, PACK_NAME)
    if os.path.isfile(path) and os.path.isfile(path + ".sha256"):
        generated[HTTP_NAME] = path
