"""End to end: the inventory agent (issue 11) in qemu against the real netbootd.

Topology (every address lives only inside namespaces this module creates, 10.81.0.x):

    [srv ns]  netbootd serve --mode full (DHCP, HTTP API), 10.81.0.1/24 on a veth
        |  veth
    [wire ns] bridge (STP off) -- taps -- qemu VMs (TCG), direct kernel boot of the
              Debian kernel + our discover initrd (built once for the module)

VM "box" (-smp 2,sockets=2, -m 512, SMBIOS types 0/1/2 set, a virtio and an e1000 NIC,
three virtio disks: A 4 MiB of 0xA5 with discard=unmap, B 4 MiB of 0x5A whose discards
qemu ignores, C read-only) boots with a valid enrollment token on its command line and
stays up for every check, in order: registration into the token's account, the
inventory against what qemu was given, a wipe of A+B (verified zeros, read back from
the image files), a wipe of C (failed, never done), then `boot` of the linux profile
by kexec (the new kernel's command line shows up on the console).  VM "intruder"
boots at the same time with a tampered token and must print FAILED with the reason
and power off; then VM "uefi" (OVMF, no token) posts an inventory saying uefi and
Secure Boot off (read from the EFI variable).  At most two VMs run at once.  Token refusals the agent cannot show (revoked, another account's) and
"one host cannot post for another" are checked by HTTP calls to the same daemon.

Run:  .venv/bin/pytest tests/e2e/test_agent_qemu.py -q   (root; ~1-3 min under TCG)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iso_builder import initrd as initrd_mod
from netbootd.lab import netns as labnet

from .nsapi import ns_call

pytestmark = pytest.mark.e2e

SRV = "10.81.0.1"
BASE = f"http://{SRV}:8080"
BOX_MACS = ("52:54:00:81:00:11", "52:54:00:81:00:12")      # virtio-net, e1000
INTRUDER_MAC = "52:54:00:81:00:21"
UEFI_MAC = "52:54:00:81:00:31"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
BOX_UUID = "8a7c3f5e-1b2d-4c3e-9f10-81aa00bb0011"
SMBIOS = {"vendor": "Acme Test", "product": "Box 9", "serial": "SER-0081",
          "board_vendor": "Acme Boards", "board": "B-81", "board_serial": "BRD-0081",
          "bios_vendor": "TestBIOS", "bios_version": "9.8.1", "bios_date": "01/02/2025"}
MiB = 1 << 20
DISKS = {"vda": ("DISK-A", 0xA5, "discard=unmap"), "vdb": ("DISK-B", 0x5A, ""),
         "vdc": ("DISK-C", 0x11, "readonly=on")}
MEMORY_MIB = 512
BOOT_TIMEOUT = 240.0       # TCG: a boot takes 10-60 s here; two VMs share two cores
ACTION_TIMEOUT = 90.0
KEXEC_MARK = "nbtest=kexec-ok-81"
LEASE_TIME = 30            # seconds: renewals (T1 = 15 s) happen during the run


def _require() -> dict:
    why = labnet.available()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("/dev/net/tun is missing: no tap devices for qemu")
    kernels = initrd_mod.guest_kernels()
    if not kernels:
        pytest.skip("no guest kernel with modules (Debian: linux-image-amd64)")
    try:
        busybox = initrd_mod.find_busybox()
    except initrd_mod.InitrdError as e:
        pytest.skip(f"no static busybox for the initrd: {e}")
    return {"kernel": kernels[-1], "busybox": busybox}



class World:
    """The lab: netbootd in its namespace, the VMs, and the helpers the tests share."""

    def __init__(self, tmp: Path, guest: dict):
        self.tmp, self.guest = tmp, guest
        self.lab = labnet.Lab()
        self.vms: dict[str, subprocess.Popen] = {}
        self.admin = ""

    # -- set-up ----------------------------------------------------------------------
    def start_daemon(self) -> None:
        lab = self.lab
        self.srv = lab.namespace("srv")
        self.wire = lab.namespace("wire")
        srv_if, wire_if = lab.link(self.srv, f"{SRV}/24", self.wire, None)
        self.taps = [lab.tap(self.wire) for _ in range(4)]
        lab.bridge(self.wire, [wire_if, *self.taps])
        self.state = self.tmp / "state"
        cfg = self.tmp / "netbootd.toml"
        # Short leases: the idle agent must renew them while it waits for work.
        cfg.write_text(f'mode = "full"\n[dhcp]\nlease_time = {LEASE_TIME}\n[[networks]]\n'
                       'name = "lab"\n'
                       'subnet = "10.81.0.0/24"\nranges = ["10.81.0.100-10.81.0.199"]\n'
                       # a file pool for the capture case (no iSCSI exports needed)
                       f'[[storage.pools]]\nname = "default"\nroot = "{self.tmp / "pool"}"\n'
                       '[storage.iscsi]\nbackend = "none"\n')
        self.log = self.tmp / "netbootd.log"
        self.daemon = lab.popen(self.srv, [sys.executable, "-m", "netbootd", "serve", "--config",
                                           str(cfg), "--interface", srv_if, "--state-dir",
                                           str(self.state)],
                                stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 90
        while b"netbootd ready" not in self.log.read_bytes():
            assert self.daemon.poll() is None, "netbootd exited:\n" + self.log.read_text()[-3000:]
            assert time.monotonic() < end, "netbootd not ready:\n" + self.log.read_text()[-3000:]
            time.sleep(0.2)
        self.admin = (self.state / "admin.token").read_text().strip()

    def start_vm(self, name: str, taps_macs: list[tuple[str, str, str]], append: str,
                 extra: list[str], memory: int = MEMORY_MIB) -> None:
        cmd = ["qemu-system-x86_64", "-machine", "q35", "-m", str(memory),
               "-smp", "2,sockets=2,cores=1,threads=1", "-nographic", "-no-reboot",
               "-kernel", self.guest["kernel"]["vmlinuz"], "-initrd", str(self.guest["initrd"]),
               "-append", f"console=ttyS0 quiet panic=-1 netbootd.server={BASE} "
                          f"netbootd.poll_interval=1 netbootd.poll_max=2 {append}"]
        for i, (tap, mac, model) in enumerate(taps_macs):
            cmd += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no",
                    "-device", f"{model},netdev=n{i},mac={mac},romfile="]
        self.vms[name] = self.lab.popen(self.wire, cmd + extra, stdin=subprocess.DEVNULL,
                                        stdout=open(self.tmp / f"{name}.console", "wb"),
                                        stderr=subprocess.STDOUT)

    def close(self) -> None:
        for p in self.vms.values():
            self.lab.stop(p, timeout=5)
        self.lab.close()

    # -- helpers ------------------------------------------------------------------------
    def api(self, method: str, path: str, body=None, auth: str | None = "admin"):
        """(status, JSON reply) of a call to netbootd, from inside its namespace."""
        if auth == "admin":
            auth = f"Bearer {self.admin}"
        return ns_call(self.lab, self.srv, method, BASE + path, auth, body)

    def ok(self, method: str, path: str, body=None):
        code, reply = self.api(method, path, body)
        assert 200 <= code < 300, f"{method} {path} -> {code} {reply}"
        return reply

    def console(self, name: str) -> str:
        return (self.tmp / f"{name}.console").read_text(errors="replace")

    def wait_console(self, name: str, needle: str, timeout: float, after: int = 0) -> int:
        """Position just past `needle` (searched from `after`) once it shows up."""
        end = time.monotonic() + timeout
        while True:
            text = self.console(name)
            i = text.find(needle, after)
            if i >= 0:
                return i + len(needle)
            vm = self.vms[name]
            if vm.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{name}: no {needle!r} after {timeout:.0f}s "
                                     f"(qemu rc {vm.poll()}); console tail:\n"
                                     + "\n".join(text.splitlines()[-40:]))
            time.sleep(0.3)

    def events(self, mac: str, kinds: tuple[str, ...]) -> list[dict]:
        rows = self.ok("GET", f"/api/v1/events?mac={mac}&limit=500")
        rows = rows.get("events", rows) if isinstance(rows, dict) else rows
        return [e for e in rows if e["kind"] in kinds]

    def wait_action(self, mac: str, action_id: int, statuses: tuple[str, ...]) -> dict:
        """The agent's report (as stored in the timeline) on the action `action_id`."""
        end = time.monotonic() + ACTION_TIMEOUT
        while time.monotonic() < end:
            for e in self.events(mac, ("agent.action", "agent.action_failed")):
                d = e["detail"] if isinstance(e["detail"], dict) else json.loads(e["detail"])
                if d.get("id") == action_id and d.get("status") in statuses:
                    return d
            time.sleep(0.5)
        raise AssertionError(f"no report {statuses} on action {action_id}; console tail:\n"
                             + "\n".join(self.console("box").splitlines()[-30:]))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    req = _require()
    tmp = tmp_path_factory.mktemp("agent")
    initrd = tmp / "discover.img"
    info = initrd_mod.build_discover_initrd(initrd, kernel_version=req["kernel"]["version"],
                                            busybox=req["busybox"])
    w = World(tmp, {**req, "initrd": initrd, "info": info})
    try:
        w.start_daemon()
        w.ok("POST", "/api/v1/accounts", {"name": "acme", "approval": "auto"})
        w.ok("POST", "/api/v1/accounts", {"name": "other", "approval": "auto"})
        w.token = w.ok("POST", "/api/v1/tokens", {"account": "acme", "label": "e2e"})["token"]
        w.other_token = w.ok("POST", "/api/v1/tokens", {"account": "other"})["token"]
        revoked = w.ok("POST", "/api/v1/tokens", {"account": "acme"})
        w.ok("POST", f"/api/v1/tokens/{revoked['id']}/revoke")
        w.revoked_token = revoked["token"]
        # one character of the signature changed: the HMAC check refuses it
        last = w.token[-1]
        w.tampered_token = w.token[:-1] + ("A" if last != "A" else "B")

        drives = []
        for i, (name, (serial, fill, opts)) in enumerate(DISKS.items()):
            img = tmp / f"{name}.img"
            img.write_bytes(bytes([fill]) * (4 * MiB))
            drives += ["-drive", f"file={img},if=none,id=d{i},format=raw" +
                       (f",{opts}" if opts else ""),
                       "-device", f"virtio-blk-pci,drive=d{i},serial={serial}"]
        s = SMBIOS
        drives += ["-smbios", f"type=0,vendor={s['bios_vendor']},version={s['bios_version']},"
                              f"date={s['bios_date']}",
                   "-smbios", f"type=1,manufacturer={s['vendor']},product={s['product']},"
                              f"serial={s['serial']},uuid={BOX_UUID}",
                   "-smbios", f"type=2,manufacturer={s['board_vendor']},product={s['board']},"
                              f"serial={s['board_serial']}"]
        w.start_vm("box", [(w.taps[0], BOX_MACS[0], "virtio-net-pci"),
                           (w.taps[1], BOX_MACS[1], "e1000")],
                   f"netbootd.token={w.token}", drives)
        w.start_vm("intruder", [(w.taps[2], INTRUDER_MAC, "virtio-net-pci")],
                   f"netbootd.token={w.tampered_token} netbootd.poll_timeout=30", [])
        yield w
    finally:
        w.close()
        if os.environ.get("NETBOOTD_LAB_KEEP") != "1":
            for f in tmp.glob("*.img"):
                f.unlink()


