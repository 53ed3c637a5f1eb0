"""bench/storm's code against the real daemon, small: 20 simulated hosts
(UEFI and BIOS firmware option sets from the captures) boot at once through
DHCP, TFTP, iPXE's DHCP and HTTP (tiny kernel and initrd) in namespaces;
afterwards every host has a lease, a registered host with a complete boot
timeline, a DNS name, and its host.discovered hook was posted."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from .harness import require_lab

STORM = Path(__file__).resolve().parents[2] / "bench" / "storm"
sys.path.insert(0, str(STORM))

import client as storm_client  # noqa: E402
import firmware  # noqa: E402
import lab as storm_lab  # noqa: E402

HOSTS = 20


def test_firmware_option_sets_come_from_the_captures():
    uefi, uefi_ipxe = firmware.load("uefi")
    bios, bios_ipxe = firmware.load("bios")
    assert dict(uefi.discover)[93] == b"\x00\x07" and 77 not in dict(uefi.discover)
    assert dict(uefi.discover)[60] == b"PXEClient:Arch:00007:UNDI:003000"
    assert dict(bios.discover)[93] == b"\x00\x00" and dict(bios.discover)[77] == b"PXE-ROM"
    assert dict(uefi_ipxe.discover)[77] == dict(bios_ipxe.discover)[77] == b"iPXE"
    mac, uuid = storm_client.host_mac(7), bytes(range(16))
    opts = firmware.host_options(uefi.request, mac, uuid, b"\x0a\x4d\x10\x05", b"\x0a\x4d\x00\x01")
    d = dict(opts)
    assert d[97] == b"\x00" + uuid and d[50] == b"\x0a\x4d\x10\x05" and d[54] == b"\x0a\x4d\x00\x01"
    assert [c for c, _ in opts][0] == 53


def test_boot_script_parsing_follows_ipxe_syntax():
    text = ("#!ipxe\nimgfree\nkernel http://s:8080/files/netbootd/vmlinuz initrd=discover.img "
            "x=1 || goto failed\ninitrd --name discover.img /files/netbootd/discover.img "
            "|| goto failed\nboot || goto failed\n:failed\nchain --autofree http://s/x.ipxe\n")
    kernel, initrds, chain = storm_client.parse_script(text, "http://s:8080")
    assert kernel == "http://s:8080/files/netbootd/vmlinuz"
    assert initrds == ["http://s:8080/files/netbootd/discover.img"]
    assert chain is None


def test_small_storm_boots_every_host_with_a_complete_timeline(lab, tmp_path):
    require_lab()
    if not Path(storm_lab.NETBOOTD).exists():
        pytest.skip("netbootd console script not in .venv")
    for b in storm_lab.BOOT_FILES:
        if not (storm_lab.IPXE_DIR / b).exists():
            pytest.skip(f"{storm_lab.IPXE_DIR / b} missing (Debian package ipxe)")
    work = tmp_path / "storm"
    work.mkdir()
    world = storm_lab.World(lab, work)
    world.make_files(64 << 10, 256 << 10)
    nb, sink, _state, sink_file = storm_lab.start_netbootd(world, None)
    try:
        storm = world.run_client(work / "storm.json", HOSTS, 60.0, None, ["--bios-every", "4"])
        failed = [(h["mac"], h["error"]) for h in storm["hosts"] if h["error"] or not h["done"]]
        assert not failed, failed
        assert {h["family"] for h in storm["hosts"]} == {"uefi", "bios"}
        for h in storm["hosts"]:
            assert h["bytes"] == {"bootfile": h["bytes"]["bootfile"], "kernel": 64 << 10,
                                  "initrd": 256 << 10}
            assert h["leased"] <= h["bootfile"] <= h["script"] <= h["done"]
        assert len({h["ip"] for h in storm["hosts"]}) == HOSTS
        check = None
        for _ in range(10):                     # hooks are posted in batches
            check = world.run_check(work / "storm.json", sink_file)
            if check["hook_events"].get("host.discovered", 0) >= HOSTS:
                break
            time.sleep(0.5)
        assert check["problem_counts"] == {}, check["problems"]
        assert check["with_lease"] == check["registered"] == HOSTS
        assert check["complete_timeline"] == check["dns_ok"] == HOSTS
        assert check["hook_events"]["host.discovered"] == HOSTS
        assert nb.alive()
    finally:
        nb.stop()
        if sink:
            sink.stop()
