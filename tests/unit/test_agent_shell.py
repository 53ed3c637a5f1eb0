"""The agent's shell parts (iso_builder/agent/*.sh, json.awk) run by the same static
busybox the initrd carries, with PATH holding only its applets (as in the initrd):
inventory from a fake /sys + /proc laid out like qemu's, json.awk on hostile replies,
the nc-based HTTP client against a loopback server (a refusal's reason is kept), and
wipe on real loop devices (root): discard verified, a discard that lies falls back to
zeroing, a read-only disk fails.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from iso_builder import initrd as initrd_mod
from netbootd.policy import inventory as inventory_policy

AGENT = Path(initrd_mod.INITRD_SRC)
MiB = 1 << 20


@pytest.fixture(scope="module")
def bbpath(tmp_path_factory):
    """A PATH with busybox's applets only (what the initrd has)."""
    try:
        bb = initrd_mod.find_busybox()
    except initrd_mod.InitrdError as e:
        pytest.skip(f"no static busybox: {e}")
    d = tmp_path_factory.mktemp("bbbin")
    for app in initrd_mod.busybox_applets(bb):
        name = app.rsplit("/", 1)[-1]
        if not (d / name).exists():
            (d / name).symlink_to(bb)
    return str(d)


def sh(bbpath, script: str, tmp_path: Path, env: dict | None = None,
       timeout: float = 60) -> subprocess.CompletedProcess:
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    e = {"PATH": bbpath, "NB_LIB": str(AGENT), "NB_RUN": str(run), **(env or {})}
    lib = f". {AGENT}/lib.sh; . {AGENT}/inventory.sh; . {AGENT}/actions.sh\n"
    return subprocess.run([f"{bbpath}/sh", "-c", lib + script], env=e, capture_output=True,
                          text=True, timeout=timeout)


# -- a fake /sys and /proc, shaped like a qemu guest's ----------------------------------
def _w(p: Path, text, mode: str = "w"):
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)


def _smbios17(size_mib: int, extended: bool = False) -> bytes:
    raw = bytearray(40)
    raw[0], raw[1] = 17, 40
    if extended:
        raw[12:14] = (0x7FFF).to_bytes(2, "little")
        raw[28:32] = size_mib.to_bytes(4, "little")
    else:
        raw[12:14] = size_mib.to_bytes(2, "little")
    return bytes(raw)