def _host(world, mac: str) -> dict:
    return world.ok("GET", f"/api/v1/hosts/{mac}")


# -- the checks, in boot order ------------------------------------------------------------
def test_box_registers_into_its_tokens_account_and_never_prints_the_token(world):
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    text = world.console("box")
    assert "NETBOOTD-AGENT: registered mac=" in text and " account=acme token=yes " in text
    assert world.token not in text and world.token.split(".")[-1] not in text
    h = _host(world, BOX_MACS[0])
    assert h["account"] == "acme" and h["state"] == "idle", h


def test_inventory_matches_what_qemu_was_given(world):
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    doc = _host(world, BOX_MACS[0])["inventory"]["doc"]
    assert (doc["cpu"]["sockets"], doc["cpu"]["cores"], doc["cpu"]["threads"]) == (2, 2, 2)
    # Tolerance: none for the SMBIOS memory devices (what was installed: -m 512 is one
    # 512 MiB DIMM); the fallbacks would be within 10% (MemTotal) - see inventory.sh.
    assert doc["memory"]["bytes"] == MEMORY_MIB * MiB, doc["memory"]
    disks = {d["name"]: d for d in doc["disks"]}
    assert set(disks) == set(DISKS), disks
    for name, (serial, _, opts) in DISKS.items():
        d = disks[name]
        assert (d["serial"], d["bytes"], d["transport"]) == (serial, 4 * MiB, "virtio"), d
        assert d["readonly"] is (opts == "readonly=on"), d
    nics = {n["mac"]: n for n in doc["nics"]}
    assert set(nics) == set(BOX_MACS), nics
    assert nics[BOX_MACS[0]]["driver"] == "virtio_net" and nics[BOX_MACS[1]]["driver"] == "e1000"
    assert nics[BOX_MACS[1]]["speed"] == 1000 and all(n["link"] for n in nics.values())
    dmi, s = doc["dmi"], SMBIOS
    assert dmi["system"] == {"vendor": s["vendor"], "product": s["product"],
                             "serial": s["serial"], "uuid": BOX_UUID}
    assert dmi["board"] == {"vendor": s["board_vendor"], "product": s["board"],
                            "serial": s["board_serial"]}
    assert dmi["bios"] == {"vendor": s["bios_vendor"], "version": s["bios_version"],
                           "date": s["bios_date"]}
    assert doc["firmware"] == "bios" and doc.get("secure_boot") is None


