"""storage/capture.Target for a pool without a root (lvm): its volume path is a
link udev makes (/dev/<vg>/<lv> -> /dev/dm-N); the device it resolves to is
opened, and it must be a block device under /dev."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from netbootd.policy.volumes import VolumeError
from netbootd.storage.capture import Target


class LinkPool:
    """A pool whose volumes are links (as lvm's /dev/<vg>/<lv> are)."""
    def __init__(self, links: dict):
        self.links = links

    def path(self, name: str) -> str:
        return self.links[name]


def test_a_link_outside_dev_or_to_a_non_block_device_is_refused(tmp_path):
    (tmp_path / "plain").write_bytes(b"x" * 4096)
    os.symlink(tmp_path / "plain", tmp_path / "to-file")
    os.symlink("/dev/null", tmp_path / "to-null")
    pool = LinkPool({"f": str(tmp_path / "to-file"), "n": str(tmp_path / "to-null")})
    with pytest.raises(VolumeError, match="not a device under /dev"):
        Target(pool, "f", 4096)
    with pytest.raises(VolumeError, match="not a block device"):
        Target(pool, "n", 0)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("losetup") is None,
                    reason="needs root and losetup for a real block device")
def test_a_link_to_a_block_device_is_followed_and_written(tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True,
                         text=True, check=True).stdout.strip()
    try:
        os.symlink(dev, tmp_path / "lv")
        t = Target(LinkPool({"v": str(tmp_path / "lv")}), "v", 1 << 20)
        data = b"netbootd" * 512
        assert t.write(0, data, hashlib.sha256(data).hexdigest())
        os.fsync(t.fd)
        os.close(t.fd)
        with open(dev, "rb") as f:
            assert f.read(len(data)) == data
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)
