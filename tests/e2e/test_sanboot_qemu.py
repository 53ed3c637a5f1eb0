"""Sanboot end to end (issue 13 items 3 and 5): real firmware under qemu
(SeaBIOS + iPXE ROM, OVMF + ipxe.efi) PXE-boots from netbootd, gets the
sanboot script and boots a small disk image exported over iSCSI by tgtd;
the image's marker reaches the serial console.  A clone of the golden
volume boots too, shows a write made into the clone, and the golden's
sha256 never changes.

    [srv ns]  netbootd --mode full (DHCP, TFTP, HTTP) + tgtd -C N, 10.84.0.1/24
        | veth
    [wire ns] bridge -- taps -- qemu (at most two at a time)

The disk image (tests/e2e/diskimage.py) is built once per session; its
volumes live in a file pool in the test's tmp dir, exported with
netbootd.storage.tgt to each host's own initiator IQN (policy/iscsi).  The
host gets the sanboot profile through the admin API.  Times from power-on to
the marker are printed (run with -s) next to the same image booted from a
local qemu drive.  ~3-5 min here (TCG).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from netbootd.lab import netns as labnet
from netbootd.lab.vm import OVMF_CODE, OVMF_VARS
from netbootd.policy.iscsi import host_chap_user, host_iqn
from netbootd.storage.tgtd import answers

from ..interop.harness import Netbootd, write_config
from . import diskimage

pytestmark = pytest.mark.e2e

SRV = "10.84.0.1"
BASE_URL = f"http://{SRV}:8080"
PORTAL = f"{SRV}:3260"
IQN_BASE = "iqn.2026-12.lan.netboot"
BIOS_MAC = "52:54:00:84:00:01"
UEFI_MAC = "52:54:00:84:00:02"
CLONE_MAC = "52:54:00:84:00:03"
BOOT_TIMEOUT = 240          # TCG: 25-90 s per boot here, more with a busy machine
TIMES: dict[str, float] = {}


def _require() -> None:
    why = labnet.available()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    for b in ("qemu-system-x86_64", "tgtd", "tgtadm"):
        if shutil.which(b) is None:
            pytest.skip(f"{b} is not installed (Debian: qemu-system-x86, tgt)")
    if not os.path.exists(OVMF_CODE):
        pytest.skip(f"{OVMF_CODE} is missing (Debian: ovmf)")
    why = diskimage.missing_tools()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> diskimage.DiskImage:
    """The golden disk image, built once per session (~1 s)."""
    _require()
    marker = f"NBSAN{random.randrange(16**8):08X}"
    return diskimage.build(str(tmp_path_factory.mktemp("sanimg") / "golden.img"), marker)


def qemu_cmd(firmware: str, workdir: Path, *, tap: str | None = None, mac: str | None = None,
             disk: str | None = None) -> list[str]:
    """Network boot (tap + mac) or a local disk boot (disk), SeaBIOS or OVMF."""
    cmd = ["qemu-system-x86_64", "-m", "256", "-nographic", "-no-reboot"]
    if tap:
        cmd += ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
        nic = f"virtio-net-pci,netdev=n0,mac={mac}"
    else:
        cmd += ["-nic", "none"]
    if firmware == "bios":
        cmd += ["-machine", "pc"]
        if tap:
            cmd += ["-device", nic, "-boot", "n"]
    else:
        vars_copy = workdir / f"OVMF_VARS.{os.getpid()}.{time.monotonic_ns()}.fd"
        shutil.copyfile(OVMF_VARS, vars_copy)
        cmd += ["-machine", "q35",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        if tap:
            cmd += ["-device", nic + ",romfile="]     # EDK2's own PXE, then ipxe.efi
    if disk:
        cmd += ["-drive", f"file={disk},format=raw,if=virtio,readonly=on"]
    return cmd


class Console:
    """A qemu whose serial console goes to a file; bounded waits on it."""

    def __init__(self, name: str, proc: subprocess.Popen, path: Path, t0: float):
        self.name, self.proc, self.path, self.t0 = name, proc, path, t0

    def text(self) -> str:
        return self.path.read_bytes().decode("utf-8", "replace")

    def wait(self, needle: str, timeout: float = BOOT_TIMEOUT) -> float:
        """Seconds from power-on until `needle` showed up."""
        end = time.monotonic() + timeout
        while True:
            if needle in self.text():
                return time.monotonic() - self.t0
            if self.proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{self.name}: no {needle!r} after {timeout:.0f}s (qemu rc "
                                     f"{self.proc.poll()}); console tail:\n"
                                     + "\n".join(self.text().splitlines()[-40:]))
            time.sleep(0.2)


class Site:
    """netbootd (with [storage]: a file pool and its own tgtd) in the server
    namespace, a bridge with taps for the VMs."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.lab = labnet.Lab()
        self.vms: list[subprocess.Popen] = []
        self.admin = ""
        self.pool_root = tmp / "pool"

    def start(self, templates_dir: str | None = None) -> None:
        lab = self.lab
        self.srv = lab.namespace("srv")
        self.wire = lab.namespace("wire")
        srv_if, wire_if = lab.link(self.srv, f"{SRV}/24", self.wire, None)
        self.taps = [lab.tap(self.wire) for _ in range(2)]
        lab.bridge(self.wire, [wire_if, *self.taps])
        # netbootd starts tgtd itself; its control socket is global: a number nobody uses
        self.control = random.randrange(20000, 32768)
        while answers("tgtadm", self.control):
            self.control = random.randrange(20000, 32768)
        boot = f'[boot]\ntemplates_dir = "{templates_dir}"\n' if templates_dir else ""
        cfg = write_config(self.tmp / "netbootd.toml", f"""mode = "full"
{boot}[dhcp]
lease_time = 600
[[networks]]
name = "lab"
subnet = "10.84.0.0/24"
ranges = ["10.84.0.100-10.84.0.199"]
[[storage.pools]]
name = "default"
root = "{self.pool_root}"
[storage.iscsi]
iqn_base = "{IQN_BASE}"
tgtd_control = {self.control}
""")
        self.daemon = Netbootd(lab, self.srv, self.tmp / "state",
                               ["--config", str(cfg), "--interface", srv_if],
                               self.tmp / "netbootd.log").start()
        self.admin = (self.tmp / "state" / "admin.token").read_text().strip()
        end = time.monotonic() + 30
        while f"tgt on {PORTAL}" not in self.daemon.log_path.read_text():
            assert time.monotonic() < end, "storage not ready:\n" + self.daemon.log_tail()
            time.sleep(0.2)

    def close(self) -> None:
        for p in self.vms:
            self.lab.stop(p, timeout=5)
        try:
            self.daemon.stop()          # stops its tgtd (offline, delete targets, exit)
        finally:
            self.lab.close()
        assert not answers("tgtadm", self.control), "tgtd still runs after netbootd stopped"

    # -- helpers -------------------------------------------------------------------
    def api(self, method: str, path: str, body=None) -> tuple[int, object]:
        """(status, JSON reply) of an admin API call made from inside the namespace."""
        cmd = ["curl", "-sS", "-m", "20", "-X", method, "-w", "\n%{http_code}",
               "-H", f"Authorization: Bearer {self.admin}"]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        r = self.lab.ns_exec(self.srv, *cmd, BASE_URL + path, check=False, timeout=30)
        text, _, code = r.stdout.rpartition("\n")
        try:
            return int(code), (json.loads(text) if text.strip() else None)
        except ValueError:
            return int(code or 0), text or r.stderr

    def job(self, method: str, path: str, body, timeout: float = 60) -> dict:
        """A storage call (a job): its result once done."""
        code, reply = self.api(method, path, body)
        end = time.monotonic() + timeout
        while code < 300 and isinstance(reply, dict) and reply.get("state") == "running":
            assert time.monotonic() < end, f"{path}: job still running: {reply}"
            time.sleep(0.3)
            code, reply = self.api("GET", f"/api/v1/jobs/{reply['id']}")
        assert code < 300 and reply.get("state") == "done", (path, code, reply)
        return reply["result"]

    def volume_path(self, name: str) -> str:
        return str(self.pool_root / "volumes" / name)

    def import_image(self, image: diskimage.DiskImage, name: str = "golden") -> None:
        """A volume holding the image (written into the pool's file: no import API)."""
        self.job("POST", "/api/v1/volumes",
                 {"pool": "default", "name": name, "size": os.path.getsize(image.path)})
        with open(image.path, "rb") as src, open(self.volume_path(name), "r+b") as dst:
            shutil.copyfileobj(src, dst)

    def sanboot(self, volume: str, mac: str, efi_filename: str | None = None) -> None:
        """Export `volume` to `mac` only (CHAP) and give it the sanboot profile."""
        code, reply = self.api("GET", "/api/v1/exports")
        for e in [e for e in reply["exports"] if e["volume"] == volume]:
            # moving a volume to another host: the old host boots something else,
            # then unexport (docs/storage.md "Limits")
            code, reply = self.api("POST", f"/api/v1/hosts/{e['host']}/assign",
                                   {"profile": "localboot"})
            assert code == 200, (code, reply)
            self.job("DELETE", f"/api/v1/exports/{volume}", None)
        self.job("POST", f"/api/v1/hosts/{mac}/sanboot",
                 {"volume": volume, **({"efi_filename": efi_filename} if efi_filename else {})})

    def boot_script(self, mac: str) -> str:
        r = self.lab.ns_exec(self.srv, "curl", "-sf", f"{BASE_URL}/boot/{mac.replace(':', '-')}.ipxe",
                             check=False, timeout=30)
        return r.stdout

    def power_on(self, name: str, firmware: str, tap: str, mac: str) -> Console:
        path = self.tmp / f"{name}.console"
        t0 = time.monotonic()
        p = self.lab.popen(self.wire, qemu_cmd(firmware, self.tmp, tap=tap, mac=mac),
                           stdin=subprocess.DEVNULL, stdout=open(path, "wb"),
                           stderr=subprocess.STDOUT)
        self.vms.append(p)
        return Console(name, p, path, t0)

    def power_off(self, con: Console) -> None:
        self.lab.stop(con.proc, timeout=5)