def test_capture_of_a_disk_into_a_volume_matches_its_image(world):
    """Issue 13 item 4: the agent streams vdc (read-only, 4 MiB of 0x11) into a new
    volume of the daemon's file pool; the volume equals the image file, the job says
    done with the digest the agent printed."""
    import hashlib
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    job = world.ok("POST", f"/api/v1/hosts/{BOX_MACS[0]}/capture",
                   {"disk": "/dev/vdc", "volume": "box-vdc"})
    end = time.monotonic() + ACTION_TIMEOUT
    while job["state"] == "running" and time.monotonic() < end:
        time.sleep(0.5)
        job = world.ok("GET", f"/api/v1/jobs/{job['id']}")
    assert job["state"] == "done", (job, world.console("box")[-2000:])
    image = (world.tmp / "vdc.img").read_bytes()
    vol = (world.tmp / "pool" / "volumes" / "box-vdc").read_bytes()
    assert hashlib.sha256(vol).hexdigest() == hashlib.sha256(image).hexdigest()
    assert job["result"]["bytes"] == len(image) == 4 * MiB
    assert f"sha256={job['result']['sha256']}" in world.console("box")
    kinds = {(e["detail"] if isinstance(e["detail"], dict) else json.loads(e["detail"]))
             ["status"] for e in world.events(BOX_MACS[0], ("storage.capture",))}
    assert {"queued", "done"} <= kinds, kinds