def fake_machine(root: Path, *, dimms=(512,), blocks: int | None = 4, efi=None) -> tuple[str, str]:
    sys_, proc = root / "sys", root / "proc"
    _w(proc / "uptime", "12.34 5.6\n")
    _w(proc / "meminfo", "MemTotal:         471284 kB\nMemFree: 1 kB\n")
    _w(proc / "cpuinfo", "".join(f"processor\t: {i}\nmodel name\t: QEMU Virtual CPU version 2.5+"
                                 f"\nphysical id\t: {i}\ncore id\t\t: 0\n\n" for i in range(2)))
    for i in range(2):       # -smp 2,sockets=2,cores=1,threads=1
        c = sys_ / f"devices/system/cpu/cpu{i}"
        _w(c / "topology/physical_package_id", f"{i}\n")
        _w(c / "topology/core_id", "0\n")
        if i:
            _w(c / "online", "1\n")
    for i, mib in enumerate(dimms):
        _w(sys_ / f"firmware/dmi/entries/17-{i}/raw", _smbios17(mib, extended=mib > 32000))
    if blocks is not None:
        _w(sys_ / "devices/system/memory/block_size_bytes", "8000000\n")
        for i in range(blocks):
            _w(sys_ / f"devices/system/memory/memory{i}/online", "1\n")
    ids = {"sys_vendor": "Acme Test", "product_name": "Model \"Q\" \\ 9",
           "product_serial": "SER-123", "product_uuid": "8A7C3F5E-1B2D-4C3E-9F10-77AA00BB0010",
           "board_vendor": "Acme", "board_name": "B1", "board_serial": "BRD-9",
           "bios_vendor": "SeaBIOS", "bios_version": "1.16.2", "bios_date": "04/01/2014"}
    for k, v in ids.items():
        _w(sys_ / f"class/dmi/id/{k}", v + "\n")
    # disks: the /sys/block entries are symlinks into the device tree, as in sysfs
    devs = {
        "vda": ("devices/pci0000:00/0000:00:04.0/virtio2/block/vda",
                {"size": "8192", "serial": "DISK-A", "ro": "0", "queue/rotational": "1",
                 "removable": "0"}),
        "sda": ("devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda",
                {"size": "2048", "ro": "1", "queue/rotational": "0", "device/model": "QEMU HARDDISK  ",
                 "removable": "0"}),
        "nvme0n1": ("devices/pci0000:00/0000:00:05.0/nvme/nvme0/nvme0n1",
                    {"size": "4096", "ro": "0", "queue/rotational": "0",
                     "device/model": "NVMe Model", "device/serial": "NV-1"}),
        "loop0": ("devices/virtual/block/loop0", {"size": "100"}),
    }
    for name, (path, attrs) in devs.items():
        d = sys_ / path
        d.mkdir(parents=True)
        for k, v in attrs.items():
            _w(d / k, v + "\n")
        if name != "loop0" and not (d / "device").exists():
            (d / "device").mkdir()
        (sys_ / "block").mkdir(exist_ok=True)
        (sys_ / "block" / name).symlink_to(f"../{path}")
    pg80 = b"\x00\x80\x00\x0a" + b"QM00001   "
    _w(sys_ / devs["sda"][0] / "device/vpd_pg80", pg80)
    # NICs: eth0 (e1000, link up, 1000 Mb/s), eth1 (virtio, speed unknown), lo (no device)
    for name, mac, drv, speed in (("eth0", "52:54:00:AA:00:01", "e1000", "1000"),
                                  ("eth1", "52:54:00:aa:00:02", "virtio_net", "-1")):
        n = sys_ / f"devices/pci0000:00/0000:00:0{name[-1]}.0/net/{name}"
        _w(n / "address", mac + "\n")
        _w(n / "type", "1\n")
        _w(n / "carrier", "1\n")
        _w(n / "speed", speed + "\n")
        _w(n / "mtu", "1500\n")
        (sys_ / "bus/pci/drivers" / drv).mkdir(parents=True, exist_ok=True)
        (n / "device").mkdir()
        (n / "device/driver").symlink_to(sys_ / "bus/pci/drivers" / drv)
        (sys_ / "class/net").mkdir(parents=True, exist_ok=True)
        (sys_ / "class/net" / name).symlink_to(n)
    _w(sys_ / "devices/virtual/net/lo/type", "772\n")
    (sys_ / "class/net/lo").symlink_to(sys_ / "devices/virtual/net/lo")
    if efi is not None:
        v = sys_ / "firmware/efi/efivars"
        v.mkdir(parents=True)
        if efi != "no-var":
            _w(v / "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", b"\x06\x00\x00\x00" +
               bytes([efi]))
        else:
            _w(v / "Timeout-8be4df61-93ca-11d2-aa0d-00e098032b8c", b"\x07\x00\x00\x00\x05\x00")
    return str(sys_), str(proc)


def inventory(bbpath, tmp_path, **kw) -> dict:
    sys_, proc = fake_machine(tmp_path / "m", **kw)
    r = sh(bbpath, "inventory_json", tmp_path, {"NB_SYS": sys_, "NB_PROC": proc})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    inventory_policy.validate(doc)     # what the server accepts
    return doc


