"""The `net` flavour of an account's boot medium (issue 12): boot loaders and the
account's settings only; the kernel and the agent initrd come from netbootd over
the LAN (its HTTP /files/netbootd/vmlinuz and /files/netbootd/discover.img, the
ones PXE-booted hosts get).  For a LAN where netbootd is reachable but PXE is off
or broken.  The same isohybrid layout as the full flavour (iso_builder/media.py):

    BIOS (CD: El Torito; disk: GRUB's hybrid MBR)  GRUB i386-pc, /boot/grub/grub.cfg:
        linux16 /boot/ipxe.lkrn (Debian's iPXE), initrd16 /netbootd/medium.ipxe, the
        account's iPXE script: DHCP (ifconf -c dhcp: no 16 s IPv6 wait) or the static
        address, then kernel + initrd over HTTP with the token on the command line.
    UEFI (CD: El Torito EFI entry; disk: GPT partition 2, the same FAT image)
        Debian's signed shim as /EFI/BOOT/BOOTX64.EFI -> Debian's signed grubnetx64
        as grubx64.efi (Secure Boot on: shim checks GRUB, GRUB checks the kernel).
        grubnetx64's built-in prefix is /grub on the device it was loaded from: the
        ESP holds /grub/grub.cfg (and so does the ISO9660 side, for firmware that
        hands GRUB the whole CD), which searches the medium for
        /netbootd/medium.cfg, runs net_bootp (or net_add_addr/net_add_route for a
        static address) and loads linux + initrd over TFTP from the server's host
        ((tftp,HOST)/netbootd/vmlinuz and /netbootd/discover.img: the signed image
        has no http module - measured: "disk `http,...' not found").

Per account only /netbootd/medium.cfg (GRUB variables) and /netbootd/medium.ipxe
(the same values as an iPXE script; ipxe.lkrn cannot read the medium) differ; both
are padded to fixed sizes, so every account's image has the same layout and the
boot loaders are the same bytes.  No MokManager (mmx64.efi) on this flavour: it
is needed only to enroll a MOK, and it would cost 0.9 MB."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .media import (GRUB_PC_DIR, GRUB_PC_MODULES, GRUB_SIGNED_DIR, LOAD_CFG, MEDIUM_CFG,
                    NB_ARGS, SHIM_DIR, TOOLS, MediaError, Progress, _epoch,
                    _ident, _padded, _parts, _tool_version, cache_path, check_files, image_facts, make_eltorito,
                    make_esp, medium_config, medium_values, output_checks, write_image)

IPXE_LKRN = Path("/boot/ipxe.lkrn")
MEDIUM_IPXE = "netbootd/medium.ipxe"
KERNEL_PATH = "/files/netbootd/vmlinuz"
INITRD_PATH = "/files/netbootd/discover.img"
# what the UEFI GRUB loads over TFTP (the daemon's files root; `netbootd media build
# --flavour net` and `netbootd media tftp` put the discover kernel + initrd there)
TFTP_KERNEL = "netbootd/vmlinuz"
TFTP_INITRD = "netbootd/discover.img"
# the BIOS GRUB of this flavour reads its config and ipxe.lkrn from ISO9660 only
NET_GRUB_PC_MODULES = tuple(m for m in GRUB_PC_MODULES if m not in ("fat", "ls", "cat", "gzio",
                                                                      "halt")) + ("linux16",)
# FAT's own tables and directories on a ~5 MB ESP (the smallest that mkfs.fat and
# the firmware accept; measured: 4.9 MB of files fit with this)
ESP_SLACK_KIB = 96
BASE_CMDLINE = "console=ttyS0,115200 console=tty0 quiet panic=30"

_SERIAL = """\
if serial --unit=0 --speed=115200; then
  terminal_input --append serial
  terminal_output --append serial
fi
"""

BIOS_GRUB_CFG = """\
# netbootd boot medium (net flavour), BIOS: Debian's iPXE runs /netbootd/medium.ipxe.
set timeout=1
set default=0
""" + _SERIAL + """\
set nb_account=""
if [ -f /netbootd/medium.cfg ]; then
  source /netbootd/medium.cfg
