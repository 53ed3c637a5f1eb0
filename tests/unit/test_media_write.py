"""`netbootd media write` (iso_builder/mediawrite.py) on a real loop device:
written, fsynced, read back and compared; the refusals, each one line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from iso_builder import mediawrite

MiB = 1 << 20


def _netbootd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netbootd", "media", *args],
                          capture_output=True, text=True, timeout=120, input=stdin)


@pytest.fixture
def loop(tmp_path):
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup")
    backing = tmp_path / "stick.bin"
    backing.write_bytes(b"\xee" * (16 * MiB))
    r = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip(f"no loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        yield dev, backing
    finally:
        subprocess.run(["losetup", "-d", dev], timeout=30)


def test_write_verifies_and_the_stick_holds_the_image(loop, tmp_path):
    dev, backing = loop
    img = tmp_path / "m.img"
    img.write_bytes(os.urandom(5 * MiB + 4096))
    r = _netbootd("write", str(img), "--device", dev, "--force", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["verified"] is True and info["bytes"] == img.stat().st_size
    data = backing.read_bytes()
    assert data[:img.stat().st_size] == img.read_bytes()
    assert data[img.stat().st_size:] == b"\xee" * (len(data) - img.stat().st_size)


def test_a_loop_device_is_not_removable_so_it_needs_force(loop, tmp_path):
    dev, backing = loop
    img = tmp_path / "m.img"
    img.write_bytes(b"x" * MiB)
    r = _netbootd("write", str(img), "--device", dev, "--yes")
    assert r.returncode == 1 and "is not a removable disk: --force" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert backing.read_bytes()[:MiB] == b"\xee" * MiB


def test_refusals_name_the_cause(loop, tmp_path):
    dev, backing = loop
    big = tmp_path / "big.img"
    big.write_bytes(b"\0" * (17 * MiB))
    r = _netbootd("write", str(big), "--device", dev, "--force", "--yes")
    assert r.returncode == 1 and "the image needs" in r.stderr, r.stderr
    small = tmp_path / "s.img"
    small.write_bytes(b"x")
    r = _netbootd("write", str(small), "--device", str(backing), "--force", "--yes")
    assert "is not a block device" in r.stderr, r.stderr
    r = _netbootd("write", str(small), "--device", dev, "--force")   # no terminal, no --yes
    assert r.returncode == 2 and "--yes" in r.stderr, r.stderr
    assert backing.read_bytes()[:1] == b"\xee"


def test_the_disk_holding_the_running_system_is_refused():
    root = None
    for line in open("/proc/self/mounts"):
        src, mnt = line.split()[:2]
        if mnt == "/" and src.startswith("/dev/"):
            root = os.path.realpath(src)
    if root is None or not os.path.exists(root):
        pytest.skip("/ is not on a block device here")
    with pytest.raises(mediawrite.MediaWriteError, match="running system|partition"):
        mediawrite.check_device(root, 1, force=True)


def test_a_mounted_stick_or_swap_is_refused(loop, tmp_path):
    """The real /sys; /proc/self/mounts and /proc/swaps as the kernel would write them
    (this kernel cannot mount FAT)."""
    dev, _ = loop
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mounts").write_text(f"{dev} /media/stick vfat rw 0 0\n")
    with pytest.raises(mediawrite.MediaWriteError, match="is mounted .*unmount it first"):
        mediawrite.check_device(dev, 1, force=True, proc_root=proc)
    (proc / "self" / "mounts").write_text("")
    (proc / "swaps").write_text(f"Filename Type Size Used Priority\n{dev} partition 1 0 -2\n")
    with pytest.raises(mediawrite.MediaWriteError, match="swap"):
        mediawrite.check_device(dev, 1, force=True, proc_root=proc)
    (proc / "swaps").write_text("")
    assert mediawrite.check_device(dev, 1, force=True, proc_root=proc)["name"] == \
        os.path.basename(dev)
