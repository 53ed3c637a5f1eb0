"""End to end: a real kernel boots the discover initrd in qemu and calls an HTTP server back.

Topology (every address lives only inside namespaces this test creates, 10.79.x.x):

    [srv ns] veth 10.79.K.1/24 ── dnsmasq (DHCP only, --port=0) + recorder HTTP server
        │
    [wire ns] veth peer ── bridge (STP off) ── tap ── qemu (TCG) direct kernel boot

qemu runs inside the wire namespace: `-netdev tap,ifname=<tap>` attaches to the tap
created there.  The guest loads its NIC driver from the initrd, gets an address from
dnsmasq, POSTs {"mac","ip","uuid","ids"} to /api/v1/agent/register (the recorder
answers with an agent secret, as netbootd does: docs/agent-protocol.md), posts its
inventory, polls /api/v1/agent/next with that secret (the recorder answers 404 first,
then "wait", then a "poweroff" action), reports the action and powers off, so qemu
exits by itself.  Everything (qemu by PID, dnsmasq, the recorder, the namespaces) is
torn down on every path by the Lab.

Run:  .venv/bin/pytest tests/e2e -q      (root; ~30-60 s per NIC model under TCG)
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iso_builder import initrd as initrd_mod
from netbootd.lab import netns as labnet

e2e = pytest.mark.e2e

QEMU_TIMEOUT = 180.0     # seconds for the whole boot under TCG (LAB.md: 25-60 s per boot)
GUEST_MAC = "52:54:00:77:00:10"
GUEST_UUID = "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010"
HTTP_PORT = 8080

RECORDER = textwrap.dedent(r'''
    """Records every request as one JSON line; answers like netbootd's agent API."""
    import json, sys, threading
    SECRET = "nba1.525400770010.recorder-secret"
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit, parse_qs

    host, port, log_path, ready_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    lock = threading.Lock()
    next_calls = [0]

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _record(self, body):
            u = urlsplit(self.path)
            rec = {"method": self.command, "path": u.path, "query": parse_qs(u.query),
                   "content_type": self.headers.get("Content-Type"),
                   "body": body.decode("utf-8", "replace"), "client": self.client_address[0],
                   "auth": self.headers.get("Authorization")}
            with lock, open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            return u

        def _reply(self, code, obj):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(n)
            u = self._record(self.body)
            if u.path == "/api/v1/agent/register":
                mac = json.loads(self.body)["mac"]
                self._reply(200, {"mac": mac, "state": "registered", "account": None,
                                  "secret": SECRET, "poll": {"interval": 1, "max": 2}})
            elif self.headers.get("Authorization") != "Agent " + SECRET:
                self._reply(401, {"error": "no valid agent secret"})
            elif u.path == "/api/v1/agent/inventory":
                json.loads(self.body)
                self._reply(200, {"stored": True, "changed": True})
            elif u.path == "/api/v1/agent/report":
                self._reply(200, {"ok": True})
            else:
                self._reply(404, {"error": "not found"})

        def do_GET(self):
            u = self._record(b"")
            if u.path != "/api/v1/agent/next":
                self._reply(404, {"error": "not found"})
            elif self.headers.get("Authorization") != "Agent " + SECRET:
                self._reply(401, {"error": "no valid agent secret"})
            else:
                with lock:
                    next_calls[0] += 1
                    n = next_calls[0]
                # 404 as from a netbootd without the endpoint, a wait, then power off.
                if n == 1:
                    self._reply(404, {"error": "not yet"})
                elif n == 2:
                    self._reply(200, {"action": "wait", "id": None, "poll": 1})
                else:
                    self._reply(200, {"action": "poweroff", "id": 5, "poll": 1})

        def log_message(self, fmt, *args):
            sys.stderr.write("http: " + fmt % args + "\n")

    srv = ThreadingHTTPServer((host, port), H)
    open(ready_path, "w").write("ready\n")
    srv.serve_forever()