fi
menuentry "netbootd agent over the network (iPXE, account ${nb_account})" {
  echo "netbootd: starting iPXE for account ${nb_account}"
  linux16 /boot/ipxe.lkrn
  initrd16 /netbootd/medium.ipxe
}
menuentry "reboot" {
  reboot
}
"""

UEFI_GRUB_CFG = """\
# netbootd boot medium (net flavour), UEFI: shim -> Debian's signed grubnetx64, whose
# prefix is /grub on the device it came from.  Settings: /netbootd/medium.cfg.
set timeout=1
set default=0
""" + _SERIAL + "".join(f'set {k}=""\n' for k in medium_values(
    server_url="http://x", token="x")) + """\
if search --file --set=nb_dev /netbootd/medium.cfg; then
  source (${nb_dev})/netbootd/medium.cfg
fi
""" + NB_ARGS + """\
menuentry "netbootd agent over the network (account ${nb_account})" {
  if [ -n "${nb_ip}" ]; then
    echo "netbootd: static address ${nb_ip}"
    net_add_addr nb0 efinet0 ${nb_ip_addr}
    net_add_route nb_lan ${nb_ip_net} nb0
    if [ -n "${nb_gw}" ]; then net_add_route nb_default 0.0.0.0/0 gw ${nb_gw}; fi
    if [ -n "${nb_dns}" ]; then net_add_dns ${nb_dns}; fi
  else
    echo "netbootd: DHCP"
    net_bootp
  fi
  echo "netbootd: loading the agent from ${nb_server} for account ${nb_account}"
  linux (tftp,${nb_tftp})/@TFTP_KERNEL@ @BASE@ ${nb_cmdline} netbootd.server=${nb_server} netbootd.token=${nb_token} ${nb_args}
  initrd (tftp,${nb_tftp})/@TFTP_INITRD@
}
menuentry "reboot" {
  reboot
}
""".replace("@TFTP_KERNEL@", TFTP_KERNEL).replace("@TFTP_INITRD@", TFTP_INITRD).replace(
    "@BASE@", BASE_CMDLINE)


def net_files() -> dict[str, tuple[Path, str]]:
    """name -> (path, Debian package)."""
    return {"boot_hybrid": (GRUB_PC_DIR / "boot_hybrid.img", "grub-pc-bin"),
            "shim": (SHIM_DIR / "shimx64.efi.signed", "shim-signed"),
            "grub_net": (GRUB_SIGNED_DIR / "grubnetx64.efi.signed", "grub-efi-amd64-signed"),
            "ipxe": (IPXE_LKRN, "ipxe")}


def check_net_inputs() -> dict[str, Path]:
    """Every tool and file the net flavour needs, or MediaError naming the package."""
    return check_files(net_files())


def check_net_url(server_url: str) -> None:
    if not str(server_url).startswith("http://"):
        raise MediaError(f"server_url: {server_url!r}: the net flavour loads the kernel with "
                         "GRUB and iPXE, which speak plain http:// only (use the full flavour "
                         "for an https:// server)")


def medium_ipxe(**settings) -> bytes:
    """/netbootd/medium.ipxe: the account's iPXE script, padded to MEDIUM_CFG_SIZE."""
    v = medium_values(**settings)
    check_net_url(v["nb_server"])
    server = v["nb_server"].rstrip("/")
    if v["nb_ip"]:
        net = ["ifopen net0 || goto retry", f"set net0/ip {v['nb_ip_addr']}",
               f"set net0/netmask {v['nb_ip_mask']}"]
        net += [f"set net0/gateway {v['nb_gw']}"] if v["nb_gw"] else []
        net += [f"set net0/dns {v['nb_dns']}"] if v["nb_dns"] else []
    else:
        net = ["ifconf -c dhcp || dhcp || goto retry"]
    args = " ".join(f"netbootd.{k}={v['nb_' + k]}" for k in ("ip", "gw", "dns", "pin")
                    if v["nb_" + k])
    cmdline = " ".join(w for w in (BASE_CMDLINE, v["nb_cmdline"], f"netbootd.server={server}",
                                   f"netbootd.token={v['nb_token']}", args) if w)
    lines = ["#!ipxe", "# netbootd boot medium (net flavour): this account's settings",
             f"echo netbootd: account {v['nb_account'] or '-'}, server {server}",
             ":net", *net,
             f"kernel {server}{KERNEL_PATH} initrd=discover.img {cmdline} || goto retry",
             f"initrd --name discover.img {server}{INITRD_PATH} || goto retry",
             "boot || goto retry", ":retry",
             "echo netbootd: no network or no server, retrying in 10 s", "sleep 10", "goto net"]
    return _padded(("\n".join(lines) + "\n").encode(), "medium.ipxe")


