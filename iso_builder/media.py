"""Account boot media (issue 12): one isohybrid image that boots BIOS and UEFI
(Secure Boot on) into the netbootd agent, built from Debian's packages.

The `full` flavour, one file that is both an El Torito CD and a disk image:

    MBR     GRUB's boot_hybrid.img (xorriso --grub2-mbr), BIOS disk boot
    El Torito BIOS entry   /boot/grub/i386-pc/eltorito.img (grub-mkimage, a tiny
            load.cfg: search --file /.disk/info, prefix /boot/grub)
    El Torito UEFI entry + GPT partition 2: a FAT ESP appended by xorriso, holding
            Debian's signed shim as /EFI/BOOT/BOOTX64.EFI, Debian's signed
            gcdx64.efi as grubx64.efi (its built-in prefix is /boot/grub, found
            through /.disk/info) and mmx64.efi.  Never fbx64.efi (shim would run it).
    ISO9660 /.disk/info, /boot/grub/grub.cfg (BIOS and UEFI), /netbootd/vmlinuz
            (Debian's signed kernel), /netbootd/agent.img (the discover initrd of
            iso_builder.initrd plus the CD/USB drivers), /netbootd/medium.cfg
            (the account's settings: the only file that differs between accounts;
            padded to a fixed size so every account's image has the same layout)

Secure Boot: shim checks GRUB, GRUB checks the kernel through shim; nothing
checks the initrd, grub.cfg or medium.cfg: the token on a medium is public data.

Reproducible: SOURCE_DATE_EPOCH (from the environment, else the newest input
file's mtime) for every date, ids derived from the inputs (FAT volume id; xorriso
derives the GPT GUIDs from the volume date), sorted entries, owners 0:0.

The medium-independent parts (initrd, ESP, BIOS image) are cached by their
inputs under <cache>/media/; the image is written to a temp file beside the
output and renamed.  Never imports netbootd; never installs packages.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import initrd as initrd_mod

FLAVOURS = ("full",)
GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")
SHIM_DIR = Path("/usr/lib/shim")
GRUB_SIGNED_DIR = Path("/usr/lib/grub/x86_64-efi-signed")
# What the medium's kernel needs beyond the PXE initrd: CD/USB controllers and
# storage (inventory of the stick itself, a kernel that finds its medium), and
# common NICs of real machines.
MEDIA_MODULES = ("ata_piix", "sr_mod", "isofs", "xhci_pci", "ehci_pci", "usb_storage", "uas",
                 "crc64_rocksoft_generic", "e1000e", "igb", "r8169")
# GRUB modules built into the BIOS El Torito image (no module loading from the medium).
GRUB_PC_MODULES = ("biosdisk", "iso9660", "part_msdos", "part_gpt", "fat", "normal", "search",
                   "search_fs_file", "configfile", "linux", "echo", "test", "serial",
                   "terminal", "sleep", "ls", "cat", "gzio", "reboot", "halt")
MEDIUM_CFG = "netbootd/medium.cfg"
MEDIUM_CFG_SIZE = 2048
VOLUME_ID = "NETBOOTD"

LOAD_CFG = "search --file --set=root /.disk/info\nset prefix=($root)/boot/grub\n"

GRUB_CFG = """\
# netbootd boot medium: BIOS (GRUB i386-pc) and UEFI (shim -> Debian's signed GRUB).
# The account's settings are in /netbootd/medium.cfg (nb_server, nb_token, nb_cmdline).
set timeout=2
set default=0
if serial --unit=0 --speed=115200; then
  terminal_input --append serial
  terminal_output --append serial
fi
set nb_account=""
set nb_server=""
set nb_token=""
set nb_cmdline=""
if [ -f /netbootd/medium.cfg ]; then
  source /netbootd/medium.cfg