def test_wipe_leaves_verified_zeros_where_the_report_says(world):
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    h = world.ok("POST", f"/api/v1/hosts/{BOX_MACS[0]}/actions",
                 {"action": "wipe", "disks": ["vda", "vdb"], "confirm": BOX_MACS[0].upper()})
    aid = (h.get("action") or {}).get("id") if isinstance(h, dict) else None
    if aid is None:
        aid = world.events(BOX_MACS[0], ("agent.queued",))[-1]["detail"]["id"]
    rep = world.wait_action(BOX_MACS[0], aid, ("done", "failed"))
    assert rep["status"] == "done", rep
    by = {d["name"]: d for d in rep["detail"]["disks"]}
    assert all(d["verified"] is True and d["result"] == "ok" for d in by.values()), by
    # A: qemu unmaps the discarded range: the whole image reads back as zeros
    assert (by["vda"]["method"], by["vda"]["bytes"]) == ("blkdiscard", 4 * MiB)
    assert (world.tmp / "vda.img").read_bytes() == bytes(4 * MiB)
    # B: qemu ignores discards, the agent sees its data come back and zeroes the first
    # and last MiB instead; exactly those are zero, the rest is untouched
    assert (by["vdb"]["method"], by["vdb"]["bytes"]) == ("zero", 2 * MiB), by["vdb"]
    b = (world.tmp / "vdb.img").read_bytes()
    assert b[:MiB] == bytes(MiB) and b[-MiB:] == bytes(MiB)
    assert b[MiB:-MiB] == b"\x5a" * (2 * MiB)
    text = world.console("box")
    assert "NETBOOTD-AGENT: wipe disk=vda method=blkdiscard bytes=4194304 verified=yes" in text
    assert "NETBOOTD-AGENT: wipe disk=vdb method=zero bytes=2097152 verified=yes" in text


