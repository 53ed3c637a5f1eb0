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
import ipaddress
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

FLAVOURS = ("full", "net")
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
@NB_ARGS@menuentry "netbootd agent (account ${nb_account})" {
  echo "netbootd: loading the agent for account ${nb_account}"
  linux /netbootd/vmlinuz console=ttyS0,115200 console=tty0 quiet panic=30 ${nb_cmdline} netbootd.server=${nb_server} netbootd.token=${nb_token} ${nb_args}
  initrd /netbootd/agent.img
}
menuentry "reboot" {
  reboot
}
"""

# The optional medium fields as kernel arguments (the agent honours them), for both
# flavours' grub.cfg: netbootd.ip=CIDR netbootd.gw=IP netbootd.dns=IP netbootd.pin=sha256//B64
NB_ARGS = """\
set nb_args=""
if [ -n "${nb_ip}" ]; then set nb_args="${nb_args} netbootd.ip=${nb_ip}"; fi
if [ -n "${nb_gw}" ]; then set nb_args="${nb_args} netbootd.gw=${nb_gw}"; fi
if [ -n "${nb_dns}" ]; then set nb_args="${nb_args} netbootd.dns=${nb_dns}"; fi
if [ -n "${nb_pin}" ]; then set nb_args="${nb_args} netbootd.pin=${nb_pin}"; fi
"""
GRUB_CFG = GRUB_CFG.replace("@NB_ARGS@", NB_ARGS)

# Values go into GRUB double quotes and onto the kernel command line: no quotes,
# no $, no backslash, no whitespace (the extra command line may have spaces).
URL_PATTERN = r"^https?://[A-Za-z0-9._~:/?#\[\]@!&'()*+,;=%-]{1,200}$"
_URL_RE = re.compile(URL_PATTERN)
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/=-]{1,512}$")
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9._@-]{0,64}$")
_CMDLINE_RE = re.compile(r"^[A-Za-z0-9._~:/,=+@ -]{0,256}$")
PIN_PATTERN = r"^(sha256//[A-Za-z0-9+/]{43}=)?$"   # empty: no pin
# the shape of --ip for the API's OpenAPI document (medium_values checks the rest:
# a host address of its network, gateway inside it, gateway/dns only with ip)
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IP_CIDR_PATTERN = rf"^({_OCTET}(\.{_OCTET}){{3}}/([89]|[12][0-9]|3[0-2]))?$"
_PIN_RE = re.compile(PIN_PATTERN)

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


def check_files(files: dict[str, tuple[Path, str]]) -> dict[str, Path]:
    """The tools and files (name -> (path, Debian package)) a build needs, or
    MediaError naming the Debian package."""
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            raise MediaError(f"{tool} is missing (Debian package {pkg}: apt-get install {pkg})")
    out = {}
    for name, (path, pkg) in files.items():
        if not path.is_file():
            raise MediaError(f"{path} is missing (Debian package {pkg}: apt-get install {pkg})")
        out[name] = path
    if not (GRUB_PC_DIR / "moddep.lst").is_file():
        raise MediaError(f"{GRUB_PC_DIR} has no GRUB modules (Debian package grub-pc-bin)")
    return out


def check_inputs(kernel_version: str) -> dict[str, Path]:
    """Every tool and file the full flavour needs, or MediaError naming the package."""
    return check_files(_files(kernel_version))


def medium_values(*, server_url: str, token: str, account: str = "", extra_cmdline: str = "",
                  ip: str | None = None, gateway: str | None = None, dns: str | None = None,
                  pin: str | None = None) -> dict[str, str]:
    """The medium's settings, checked (MediaError naming the field): GRUB variable
    name -> value.  ip is the host's static address as CIDR (gateway and dns need
    it: with DHCP they come from DHCP); pin is sha256//BASE64 (the HTTPS server's
    public-key pin, 32 bytes)."""
    for field, value, rx in (("server_url", server_url, _URL_RE), ("token", token, _TOKEN_RE),
                             ("account", account, _ACCOUNT_RE),
                             ("extra_cmdline", extra_cmdline, _CMDLINE_RE)):
        if not isinstance(value, str) or not rx.match(value):
            raise MediaError(f"{field}: {value!r} has characters a boot medium cannot carry")
    vals = {"nb_account": account, "nb_server": server_url, "nb_token": token,
            "nb_cmdline": extra_cmdline, "nb_tftp": _url_host(server_url),
            "nb_ip": "", "nb_ip_addr": "", "nb_ip_net": "", "nb_ip_mask": "", "nb_gw": "",
            "nb_dns": "", "nb_pin": ""}
    iface = None
    if ip not in (None, ""):
        try:
            if "/" not in str(ip):
                raise ValueError("no /prefix")
            iface = ipaddress.IPv4Interface(ip)
        except (ValueError, TypeError) as e:
            raise MediaError(f"ip: {ip!r} is not an IPv4 address with a prefix "
                             f"(192.0.2.50/24): {e}") from None
        net = iface.network
        if net.prefixlen < 8 or (net.prefixlen < 31 and iface.ip in (net.network_address,
                                                                     net.broadcast_address)):
            raise MediaError(f"ip: {ip} is not a host address of a usable network")
        vals.update(nb_ip=str(iface), nb_ip_addr=str(iface.ip), nb_ip_net=str(net),
                    nb_ip_mask=str(net.netmask))
    for field, key, value in (("gateway", "nb_gw", gateway), ("dns", "nb_dns", dns)):
        if value in (None, ""):
            continue
        if iface is None:
            raise MediaError(f"{field}: needs ip (with DHCP the {field} comes from DHCP)")
        try:
            addr = ipaddress.IPv4Address(value)
        except (ValueError, TypeError) as e:
            raise MediaError(f"{field}: {value!r} is not an IPv4 address: {e}") from None
        if field == "gateway" and (addr not in iface.network or addr == iface.ip):
            raise MediaError(f"gateway: {addr} is not another address in {iface.network}")
        vals[key] = str(addr)
    if pin not in (None, ""):
        if not isinstance(pin, str) or not _PIN_RE.match(pin):
            raise MediaError(f"pin: {pin!r} is not sha256//BASE64 (a SHA-256 public-key pin, "
                             "44 base64 characters)")
        if not server_url.startswith("https://"):
            raise MediaError("pin: only for an https:// server_url (over http the token "
                             "would travel in cleartext; the pin could check nothing)")
        vals["nb_pin"] = pin
    return vals


def _url_host(url: str) -> str:
    """The host of a URL (no port, no user), for GRUB's (tftp,HOST) device."""
    hostport = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    if hostport.startswith("["):
        return hostport[1:].split("]", 1)[0]
    return hostport.rsplit(":", 1)[0] if ":" in hostport else hostport


