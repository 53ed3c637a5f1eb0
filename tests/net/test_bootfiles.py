"""net/bootfiles.py: what the daemon finds to serve, and that it never fetches packages."""
from __future__ import annotations

import logging
import os

import pytest_twisted

import iso_builder.initrd as initrd
from netbootd.config import BootConfig, Config
from netbootd.net.bootfiles import discover_media, files_root, ipxe_binaries


def test_ipxe_binaries_are_found_by_name_and_resolved_through_symlinks(tmp_path):
    real = tmp_path / "elsewhere.efi"
    real.write_bytes(b"MZ")
    (tmp_path / "ipxe").mkdir()
    os.symlink(real, tmp_path / "ipxe" / "snponly.efi")
    (tmp_path / "ipxe" / "stray.bin").write_bytes(b"x")      # not an iPXE name: not served
    cfg = Config(boot=BootConfig(ipxe_dir=str(tmp_path / "ipxe")))
    assert ipxe_binaries(cfg) == {"snponly.efi": str(real)}
    assert files_root(cfg) == os.path.join(cfg.state_dir, "files")


def test_a_configured_discover_initrd_is_served_as_is_and_nothing_is_built(tmp_path):
    cfg = Config(state_dir=str(tmp_path), boot=BootConfig(discover_initrd="/x/d.img",
                                                           discover_kernel="/x/vmlinuz"))
    generated = {}
    assert discover_media(cfg, generated) is None
    assert generated == {"netbootd/discover.img": "/x/d.img", "netbootd/vmlinuz": "/x/vmlinuz"}


@pytest_twisted.inlineCallbacks
def test_the_daemon_builds_from_local_files_only_and_names_the_cli_when_it_cannot(
        tmp_path, monkeypatch, caplog):
    """No apt-get from a running daemon: the build is asked with fetch=False,
    and a missing input is one error line naming `netbootd initrd build`."""
    asked = []

    def build(path, **kw):
        asked.append(kw)
        if not kw.get("fetch", True):
            raise initrd.InitrdError("no statically linked busybox (Debian: busybox-static)")
        raise AssertionError("would fetch packages")
    monkeypatch.setattr(initrd, "ensure_discover_initrd", build)
    generated = {}
    with caplog.at_level(logging.ERROR, logger="netbootd"):
        yield discover_media(Config(state_dir=str(tmp_path)), generated)
    assert asked == [{"fetch": False}]
    assert generated == {}
    (line,) = [r.getMessage() for r in caplog.records if "discover initrd" in r.getMessage()]
    assert "netbootd initrd build" in line and "busybox" in line