def test_wipe_of_a_read_only_disk_is_reported_failed_never_done(world):
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    h = world.ok("POST", f"/api/v1/hosts/{BOX_MACS[0]}/actions",
                 {"action": "wipe", "disks": ["vdc"], "confirm": BOX_MACS[0]})
    aid = (h.get("action") or {}).get("id") if isinstance(h, dict) else None
    if aid is None:
        aid = world.events(BOX_MACS[0], ("agent.queued",))[-1]["detail"]["id"]
    rep = world.wait_action(BOX_MACS[0], aid, ("done", "failed"))
    assert rep["status"] == "failed", rep
    [d] = rep["detail"]["disks"]
    assert (d["name"], d["verified"], d["result"], d["error"]) == ("vdc", False, "failed",
                                                                   "read-only disk")
    assert (world.tmp / "vdc.img").read_bytes() == b"\x11" * (4 * MiB)
    assert not [e for e in world.events(BOX_MACS[0], ("agent.action",))
                if e["detail"].get("id") == aid and e["detail"].get("status") == "done"]


def test_an_idle_agent_renews_its_leases(world):
    """The agent waits for work indefinitely, so its DHCP client stays in the
    background and renews (a host that let its lease lapse would lose its address)."""
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    end = time.monotonic() + 2 * LEASE_TIME
    while time.monotonic() < end:
        acks = world.events(BOX_MACS[0], ("dhcp.ack",))
        if len(acks) >= 2:
            break
        time.sleep(1)
    assert len(acks) >= 2, world.events(BOX_MACS[0], ("dhcp.ack", "dhcp.offer", "dhcp.request"))
    assert len({a["detail"]["ip"] for a in acks}) == 1, acks


def test_tampered_token_makes_the_agent_print_failed_with_the_reason_and_power_off(world):
    world.wait_console("intruder", "NETBOOTD-AGENT: FAILED register", BOOT_TIMEOUT)
    world.wait_console("intruder", "NETBOOTD-AGENT: poweroff", 30)
    line = [ln for ln in world.console("intruder").splitlines()
            if "NETBOOTD-AGENT: FAILED register" in ln][0]
    assert f"mac={INTRUDER_MAC}" in line and "token=yes status=403 reason=" in line, line
    assert line.split("reason=", 1)[1].strip(), line
    assert world.tampered_token not in world.console("intruder")
    code, reply = world.api("GET", f"/api/v1/hosts/{INTRUDER_MAC}")
    assert code == 404 or reply.get("account") is None, reply


