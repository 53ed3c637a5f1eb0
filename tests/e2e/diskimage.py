"""A tiny hybrid disk image that boots on SeaBIOS and on OVMF and says so on
the serial console (the sanboot e2e test and bench/storage/sanboot.py).

Layout (8 MiB, GPT with a protective MBR, built on a plain file: no loop
mounts, no root-only tools):

    LBA 0          GRUB's boot.img in the MBR code area (partition table kept),
                   its kernel sector pointing at LBA 2048
    LBA 1-33       GPT
    p1 2048-4095   BIOS boot partition (ef02): GRUB i386-pc core.img
    p2 4096-end    EFI system partition (ef00, FAT): /EFI/BOOT/BOOTX64.EFI
                   (GRUB x86_64-efi) and /nbsan.txt

Both GRUBs carry every module they need and an embedded config that puts
the console on the serial port, echoes ``<marker>-BIOS`` or ``<marker>-EFI``,
then finds /nbsan.txt on the disk it booted from and prints it (the
*volume* marker: a write into a clone's ESP changes what the clone prints
and nothing else), then sleeps.  What grub-bios-setup would do is done by
hand: boot.img's kernel sector (0x5c) and the drive-check nops (0x66), and
core.img's first blocklist (its sector 0x1f4) pointing at LBA 2049.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass

SECTOR = 512
IMAGE_BYTES = 8 << 20
BIOS_START, BIOS_END = 2048, 4095
ESP_START = 4096
ESP_OFFSET = ESP_START * SECTOR
GRUB_PC = "/usr/lib/grub/i386-pc"
GRUB_EFI = "/usr/lib/grub/x86_64-efi"
TOOLS = ("grub-mkimage", "sgdisk", "mkfs.fat", "mcopy", "mmd", "mtype")
VOLUME_FILE = "nbsan.txt"
# boot.img offsets (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h)
KERNEL_SECTOR_AT = 0x5C
DRIVE_CHECK_AT = 0x66
MBR_CODE_END = 0x1B8        # disk signature + partition table stay as sgdisk made them
BLOCKLIST_AT = SECTOR - 12  # diskboot.img: {u64 start, u16 len, u16 segment}, last entry

COMMON_MODULES = ["part_gpt", "part_msdos", "fat", "search", "search_fs_file", "cat",
                  "echo", "sleep", "test", "terminal"]


@dataclass(frozen=True)
class DiskImage:
    path: str
    marker: str                     # prints <marker>-BIOS / <marker>-EFI
    volume_text: str                # contents of /nbsan.txt as built
    sha256: str

    @property
    def bios_marker(self) -> str:
        return f"{self.marker}-BIOS"

    @property
    def efi_marker(self) -> str:
        return f"{self.marker}-EFI"


def missing_tools() -> str | None:
    """None when an image can be built here, else what is missing (a skip reason)."""
    for t in TOOLS:
        if shutil.which(t) is None:
            return f"{t} is not installed (Debian: grub-pc-bin grub-efi-amd64-bin gdisk " \
                   "dosfstools mtools)"
    for d, pkg in ((GRUB_PC, "grub-pc-bin"), (GRUB_EFI, "grub-efi-amd64-bin")):
        if not os.path.isdir(d):
            return f"{d} is missing (Debian: {pkg})"
    return None


def _run(*args: str, env: dict | None = None) -> None:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                       env={**os.environ, "MTOOLS_SKIP_CHECK": "1", **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: rc {r.returncode}: {r.stderr.strip()[-800:]}")


def grub_config(marker: str, serial: bool) -> str:
    # The embedded config runs in GRUB's rescue parser: plain commands only.
    lines = []
    if serial:
        lines += ["serial --unit=0 --speed=115200", "terminal_input serial",
                  "terminal_output serial"]
    lines += [f"echo {marker}",
              f"search --no-floppy --file --set=root /{VOLUME_FILE}",
              f"cat /{VOLUME_FILE}",
              f"echo {marker}-DONE",
              "sleep 3600"]
    return "\n".join(lines) + "\n"


def _mkimage(fmt: str, moddir: str, cfg: str, out: str, modules: list[str], tmp: str) -> None:
    cfg_path = os.path.join(tmp, f"{fmt}.cfg")
    with open(cfg_path, "w") as f:
        f.write(cfg)
    _run("grub-mkimage", "-O", fmt, "-d", moddir, "-o", out, "-c", cfg_path,
         "-p", "/boot/grub", *modules)


def write_volume_text(image: str, text: str) -> None:
    """Replace /nbsan.txt in the image's ESP (mtools at the partition's
    offset: a write into the file, as a guest's write would land)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(text)
    try:
        _run("mcopy", "-o", "-i", f"{image}@@{ESP_OFFSET}", f.name, f"::/{VOLUME_FILE}")
    finally:
        os.unlink(f.name)