def _build_net_parts(dest: Path, *, files: dict[str, Path], epoch: int, env: dict,
                     step: Progress) -> dict:
    step("EFI system partition", 1, 3)
    grub_cfg = dest / "uefi-grub.cfg"
    grub_cfg.write_text(UEFI_GRUB_CFG)
    make_esp(dest, {"EFI/BOOT/BOOTX64.EFI": files["shim"],
                    "EFI/BOOT/grubx64.efi": files["grub_net"], "grub/grub.cfg": grub_cfg},
             epoch, env, slack_kib=ESP_SLACK_KIB)
    grub_cfg.unlink()
    step("BIOS boot image", 2, 3)
    make_eltorito(dest, NET_GRUB_PC_MODULES, env)
    return {"esp_bytes": (dest / "efi.img").stat().st_size}


def build_net_image(out_path, *, server_url: str, token: str, account: str = "",
                    extra_cmdline: str = "", ip: str | None = None, gateway: str | None = None,
                    dns: str | None = None, pin: str | None = None,
                    cache: Path | str | None | bool = True,
                    progress: Progress | None = None, **_ignored) -> dict:
    """Write the `net` image to out_path (temp file + rename); facts about it.
    cache, progress: as media.build_full_image."""
    t0 = time.monotonic()
    step = progress or (lambda s, n, t: None)
    settings = dict(server_url=server_url, token=token, account=account,
                    extra_cmdline=extra_cmdline, ip=ip, gateway=gateway, dns=dns, pin=pin)
    ipxe = medium_ipxe(**settings)
    cfg = medium_config(**settings)
    files = check_net_inputs()
    epoch = _epoch(files)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch), TZ="UTC", LC_ALL="C")
    out = output_checks(out_path)
    key_src = {"flavour": "net", "files": {k: _ident(p) for k, p in sorted(files.items())},
               "grub_pc": _ident(GRUB_PC_DIR / "moddep.lst"),
               "grub_modules": NET_GRUB_PC_MODULES, "load_cfg": LOAD_CFG,
               "uefi_cfg": UEFI_GRUB_CFG, "epoch": epoch, "v": 1,
               "tools": {t: _tool_version(t) for t in sorted(TOOLS)}}
    parts, facts, reused, td = _parts(
        key_src=key_src, cache=cache_path(cache),
        build=lambda d: _build_net_parts(d, files=files, epoch=epoch, env=env, step=step))
    try:
        digest = write_image(out, flavour="net",
                             tree={"boot/grub/grub.cfg": BIOS_GRUB_CFG.encode(),
                                   "grub/grub.cfg": UEFI_GRUB_CFG.encode(),
                                   MEDIUM_CFG: cfg, MEDIUM_IPXE: ipxe},
                             grafts=[f"boot/ipxe.lkrn={files['ipxe']}",
                                     f"boot/grub/i386-pc/eltorito.img={parts / 'eltorito.img'}"],
                             efi=parts / "efi.img", epoch=epoch, env=env, step=step, n=3,
                             pad=False)
    finally:
        if td is not None:
            td.cleanup()
    return image_facts(facts, out=out, flavour="net", sha256=digest, epoch=epoch,
                       reused=reused, account=account, server_url=server_url, t0=t0,
                       config=cfg + ipxe)
