"""End to end: an account's boot media (issue 12, `full` and `net` flavours) under qemu (TCG).

Topology (addresses only inside namespaces this module creates, 10.82.0.x):

    [srv ns]  netbootd serve --mode full (DHCP, HTTP API), 10.82.0.1/24 on a veth
        |  veth
    [wire ns] bridge (STP off) -- taps -- qemu VMs booting the image (no PXE ROM)

The image is built once for the module by the real CLI (`netbootd media build`,
run in the server's namespace: it creates the token through the admin API), with
`console=ttyS0,115200` as the extra command line so the agent's lines reach the
serial console.  Each VM must show up in netbootd as idle in account "acme" with
its inventory (firmware bios/uefi; secure_boot true under Secure Boot):

    SeaBIOS, the image as a CD            OVMF, the image as a USB stick (xhci)
    SeaBIOS, the image as a USB stick     OVMF, the image as a CD
    OVMF Secure Boot enforced + MS keys, the image as a virtio disk
    SeaBIOS, media whose token was revoked or edited to claim another account: the agent
    prints FAILED ... status=403 and the host is enrolled nowhere

The `net` flavour (boot loaders only; kernel + agent over HTTP from the daemon), built
once too, the same way (--flavour net), must enroll the same from:

    SeaBIOS CD, SeaBIOS USB stick (GRUB i386-pc -> ipxe.lkrn + the medium's iPXE script)
    OVMF CD, OVMF USB stick, OVMF Secure Boot enforced + MS keys (shim -> grubnetx64)
    a net medium with a static address (--ip/--gateway/--dns): SeaBIOS and OVMF, their
    loaders fetch the kernel from that address (the daemon's events show it)

each checked on the console to have come through the medium's loader (OVMF has its
own PXE client and would enroll the host through PXE if the medium failed).

Two VMs at a time at most.  Power-on to enrolled is printed per firmware path
(pytest -s shows it; also written to <tmp>/timings.json).

Run:  .venv/bin/pytest tests/e2e/test_media_qemu.py -q   (root; ~2-4 min under TCG)
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iso_builder import initrd as initrd_mod
from iso_builder import media
from netbootd.lab import netns as labnet

from .nsapi import ns_call

pytestmark = pytest.mark.e2e

SRV = "10.82.0.1"
BASE = f"http://{SRV}:8080"
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
OVMF_SB_CODE = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
OVMF_SB_VARS = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
MACS = {"bios-cd": "52:54:00:82:00:11", "uefi-usb": "52:54:00:82:00:21",
        "uefi-sb": "52:54:00:82:00:31", "revoked": "52:54:00:82:00:41",
        "forged": "52:54:00:82:00:51", "bios-usb": "52:54:00:82:00:61",
        "uefi-cd": "52:54:00:82:00:71", "net-bios-cd": "52:54:00:82:01:11",
        "net-uefi-usb": "52:54:00:82:01:21", "net-bios-usb": "52:54:00:82:01:31",
        "net-uefi-cd": "52:54:00:82:01:41", "net-uefi-sb": "52:54:00:82:01:51",
        "static-bios": "52:54:00:82:01:61", "static-uefi": "52:54:00:82:01:71"}
STATIC_IP = {"static-bios": "10.82.0.61", "static-uefi": "10.82.0.62"}
BOOT_TIMEOUT = 300.0
SERIAL = "console=ttyS0,115200"



def _require() -> None:
    why = labnet.available()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("/dev/net/tun is missing")
    try:
        media.check_inputs(initrd_mod.default_kernel_version())
        initrd_mod.find_busybox()
    except (media.MediaError, initrd_mod.InitrdError) as e:
        pytest.skip(f"cannot build boot media here: {e}")


class World:
    """macs: VM name -> MAC (one tap each); network_extra: lines added to the
    network's TOML table (bench/media gives it a default account for PXE)."""

    def __init__(self, tmp: Path, macs: dict[str, str] | None = None,
                 network_extra: str = ""):
        self.tmp = tmp
        self.macs = dict(macs or MACS)
        self.network_extra = network_extra
        self.lab = labnet.Lab()
        self.vms: dict[str, subprocess.Popen] = {}
        self.started: dict[str, float] = {}
        self.timings: dict[str, float] = {}

    def start_daemon(self) -> None:
        lab = self.lab
        self.srv = lab.namespace("srv")
        self.wire = lab.namespace("wire")
        srv_if, wire_if = lab.link(self.srv, f"{SRV}/24", self.wire, None)
        self.taps = [lab.tap(self.wire) for _ in range(len(self.macs))]
        lab.bridge(self.wire, [wire_if, *self.taps])
        self.state = self.tmp / "state"
        self.cfg = self.tmp / "netbootd.toml"
        self.cfg.write_text('mode = "full"\n[[networks]]\nname = "lab"\n'
                            'subnet = "10.82.0.0/24"\nranges = ["10.82.0.100-10.82.0.199"]\n'
                            + self.network_extra)
        self.log = self.tmp / "netbootd.log"
        self.daemon = lab.popen(self.srv, [sys.executable, "-m", "netbootd", "serve", "--config",
                                           str(self.cfg), "--interface", srv_if, "--state-dir",
                                           str(self.state)],
                                stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 90
        while b"netbootd ready" not in self.log.read_bytes():
            assert self.daemon.poll() is None, "netbootd exited:\n" + self.log.read_text()[-3000:]
            assert time.monotonic() < end, "netbootd not ready:\n" + self.log.read_text()[-3000:]
            time.sleep(0.2)
        self.admin = (self.state / "admin.token").read_text().strip()
        # the discover kernel + initrd (built after start-up) before any medium is built:
        # the net flavour's build copies them into the files root for TFTP
        while b"discover initrd: " not in self.log.read_bytes():
            assert time.monotonic() < end + 120, "no discover initrd:\n" + \
                self.log.read_text()[-3000:]
            time.sleep(0.2)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`netbootd ARGS` in the server's namespace, against this daemon."""
        return self.lab.ns_exec(self.srv, sys.executable, "-m", "netbootd", *args,
                                "--server", BASE, "--state-dir", str(self.state),
                                "--config", str(self.cfg), check=False, timeout=300)

    def api(self, method: str, path: str, body=None):
        return ns_call(self.lab, self.srv, method, BASE + path, f"Bearer {self.admin}", body)

    def ok(self, method: str, path: str, body=None):
        code, reply = self.api(method, path, body)
        assert 200 <= code < 300, f"{method} {path} -> {code} {reply}"
        return reply

    def start_vm(self, name: str, firmware: list[str], medium: list[str],
                 machine: str = "q35", nic_bootindex: int | None = None,
                 nic_rom: bool = False) -> None:
        """nic_bootindex: OVMF connects only devices in the boot order, and GRUB's
        network needs the NIC connected.  nic_rom: SeaBIOS gets the NIC's iPXE
        option ROM (PXE boot); otherwise none (OVMF has its own PXE client)."""
        tap = self.taps[list(self.macs).index(name)]
        cmd = ["qemu-system-x86_64", "-machine", machine, "-m", "512", "-smp", "1",
               "-nographic", "-no-reboot", *firmware, *medium,
               "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
               "-device", f"virtio-net-pci,netdev=n0,mac={self.macs[name]}" +
               ("" if nic_rom else ",romfile=") +
               (f",bootindex={nic_bootindex}" if nic_bootindex is not None else "")]
        self.started[name] = time.monotonic()
        self.vms[name] = self.lab.popen(self.wire, cmd, stdin=subprocess.DEVNULL,
                                        stdout=open(self.tmp / f"{name}.console", "wb"),
                                        stderr=subprocess.STDOUT)

    def console(self, name: str) -> str:
        return (self.tmp / f"{name}.console").read_text(errors="replace")

    def tail(self, name: str) -> str:
        return "\n".join(self.console(name).splitlines()[-30:])

    def wait_enrolled(self, name: str, poll: float = 1.0) -> dict:
        """The host's record once it is idle in acme with an inventory; times it."""
        mac = self.macs[name]
        end = time.monotonic() + BOOT_TIMEOUT
        while True:
            code, h = self.api("GET", f"/api/v1/hosts/{mac}")
            if code == 200 and h.get("state") == "idle" and (h.get("inventory") or {}).get("doc"):
                self.timings[name] = round(time.monotonic() - self.started[name], 1)
                (self.tmp / "timings.json").write_text(json.dumps(self.timings, indent=1))
                print(f"\n{name}: power-on to enrolled {self.timings[name]} s")
                return h
            vm = self.vms[name]
            if vm.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{name}: not enrolled (qemu rc {vm.poll()}, host "
                                     f"{code} {h}); console tail:\n{self.tail(name)}")
            time.sleep(poll)

    def wait_console(self, name: str, needle: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while needle not in self.console(name):
            vm = self.vms[name]
            if vm.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"{name}: no {needle!r} (qemu rc {vm.poll()}); console "
                                     f"tail:\n{self.tail(name)}")
            time.sleep(0.5)

    def stop_vm(self, name: str) -> None:
        self.lab.stop(self.vms[name], timeout=5)

    def close(self) -> None:
        for p in self.vms.values():
            self.lab.stop(p, timeout=5)
        self.lab.close()


def _ovmf(tmp: Path, name: str, secure: bool) -> list[str]:
    code, vars_src = (OVMF_SB_CODE, OVMF_SB_VARS) if secure else (OVMF_CODE, OVMF_VARS)
    if not (os.path.exists(code) and os.path.exists(vars_src)):
        pytest.skip(f"{code} / {vars_src} missing (Debian: ovmf)")
    vars_copy = tmp / f"{name}.vars.fd"
    shutil.copyfile(vars_src, vars_copy)
    fw = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
          "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    if secure:
        fw += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return fw


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _require()
    tmp = tmp_path_factory.mktemp("media")
    w = World(tmp)
    try:
        w.start_daemon()
        w.ok("POST", "/api/v1/accounts", {"name": "acme", "approval": "auto"})
        t0 = time.monotonic()
        r = w.cli("media", "build", "--account", "acme", "--cmdline", SERIAL,
                  "-o", str(tmp / "acme.img"), "--json")
        assert r.returncode == 0, r.stderr
        w.build = json.loads(r.stdout)
        w.build_seconds = time.monotonic() - t0
        # a second medium whose token is revoked before it boots
        revoked = w.ok("POST", "/api/v1/tokens", {"account": "acme", "label": "revoked"})
        (tmp / "revoked.tok").write_text(revoked["token"] + "\n")
        r = w.cli("media", "build", "--account", "acme", "--cmdline", SERIAL,
                  "--token-file", str(tmp / "revoked.tok"), "-o", str(tmp / "revoked.img"))
        assert r.returncode == 0, r.stderr
        w.ok("POST", f"/api/v1/tokens/{revoked['id']}/revoke")
        # a medium whose token was edited to name another account (signature unchanged)
        other = w.ok("POST", "/api/v1/accounts", {"name": "other", "approval": "auto"})
        good = w.ok("POST", "/api/v1/tokens", {"account": "acme", "label": "forged"})["token"]
        _, p64, sig = good.split(".")
        acme_id = w.ok("GET", "/api/v1/accounts/acme")["id"]
        payload = base64.urlsafe_b64decode(p64 + "=" * (-len(p64) % 4)).decode()
        assert acme_id in payload
        forged = base64.urlsafe_b64encode(payload.replace(acme_id, other["id"]).encode())
        (tmp / "forged.tok").write_text(f"nbt1.{forged.decode().rstrip('=')}.{sig}\n")
        r = w.cli("media", "build", "--account", "other", "--cmdline", SERIAL,
                  "--token-file", str(tmp / "forged.tok"), "-o", str(tmp / "forged.img"))
        assert r.returncode == 0, r.stderr
        # the net flavour: one image with DHCP, one with static addresses per firmware
        t0 = time.monotonic()
        r = w.cli("media", "build", "--account", "acme", "--flavour", "net", "--cmdline",
                  SERIAL, "-o", str(tmp / "acme-net.img"), "--json")
        assert r.returncode == 0, r.stderr
        w.net_build = json.loads(r.stdout)
        w.net_build_seconds = time.monotonic() - t0
        for name, ip in STATIC_IP.items():
            r = w.cli("media", "build", "--account", "acme", "--flavour", "net", "--cmdline",
                      SERIAL, "--ip", f"{ip}/24", "--gateway", SRV, "--dns", SRV,
                      "-o", str(tmp / f"{name}.img"), "--json")
            assert r.returncode == 0, r.stderr
        yield w
    finally:
        w.close()
        if os.environ.get("NETBOOTD_LAB_KEEP") != "1":
            for f in tmp.glob("*.img"):
                f.unlink()


def _cdrom(img: Path) -> list[str]:
    return ["-drive", f"file={img},media=cdrom,if=none,id=cd,readonly=on",
            "-device", "ide-cd,drive=cd,bootindex=0"]


def _usb(img: Path) -> list[str]:
    return ["-device", "qemu-xhci", "-drive", f"file={img},format=raw,if=none,id=stick,"
            "snapshot=on", "-device", "usb-storage,drive=stick,bootindex=0"]


def _virtio(img: Path) -> list[str]:
    return ["-drive", f"file={img},format=raw,if=none,id=d0,snapshot=on",
            "-device", "virtio-blk-pci,drive=d0,bootindex=0"]


def test_the_cli_built_one_image_with_a_new_token_of_the_account(world):
    b = world.build
    assert b["flavour"] == "full" and b["account"] == "acme" and b["server_url"] == BASE
    assert b["token_id"].startswith("tok-")
    toks = world.ok("GET", "/api/v1/tokens?account=acme")
    assert b["token_id"] in {t["id"] for t in toks}
    r = world.cli("media", "list", "--account", "acme", "--json")
    assert r.returncode == 0, r.stderr
    listed = {t["id"]: t for t in json.loads(r.stdout)}
    assert b["token_id"] in listed and listed[b["token_id"]]["label"].endswith(" acme.img")
    print(f"\nimage {b['size']} bytes, build {world.build_seconds:.1f} s "
          f"(image {b['seconds']} s, parts reused: {b['parts_reused']})")


def test_seabios_cd_and_ovmf_usb_stick_enroll_into_the_account(world):
    img = world.tmp / "acme.img"
    world.start_vm("bios-cd", [], _cdrom(img))
    world.start_vm("uefi-usb", _ovmf(world.tmp, "uefi-usb", False), _usb(img))
    for name, fw in (("bios-cd", "bios"), ("uefi-usb", "uefi")):
        h = world.wait_enrolled(name)
        assert h["account"] == "acme", h
        doc = h["inventory"]["doc"]
        assert doc["firmware"] == fw, (name, doc)
        if fw == "uefi":
            assert doc["secure_boot"] is False, doc
        text = world.console(name)
        assert "NETBOOTD-AGENT: registered" in text and "account=acme token=yes" in text
        assert world.build["token_id"] not in text
    for name in ("bios-cd", "uefi-usb"):
        world.stop_vm(name)


def test_seabios_usb_stick_and_ovmf_cd_enroll_too(world):
    img = world.tmp / "acme.img"
    world.start_vm("bios-usb", [], _usb(img))
    world.start_vm("uefi-cd", _ovmf(world.tmp, "uefi-cd", False), _cdrom(img))
    for name, fw in (("bios-usb", "bios"), ("uefi-cd", "uefi")):
        h = world.wait_enrolled(name)
        assert h["account"] == "acme" and h["inventory"]["doc"]["firmware"] == fw, h
        world.stop_vm(name)


def test_ovmf_secure_boot_enforced_boots_the_signed_chain_and_reports_it(world):
    img = world.tmp / "acme.img"
    world.start_vm("uefi-sb", _ovmf(world.tmp, "uefi-sb", True), _virtio(img),
                   machine="q35,smm=on")
    h = world.wait_enrolled("uefi-sb")
    world.stop_vm("uefi-sb")
    doc = h["inventory"]["doc"]
    assert h["account"] == "acme" and doc["firmware"] == "uefi", h
    assert doc["secure_boot"] is True, doc


def test_media_with_a_revoked_or_an_edited_token_are_refused(world):
    """Revoked: 403 'revoked'.  Edited to claim account "other": the signature no
    longer matches, 403; neither host is enrolled anywhere."""
    world.start_vm("revoked", [], _cdrom(world.tmp / "revoked.img"))
    world.start_vm("forged", [], _cdrom(world.tmp / "forged.img"))
    for name, reason in (("revoked", "revoked"), ("forged", "")):
        world.wait_console(name, "NETBOOTD-AGENT: FAILED register", BOOT_TIMEOUT)
        line = [ln for ln in world.console(name).splitlines()
                if "NETBOOTD-AGENT: FAILED register" in ln][0]
        assert "token=yes status=403" in line and reason in line, line
        world.stop_vm(name)
        code, h = world.api("GET", f"/api/v1/hosts/{MACS[name]}")
        assert code == 404 or (h.get("account") is None and h.get("state") != "idle"), h

def _net_medium_was_used(world, name: str, fw: str) -> None:
    """The console shows the medium's loader at work (not a firmware PXE fallback)."""
    text = world.console(name)
    if fw == "bios":
        assert "netbootd: account acme, server " + BASE in text, world.tail(name)
    else:
        assert "netbootd: loading the agent from " + BASE in text, world.tail(name)
    assert "NETBOOTD-AGENT: registered" in text and "account=acme token=yes" in text


def _boot_net(world, runs) -> None:
    """runs: (vm name, firmware kind, image, medium args fn, secure); all at once."""
    for name, fw, img, how, secure in runs:
        if fw == "bios":
            world.start_vm(name, [], how(img))
        else:
            world.start_vm(name, _ovmf(world.tmp, name, secure), how(img),
                           machine="q35,smm=on" if secure else "q35", nic_bootindex=5)
    for name, fw, img, how, secure in runs:
        h = world.wait_enrolled(name)
        doc = h["inventory"]["doc"]
        assert h["account"] == "acme" and doc["firmware"] == fw, (name, h)
        if fw == "uefi":
            assert doc["secure_boot"] is secure, (name, doc)
        _net_medium_was_used(world, name, fw)
        world.stop_vm(name)


def test_net_flavour_is_small_and_built_quickly_from_the_cache(world):
    b = world.net_build
    assert b["flavour"] == "net" and b["account"] == "acme" and b["server_url"] == BASE
    print(f"\nnet image {b['size']} bytes ({b['size'] / 2**20:.2f} MiB), build "
          f"{world.net_build_seconds:.1f} s (image {b['seconds']} s, parts reused: "
          f"{b['parts_reused']})")
    assert b["size"] < 6 << 20, b


def test_net_flavour_seabios_cd_and_ovmf_usb_stick_enroll(world):
    img = world.tmp / "acme-net.img"
    _boot_net(world, [("net-bios-cd", "bios", img, _cdrom, False),
                      ("net-uefi-usb", "uefi", img, _usb, False)])


def test_net_flavour_seabios_usb_stick_and_ovmf_cd_enroll(world):
    img = world.tmp / "acme-net.img"
    _boot_net(world, [("net-bios-usb", "bios", img, _usb, False),
                      ("net-uefi-cd", "uefi", img, _cdrom, False)])


def test_net_flavour_ovmf_secure_boot_enforced_enrolls_through_shim_and_grubnetx64(world):
    _boot_net(world, [("net-uefi-sb", "uefi", world.tmp / "acme-net.img", _virtio, True)])


def test_net_flavour_static_address_is_what_ipxe_and_grub_fetch_the_kernel_from(world):
    """--ip: iPXE (SeaBIOS) and GRUB (OVMF) set the address themselves (no DHCP): the
    daemon saw the kernel fetched from exactly that address (iPXE: HTTP, an http.file
    event; GRUB: TFTP, a tftp.finished event)."""
    _boot_net(world, [(name, name.split("-")[1], world.tmp / f"{name}.img",
                       _cdrom if name.endswith("bios") else _usb, False)
                      for name in STATIC_IP])
    events = world.ok("GET", "/api/v1/events?limit=1000")
    events = events.get("events", events) if isinstance(events, dict) else events
    for name, kind in (("static-bios", "http.file"), ("static-uefi", "tftp.finished")):
        ip = STATIC_IP[name]
        seen = [e for e in events if e.get("kind") == kind and ip in json.dumps(e)
                and "netbootd/vmlinuz" in json.dumps(e)]
        assert seen, f"{name}: no {kind} of the kernel to {ip}: " + json.dumps(
            [e for e in events if e.get("kind") == kind][-4:])
    assert f"netbootd: static address {ip}/24" in world.console("static-uefi")


_GET = """
import hashlib, json, sys, urllib.error, urllib.request
url, auth = sys.argv[1:3]
out = []
for extra in ({}, {"Range": "bytes=1000-1999"}, "etag", {}):
    h = {"Authorization": auth}
    if extra == "etag":
        h["If-None-Match"] = out[0]["etag"]
    elif extra:
        h.update(extra)
    try:
        r = urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=120)
    except urllib.error.HTTPError as e:
        r = e
    body = r.read()
    out.append({"status": r.status, "etag": r.headers.get("etag"), "len": len(body),
                "clen": r.headers.get("content-length"), "sha": hashlib.sha256(body).hexdigest(),
                "head": body[:2000].hex() if r.status == 206 else None,
                "disp": r.headers.get("content-disposition")})
print(json.dumps(out))
"""


def test_the_api_streams_the_image_with_etag_and_range(world):
    """GET /api/v1/accounts/acme/media: the account's media token (made once, reused),
    the same bytes every time (ETag = sha256), Range and If-None-Match work."""
    r = world.lab.ns_exec(world.srv, sys.executable, "-c", _GET,
                          BASE + "/api/v1/accounts/acme/media?flavour=full",
                          f"Bearer {world.admin}", timeout=300)
    full, part, cached, again = json.loads(r.stdout)
    assert full["status"] == 200 and full["etag"] == f'"{full["sha"]}"', full
    assert int(full["clen"]) == full["len"] > 10 << 20
    assert 'filename="acme-full.img"' in full["disp"]
    assert part["status"] == 206 and part["len"] == 1000
    assert cached["status"] == 304
    assert again["status"] == 200 and again["sha"] == full["sha"], "not reproducible"
    toks = [t for t in world.ok("GET", "/api/v1/tokens?account=acme")
            if t.get("label") == "media api"]
    assert len(toks) == 1, toks
    code, reply = world.api("GET", "/api/v1/accounts/nobody/media")
    assert code == 404, reply
    code, reply = world.api("GET", "/api/v1/accounts/acme/media?flavour=floppy")
    assert code == 400 and "flavour" in reply["error"], reply
    code, reply = world.api("GET", "/api/v1/accounts/acme/media?flavour=net&ip=10.82.0.300/24")
    assert code == 400 and reply["error"].startswith("ip: "), reply
    code, reply = world.api("GET", "/api/v1/accounts/acme/media?flavour=net&pin=sha256//x")
    assert code == 400 and reply["error"].startswith("pin: "), reply
    r = world.lab.ns_exec(world.srv, sys.executable, "-c", _GET,
                          BASE + "/api/v1/accounts/acme/media?flavour=net&ip=10.82.0.70/24"
                          "&gateway=10.82.0.1", f"Bearer {world.admin}", timeout=300)
    net = json.loads(r.stdout)[0]
    assert net["status"] == 200 and int(net["clen"]) == net["len"] < 6 << 20, net
    assert 'filename="acme-net.img"' in net["disp"]