def read_volume_text(image: str) -> str:
    r = subprocess.run(["mtype", "-i", f"{image}@@{ESP_OFFSET}", f"::/{VOLUME_FILE}"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"mtype {image}: {r.stderr.strip()}")
    return r.stdout


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(path: str, marker: str, volume_text: str | None = None,
          efi_path: str = "EFI/BOOT/BOOTX64.EFI") -> DiskImage:
    """Build the hybrid image at `path` (replaced if present).  `efi_path`: where
    the ESP holds GRUB (an installed OS's layout, e.g. EFI/debian/grubx64.efi,
    has nothing at the removable-media default path)."""
    why = missing_tools()
    if why:
        raise RuntimeError(why)
    volume_text = volume_text or f"{marker}-VOLUME golden\n"
    tmp = tempfile.mkdtemp(prefix="nbsan-img-")
    try:
        core = os.path.join(tmp, "core.img")
        _mkimage("i386-pc", GRUB_PC, grub_config(f"{marker}-BIOS", serial=True), core,
                 ["biosdisk", "serial"] + COMMON_MODULES, tmp)
        efi = os.path.join(tmp, "BOOTX64.EFI")
        # OVMF mirrors its console to the serial port: GRUB's EFI console is enough.
        _mkimage("x86_64-efi", GRUB_EFI, grub_config(f"{marker}-EFI", serial=False), efi,
                 COMMON_MODULES, tmp)
        with open(core, "rb") as f:
            core_img = bytearray(f.read())
        if len(core_img) > (BIOS_END - BIOS_START + 1) * SECTOR:
            raise RuntimeError(f"core.img is {len(core_img)} bytes: too big for the BIOS boot partition")

        with open(path, "wb") as f:
            f.truncate(IMAGE_BYTES)
        _run("sgdisk", "-o", "-n", f"1:{BIOS_START}:{BIOS_END}", "-t", "1:ef02",
             "-c", "1:bios", "-n", f"2:{ESP_START}:0", "-t", "2:ef00", "-c", "2:esp",
             "-U", "5d9b2c6e-0c4a-4b1e-9a57-6e2f7b9e0a01", path)

        esp = os.path.join(tmp, "esp.img")
        esp_bytes = IMAGE_BYTES - ESP_OFFSET - 34 * SECTOR
        esp_bytes -= esp_bytes % (1 << 10)
        with open(esp, "wb") as f:
            f.truncate(esp_bytes)
        _run("mkfs.fat", "-F", "16", "-s", "1", "-n", "NBSANBOOT", "-i", "4E425341", esp)
        parts = efi_path.strip("/").split("/")
        for i in range(1, len(parts)):
            _run("mmd", "-i", esp, "::/" + "/".join(parts[:i]))
        _run("mcopy", "-i", esp, efi, "::/" + "/".join(parts))
        txt = os.path.join(tmp, VOLUME_FILE)
        with open(txt, "w") as f:
            f.write(volume_text)
        _run("mcopy", "-i", esp, txt, f"::/{VOLUME_FILE}")

        with open(os.path.join(GRUB_PC, "boot.img"), "rb") as f:
            boot = bytearray(f.read())
        struct.pack_into("<Q", boot, KERNEL_SECTOR_AT, BIOS_START)
        boot[DRIVE_CHECK_AT:DRIVE_CHECK_AT + 2] = b"\x90\x90"   # as grub-bios-setup for a disk
        # the rest of core.img follows its first sector
        struct.pack_into("<Q", core_img, BLOCKLIST_AT, BIOS_START + 1)
        with open(path, "r+b") as f:
            f.seek(0)
            f.write(boot[:MBR_CODE_END])
            f.seek(BIOS_START * SECTOR)
            f.write(core_img)
            f.seek(ESP_OFFSET)
            with open(esp, "rb") as e:
                shutil.copyfileobj(e, f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DiskImage(path, marker, volume_text, sha256_file(path))


if __name__ == "__main__":   # python -m tests.e2e.diskimage OUT MARKER
    import sys
    img = build(sys.argv[1], sys.argv[2])
    print(img)