fi
menuentry "netbootd agent (account ${nb_account})" {
  echo "netbootd: loading the agent for account ${nb_account}"
  linux /netbootd/vmlinuz console=ttyS0,115200 console=tty0 quiet panic=30 ${nb_cmdline} netbootd.server=${nb_server} netbootd.token=${nb_token}
  initrd /netbootd/agent.img
}
menuentry "reboot" {
  reboot
}
"""

# Values go into GRUB double quotes and onto the kernel command line: no quotes,
# no $, no backslash, no whitespace (the extra command line may have spaces).
URL_PATTERN = r"^https?://[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=%-]{1,200}$"
_URL_RE = re.compile(URL_PATTERN)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{1,512}$")
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9._@-]{0,64}$")
_CMDLINE_RE = re.compile(r"^[A-Za-z0-9._~:/,=+@ -]{0,256}$")

# Debian package of each input (the one clear line when something is missing)
TOOLS = {"xorriso": "xorriso", "grub-mkimage": "grub-common", "mkfs.fat": "dosfstools",
         "mcopy": "mtools"}

Progress = Callable[[str, int, int], None]


class MediaError(RuntimeError):
    pass


def _files(kernel_version: str) -> dict[str, tuple[Path, str]]:
    """name -> (path, Debian package)."""
    return {
        "boot_hybrid": (GRUB_PC_DIR / "boot_hybrid.img", "grub-pc-bin"),
        "shim": (SHIM_DIR / "shimx64.efi.signed", "shim-signed"),
        "mokmanager": (SHIM_DIR / "mmx64.efi.signed", "shim-signed"),
        "grub_efi": (GRUB_SIGNED_DIR / "gcdx64.efi.signed", "grub-efi-amd64-signed"),
        "kernel": (initrd_mod.BOOT_DIR / f"vmlinuz-{kernel_version}", "linux-image-amd64"),
    }


def check_inputs(kernel_version: str) -> dict[str, Path]:
    """Every tool and file the build needs, or MediaError naming the Debian package."""
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            raise MediaError(f"{tool} is missing (Debian package {pkg}: apt-get install {pkg})")
    out = {}
    for name, (path, pkg) in _files(kernel_version).items():
        if not path.is_file():
            raise MediaError(f"{path} is missing (Debian package {pkg}: apt-get install {pkg})")
        out[name] = path
    if not (GRUB_PC_DIR / "moddep.lst").is_file():
        raise MediaError(f"{GRUB_PC_DIR} has no GRUB modules (Debian package grub-pc-bin)")
    return out


def medium_config(*, server_url: str, token: str, account: str = "",
                  extra_cmdline: str = "") -> bytes:
    """/netbootd/medium.cfg: GRUB `set` lines, padded to MEDIUM_CFG_SIZE bytes."""
    for field, value, rx in (("server_url", server_url, _URL_RE), ("token", token, _TOKEN_RE),
                             ("account", account, _ACCOUNT_RE),
                             ("extra_cmdline", extra_cmdline, _CMDLINE_RE)):
        if not isinstance(value, str) or not rx.match(value):
            raise MediaError(f"{field}: {value!r} has characters a boot medium cannot carry")
    text = ("# netbootd boot medium: this account's settings (sourced by /boot/grub/grub.cfg)\n"
            f'set nb_account="{account}"\nset nb_server="{server_url}"\n'
            f'set nb_token="{token}"\nset nb_cmdline="{extra_cmdline}"\n').encode()
    if len(text) > MEDIUM_CFG_SIZE - 2:
        raise MediaError(f"medium.cfg would be {len(text)} bytes (max {MEDIUM_CFG_SIZE - 2})")
    pad = MEDIUM_CFG_SIZE - len(text)
    return text + b"#" * (pad - 1) + b"\n"


def _run(cmd: list[str], env: dict, what: str, cwd: Path | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise MediaError(f"{what} failed (rc {r.returncode}): {' | '.join(tail)}")
    return r.stdout + r.stderr


def _ident(p: Path) -> list:
    st = p.stat()
    return [str(p), st.st_size, st.st_mtime_ns]


def _tool_version(tool: str) -> str:
    return Path(shutil.which(tool) or tool).resolve().as_posix() + ":" + str(
        Path(shutil.which(tool) or "/").stat().st_mtime_ns)


def _epoch(files: dict[str, Path]) -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        if not env.isdigit():
            raise MediaError(f"SOURCE_DATE_EPOCH={env!r} is not a number of seconds")
        return int(env)
    return max(int(p.stat().st_mtime) for p in files.values())


def _touch_tree(root: Path, epoch: int) -> None:
    for dirpath, dirs, names in os.walk(root):
        for n in names + dirs:
            os.utime(os.path.join(dirpath, n), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


# -- the cached parts -------------------------------------------------------------------
def _build_parts(dest: Path, *, files: dict[str, Path], kernel_version: str, busybox: Path,
                 kexec: Path | None, modules, epoch: int, env: dict, step: Progress) -> dict:
    """initrd (agent.img), ESP (efi.img), BIOS El Torito image (eltorito.img) into dest."""
    step("agent initrd", 1, 5)
    archive, info = initrd_mod.build_archive(kernel_version=kernel_version, busybox=busybox,
                                             modules=modules, kexec=kexec)
    from .cpio import gzip_bytes
    (dest / "agent.img").write_bytes(gzip_bytes(archive.to_bytes()))

    step("EFI system partition", 2, 5)
    efi_src = dest / "esp"
    boot = efi_src / "EFI" / "BOOT"
    boot.mkdir(parents=True)
    shutil.copyfile(files["shim"], boot / "BOOTX64.EFI")
    shutil.copyfile(files["grub_efi"], boot / "grubx64.efi")
    shutil.copyfile(files["mokmanager"], boot / "mmx64.efi")
    _touch_tree(efi_src, epoch)
    payload = sum(f.stat().st_size for f in boot.iterdir())
    kib = ((payload * 11 // 10 + (512 << 10)) // (1 << 20) + 1) * 1024   # +10%, +512K, MiB
    efi = dest / "efi.img"
    volid = hashlib.sha256(b"".join(f.read_bytes() for f in sorted(boot.iterdir()))
                           ).hexdigest()[:8]
    _run(["mkfs.fat", "-C", "--invariant", "-i", volid, "-n", "NETBOOTESP", str(efi), str(kib)],
         env, "mkfs.fat")
    _run(["mcopy", "-s", "-m", "-Q", "-i", str(efi), str(efi_src / "EFI"), "::/"], env, "mcopy")
    shutil.rmtree(efi_src)

    step("BIOS boot image", 3, 5)
    load_cfg = dest / "load.cfg"
    load_cfg.write_text(LOAD_CFG)
    _run(["grub-mkimage", "-O", "i386-pc-eltorito", "-d", str(GRUB_PC_DIR), "-p", "/boot/grub",
          "-c", str(load_cfg), "-o", str(dest / "eltorito.img"), *GRUB_PC_MODULES],
         env, "grub-mkimage")
    load_cfg.unlink()
    return {k: v for k, v in info.items() if k in ("kernel_version", "modules", "busybox_version",
                                                   "kexec")}


def _parts(*, files, kernel_version, busybox, kexec, modules, epoch, env, step,
           cache: Path | None) -> tuple[Path, dict, bool, tempfile.TemporaryDirectory | None]:
    """The parts directory (cached by the inputs' identities), facts, reused?"""
    key_src = {"files": {k: _ident(p) for k, p in sorted(files.items())},
               "initrd": initrd_mod._inputs(kernel_version, busybox, modules, None, kexec),
               "grub_pc": _ident(GRUB_PC_DIR / "moddep.lst"), "grub_modules": GRUB_PC_MODULES,
               "load_cfg": LOAD_CFG, "epoch": epoch, "v": 1,
               "tools": {t: _tool_version(t) for t in sorted(TOOLS)}}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
    if cache is not None:
        d = cache / key
        meta = d / "parts.json"
        if meta.is_file():
            try:
                return d, json.loads(meta.read_text()), True, None
            except ValueError:
                pass
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache))
        try:
            facts = _build_parts(tmp, files=files, kernel_version=kernel_version,
                                 busybox=busybox, kexec=kexec, modules=modules, epoch=epoch,
                                 env=env, step=step)
            (tmp / "parts.json").write_text(json.dumps(facts))
            try:
                os.replace(tmp, d)
            except OSError:   # a concurrent build got there first
                if not meta.is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return d, facts, False, None
    td = tempfile.TemporaryDirectory(prefix="netbootd-media-parts.")
    facts = _build_parts(Path(td.name), files=files, kernel_version=kernel_version,
                         busybox=busybox, kexec=kexec, modules=modules, epoch=epoch, env=env,
                         step=step)
    return Path(td.name), facts, False, td