def test_inventory_reads_what_a_qemu_guest_shows(bbpath, tmp_path):
    doc = inventory(bbpath, tmp_path)
    assert doc["schema"] == 1
    assert doc["cpu"] == {"model": "QEMU Virtual CPU version 2.5+", "sockets": 2, "cores": 2,
                          "threads": 2}
    assert doc["memory"] == {"bytes": 512 * MiB}
    assert doc["extra"]["memory_source"] == "smbios"
    disks = {d["name"]: d for d in doc["disks"]}
    assert set(disks) == {"vda", "sda", "nvme0n1"}          # loop devices are not disks
    assert disks["vda"] == {"name": "vda", "bytes": 4 * MiB, "model": None, "serial": "DISK-A",
                            "rotational": True, "transport": "virtio", "readonly": False,
                            "removable": False}
    assert disks["sda"]["serial"] == "QM00001" and disks["sda"]["model"] == "QEMU HARDDISK"
    assert disks["sda"]["transport"] == "ata" and disks["sda"]["readonly"] is True
    assert (disks["nvme0n1"]["transport"], disks["nvme0n1"]["serial"]) == ("nvme", "NV-1")
    assert doc["nics"] == [
        {"name": "eth0", "mac": "52:54:00:aa:00:01", "driver": "e1000", "link": True,
         "speed": 1000, "mtu": 1500},
        {"name": "eth1", "mac": "52:54:00:aa:00:02", "driver": "virtio_net", "link": True,
         "speed": None, "mtu": 1500}]
    assert doc["dmi"] == {
        "system": {"vendor": "Acme Test", "product": 'Model "Q" \\ 9', "serial": "SER-123",
                   "uuid": "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010"},
        "board": {"vendor": "Acme", "product": "B1", "serial": "BRD-9"},
        "bios": {"vendor": "SeaBIOS", "version": "1.16.2", "date": "04/01/2014"}}
    assert doc["firmware"] == "bios" and doc["secure_boot"] is None


def test_memory_falls_back_to_memory_blocks_then_memtotal(bbpath, tmp_path):
    doc = inventory(bbpath, tmp_path / "a", dimms=(16384, 49152))    # 64 GiB, extended size
    assert doc["memory"]["bytes"] == 64 << 30
    doc = inventory(bbpath, tmp_path / "b", dimms=())
    assert (doc["memory"]["bytes"], doc["extra"]["memory_source"]) == (4 * 128 * MiB,
                                                                       "memory-blocks")
    doc = inventory(bbpath, tmp_path / "c", dimms=(), blocks=None)
    assert (doc["memory"]["bytes"], doc["extra"]["memory_source"]) == (471284 * 1024, "meminfo")


@pytest.mark.parametrize("efi,secure", [(1, True), (0, False), ("no-var", False)])
def test_uefi_and_secure_boot_from_the_efi_variable(bbpath, tmp_path, efi, secure):
    doc = inventory(bbpath, tmp_path, efi=efi)
    assert doc["firmware"] == "uefi" and doc["secure_boot"] is secure


def test_inventory_of_this_machine_is_valid(bbpath, tmp_path):
    """The real /sys and /proc of the build machine (whatever it is) give a document
    the server accepts."""
    r = sh(bbpath, "inventory_json", tmp_path)
    assert r.returncode == 0, r.stderr
    doc = inventory_policy.validate(json.loads(r.stdout))
    assert doc["cpu"]["threads"] >= 1 and doc["memory"]["bytes"] > 0


# -- json.awk ------------------------------------------------------------------------------
def flat(bbpath, tmp_path, text: str) -> tuple[int, str]:
    (tmp_path / "in.json").write_text(text)
    r = sh(bbpath, f'jflat {tmp_path}/in.json {tmp_path}/out; rc=$?; cat {tmp_path}/out; '
                   'exit $rc', tmp_path)
    return r.returncode, r.stdout


def test_json_awk_flattens_replies_and_keeps_hostile_strings_as_one_line_of_data(bbpath,
                                                                                tmp_path):
    rc, out = flat(bbpath, tmp_path, json.dumps(
        {"action": "boot", "id": 7, "poll": {"interval": 5}, "initrd": ["a", "b"],
         "cmdline": "x=1 $(reboot) `id`\n\tNEXT\u0007", "k.e y": None, "u": "\u00e9\u0041",
         "esc": "q\"b\\s/"}))
    assert rc == 0
    assert out.splitlines() == [
        "action\tboot", "id\t7", "poll.interval\t5", "initrd.0\ta", "initrd.1\tb",
        "cmdline\tx=1 $(reboot) `id`  NEXT ", "k_e_y\t", "u\t?A", 'esc\tq"b\\s/']


