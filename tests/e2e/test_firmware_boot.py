"""Real firmware under qemu (TCG) boots from netbootd alone, inside private
namespaces (netbootd.lab), until the booted kernel's initrd calls netbootd
back.  Each test reads the boot timeline from netbootd's own store.

~25-60 s per boot here (LAB.md).  Needs root, qemu, OVMF, a Debian kernel.
"""
from __future__ import annotations

import json
import sqlite3
import time

import pytest

from netbootd.lab.vm import LabBoot, LabOptions, missing_parts

pytestmark = pytest.mark.e2e


def boot(firmware: str, mode: str = "full", **kw) -> tuple[LabBoot, object]:
    why = missing_parts(firmware, mode)
    if why:
        pytest.skip(why)
    lab = LabBoot(LabOptions(firmware=firmware, mode=mode, echo=False, timeout=240, **kw))
    try:
        lab.start()
    except Exception:
        lab.close()
        raise
    return lab


def kinds(result) -> list[str]:
    return [e["kind"] for e in result.timeline]


def details(result, kind: str) -> list[dict]:
    return [json.loads(e["detail"]) for e in result.timeline if e["kind"] == kind]


def assert_agent_called_back(lab, res):
    assert res.registered, (f"host state {res.state}; timeline {kinds(res)}; console tail:\n"
                            + "\n".join(res.console.splitlines()[-30:]))
    assert "agent.register" in kinds(res)
    reg = details(res, "agent.register")[-1]
    assert reg["uuid"] == "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010"
    assert reg["ip"].startswith("10.80.0.")
    scripts = details(res, "http.script")
    assert scripts and scripts[-1]["profile"] == "discover"
    files = {d["path"]: d for d in details(res, "http.file")}
    assert files["netbootd/vmlinuz"]["status"] == 200 and files["netbootd/vmlinuz"]["bytes"] > 1e6
    assert files["netbootd/discover.img"]["status"] == 200


def ack_to_script(res) -> float:
    """Seconds from the DHCPACK that gave iPXE its script URL to the script
    request: iPXE's IPv6 router wait sits between the two (LAB.md)."""
    ack = next(e["ts"] for e in res.timeline if e["kind"] == "dhcp.ack"
               and (json.loads(e["detail"]).get("file") or "").endswith(".ipxe"))
    script = next(e["ts"] for e in res.timeline if e["kind"] == "http.script")
    return script - ack


def test_seabios_ipxe_rom_gets_its_script_over_http():
    lab = boot("bios")
    with lab:
        res = lab.wait_registered()
    assert_agent_called_back(lab, res)
    offers = details(res, "dhcp.offer")
    assert offers[0]["file"] == "http://10.80.0.1:8080/boot/52-54-00-77-00-10.ipxe"
    assert not [k for k in kinds(res) if k.startswith("tftp.")], "iPXE ROM must not chain"
    # The RA quench (ipv6_ra_quench, on by default) ends iPXE's router wait:
    # ~13 s without it (test below), well under a second with it.
    gap = ack_to_script(res)
    assert gap < 3, f"{gap:.1f} s between DHCPACK and the boot script request"


def test_without_the_ra_quench_ipxe_waits_for_a_router():
    """The same boot with IPv6 off on the server's interface (nothing can
    answer iPXE's router solicitations): the wait the quench removes."""
    lab = boot("bios", ipv6=False)
    with lab:
        res = lab.wait_registered()
    assert_agent_called_back(lab, res)
    gap = ack_to_script(res)
    assert gap > 8, f"only {gap:.1f} s between DHCPACK and the boot script request"


def test_bios_plain_pxe_chains_undionly_over_tftp_then_http():
    """LAB.md: make the iPXE ROM look like plain PXE (user class PXE-ROM),
    let it fetch undionly.kpxe over TFTP, clear the user class and chain it:
    the chained iPXE then gets its script over HTTP (no chainload loop)."""
    lab = boot("bios")
    with lab:
        assert lab.wait_console("Ctrl-B", 90), lab.console_text()[-2000:]
        lab.qemu.stdin.write(b"\x02")
        lab.qemu.stdin.flush()
        assert lab.wait_console("iPXE>", 30), lab.console_text()[-2000:]
        for cmd in ("set user-class PXE-ROM", "dhcp", "clear user-class",
                    "chain tftp://${next-server}/${filename}"):
            lab.type_console(cmd + "\r")
            time.sleep(0.5)
        res = lab.wait_registered()
    assert_agent_called_back(lab, res)
    offers = [d["file"] for d in details(res, "dhcp.offer")]
    assert offers[0] == "undionly.kpxe"
    assert "http://10.80.0.1:8080/boot/52-54-00-77-00-10.ipxe" in offers
    done = [d for d in details(res, "tftp.finished") if d["file"] == "undionly.kpxe"]
    assert done and done[0]["bytes"] > 50_000


def test_ovmf_uefi_pxe_fetches_ipxe_efi_over_tftp_then_http():
    lab = boot("uefi")
    with lab:
        res = lab.wait_registered()
    assert_agent_called_back(lab, res)
    assert details(res, "dhcp.offer")[0]["file"] == "ipxe.efi"
    done = [d for d in details(res, "tftp.finished") if d["file"] == "ipxe.efi"]
    assert done and done[0]["bytes"] > 500_000 and done[0]["retransmits"] == 0
    # EDK2 and iPXE stages keep one address (option 61 = htype+chaddr)
    assert len({d["ip"] for d in details(res, "dhcp.ack")}) == 1


def test_ovmf_uefi_http_boot_gets_a_url_and_httpclient():
    lab = boot("uefi-http")
    with lab:
        res = lab.wait_registered()
    assert_agent_called_back(lab, res)
    assert details(res, "dhcp.offer")[0]["file"] == "http://10.80.0.1:8080/files/ipxe.efi"
    got = [d for d in details(res, "http.file") if d["path"] == "ipxe.efi" and d["bytes"] > 0]
    assert got and got[0]["status"] == 200
    assert not [k for k in kinds(res) if k.startswith("tftp.")]


def test_ovmf_pxe_in_proxy_mode_beside_dnsmasq():
    """dnsmasq (another namespace) hands out addresses only; netbootd in
    proxy mode supplies the boot file and never stores a lease."""
    lab = boot("uefi", mode="proxy")
    with lab:
        res = lab.wait_registered()
        db = sqlite3.connect(f"file:{lab.state_dir}/netbootd.sqlite3?mode=ro", uri=True)
        leases = db.execute("SELECT COUNT(*) FROM leases").fetchone()[0]
        db.close()
    assert_agent_called_back(lab, res)
    assert leases == 0
    assert "dhcp.ack" not in kinds(res) and "dhcp.offer" not in kinds(res)
    proxied = [d["file"] for d in details(res, "proxy.offer") + details(res, "proxy.ack")]
    assert "ipxe.efi" in proxied
    assert "http://10.80.0.1:8080/boot/52-54-00-77-00-10.ipxe" in proxied
    assert [d for d in details(res, "tftp.finished") if d["file"] == "ipxe.efi"]