def _padded(text: bytes, what: str) -> bytes:
    if len(text) > MEDIUM_CFG_SIZE - 2:
        raise MediaError(f"{what} would be {len(text)} bytes (max {MEDIUM_CFG_SIZE - 2})")
    pad = MEDIUM_CFG_SIZE - len(text)
    return text + b"#" * (pad - 1) + b"\n"


def medium_config(**settings) -> bytes:
    """/netbootd/medium.cfg: GRUB `set` lines, padded to MEDIUM_CFG_SIZE bytes
    (settings: as medium_values)."""
    vals = medium_values(**settings)
    text = ("# netbootd boot medium: this account's settings (sourced by grub.cfg)\n" +
            "".join(f'set {k}="{v}"\n' for k, v in vals.items())).encode()
    return _padded(text, "medium.cfg")


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
                                             modules=modules, kexec=kexec,
                                             tls_client=initrd_mod.find_tls_client())   # https
    from .cpio import gzip_bytes
    (dest / "agent.img").write_bytes(gzip_bytes(archive.to_bytes()))

    step("EFI system partition", 2, 5)
    make_esp(dest, {"EFI/BOOT/BOOTX64.EFI": files["shim"], "EFI/BOOT/grubx64.efi":
                    files["grub_efi"], "EFI/BOOT/mmx64.efi": files["mokmanager"]}, epoch, env)
    step("BIOS boot image", 3, 5)
    make_eltorito(dest, GRUB_PC_MODULES, env)
    return {k: v for k, v in info.items() if k in ("kernel_version", "modules", "busybox_version",
                                                   "kexec")}