@pytest.mark.parametrize("bad", ['{"a":', '{"a":1} trailing', "[" * 20 + "]" * 20,
                                 '{"a": tru}', '{"a": "\\x"}', ""])
def test_json_awk_refuses_broken_or_deep_documents(bbpath, tmp_path, bad):
    rc, out = flat(bbpath, tmp_path, bad)
    assert rc != 0 and out == ""


# -- HTTP over nc --------------------------------------------------------------------------
@pytest.fixture
def server():
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def _go(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n).decode()
            seen.append({"method": self.command, "path": self.path, "body": body,
                         "auth": self.headers.get("Authorization"),
                         "type": self.headers.get("Content-Type")})
            code, reply = (403, {"error": "token revoked (tok-1)"}) if "refuse" in self.path \
                else (200, {"secret": "nba1.x.y", "poll": {"interval": 3}})
            data = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        do_GET = do_POST = _go

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    srv.shutdown()
    srv.server_close()


def test_api_posts_json_sends_the_secret_and_keeps_a_refusals_reason(bbpath, tmp_path, server):
    url, seen = server
    r = sh(bbpath, f'''server={url}/prefix/; secret=""
        echo '{{"mac":"52:54:00:aa:00:01"}}' > "$NB_RUN/b.json"
        api POST /api/v1/agent/register "$NB_RUN/b.json"
        echo "1 $http_status $(jget "$NB_RUN/http.flat" secret) $(jget "$NB_RUN/http.flat" poll.interval)"
        secret=nba1.x.y
        api GET /api/v1/agent/refuse
        echo "2 $http_status [$http_error]"
        ls "$NB_RUN"
        server=http://127.0.0.1:1
        api GET /api/v1/agent/next
        echo "3 $http_status [$http_error]"''', tmp_path)
    lines = r.stdout.splitlines()
    assert lines[0] == "1 200 nba1.x.y 3", r.stdout + r.stderr
    assert lines[1] == "2 403 [token revoked (tok-1)]"
    assert "http.req" not in lines[2:-1], "the request file carrying the secret was kept"
    assert lines[-1] == "3 0 [no HTTP answer from 127.0.0.1:1]"
    assert seen[0] == {"method": "POST", "path": "/prefix/api/v1/agent/register",
                       "body": '{"mac":"52:54:00:aa:00:01"}\n', "auth": None,
                       "type": "application/json"}
    assert seen[1]["auth"] == "Agent nba1.x.y" and seen[1]["path"] == "/prefix/api/v1/agent/refuse"


# -- wipe on loop devices --------------------------------------------------------------------
@pytest.fixture
def loopdev(tmp_path):
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("loop devices need root and losetup")
    made = []

    def make(mib: int = 4, readonly: bool = False) -> tuple[str, Path]:
        img = tmp_path / f"disk{len(made)}.img"
        img.write_bytes(b"\xa5" * (mib * MiB))
        args = ["losetup", "-f", "--show"] + (["-r"] if readonly else []) + [str(img)]
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"losetup: {r.stderr.strip()}")
        dev = r.stdout.strip()
        made.append(dev)
        return dev.rsplit("/", 1)[-1], img
    yield make
    for dev in made:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


def wipe(bbpath, tmp_path, name: str, env=None, prelude="") -> tuple[bool, dict, str]:
    r = sh(bbpath, prelude + f': > "$NB_RUN/wipe.disks"; wipe_disk {name}; echo "rc=$?"; '
                             'cat "$NB_RUN/wipe.disks"', tmp_path, env)
    lines = r.stdout.splitlines()
    rc = [l for l in lines if l.startswith("rc=")][0]
    return rc == "rc=0", json.loads(lines[-1]), r.stdout