@pytest.fixture(scope="module")
def site(tmp_path_factory, image):
    s = Site(tmp_path_factory.mktemp("sanboot"))
    try:
        s.start()
        s.import_image(image)
        yield s
    finally:
        s.close()
        if TIMES:
            print("\nsanboot e2e: seconds from power-on to the marker: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in sorted(TIMES.items())))


def local_boot(firmware: str, image: diskimage.DiskImage, tmp: Path) -> float:
    """The same image from a local qemu drive: seconds to its marker."""
    path = tmp / f"local-{firmware}.console"
    t0 = time.monotonic()
    p = subprocess.Popen(qemu_cmd(firmware, tmp, disk=image.path), stdin=subprocess.DEVNULL,
                         stdout=open(path, "wb"), stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        marker = image.bios_marker if firmware == "bios" else image.efi_marker
        return Console(f"local-{firmware}", p, path, t0).wait(marker + "-DONE")
    finally:
        p.kill()
        p.wait(10)


def check_booted(con: Console, marker: str, volume_text: str) -> float:
    took = con.wait(marker + "-DONE")
    text = con.text()
    assert volume_text.strip() in text, f"{con.name}: the volume's /nbsan.txt was not shown"
    return took


def assert_chap_script(script: str, mac: str) -> None:
    """The host's own script names its IQN and its CHAP user and secret."""
    vals = dict(re.findall(r"^set (\S+) (\S+)$", script, re.M))
    assert vals.get("initiator-iqn") == host_iqn(IQN_BASE, mac), script
    assert vals.get("username") == host_chap_user(mac), script
    assert 12 <= len(vals.get("password", "")) <= 16, script
    assert re.search(rf"^sanboot .*iscsi:{re.escape(SRV)}::", script, re.M), script


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_golden_sanboots(site, image, firmware):
    mac, tap = (BIOS_MAC, site.taps[0]) if firmware == "bios" else (UEFI_MAC, site.taps[1])
    site.sanboot("golden", mac)
    assert_chap_script(site.boot_script(mac), mac)
    con = site.power_on(f"san-{firmware}", firmware, tap, mac)
    try:
        marker = image.bios_marker if firmware == "bios" else image.efi_marker
        TIMES[f"sanboot {firmware}"] = check_booted(con, marker, image.volume_text)
    finally:
        site.power_off(con)
    assert diskimage.sha256_file(site.volume_path("golden")) == image.sha256
    TIMES[f"local {firmware}"] = local_boot(firmware, image, site.tmp)


def test_clone_boots_and_leaves_the_golden_alone(site, image):
    """deploy = clone + export + assign; a write into the clone shows in its boot."""
    result = site.job("POST", "/api/v1/deploy", {"mac": CLONE_MAC, "from": "golden",
                                                "name": "clone1"})
    assert result.get("cloned_from") == "golden", result
    text = f"{image.marker}-VOLUME clone1 written {time.time():.0f}\n"
    diskimage.write_volume_text(site.volume_path("clone1"), text)     # a write into the clone
    assert diskimage.sha256_file(site.volume_path("golden")) == image.sha256
    assert diskimage.read_volume_text(site.volume_path("golden")) == image.volume_text
    assert_chap_script(site.boot_script(CLONE_MAC), CLONE_MAC)
    con = site.power_on("san-clone", "bios", site.taps[0], CLONE_MAC)
    try:
        TIMES["sanboot bios clone"] = check_booted(con, image.bios_marker, text)
        assert image.volume_text.strip() not in con.text()
    finally:
        site.power_off(con)
    assert diskimage.sha256_file(site.volume_path("golden")) == image.sha256
    assert diskimage.sha256_file(site.volume_path("clone1")) != image.sha256


def test_uefi_loader_off_the_default_path_needs_efi_filename(site, tmp_path_factory):
    """An installed OS's ESP has its loader under \\EFI\\<os>\\, often nothing at
    \\EFI\\BOOT\\BOOTX64.EFI: Debian 12's ipxe.efi then finds no loader (0x7f22208e,
    "No such file") and the script says so and retries every 10 s - the "UEFI sanboot
    hangs" case.  BIOS is unaffected (the MBR code boots).  The fix is sanboot's
    --filename with backslashes (docs/storage.md "Sanboot"; the template renders it when
    the context has efi_filename)."""
    img = diskimage.build(str(tmp_path_factory.mktemp("sanimg2") / "installed.img"),
                          f"NBSAN{random.randrange(16**8):08X}", efi_path="EFI/debian/grubx64.efi")
    site.import_image(img, "installed")
    site.sanboot("installed", UEFI_MAC)
    con = site.power_on("san-uefi-installed", "uefi", site.taps[1], UEFI_MAC)
    try:
        con.wait("Boot from SAN device 0x80 failed: Error 0x7f22208e")
        con.wait("netbootd: sanboot failed, retrying in 10 s")
        first = con.text().count("Registered SAN device 0x80")
        end = time.monotonic() + 60
        while con.text().count("Registered SAN device 0x80") <= first:
            assert time.monotonic() < end, "no retry:\n" + con.text()[-2000:]
            time.sleep(0.5)
        assert img.efi_marker not in con.text()
    finally:
        site.power_off(con)
    # the fix: the volume's loader named (sanboot --filename, backslashes)
    site.sanboot("installed", UEFI_MAC, efi_filename="\\EFI\\debian\\grubx64.efi")
    assert "--filename \\EFI\\debian\\grubx64.efi " in site.boot_script(UEFI_MAC)
    con = site.power_on("san-uefi-installed2", "uefi", site.taps[1], UEFI_MAC)
    try:
        con.wait(img.efi_marker)
    finally:
        site.power_off(con)
