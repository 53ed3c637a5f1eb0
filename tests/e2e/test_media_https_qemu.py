"""End to end: a `full` boot medium that reaches netbootd over HTTPS with a pinned key
and a static address (issue 12), under qemu (TCG, SeaBIOS, the image as a CD).

    [srv ns]  netbootd serve --mode full, 10.83.0.1/24; [http] tls_* on 8443
        |  veth
    [wire ns] bridge -- taps -- qemu VMs (no PXE ROM)

* the medium built with `--server-url https://10.83.0.1:8443 --pin <netbootd tls pin>
  --ip 10.83.0.77/24 --gateway 10.83.0.1 --dns 10.83.0.1` enrolls the host idle in the
  account with its inventory, at the static address, without a DHCP lease;
* the same medium with a wrong pin prints "FAILED tls pin mismatch" and the host is
  enrolled nowhere (the daemon never saw a registration).

Run:  .venv/bin/pytest tests/e2e/test_media_https_qemu.py -q   (root; ~2 min under TCG)
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
from iso_builder import media, tlsclient
from netbootd.auth import tls
from netbootd.lab import netns as labnet

from .nsapi import ns_call

pytestmark = pytest.mark.e2e

SRV = "10.83.0.1"
API = f"http://{SRV}:8080"
HTTPS = f"https://{SRV}:8443"
VMS = {"pinned": ("52:54:00:83:00:11", "10.83.0.77"),
       "wrong-pin": ("52:54:00:83:00:21", "10.83.0.78")}
WRONG_PIN = "sha256//" + "D" * 43 + "="
BOOT_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def lab_world(tmp_path_factory):
    if (why := labnet.available()):
        pytest.skip(f"network namespaces unavailable: {why}")
    if shutil.which("qemu-system-x86_64") is None or not os.path.exists("/dev/net/tun"):
        pytest.skip("qemu-system-x86_64 or /dev/net/tun missing")
    try:
        media.check_inputs(initrd_mod.default_kernel_version())
        initrd_mod.find_busybox()
    except (media.MediaError, initrd_mod.InitrdError) as e:
        pytest.skip(f"cannot build boot media here: {e}")
    if tlsclient.pick(initrd_mod.cache_dir())[0] is None:
        pytest.skip("no curl to pack into the medium (Debian: curl)")
    tmp = tmp_path_factory.mktemp("https-media")
    lab = labnet.Lab()
    procs: list[subprocess.Popen] = []
    try:
        srv, wire = lab.namespace("srv"), lab.namespace("wire")
        srv_if, wire_if = lab.link(srv, f"{SRV}/24", wire, None)
        taps = {name: lab.tap(wire) for name in VMS}
        lab.bridge(wire, [wire_if, *taps.values()])
        pair = tls.make_selfsigned(str(tmp / "tls/netbootd.crt"), str(tmp / "tls/netbootd.key"),
                                   cn=SRV)
        cfg = tmp / "netbootd.toml"
        cfg.write_text(f'mode = "full"\n[http]\ntls_cert = "{pair["cert"]}"\n'
                       f'tls_key = "{pair["key"]}"\n[[networks]]\nname = "lab"\n'
                       'subnet = "10.83.0.0/24"\nranges = ["10.83.0.100-10.83.0.199"]\n')
        state, log = tmp / "state", tmp / "netbootd.log"
        daemon = lab.popen(srv, [sys.executable, "-m", "netbootd", "serve", "--config", str(cfg),
                                 "--interface", srv_if, "--state-dir", str(state)],
                           stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        procs.append(daemon)
        end = time.monotonic() + 90
        while b"netbootd ready" not in log.read_bytes():
            assert daemon.poll() is None and time.monotonic() < end, log.read_text()[-3000:]
            time.sleep(0.2)
        admin = (state / "admin.token").read_text().strip()

        def api(method, path, body=None):
            return ns_call(lab, srv, method, API + path, f"Bearer {admin}", body)

        def cli(*args):
            return lab.ns_exec(srv, sys.executable, "-m", "netbootd", *args, "--server", API,
                               "--state-dir", str(state), "--config", str(cfg), check=False,
                               timeout=300)
        code, _ = api("POST", "/api/v1/accounts", {"name": "acme", "approval": "auto"})
        assert code == 200
        r = lab.ns_exec(srv, sys.executable, "-m", "netbootd", "tls", "pin", "--config", str(cfg),
                        check=False)
        assert r.returncode == 0 and r.stdout.strip() == pair["pin"], r.stderr
        built = {}
        for name, pin in (("pinned", pair["pin"]), ("wrong-pin", WRONG_PIN)):
            _, ip = VMS[name]
            r = cli("media", "build", "--account", "acme", "--server-url", HTTPS, "--pin", pin,
                    "--ip", f"{ip}/24", "--gateway", SRV, "--dns", SRV,
                    "--cmdline", "console=ttyS0,115200", "-o", str(tmp / f"{name}.img"), "--json")
            assert r.returncode == 0, r.stderr
            built[name] = json.loads(r.stdout)
        vms = {}
        for name, (mac, _) in VMS.items():
            img = tmp / f"{name}.img"
            cmd = ["qemu-system-x86_64", "-machine", "q35", "-m", "512", "-smp", "1",
                   "-nographic", "-no-reboot",
                   "-drive", f"file={img},media=cdrom,if=none,id=cd,readonly=on",
                   "-device", "ide-cd,drive=cd,bootindex=0",
                   "-netdev", f"tap,id=n0,ifname={taps[name]},script=no,downscript=no",
                   "-device", f"virtio-net-pci,netdev=n0,mac={mac},romfile="]
            vms[name] = lab.popen(wire, cmd, stdin=subprocess.DEVNULL,
                                  stdout=open(tmp / f"{name}.console", "wb"),
                                  stderr=subprocess.STDOUT)
            procs.append(vms[name])
        yield {"tmp": tmp, "api": api, "vms": vms, "built": built, "pair": pair, "log": log,
               "t0": time.monotonic()}
    finally:
        for p in procs:
            lab.stop(p, timeout=5)
        lab.close()
        for f in tmp.glob("*.img"):
            f.unlink()


def _console(w, name: str) -> str:
    return (w["tmp"] / f"{name}.console").read_text(errors="replace")


def _tail(w, name: str) -> str:
    return "\n".join(_console(w, name).splitlines()[-30:])


def test_a_pinned_https_medium_with_a_static_address_enrolls(lab_world):
    w = lab_world
    mac, ip = VMS["pinned"]
    end = time.monotonic() + BOOT_TIMEOUT
    while True:
        code, h = w["api"]("GET", f"/api/v1/hosts/{mac}")
        if code == 200 and h.get("state") == "idle" and (h.get("inventory") or {}).get("doc"):
            break
        assert w["vms"]["pinned"].poll() is None and time.monotonic() < end, \
            f"not enrolled ({code} {h}); console:\n{_tail(w, 'pinned')}"
        time.sleep(1)
    print(f"\npinned https + static IP: power-on to enrolled "
          f"{time.monotonic() - w['t0']:.1f} s; image {w['built']['pinned']['size']} bytes")
    assert h["account"] == "acme" and h["ip"] == ip, h
    text = _console(w, "pinned")
    assert f"static {ip}/24 on" in text and "DHCP on" not in text
    assert f"registered mac={mac} ip={ip}" in text and f"server={HTTPS}" in text
    end = time.monotonic() + 30     # the server may have stored it before the line is out
    while "NETBOOTD-AGENT: inventory posted" not in _console(w, "pinned"):
        assert time.monotonic() < end, _tail(w, "pinned")
        time.sleep(0.5)
    code, leases = w["api"]("GET", "/api/v1/leases")
    assert code == 200 and mac not in json.dumps(leases), "a static host took no lease"
    assert "https: listening on 0.0.0.0:8443" in w["log"].read_text()


def test_a_wrong_pin_is_refused_and_the_host_is_enrolled_nowhere(lab_world):
    w = lab_world
    mac, _ = VMS["wrong-pin"]
    end = time.monotonic() + BOOT_TIMEOUT
    while "FAILED tls pin mismatch" not in _console(w, "wrong-pin"):
        assert time.monotonic() < end, _tail(w, "wrong-pin")
        if w["vms"]["wrong-pin"].poll() is not None:
            break
        time.sleep(1)
    text = _console(w, "wrong-pin")
    assert f"NETBOOTD-AGENT: FAILED tls pin mismatch server={HTTPS} pin={WRONG_PIN}" in text, \
        _tail(w, "wrong-pin")
    assert "NETBOOTD-AGENT: registered" not in text
    code, _ = w["api"]("GET", f"/api/v1/hosts/{mac}")
    assert code == 404, "a host whose agent refused the server is enrolled nowhere"