def test_uefi_guest_reports_uefi_and_secure_boot_off(world):
    """OVMF (no Secure Boot keys) boots the same kernel + initrd: the inventory says
    uefi, and secure_boot false from the SecureBoot EFI variable (efivarfs is loaded
    and mounted by the agent).  Started once the intruder is gone: two VMs at once."""
    if not os.path.exists(OVMF_CODE):
        pytest.skip(f"{OVMF_CODE} is missing (Debian: ovmf)")
    world.wait_console("intruder", "NETBOOTD-AGENT: poweroff", BOOT_TIMEOUT)
    world.vms["intruder"].wait(30)
    vars_copy = world.tmp / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    world.start_vm("uefi", [(world.taps[3], UEFI_MAC, "virtio-net-pci")], "", [
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"], memory=256)
    world.wait_console("uefi", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    text = world.console("uefi")
    world.lab.stop(world.vms["uefi"], timeout=5)
    doc = _host(world, UEFI_MAC)["inventory"]["doc"]
    assert doc["firmware"] == "uefi" and doc["secure_boot"] is False, (doc, text[-2000:])
    assert doc["memory"]["bytes"] == 256 * MiB and doc["extra"]["memory_source"] == "smbios"
    assert "token=no" in text and "account= " in text


def test_revoked_and_other_accounts_tokens_and_foreign_secrets_are_refused(world):
    """What the agent cannot show on a console: calls from the server's namespace."""
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    code, reply = world.api("POST", "/api/v1/agent/register",
                            {"mac": "52:54:00:81:00:99", "token": world.revoked_token}, auth=None)
    assert code == 403 and "revoked" in reply["error"], reply
    # the box belongs to acme: a token of "other" never takes it over (found by its
    # SMBIOS UUID: a MAC with a lease elsewhere is refused before the token counts)
    code, reply = world.api("POST", "/api/v1/agent/register",
                            {"mac": "52:54:00:81:00:98", "token": world.other_token,
                             "ids": {"uuid": BOX_UUID}}, auth=None)
    assert code == 409 and "another account" in reply["error"], reply
    assert _host(world, BOX_MACS[0])["account"] == "acme"
    # no secret, or another host's made-up one: nothing is posted for the box
    for auth in (None, f"Agent nba1.{BOX_MACS[0].replace(':', '')}.forged"):
        code, _ = world.api("POST", "/api/v1/agent/inventory", {"schema": 1}, auth=auth)
        assert code == 401, (auth, code)
        code, _ = world.api("GET", "/api/v1/agent/next", auth=auth)
        assert code == 401, (auth, code)


def test_boot_kexecs_into_the_assigned_linux_profile(world):
    """Last: the box leaves the agent.  The assigned kernel is the daemon's own
    /files/netbootd/vmlinuz + discover.img with a marker on the command line."""
    world.wait_console("box", "NETBOOTD-AGENT: inventory posted", BOOT_TIMEOUT)
    if world.guest["info"].get("kexec") is None:
        pytest.skip("no kexec for the initrd (`netbootd initrd build` fetches kexec-tools)")
    before = len(world.console("box"))
    world.ok("POST", f"/api/v1/hosts/{BOX_MACS[0]}/assign",
             {"profile": "linux", "args": {
                 "kernel": "netbootd/vmlinuz", "initrds": ["netbootd/discover.img"],
                 "cmdline": f"console=ttyS0 {KEXEC_MARK} netbootd.server={BASE} "
                            "netbootd.poll_interval=1"}})
    at = world.wait_console("box", "NETBOOTD-AGENT: kexec exec", ACTION_TIMEOUT, before)
    world.wait_console("box", f"Kernel command line: console=ttyS0 {KEXEC_MARK}", BOOT_TIMEOUT,
                       at)
    # the kexec'd kernel runs the agent again, which calls back
    world.wait_console("box", "NETBOOTD-AGENT: registered", BOOT_TIMEOUT, at)
    booting = [e for e in world.events(BOX_MACS[0], ("agent.action",))
               if e["detail"].get("action") == "boot" and e["detail"].get("status") == "booting"]
    assert booting, world.events(BOX_MACS[0], ("agent.action", "agent.action_failed"))