''')


# -- prerequisites -----------------------------------------------------------------
def _require() -> dict:
    reason = labnet.available()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed (Debian: qemu-system-x86)")
    dnsmasq = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if dnsmasq is None:
        pytest.skip("dnsmasq is not installed (Debian: dnsmasq-base)")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("/dev/net/tun is missing: no tap devices for qemu")
    kernels = initrd_mod.guest_kernels()
    if not kernels:
        pytest.skip("no guest kernel with modules (/boot/vmlinuz-* + /lib/modules/*; "
                    "Debian: linux-image-amd64)")
    try:
        busybox = initrd_mod.find_busybox()
    except initrd_mod.InitrdError as exc:
        pytest.skip(f"no static busybox for the initrd: {exc}")
    return {"qemu": qemu, "dnsmasq": dnsmasq, "kernel": kernels[-1], "busybox": busybox}


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    """The guest kernel and a freshly built discover initrd for it."""
    req = _require()
    out = tmp_path_factory.mktemp("initrd") / "discover.img"
    info = initrd_mod.build_discover_initrd(out, kernel_version=req["kernel"]["version"],
                                            busybox=req["busybox"])
    return {**req, "initrd": out, "info": info}


def _wait(pred, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(none)"


# -- the test ------------------------------------------------------------------------
@e2e
@pytest.mark.parametrize("nic,octet,server_arg", [
    ("virtio-net-pci", 10, True),
    ("e1000", 11, True),
    ("virtio-net-pci", 12, False),   # no netbootd.server=: DHCP server id, port 8080
], ids=["virtio", "e1000", "virtio-serverid"])
def test_guest_gets_dhcp_address_and_registers_mac_ip_uuid(guest, tmp_path, nic, octet,
                                                           server_arg):
    """A kernel booted in qemu with the discover initrd loads its NIC driver, leases an
    address from the lab's DHCP server, POSTs its MAC, IP, SMBIOS UUID (lower case) and
    identifiers to netbootd.server's /api/v1/agent/register (without netbootd.server=:
    to the DHCP server id on port 8080), posts its inventory and polls /agent/next with
    the secret it got, tolerates a 404 and a wait, reports the poweroff action it is
    given and powers off (qemu exits by itself)."""
    net = ipaddress.ip_network(f"10.79.{octet}.0/24")
    srv_ip = str(net[1])
    lo, hi = net[100], net[150]
    requests_log = tmp_path / "requests.jsonl"
    console = tmp_path / "console.log"
    dnsmasq_log = tmp_path / "dnsmasq.log"
    http_log = tmp_path / "http.log"
    ready = tmp_path / "http.ready"
    (tmp_path / "recorder.py").write_text(RECORDER)

    with contextlib.ExitStack() as files, labnet.Lab() as lab:
        def logfile(path: Path):
            return files.enter_context(open(path, "w"))

        srv = lab.namespace("srv")
        wire = lab.namespace("wire")
        srv_if, wire_if = lab.link(srv, f"{srv_ip}/24", wire, None)
        tap = f"{lab.prefix}t1"
        lab.ns_exec(wire, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
        lab.ns_exec(wire, "ip", "link", "set", tap, "up")
        lab.bridge(wire, [wire_if, tap])

        # DHCP for the guest, bound to the lab veth inside the server namespace only.
        dnsmasq = lab.popen(srv, [
            guest["dnsmasq"], "--no-daemon", "--conf-file=/dev/null", "--port=0",
            f"--interface={srv_if}", "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={lo},{hi},255.255.255.0,10m", "--dhcp-authoritative", "--no-ping",
            f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--user=root", "--group=root",
            "--log-dhcp", "--log-facility=-",
        ], stdout=logfile(dnsmasq_log), stderr=subprocess.STDOUT)
        recorder = lab.popen(srv, [sys.executable, str(tmp_path / "recorder.py"), srv_ip,
                                   str(HTTP_PORT), str(requests_log), str(ready)],
                             stdout=logfile(http_log), stderr=subprocess.STDOUT)
        _wait(lambda: ready.exists() or recorder.poll() is not None, 15, "the HTTP recorder")
        assert recorder.poll() is None, f"recorder died:\n{_tail(http_log)}"
        time.sleep(0.3)
        assert dnsmasq.poll() is None, f"dnsmasq died:\n{_tail(dnsmasq_log)}"

        append = "console=ttyS0 netbootd.poll_interval=1 netbootd.poll_timeout=30 quiet panic=-1"
        if server_arg:
            append += f" netbootd.server=http://{srv_ip}:{HTTP_PORT}"
        cmd = [guest["qemu"], "-machine", "q35", "-m", "512", "-smp", "1",
               "-nographic", "-no-reboot",
               "-kernel", guest["kernel"]["vmlinuz"], "-initrd", str(guest["initrd"]),
               "-append", append,
               "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
               # romfile= : no iPXE option ROM needed for a direct kernel boot
               "-device", f"{nic},netdev=n0,mac={GUEST_MAC},romfile=",
               "-smbios", f"type=1,uuid={GUEST_UUID}"]
        t0 = time.monotonic()
        qemu = lab.popen(wire, cmd, stdin=subprocess.DEVNULL, stdout=logfile(console),
                         stderr=subprocess.STDOUT)
        marker_at = None
        try:
            deadline = t0 + QEMU_TIMEOUT
            while qemu.poll() is None and time.monotonic() < deadline:
                if marker_at is None and "NETBOOTD-AGENT: registered" in console.read_text(
                        errors="replace"):
                    marker_at = time.monotonic() - t0
                time.sleep(0.5)
            rc = qemu.poll()
        finally:
            if qemu.poll() is None:
                lab.stop(qemu, timeout=5)   # by PID; SIGKILL if SIGTERM is not enough
        elapsed = time.monotonic() - t0
        text = console.read_text(errors="replace")
        if marker_at is None and "NETBOOTD-AGENT: registered" in text:
            marker_at = elapsed
        print(f"\n{nic} (server_arg={server_arg}): registered after {marker_at}s, qemu exited after {elapsed:.1f}s")
        diag = (f"\n--- console ---\n{_tail(console, 60)}\n--- dnsmasq ---\n"
                f"{_tail(dnsmasq_log)}\n--- http ---\n{_tail(http_log)}")

        assert rc is not None, f"qemu still running after {QEMU_TIMEOUT:.0f}s{diag}"
        assert rc == 0, f"qemu exited {rc}{diag}"

        records = [json.loads(l) for l in requests_log.read_text().splitlines()] \
            if requests_log.exists() else []
        regs = [r for r in records if r["path"] == "/api/v1/agent/register"]
        assert len(regs) == 1, f"expected one registration, got {records}{diag}"
        reg = regs[0]
        assert reg["method"] == "POST", reg
        assert reg["content_type"] == "application/json", reg
        body = json.loads(reg["body"])
        assert set(body) == {"mac", "ip", "uuid", "ids"}, body     # no token: none given
        assert body["mac"] == GUEST_MAC
        assert body["ids"]["macs"] == [GUEST_MAC] and body["ids"]["uuid"] == GUEST_UUID
        assert body["uuid"] == GUEST_UUID            # lower case, as dmidecode prints it
        ip = ipaddress.ip_address(body["ip"])
        assert lo <= ip <= hi, f"{ip} is not from the dnsmasq range {lo}-{hi}"
        assert reg["client"] == body["ip"], "registration did not come from the leased address"

        secret = "Agent nba1.525400770010.recorder-secret"
        assert reg["auth"] is None, "the registration must not carry a secret"
        later = [r for r in records if r is not reg]
        assert later and all(r["auth"] == secret for r in later), later
        nexts = [r for r in records if r["path"] == "/api/v1/agent/next"]
        assert len(nexts) == 3, f"expected 404, wait, poweroff: {records}{diag}"
        inv = [json.loads(r["body"]) for r in records if r["path"] == "/api/v1/agent/inventory"]
        assert len(inv) == 1, records
        driver = "e1000" if nic == "e1000" else "virtio_net"
        assert [(n["mac"], n["driver"]) for n in inv[0]["nics"]] == [(GUEST_MAC, driver)]
        assert inv[0]["dmi"]["system"]["uuid"] == GUEST_UUID and inv[0]["firmware"] == "bios"
        reports = [json.loads(r["body"]) for r in records if r["path"] == "/api/v1/agent/report"]
        assert [(r["id"], r["action"], r["status"]) for r in reports] == [
            (5, "poweroff", "started")], reports

        assert re.search(rf"^NETBOOTD-AGENT: registered mac={GUEST_MAC} ip={re.escape(str(ip))} "
                         rf"uuid={GUEST_UUID} host={GUEST_MAC} state=registered account= "
                         rf"token=no server=http://{re.escape(srv_ip)}:{HTTP_PORT}\r?$",
                         text, re.M), diag
        assert "NETBOOTD-AGENT: inventory posted" in text, diag
        assert "NETBOOTD-AGENT: next action=poweroff id=5" in text, diag
        assert "NETBOOTD-AGENT: FAILED" not in text, diag
        assert GUEST_MAC in (tmp_path / "dnsmasq.leases").read_text()


# -- the initrd itself (no qemu) -------------------------------------------------------
def _kernel_and_busybox() -> tuple[dict, Path]:
    kernels = initrd_mod.guest_kernels()
    if not kernels:
        pytest.skip("no guest kernel with modules (Debian: linux-image-amd64)")
    try:
        return kernels[-1], initrd_mod.find_busybox()
    except initrd_mod.InitrdError as exc:
        pytest.skip(f"no static busybox for the initrd: {exc}")


def test_initrd_is_small_deterministic_and_loads_modules_after_their_dependencies(tmp_path):
    """Two builds give identical bytes under 3 MB; the archive holds /init, the console
    node, busybox with the applets init uses, and a module list where every module
    comes after everything modules.dep says it needs (plus virtio_pci for virtio_net)."""
    from iso_builder.cpio import read_archive

    kernel, busybox = _kernel_and_busybox()
    kver = kernel["version"]
    i1 = initrd_mod.build_discover_initrd(tmp_path / "a.img", kernel_version=kver,
                                          busybox=busybox)
    i2 = initrd_mod.build_discover_initrd(tmp_path / "b.img", kernel_version=kver,
                                          busybox=busybox)
    assert i1["sha256"] == i2["sha256"]
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()
    assert i1["size"] < 6 * 1024 * 1024, i1["size"]     # ~3 MB with kexec and disk drivers

    entries = {e.name: e for e in read_archive((tmp_path / "a.img").read_bytes())}
    assert entries["init"].is_file and entries["init"].perm == 0o755
    assert entries["dev/console"].is_chardev
    assert (entries["dev/console"].rdevmajor, entries["dev/console"].rdevminor) == (5, 1)
    assert (entries["dev/null"].rdevmajor, entries["dev/null"].rdevminor) == (1, 3)
    assert entries["etc/udhcpc.script"].perm == 0o755
    for src in ("lib.sh", "json.awk", "inventory.sh", "actions.sh"):
        assert entries[f"lib/netbootd/{src}"].is_file, src
    for applet in ("sbin/udhcpc", "usr/bin/wget", "sbin/insmod", "sbin/poweroff", "bin/sh",
                   "usr/bin/timeout", "sbin/ip", "usr/bin/tr", "bin/sed", "usr/bin/nc", "usr/bin/awk",
                   "bin/dd", "usr/bin/cmp", "usr/bin/blkdiscard", "sbin/blockdev", "usr/bin/od"):
        assert entries[applet].link_target == "/bin/busybox", applet
    assert "etc/netbootd/server" not in entries

    listed = entries["etc/netbootd/modules"].data.decode().split()
    assert listed == i1["module_files"]
    for p in listed:
        assert entries[p.lstrip("/")].is_file
    names = [initrd_mod.module_name(p) for p in listed]
    assert {"virtio_net", "net_failover", "failover", "virtio_pci", "e1000"} <= set(names)
    deps = initrd_mod.parse_modules_dep(Path(kernel["modules"], "modules.dep").read_text())
    for i, n in enumerate(names):
        for d in deps[n][1]:
            assert initrd_mod.module_name(d) in names[:i], f"{n} loaded before {d}"


def test_compressed_modules_are_stored_decompressed_with_builtins_skipped(tmp_path):
    """.ko.xz / .ko.zst / .ko modules from modules.dep land decompressed (busybox insmod
    reads no compressed modules), dependencies first; a built-in request adds nothing;
    a baked-in server URL is stored as data and a URL with shell quotes is refused."""
    import lzma
    from iso_builder.cpio import read_archive

    _, busybox = _kernel_and_busybox()
    kver = "9.9.9-test"
    kdir = tmp_path / "modules" / kver
    (kdir / "kernel/net").mkdir(parents=True)
    (kdir / "kernel/net/base.ko.xz").write_bytes(lzma.compress(b"BASE-ELF"))
    (kdir / "kernel/net/mid-dle.ko").write_bytes(b"MID-ELF")
    top = "kernel/net/top.ko"
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-o", str(kdir / "kernel/net/top.ko.zst")],
                       input=b"TOP-ELF", check=True)
        top = "kernel/net/top.ko.zst"
    else:
        (kdir / top).write_bytes(b"TOP-ELF")
    (kdir / "modules.dep").write_text(
        f"kernel/net/base.ko.xz:\n"
        f"kernel/net/mid-dle.ko: kernel/net/base.ko.xz\n"
        f"{top}: kernel/net/mid-dle.ko kernel/net/base.ko.xz\n")
    (kdir / "modules.builtin").write_text("kernel/drivers/net/virtio_net.ko\n")

    archive, info = initrd_mod.build_archive(
        kernel_version=kver, busybox=busybox, modules=("top", "virtio_net"),
        server_url="http://10.79.0.1:8080", modules_root=tmp_path / "modules")
    entries = {e.name: e for e in read_archive(archive.to_bytes())}
    base = f"lib/modules/{kver}/kernel/net"
    assert entries[f"{base}/base.ko"].data == b"BASE-ELF"
    assert entries[f"{base}/mid-dle.ko"].data == b"MID-ELF"
    assert entries[f"{base}/top.ko"].data == b"TOP-ELF"
    assert info["modules"] == ["base", "mid_dle", "top"]
    assert info["builtin"] == ["virtio_net"]
    assert entries["etc/netbootd/modules"].data.decode().split() == [
        f"/{base}/base.ko", f"/{base}/mid-dle.ko", f"/{base}/top.ko"]
    assert entries["etc/netbootd/server"].data == b"http://10.79.0.1:8080\n"

    with pytest.raises(initrd_mod.InitrdError):
        initrd_mod.build_archive(kernel_version=kver, busybox=busybox, modules=("nope",),
                                 modules_root=tmp_path / "modules")
    with pytest.raises(initrd_mod.InitrdError):
        initrd_mod.build_archive(kernel_version=kver, busybox=busybox, modules=("top",),
                                 server_url="http://x/'$(reboot)'",
                                 modules_root=tmp_path / "modules")


def test_ensure_reuses_an_unchanged_image_and_rebuilds_when_anything_changed(tmp_path):
    """A daemon restart must not rebuild the initrd (it competed with the serving
    core for 1-2 s in bench/dhcp); a changed input or a damaged image must."""
    _kernel_and_busybox()
    out = tmp_path / "discover.img"
    first = initrd_mod.ensure_discover_initrd(out)
    assert first["reused"] is False and out.is_file()
    mtime = out.stat().st_mtime_ns
    again = initrd_mod.ensure_discover_initrd(out)
    assert again["reused"] is True and again["sha256"] == first["sha256"]
    assert out.stat().st_mtime_ns == mtime, "an unchanged image was rewritten"
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF                               # damaged on disk
    out.write_bytes(bytes(data))
    fixed = initrd_mod.ensure_discover_initrd(out)
    assert fixed["reused"] is False and fixed["sha256"] == first["sha256"]
    other = initrd_mod.ensure_discover_initrd(out, server_url="http://10.9.9.9:8080")
    assert other["reused"] is False and other["sha256"] != first["sha256"]