# -- the image ----------------------------------------------------------------------------
def _xorriso_cmd(out: Path, stage: Path, efi: Path, epoch: int,
                 grafts: list[str]) -> list[str]:
    """mkisofs emulation: -r (owners 0, modes normalized), every date the epoch."""
    date = time.strftime("%Y%m%d%H%M%S00", time.gmtime(epoch))
    return ["xorriso", "-as", "mkisofs", "-o", str(out), "-r", "-V", VOLUME_ID,
            "--modification-date=" + date, "--set_all_file_dates", date, "-graft-points",
            "--grub2-mbr", str(GRUB_PC_DIR / "boot_hybrid.img"),
            "-partition_offset", "16", "--mbr-force-bootable",
            "-append_partition", "2", "0xef", str(efi), "-appended_part_as_gpt",
            "-c", "boot/boot.catalog",
            "-b", "boot/grub/i386-pc/eltorito.img", "-no-emul-boot", "-boot-load-size", "4",
            "-boot-info-table", "--grub2-boot-info",
            "-eltorito-alt-boot", "-e", "--interval:appended_partition_2:all::",
            "-no-emul-boot", f"/={stage}", *grafts]


def build_full_image(out_path, *, server_url: str, token: str, account: str = "",
                     extra_cmdline: str = "", kernel_version: str | None = None,
                     busybox: Path | str | None = None, kexec: Path | str | bool | None = True,
                     modules=initrd_mod.DEFAULT_MODULES + MEDIA_MODULES,
                     cache: Path | str | None | bool = True,
                     progress: Progress | None = None) -> dict:
    """Write the `full` image to out_path (temp file + rename); facts about it.

    cache: True = <NETBOOTD_CACHE_DIR>/media, a path, or None/False: build every
    part.  progress(step, n, total) is called before each step.  Never fetches
    packages: a missing one is a MediaError naming it."""
    t0 = time.monotonic()
    step = progress or (lambda s, n, t: None)
    try:
        kver = kernel_version or initrd_mod.default_kernel_version()
        bb = Path(busybox) if busybox else initrd_mod.find_busybox(False)
        kx = (initrd_mod.find_kexec(False) if kexec is True else
              (Path(kexec) if kexec else None))
    except initrd_mod.InitrdError as e:
        raise MediaError(str(e)) from None
    cfg = medium_config(server_url=server_url, token=token, account=account,
                        extra_cmdline=extra_cmdline)
    files = check_inputs(kver)
    epoch = _epoch(files)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), TZ="UTC", LC_ALL="C")
    out = Path(out_path)
    if not out.parent.is_dir():
        raise MediaError(f"output directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise MediaError(f"output directory {out.parent} is not writable")
    cache_dir = (initrd_mod.cache_dir() / "media" if cache is True else
                 (Path(cache) if cache else None))
    try:
        parts, facts, reused, td = _parts(files=files, kernel_version=kver, busybox=bb,
                                          kexec=kx, modules=tuple(modules), epoch=epoch,
                                          env=env, step=step, cache=cache_dir)
    except initrd_mod.InitrdError as e:
        raise MediaError(str(e)) from None
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        step("ISO tree", 4, 5)
        with tempfile.TemporaryDirectory(prefix="netbootd-media.") as sd:
            stage = Path(sd) / "iso"
            (stage / ".disk").mkdir(parents=True)
            (stage / ".disk" / "info").write_text("netbootd boot medium (full)\n")
            (stage / "boot/grub").mkdir(parents=True)
            (stage / "boot/grub/grub.cfg").write_text(GRUB_CFG)
            (stage / "netbootd").mkdir()
            (stage / MEDIUM_CFG).write_bytes(cfg)
            _touch_tree(stage, epoch)
            grafts = [f"netbootd/vmlinuz={files['kernel']}",
                      f"netbootd/agent.img={parts / 'agent.img'}",
                      f"boot/grub/i386-pc/eltorito.img={parts / 'eltorito.img'}"]
            step("xorriso", 5, 5)
            _run(_xorriso_cmd(tmp_out, stage, parts / "efi.img", epoch, grafts), env,
                 "xorriso")
        with open(tmp_out, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest() if hasattr(
                hashlib, "file_digest") else hashlib.sha256(f.read()).hexdigest()
            os.fsync(f.fileno())
        os.replace(tmp_out, out)
    finally:
        tmp_out.unlink(missing_ok=True)
        if td is not None:
            td.cleanup()
    return dict(facts, path=str(out), flavour="full", size=out.stat().st_size, sha256=digest,
                source_date_epoch=epoch, parts_reused=reused, account=account,
                server_url=server_url, seconds=round(time.monotonic() - t0, 3),
                config_sha256=hashlib.sha256(cfg).hexdigest())
