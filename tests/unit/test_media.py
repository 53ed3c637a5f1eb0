"""iso_builder/media.py: the account boot medium (issue 12).

The build tests need Debian's packages (xorriso, grub-pc-bin, grub-efi-amd64-signed,
shim-signed, mtools, dosfstools, a kernel, busybox-static) and skip without them;
booting the image is tests/e2e/test_media_qemu.py."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from iso_builder import initrd as initrd_mod
from iso_builder import media

URL = "http://192.0.2.10:8080"
TOKEN = "nbt1.abcdefghijklmnop.QRSTUVWXYZ012345"


def _can_build() -> str | None:
    try:
        media.check_inputs(initrd_mod.default_kernel_version())
        initrd_mod.find_busybox()
    except (media.MediaError, initrd_mod.InitrdError) as e:
        return str(e)
    return None


needs_debs = pytest.mark.skipif(_can_build() is not None,
                                reason=f"cannot build media here: {_can_build()}")


def test_medium_config_is_grub_set_lines_padded_to_a_fixed_size():
    cfg = media.medium_config(server_url=URL, token=TOKEN, account="acme",
                              extra_cmdline="console=ttyS0,115200")
    assert len(cfg) == media.MEDIUM_CFG_SIZE
    text = cfg.decode()
    assert f'set nb_server="{URL}"\n' in text and f'set nb_token="{TOKEN}"\n' in text
    assert 'set nb_account="acme"\n' in text and text.endswith("#\n")


@pytest.mark.parametrize("field,kw", [
    ("server_url", {"server_url": 'http://x/"; reboot; "'}),
    ("server_url", {"server_url": "ftp://x"}),
    ("token", {"token": "nbt1.a b"}),
    ("token", {"token": "nbt1.$x"}),
    ("account", {"account": 'ac"me'}),
    ("extra_cmdline", {"extra_cmdline": "a\nb"}),
])
def test_medium_config_refuses_what_grub_or_the_kernel_command_line_would_misread(field, kw):
    args = {"server_url": URL, "token": TOKEN, "account": "acme", **kw}
    with pytest.raises(media.MediaError, match=f"^{field}: "):
        media.medium_config(**args)


def test_a_missing_debian_package_is_one_line_naming_it(monkeypatch, tmp_path):
    real = media.shutil.which
    monkeypatch.setattr(media.shutil, "which", lambda t: None if t == "xorriso" else real(t))
    with pytest.raises(media.MediaError, match=r"^xorriso is missing \(Debian package "
                                               r"xorriso: apt-get install xorriso\)$"):
        media.check_inputs("0")
    monkeypatch.setattr(media.shutil, "which", lambda t: "/usr/bin/" + t)
    monkeypatch.setattr(media, "SHIM_DIR", tmp_path / "no-shim")
    monkeypatch.setattr(media, "GRUB_PC_DIR", tmp_path)
    (tmp_path / "boot_hybrid.img").write_bytes(b"")
    with pytest.raises(media.MediaError, match="shimx64.efi.signed is missing .Debian package "
                                               "shim-signed"):
        media.check_inputs("0")


@needs_debs
def test_an_unwritable_output_leaves_nothing_behind(tmp_path):
    with pytest.raises(media.MediaError, match="does not exist"):
        media.build_full_image(tmp_path / "nope" / "x.img", server_url=URL, token=TOKEN)
    assert not (tmp_path / "nope").exists()


@needs_debs
def test_two_builds_in_different_dirs_at_different_times_are_byte_identical(
        tmp_path, monkeypatch):
    """Everything built from scratch (no cached parts) twice, a few seconds apart,
    SOURCE_DATE_EPOCH fixed; then another account's image: the same size and
    layout, the bytes differ only inside /netbootd/medium.cfg."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = tmp_path / "one", tmp_path / "two"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    ia = media.build_full_image(a / "acme.img", server_url=URL, token=TOKEN, account="acme",
                                cache=None)
    time.sleep(1.5)
    monkeypatch.chdir(b)
    ib = media.build_full_image(b / "acme.img", server_url=URL, token=TOKEN, account="acme",
                                cache=tmp_path / "cache")
    assert ia["sha256"] == ib["sha256"] and ia["size"] == ib["size"]
    assert (a / "acme.img").read_bytes() == (b / "acme.img").read_bytes()
    assert ia["source_date_epoch"] == 1700000000
    assert not [p for p in a.iterdir() if p.name.startswith(".")], "a temp file left behind"
    # cached parts: the same bytes again, quickly
    ic = media.build_full_image(b / "again.img", server_url=URL, token=TOKEN, account="acme",
                                cache=tmp_path / "cache")
    assert ic["parts_reused"] and ic["sha256"] == ia["sha256"]
    # another account: only medium.cfg's bytes differ
    other = media.build_full_image(b / "other.img", server_url="http://198.51.100.7:8080",
                                   token=TOKEN[:-3] + "xyz", account="other-co",
                                   cache=tmp_path / "cache")
    x, y = (a / "acme.img").read_bytes(), (b / "other.img").read_bytes()
    assert len(x) == len(y) == other["size"]
    diff = [i for i in range(0, len(x), 1 << 16) if x[i:i + (1 << 16)] != y[i:i + (1 << 16)]]
    assert len(diff) == 1, diff
    start = diff[0]
    idx = [start + i for i in range(1 << 16) if x[start + i] != y[start + i]]
    assert idx[-1] - idx[0] < media.MEDIUM_CFG_SIZE, (idx[0], idx[-1])
    assert x.find(b'set nb_account="acme"') // 2048 == idx[0] // 2048


@needs_debs
def test_the_image_is_isohybrid_with_an_esp_holding_only_the_signed_chain(tmp_path):
    img = tmp_path / "m.img"
    media.build_full_image(img, server_url=URL, token=TOKEN, account="acme")
    r = subprocess.run(["xorriso", "-indev", str(img), "-report_el_torito", "plain",
                        "-report_system_area", "plain", "-find", "/", "-type", "f"],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert "El Torito boot img :   1  BIOS" in out and "El Torito boot img :   2  UEFI" in out
    assert "grub2-mbr" in out and "28732ac11ff8d211ba4b00a0c93ec93b" in out   # ESP type
    for f in ("'/.disk/info'", "'/boot/grub/grub.cfg'", "'/netbootd/vmlinuz'",
              "'/netbootd/agent.img'", "'/netbootd/medium.cfg'"):
        assert f in out, f
    # the ESP (GPT partition 2): shim as BOOTX64.EFI, grubx64.efi, mmx64.efi, never fbx64
    esp = tmp_path / "esp.img"
    line = [ln for ln in out.splitlines() if ln.startswith("GPT start and size :   2")][0]
    start, size = (int(v) for v in line.split()[-2:])
    with open(img, "rb") as f:
        f.seek(start * 512)
        esp.write_bytes(f.read(size * 512))
    r = subprocess.run(["mdir", "-b", "-i", str(esp), "::/EFI/BOOT"], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    names = sorted(n.rsplit("/", 1)[-1].upper() for n in r.stdout.split())
    assert names == ["BOOTX64.EFI", "GRUBX64.EFI", "MMX64.EFI"], r.stdout + r.stderr
