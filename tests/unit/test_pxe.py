"""Client classification and boot decisions, on options seen from real firmware."""
from __future__ import annotations

import pytest

from netbootd.codec import dhcp_options as o
from netbootd.config import BootConfig
from netbootd.model import ARCH_NAMES, arch_name
from netbootd.policy import pxe
from tests.dhcpkit import HTTP_UEFI, IPXE_BIOS, PXE_BIOS, PXE_UEFI


def test_uuid_from_option_97_undoes_the_firmware_byte_swap():
    # SUMMARY.md: SMBIOS UUID 8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010 is sent as 5e3f7c8a2d1b3e4c...
    c = pxe.classify(PXE_UEFI)
    assert c.uuid == "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010"


@pytest.mark.parametrize("raw", [b"", b"\x01" + bytes(16), bytes(16), bytes(18)])
def test_malformed_option_97_gives_no_uuid(raw):
    assert pxe.decode_uuid(raw) is None


def test_classify_real_firmware_kinds():
    assert pxe.classify(PXE_BIOS).arch == 0 and pxe.classify(PXE_BIOS).pxe
    assert not pxe.classify(PXE_BIOS).ipxe
    assert pxe.classify(IPXE_BIOS).ipxe
    h = pxe.classify(HTTP_UEFI)
    assert h.http and h.arch == 16 and not h.pxe
    assert pxe.classify({o.OPT_USER_CLASS: b"\x04iPXE"}).ipxe      # RFC 3004 form
    assert pxe.classify({o.OPT_IPXE_ENCAP: b"\x13\x01\x01"}).ipxe  # 175 alone: iPXE
    # the chain trick (bios-chain-undionly capture): user class PXE-ROM + 175 -> plain PXE
    assert not pxe.classify({**PXE_BIOS, o.OPT_USER_CLASS: b"PXE-ROM",
                             o.OPT_IPXE_ENCAP: b"\x13\x01\x01"}).ipxe
    assert not pxe.classify({o.OPT_VENDOR_CLASS: b"udhcp 1.35.0"}).netboot


def test_arch_falls_back_to_the_vendor_class_string():
    c = pxe.classify({o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00011:UNDI:003000"})
    assert c.arch == 11


def test_every_iana_arch_has_a_name_and_unknown_ones_do_not_crash():
    assert all(ARCH_NAMES.get(i) for i in range(0, 42))
    assert arch_name(7) == "x64-uefi" and arch_name(9999) == "unknown-9999"


CFG = BootConfig()


@pytest.mark.parametrize("opts, file, server", [
    (PXE_BIOS, "undionly.kpxe", "10.0.0.1"),
    (PXE_UEFI, "ipxe.efi", "10.0.0.1"),
    ({o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00009:UNDI:003000", o.OPT_CLIENT_ARCH: b"\x00\x09"},
     "ipxe.efi", "10.0.0.1"),
    (IPXE_BIOS, "http://10.0.0.1:8080/boot/aa-bb-cc-dd-ee-ff.ipxe", "10.0.0.1"),
    (HTTP_UEFI, "http://10.0.0.1:8080/files/ipxe.efi", None),
])
def test_decide(opts, file, server):
    ans = pxe.decide(pxe.classify(opts), "aa:bb:cc:dd:ee:ff", "10.0.0.1", CFG)
    assert ans.filename == file and ans.next_server == server and ans.event is None


def test_snponly_is_selectable_and_http_base_overrides():
    cfg = BootConfig(uefi_x64="snponly.efi", http_base="http://boot.example")
    assert pxe.decide(pxe.classify(PXE_UEFI), "aa:bb:cc:dd:ee:ff", "10.0.0.1",
                      cfg).filename == "snponly.efi"
    assert pxe.decide(pxe.classify(IPXE_BIOS), "aa:bb:cc:dd:ee:ff", "10.0.0.1",
                      cfg).filename == "http://boot.example/boot/aa-bb-cc-dd-ee-ff.ipxe"


def test_arm64_without_binary_is_an_event():
    arm = {o.OPT_VENDOR_CLASS: b"PXEClient:Arch:00011:UNDI:003000", o.OPT_CLIENT_ARCH: b"\x00\x0b"}
    ans = pxe.decide(pxe.classify(arm), "aa:bb:cc:dd:ee:ff", "10.0.0.1", CFG)
    assert ans.filename is None and "arm64-uefi" in ans.event


def test_host_controlled_vendor_class_is_made_printable():
    c = pxe.classify({o.OPT_VENDOR_CLASS: b"PXEClient\n<script>\x00" + b"x" * 500})
    assert "\n" not in c.vendor_class and "\x00" not in c.vendor_class
    assert len(c.vendor_class) == 128