def test_wipe_discards_and_verifies_a_patterned_disk(bbpath, tmp_path, loopdev):
    name, img = loopdev(4)
    ok, rep, out = wipe(bbpath, tmp_path, name)
    assert ok and rep == {"name": name, "method": "blkdiscard", "bytes": 4 * MiB,
                          "verified": True, "result": "ok", "error": None, "note": None}, out
    assert f"NETBOOTD-AGENT: wipe disk={name} method=blkdiscard bytes=4194304 verified=yes" in out
    assert img.read_bytes() == bytes(4 * MiB)


def test_a_discard_that_reads_back_old_data_falls_back_to_zeroing(bbpath, tmp_path, loopdev):
    """A device that accepts a discard and keeps its data (qemu's discard=ignore does
    this): the verification catches it and the first and last MiB are zeroed instead."""
    name, img = loopdev(4)
    # a function: busybox sh runs its own applets before anything on PATH
    ok, rep, out = wipe(bbpath, tmp_path, name, prelude="blkdiscard() { return 0; }; ")
    assert ok and rep["method"] == "zero" and rep["bytes"] == 2 * MiB and rep["verified"], out
    assert rep["note"] == "discard did not read back zeros; zeroed instead"
    data = img.read_bytes()
    assert data[:MiB] == bytes(MiB) and data[-MiB:] == bytes(MiB)
    assert data[MiB:-MiB] == b"\xa5" * (2 * MiB), "wrote outside the regions it reports"


def test_wipe_without_discard_zeroes_first_and_last_mib(bbpath, tmp_path, loopdev):
    """A disk without discard support (discard_max_bytes 0, from a /sys copy)."""
    name, img = loopdev(3)
    fake = tmp_path / "sys/block" / name
    (fake / "queue").mkdir(parents=True)
    for f in ("size", "ro"):
        (fake / f).write_text(Path(f"/sys/block/{name}/{f}").read_text())
    (fake / "queue/discard_max_bytes").write_text("0\n")
    ok, rep, out = wipe(bbpath, tmp_path, name, env={"NB_SYS": str(tmp_path / "sys")})
    assert ok and (rep["method"], rep["bytes"], rep["note"]) == ("zero", 2 * MiB, None), out
    data = img.read_bytes()
    assert data[:MiB] == bytes(MiB) and data[-MiB:] == bytes(MiB) and data[MiB:2 * MiB] == \
        b"\xa5" * MiB


def test_wipe_of_a_read_only_or_missing_disk_fails_and_writes_nothing(bbpath, tmp_path,
                                                                      loopdev):
    name, img = loopdev(2, readonly=True)
    ok, rep, out = wipe(bbpath, tmp_path, name)
    assert not ok and rep["result"] == "failed" and rep["verified"] is False, out
    assert rep["error"] == "read-only disk" and "verified=no error=read-only disk" in out
    assert img.read_bytes() == b"\xa5" * (2 * MiB)
    for bad in ("nosuchdisk", "../sda", "vda;reboot"):
        ok, rep, _ = wipe(bbpath, tmp_path, f"'{bad}'")
        assert not ok and rep["error"] in ("no such disk", "not a disk name"), rep


def test_wipe_refuses_a_disk_whose_size_or_serial_is_not_the_inventorys(bbpath, tmp_path,
                                                                         loopdev):
    """The server sends the size and serial the inventory reported with each disk:
    a name that now points at another disk (USB media reorder sdX) is not wiped."""
    name, img = loopdev(2)
    ok, rep, out = wipe(bbpath, tmp_path, f"{name} {3 * MiB} ''")
    assert not ok and "not the disk the admin chose" in rep["error"], out
    ok, rep, out = wipe(bbpath, tmp_path, f"{name} {2 * MiB} SOMEOTHERSERIAL")
    assert not ok and rep["error"].startswith("serial is not"), out
    assert img.read_bytes() == b"\xa5" * (2 * MiB), "nothing written"
    ok, rep, out = wipe(bbpath, tmp_path, f"{name} {2 * MiB} ''")
    assert ok and rep["verified"], out