def _parts(*, key_src: dict, build: Callable[[Path], dict], cache: Path | None
           ) -> tuple[Path, dict, bool, tempfile.TemporaryDirectory | None]:
    """The parts directory (cached under cache by key_src, the inputs' identities),
    the build's facts, reused?, and the temp dir to clean up when not cached."""
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
            facts = build(tmp)
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
    return Path(td.name), build(Path(td.name)), False, td


def make_esp(dest: Path, files: dict[str, Path], epoch: int, env: dict,
             slack_kib: int | None = None) -> Path:
    """dest/efi.img: a FAT image holding files (path on the ESP -> source path),
    sized to fit (payload + slack_kib, default +10% +512K rounded up to a MiB),
    its volume id derived from the content."""
    efi_src = dest / "esp"
    for name, src in sorted(files.items()):
        (efi_src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, efi_src / name)
    _touch_tree(efi_src, epoch)
    payload = sum(p.stat().st_size for p in files.values())
    kib = ((payload * 11 // 10 + (512 << 10)) // (1 << 20) + 1) * 1024   # +10%, +512K, MiB
    if slack_kib is not None:
        kib = -(-payload // 1024) + slack_kib
    efi = dest / "efi.img"
    h = hashlib.sha256()
    for name, src in sorted(files.items()):
        h.update(name.encode() + b"\0" + Path(src).read_bytes())
    _run(["mkfs.fat", "-C", "--invariant", "-i", h.hexdigest()[:8], "-n", "NETBOOTESP",
          str(efi), str(kib)], env, "mkfs.fat")
    tops = sorted({n.split("/", 1)[0] for n in files})
    _run(["mcopy", "-s", "-m", "-Q", "-i", str(efi), *(str(efi_src / t) for t in tops), "::/"],
         env, "mcopy")
    shutil.rmtree(efi_src)
    return efi


def make_eltorito(dest: Path, modules, env: dict) -> Path:
    """dest/eltorito.img: GRUB i386-pc for El Torito and the hybrid MBR, its
    config in ($root)/boot/grub where $root holds /.disk/info."""
    load_cfg = dest / "load.cfg"
    load_cfg.write_text(LOAD_CFG)
    _run(["grub-mkimage", "-O", "i386-pc-eltorito", "-d", str(GRUB_PC_DIR), "-p", "/boot/grub",
          "-c", str(load_cfg), "-o", str(dest / "eltorito.img"), *modules],
         env, "grub-mkimage")
    load_cfg.unlink()
    return dest / "eltorito.img"


# -- the image ----------------------------------------------------------------------------
def _xorriso_cmd(out: Path, stage: Path, efi: Path, epoch: int,
                 grafts: list[str], pad: bool = True) -> list[str]:
    """mkisofs emulation: -r (owners 0, modes normalized), every date the epoch;
    pad=False: without the 300 KiB of zeros mkisofs appends by default."""
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
            "-no-emul-boot", *([] if pad else ["-no-pad"]), f"/={stage}", *grafts]


def output_checks(out_path) -> Path:
    out = Path(out_path)
    if not out.parent.is_dir():
        raise MediaError(f"output directory {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise MediaError(f"output directory {out.parent} is not writable")
    return out


def cache_path(cache) -> Path | None:
    return (initrd_mod.cache_dir() / "media" if cache is True else
            (Path(cache) if cache else None))


def write_image(out: Path, *, flavour: str, tree: dict[str, bytes], grafts: list[str],
                efi: Path, epoch: int, env: dict, step: Progress, n: int,
                pad: bool = True) -> str:
    """The ISO tree (path -> bytes, plus /.disk/info) and grafts (path=source)
    through xorriso into a temp file beside out, fsynced, renamed; its sha256."""
    # The image carries the account's enrollment token: written in a private
    # directory beside out (no name another user can predict or plant a
    # symlink at), made 0600, then renamed over out.
    priv = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp_out = priv / "image"
    try:
        step("ISO tree", n, n + 1)
        with tempfile.TemporaryDirectory(prefix="netbootd-media.") as sd:
            stage = Path(sd) / "iso"
            tree = dict(tree, **{".disk/info": f"netbootd boot medium ({flavour})\n".encode()})
            for name, data in sorted(tree.items()):
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                (stage / name).write_bytes(data)
            _touch_tree(stage, epoch)
            step("xorriso", n + 1, n + 1)
            _run(_xorriso_cmd(tmp_out, stage, efi, epoch, grafts, pad), env, "xorriso")
        with open(tmp_out, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest() if hasattr(
                hashlib, "file_digest") else hashlib.sha256(f.read()).hexdigest()
            os.fsync(f.fileno())
        os.chmod(tmp_out, 0o600)
        os.replace(tmp_out, out)
    finally:
        tmp_out.unlink(missing_ok=True)
        priv.rmdir()
    return digest


def image_facts(facts: dict, *, out: Path, flavour: str, sha256: str, epoch: int,
                reused: bool, account: str, server_url: str, t0: float, config: bytes) -> dict:
    """What a build returns (the CLI's --json, the API, the bench)."""
    return dict(facts, path=str(out), flavour=flavour, size=out.stat().st_size, sha256=sha256,
                source_date_epoch=epoch, parts_reused=reused, account=account,
                server_url=server_url, seconds=round(time.monotonic() - t0, 3),
                config_sha256=hashlib.sha256(config).hexdigest())


def build_full_image(out_path, *, server_url: str, token: str, account: str = "",
                     extra_cmdline: str = "", ip: str | None = None,
                     gateway: str | None = None, dns: str | None = None,
                     pin: str | None = None, kernel_version: str | None = None,
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
                        extra_cmdline=extra_cmdline, ip=ip, gateway=gateway, dns=dns, pin=pin)
    files = check_inputs(kver)
    epoch = _epoch(files)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), TZ="UTC", LC_ALL="C")
    out = output_checks(out_path)
    modules = tuple(modules)
    key_src = {"files": {k: _ident(p) for k, p in sorted(files.items())},
               "initrd": initrd_mod._inputs(kver, bb, modules, None, kx,
                                            initrd_mod.find_tls_client()),
               "grub_pc": _ident(GRUB_PC_DIR / "moddep.lst"), "grub_modules": GRUB_PC_MODULES,
               "load_cfg": LOAD_CFG, "epoch": epoch, "v": 2,
               "tools": {t: _tool_version(t) for t in sorted(TOOLS)}}
    try:
        parts, facts, reused, td = _parts(
            key_src=key_src, cache=cache_path(cache),
            build=lambda d: _build_parts(d, files=files, kernel_version=kver, busybox=bb,
                                         kexec=kx, modules=modules, epoch=epoch, env=env,
                                         step=step))
    except initrd_mod.InitrdError as e:
        raise MediaError(str(e)) from None
    try:
        digest = write_image(out, flavour="full", tree={"boot/grub/grub.cfg": GRUB_CFG.encode(),
                                                        MEDIUM_CFG: cfg},
                             grafts=[f"netbootd/vmlinuz={files['kernel']}",
                                     f"netbootd/agent.img={parts / 'agent.img'}",
                                     f"boot/grub/i386-pc/eltorito.img={parts / 'eltorito.img'}"],
                             efi=parts / "efi.img", epoch=epoch, env=env, step=step, n=4)
    finally:
        if td is not None:
            td.cleanup()
    return image_facts(facts, out=out, flavour="full", sha256=digest, epoch=epoch,
                       reused=reused, account=account, server_url=server_url, t0=t0,
                       config=cfg)
