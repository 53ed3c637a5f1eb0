"""Shared harness (library part) for the interop tests: real DHCP peers against netbootd,
every packet confined to network namespaces built by ``netbootd.lab.netns``.

Pieces (the pytest fixtures ``lab`` and ``netbootd_factory`` are in conftest.py):
  * ``require_lab()``: skip with labnet.available()'s reason.
  * ``build_lan`` / ``build_pair``: namespaces joined by a bridge or one veth.
  * ``require_bin(name)``: skip naming a missing peer binary.
  * ``Netbootd``: start ``netbootd serve`` in a namespace, wait for its
    ``netbootd ready`` log line (bounded), SIGTERM/SIGKILL it by PID, restart.
  * ``leases()`` / ``db_query()``: read DIR/netbootd.sqlite3 read-only.
  * ``Capture``: tcpdump --immediate-mode in a namespace; frames decoded by hand.
  * ``Agent``: helpers/dhcp_agent.py inside a namespace sending raw frames
    that the test builds with scapy and returning the replies it saw.
  * ``run_perfdhcp``: perfdhcp, always bounded (-n/-p enforced) + wall timeout.
  * DHCP frame builders and a byte-exact option parser.

Addresses used: 10.77.0.0/16 and 10.78.0.0/16, only inside lab namespaces.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import queue
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import scapy.layers.dhcp  # noqa: F401  (Ether/IP/UDP/BOOTP for dhcp_frame)
import scapy.layers.inet  # noqa: F401
import scapy.layers.l2  # noqa: F401

from netbootd.lab import netns as labnet

HERE = Path(__file__).resolve().parent
HELPERS = HERE / "helpers"
VENV_BIN = Path(sys.executable).parent
PYTHON = str(Path(sys.executable))

READY_TIMEOUT = 20.0  # seconds to wait for "netbootd ready"

# --------------------------------------------------------------------------
# skips


_lab_reason: list = []


def lab_unavailable() -> str | None:
    if not _lab_reason:
        _lab_reason.append(labnet.available())
    return _lab_reason[0]


def require_lab() -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")


def require_bin(*names: str) -> dict[str, str]:
    """Return {name: path}; skip the test naming the first missing binary."""
    found = {}
    for n in names:
        p = shutil.which(n) or shutil.which(n, path="/usr/sbin:/sbin:/usr/bin:/bin")
        if p is None:
            pytest.skip(f"peer binary {n!r} is not installed")
        found[n] = p
    return found


def netbootd_bin() -> str:
    p = VENV_BIN / "netbootd"
    if p.exists():
        return str(p)
    w = shutil.which("netbootd")
    if w:
        return w
    pytest.fail("netbootd console script not found (expected next to the venv python)")


# --------------------------------------------------------------------------
# lab


@dataclass
class Lan:
    """A server namespace and client namespaces joined by a bridge in a
    'wire' namespace.  ``ifs[ns]`` is the interface name inside ``ns``."""

    lab: labnet.Lab
    wire: str
    bridge: str
    ns: dict[str, str] = field(default_factory=dict)   # role -> namespace
    ifs: dict[str, str] = field(default_factory=dict)  # role -> ifname in that ns
    addr: dict[str, str | None] = field(default_factory=dict)  # role -> "a.b.c.d/nn"

    def ip(self, role: str) -> str:
        a = self.addr[role]
        assert a, f"{role} has no address"
        return a.split("/")[0]


def build_lan(lab: labnet.Lab, members: dict[str, str | None]) -> Lan:
    """members: role -> address with prefix (or None for an unconfigured
    client).  Each member gets its own namespace and a veth into the wire
    bridge."""
    wire = lab.namespace("wire")
    ports = []
    lan = Lan(lab=lab, wire=wire, bridge="")
    for role, addr in members.items():
        ns = lab.namespace(role)
        inner, port = lab.link(ns, addr, wire, None)
        lan.ns[role] = ns
        lan.ifs[role] = inner
        lan.addr[role] = addr
        ports.append(port)
    lan.bridge = lab.bridge(wire, ports)
    return lan


def build_pair(lab: labnet.Lab, srv_addr: str = "10.77.0.1/16",
               cli_addr: str = "10.77.0.2/16") -> Lan:
    """Server and one client joined by a direct veth (no bridge)."""
    srv = lab.namespace("srv")
    cli = lab.namespace("cli")
    a, b = lab.link(srv, srv_addr, cli, cli_addr)
    return Lan(lab=lab, wire="", bridge="", ns={"srv": srv, "cli": cli},
               ifs={"srv": a, "cli": b}, addr={"srv": srv_addr, "cli": cli_addr})


def wait_for(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# netbootd


class Netbootd:
    """``netbootd serve`` in a namespace.  Log (stdout+stderr) goes to
    ``log_path``; every start appends a marker so restarts stay readable."""

    def __init__(self, lab: labnet.Lab, ns: str, state_dir: Path, args: list[str],
                 log_path: Path):
        self.lab = lab
        self.ns = ns
        self.state_dir = Path(state_dir)
        self.args = list(args)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def db_path(self) -> Path:
        return self.state_dir / "netbootd.sqlite3"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        return [netbootd_bin(), "serve", *self.args, "--state-dir", str(self.state_dir)]

    def start(self, timeout: float = READY_TIMEOUT) -> "Netbootd":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(f"\n=== start #{self.starts}: {' '.join(self.command())}\n")
        offset = self.log_path.stat().st_size
        logf = open(self.log_path, "a")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self.proc = self.lab.popen(self.ns, self.command(), stdout=logf,
                                       stderr=subprocess.STDOUT, env=env)
        finally:
            logf.close()
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text(errors="replace")[offset:]
            if "netbootd ready" in text:
                return self
            if self.proc.poll() is not None:
                pytest.fail(f"netbootd exited with {self.proc.returncode} before "
                            f"'netbootd ready' (start #{self.starts}); log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no 'netbootd ready' within {timeout}s (start #{self.starts}); "
                            f"log:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill9(self) -> int | None:
        """SIGKILL by PID (no chance to commit anything)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        return self.proc.returncode

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM (clean shutdown); returns the exit code."""
        if self.proc is None:
            return None
        return self.lab.stop(self.proc, signal.SIGTERM, timeout=timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(lines[-n:])


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --------------------------------------------------------------------------
# state DB (read-only)


def db_query(state_dir: Path, sql: str, params: tuple = ()) -> list[dict]:
    path = Path(state_dir) / "netbootd.sqlite3"
    if not path.exists():
        raise AssertionError(f"{path} does not exist")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql, params)]
    finally:
        con.close()


def leases(state_dir: Path, state: str | None = None) -> list[dict]:
    """Rows of the leases table ([] while the DB file does not exist yet)."""
    if not (Path(state_dir) / "netbootd.sqlite3").exists():
        return []
    if state is None:
        return db_query(state_dir, "SELECT * FROM leases ORDER BY address")
    return db_query(state_dir, "SELECT * FROM leases WHERE state = ? ORDER BY address", (state,))


def norm_mac(mac) -> str:
    if isinstance(mac, (bytes, bytearray)):
        return bytes(mac[:6]).hex(":")
    s = str(mac).strip().lower().replace("-", ":")
    if ":" not in s and len(s) == 12:
        s = ":".join(s[i:i + 2] for i in range(0, 12, 2))
    return s


# --------------------------------------------------------------------------
# tcpdump capture


class Capture:
    BPF = "udp and (port 67 or port 68 or port 4011)"

    def __init__(self, lab: labnet.Lab, ns: str, iface: str, path: Path, bpf: str | None = None):
        self.lab, self.ns, self.iface, self.path = lab, ns, iface, Path(path)
        self.bpf = bpf or self.BPF
        self.err_path = self.path.with_suffix(".tcpdump.log")
        self.proc: subprocess.Popen | None = None
        self.kernel_drops: int | None = None

    def start(self, timeout: float = 10) -> "Capture":
        tcpdump = require_bin("tcpdump")["tcpdump"]
        errf = open(self.err_path, "w")
        try:
            self.proc = self.lab.popen(
                self.ns, [tcpdump, "-i", self.iface, "-n", "-s", "0", "-U", "--immediate-mode",
                          "-B", "16384", "-Z", "root", "-w", str(self.path), self.bpf],
                stdout=subprocess.DEVNULL, stderr=errf)
        finally:
            errf.close()
        try:
            wait_for(lambda: "listening on" in self.err_path.read_text()
                     or self.proc.poll() is not None, timeout, what="tcpdump to listen")
        except TimeoutError:
            raise AssertionError(f"tcpdump did not start: {self.err_path.read_text()}")
        if self.proc.poll() is not None:
            raise AssertionError(f"tcpdump exited: {self.err_path.read_text()}")
        return self

    def stop(self) -> "Capture":
        if self.proc is not None and self.proc.poll() is None:
            self.lab.stop(self.proc, signal.SIGINT, timeout=10)
        m = re.search(r"(\d+) packets? dropped by kernel", self.err_path.read_text())
        self.kernel_drops = int(m.group(1)) if m else None
        return self

    def packets(self) -> list[tuple[float, bytes]]:
        """(timestamp, frame bytes) of every captured frame."""
        from scapy.utils import RawPcapReader
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        out = []
        with RawPcapReader(str(self.path)) as rd:
            for data, meta in rd:
                out.append((meta.sec + meta.usec / 1e6, data))
        return out


# --------------------------------------------------------------------------
# DHCP frames (scapy) and byte-exact option parsing

MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
MSG_NAMES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
             7: "RELEASE", 8: "INFORM"}


def opt(code: int, value: bytes | str | int | list) -> bytes:
    """Encode one option (value: bytes, str, single byte int, or list of ints)."""
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = bytes([value])
    elif isinstance(value, list):
        value = bytes(value)
    assert len(value) <= 255
    return bytes([code, len(value)]) + value


def ip_bytes(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


def mac_bytes(m: str) -> bytes:
    return bytes.fromhex(norm_mac(m).replace(":", ""))


def dhcp_frame(*, chaddr: str, msg_type: int, xid: int, options: bytes = b"",
               src_mac: str | None = None, dst_mac: str = "ff:ff:ff:ff:ff:ff",
               src_ip: str = "0.0.0.0", dst_ip: str = "255.255.255.255",
               sport: int = 68, dport: int = 67, ciaddr: str = "0.0.0.0",
               giaddr: str = "0.0.0.0", yiaddr: str = "0.0.0.0", hops: int = 0,
               broadcast: bool = True):
    """A BOOTREQUEST as an Ethernet frame.  `options` are raw encoded options
    (see opt()); message type goes first and END is appended."""
    from scapy.layers.dhcp import BOOTP
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    raw_opts = MAGIC + opt(53, msg_type) + options + b"\xff"
    bootp = BOOTP(op=1, htype=1, hlen=6, hops=hops, xid=xid, flags=0x8000 if broadcast else 0,
                  ciaddr=ciaddr, yiaddr=yiaddr, giaddr=giaddr,
                  chaddr=mac_bytes(chaddr) + b"\x00" * 10, options=raw_opts)
    return (Ether(src=src_mac or chaddr, dst=dst_mac) /
            IP(src=src_ip, dst=dst_ip, ttl=64) / UDP(sport=sport, dport=dport) / bootp)


def parse_options(bootp_bytes: bytes) -> dict[int, bytes]:
    """Options of a BOOTP/DHCP message, by code, values concatenated when an
    option repeats (RFC 3396); honours overload (52) into file/sname."""
    def walk(buf: bytes, out: dict[int, bytes]) -> None:
        i = 0
        while i < len(buf):
            code = buf[i]
            if code == 0:
                i += 1
                continue
            if code == 255:
                return
            if i + 1 >= len(buf):
                raise ValueError(f"truncated option {code}")
            ln = buf[i + 1]
            val = buf[i + 2:i + 2 + ln]
            if len(val) != ln:
                raise ValueError(f"truncated option {code}")
            out[code] = out.get(code, b"") + val
            i += 2 + ln

    if len(bootp_bytes) < 240 or bootp_bytes[236:240] != MAGIC:
        return {}
    out: dict[int, bytes] = {}
    walk(bootp_bytes[240:], out)
    ov = out.get(52, b"\x00")[0]
    if ov & 1:
        walk(bootp_bytes[108:236], out)
    if ov & 2:
        walk(bootp_bytes[44:108], out)
    return out


@dataclass
class Reply:
    """A decoded DHCP reply frame as seen on the wire."""

    t: float
    eth_src: str
    eth_dst: str
    ip_src: str
    ip_dst: str
    sport: int
    dport: int
    op: int
    xid: int
    flags: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: str
    sname: bytes
    file: bytes
    options: dict[int, bytes]
    raw: bytes

    @property
    def msg_type(self) -> int | None:
        v = self.options.get(53)
        return v[0] if v and len(v) == 1 else None

    @property
    def server_id(self) -> str | None:
        v = self.options.get(54)
        return str(ipaddress.IPv4Address(v)) if v and len(v) == 4 else None

    @property
    def boot_file(self) -> str:
        """Option 67 if present, else the `file` field (unless overloaded)."""
        if 67 in self.options:
            return self.options[67].rstrip(b"\x00").decode(errors="replace")
        if self.options.get(52, b"\x00")[0] & 1:
            return ""
        return self.file.rstrip(b"\x00").decode(errors="replace")

    def ips(self, code: int) -> list[str]:
        v = self.options.get(code, b"")
        return [str(ipaddress.IPv4Address(v[i:i + 4])) for i in range(0, len(v) - 3, 4)]

    def describe(self) -> str:
        opts = " ".join(f"{c}={v.hex()}" for c, v in self.options.items())
        return (f"{MSG_NAMES.get(self.msg_type, self.msg_type)} {self.eth_src}->{self.eth_dst} "
                f"{self.ip_src}:{self.sport}->{self.ip_dst}:{self.dport} xid={self.xid:#x} "
                f"flags={self.flags:#x} ci={self.ciaddr} yi={self.yiaddr} si={self.siaddr} "
                f"gi={self.giaddr} ch={self.chaddr} file={self.file.rstrip(bytes(1))!r} "
                f"sname={self.sname.rstrip(bytes(1))!r} opts[{opts}]")


def decode_reply(frame, t: float = 0.0) -> Reply | None:
    """Ethernet frame bytes (or a scapy packet, or a (t, bytes) tuple) ->
    Reply, or None when it is not IPv4/UDP carrying a BOOTP message.
    Parsed by hand: fast enough for captures of tens of thousands of frames."""
    if isinstance(frame, tuple):
        t, frame = frame
    if not isinstance(frame, (bytes, bytearray)):
        t = t or float(getattr(frame, "time", 0.0))
        frame = bytes(frame)
    if len(frame) < 14 + 20 + 8 + 236:
        return None
    off = 14
    etype = int.from_bytes(frame[12:14], "big")
    if etype == 0x8100:
        etype = int.from_bytes(frame[16:18], "big")
        off = 18
    if etype != 0x0800 or frame[off + 9] != 17:
        return None
    ihl = (frame[off] & 0x0F) * 4
    ip_src = str(ipaddress.IPv4Address(frame[off + 12:off + 16]))
    ip_dst = str(ipaddress.IPv4Address(frame[off + 16:off + 20]))
    u = off + ihl
    sport, dport, ulen = struct.unpack_from("!HHH", frame, u)
    b = bytes(frame[u + 8:u + ulen]) if ulen >= 8 else bytes(frame[u + 8:])
    if len(b) < 236:
        return None
    return Reply(
        t=t, eth_src=frame[6:12].hex(":"), eth_dst=frame[0:6].hex(":"),
        ip_src=ip_src, ip_dst=ip_dst, sport=sport, dport=dport,
        op=b[0], xid=int.from_bytes(b[4:8], "big"), flags=int.from_bytes(b[10:12], "big"),
        ciaddr=str(ipaddress.IPv4Address(b[12:16])), yiaddr=str(ipaddress.IPv4Address(b[16:20])),
        siaddr=str(ipaddress.IPv4Address(b[20:24])), giaddr=str(ipaddress.IPv4Address(b[24:28])),
        chaddr=b[28:34].hex(":"), sname=b[44:108], file=b[108:236],
        options=parse_options(b), raw=b)


def describe_all(replies) -> str:
    return "\n".join("  " + r.describe() for r in replies) or "  (nothing)"


# --------------------------------------------------------------------------
# raw-frame agent in a namespace


class Agent:
    def __init__(self, lab: labnet.Lab, ns: str, iface: str, absorb: tuple[int, ...] = (),
                 log_path: Path | None = None):
        self.lab, self.ns, self.iface = lab, ns, iface
        cmd = [PYTHON, str(HELPERS / "dhcp_agent.py"), "--iface", iface]
        if absorb:
            cmd += ["--absorb", ",".join(map(str, absorb))]
        errf = open(log_path, "w") if log_path else subprocess.DEVNULL
        try:
            self.proc = lab.popen(ns, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=errf, text=True, bufsize=1)
        finally:
            if log_path:
                errf.close()
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        hello = self._read(15)
        self.mac = hello["mac"]

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"dhcp_agent in {self.ns} did not answer within {timeout}s")
        if line is None:
            raise AssertionError(f"dhcp_agent in {self.ns} exited ({self.proc.poll()})")
        return json.loads(line)

    def _call(self, obj: dict, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        r = self._read(timeout)
        if not r.get("ok", r.get("ready")):
            raise AssertionError(f"dhcp_agent error: {r}")
        return r

    def send(self, frame) -> None:
        self._call({"op": "send", "frame": bytes(frame).hex()}, 10)

    def collect(self, timeout: float, count: int = 0) -> list[Reply]:
        r = self._call({"op": "collect", "timeout": timeout, "count": count}, timeout + 10)
        out = []
        for f in r["frames"]:
            rep = decode_reply(bytes.fromhex(f["hex"]), f["t"])
            if rep is not None:
                out.append(rep)
        return out

    def exchange(self, frame, timeout: float = 3.0, want=None) -> list[Reply]:
        """Send `frame`, collect replies for up to `timeout` s; when `want`
        (predicate) is given, return as soon as a matching reply arrived."""
        self.collect(0)  # drop stale frames
        self.send(frame)
        got: list[Reply] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got += self.collect(min(left, 0.2), count=1)
            if want is not None and any(want(r) for r in got):
                break
        return got

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._call({"op": "quit"}, 5)
            except Exception:
                pass
            self.lab.stop(self.proc, signal.SIGTERM, timeout=5)


# --------------------------------------------------------------------------
# perfdhcp


@dataclass
class PerfResult:
    rc: int
    output: str
    sent: dict[str, int]       # "DO"/"RA" -> packets sent
    received: dict[str, int]   # "DO"/"RA" -> packets received
    drops: dict[str, int]

    @property
    def acks(self) -> int:
        return self.received.get("RA", 0)

    @property
    def requests(self) -> int:
        return self.sent.get("RA", 0)


def parse_perfdhcp(output: str) -> tuple[dict, dict, dict]:
    sent, received, drops = {}, {}, {}
    # Sections look like "***Statistics for: DISCOVER-OFFER***" followed by
    # "sent packets: N" / "received packets: N" / "drops: N".
    for m in re.finditer(r"\*+\s*Statistics for:\s*([A-Z-]+)\**(.*?)(?=\*+\s*Statistics for:|\Z)",
                         output, re.S):
        name, body = m.group(1), m.group(2)
        key = {"DISCOVER-OFFER": "DO", "REQUEST-ACK": "RA"}.get(name, name)
        for field_, dst in (("sent packets", sent), ("received packets", received),
                            ("drops", drops)):
            mm = re.search(rf"{field_}:\s*(\d+)", body)
            if mm:
                dst[key] = int(mm.group(1))
    return sent, received, drops


def run_perfdhcp(lab: labnet.Lab, ns: str, args: list[str], timeout: float = 60,
                 log_path: Path | None = None) -> PerfResult:
    """Run perfdhcp (bounded: requires -n or -p in args) in `ns`."""
    perf = require_bin("perfdhcp")["perfdhcp"]
    assert "-n" in args or "-p" in args, "perfdhcp must be bounded with -n or -p"
    r = lab.ns_exec(ns, perf, *args, check=False, timeout=timeout)
    out = r.stdout + r.stderr
    if log_path:
        log_path.write_text(f"$ perfdhcp {' '.join(args)}\nrc={r.returncode}\n{out}")
    sent, received, drops = parse_perfdhcp(out)
    return PerfResult(r.returncode, out, sent, received, drops)


def start_perfdhcp(lab: labnet.Lab, ns: str, args: list[str], log_path: Path) -> subprocess.Popen:
    perf = require_bin("perfdhcp")["perfdhcp"]
    assert "-n" in args or "-p" in args, "perfdhcp must be bounded with -n or -p"
    logf = open(log_path, "w")
    try:
        return lab.popen(ns, [perf, *args], stdout=logf, stderr=subprocess.STDOUT)
    finally:
        logf.close()


def acks_in(packets) -> list[Reply]:
    out = []
    for p in packets:
        r = decode_reply(p)
        if r is not None and r.op == 2 and r.msg_type == ACK:
            out.append(r)
    return out


# --------------------------------------------------------------------------
# Kea (used only as a control / harness check)


def kea_config(iface: str, subnet: str, pool: str, lease_file: Path,
               router: str | None = None) -> dict:
    opts = [{"name": "routers", "data": router}] if router else []
    return {"Dhcp4": {
        "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "raw"},
        "lease-database": {"type": "memfile", "persist": True, "name": str(lease_file),
                           "lfc-interval": 0},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": subnet, "pools": [{"pool": pool}],
                     "option-data": opts}],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": "stdout"}]}],
    }}


def start_kea(lab: labnet.Lab, ns: str, tmp: Path, cfg: dict) -> subprocess.Popen:
    kea = require_bin("kea-dhcp4")["kea-dhcp4"]
    conf = tmp / "kea-dhcp4.json"
    conf.write_text(json.dumps(cfg))
    log = tmp / "kea.log"
    logf = open(log, "w")
    env = dict(os.environ, KEA_LOCKFILE_DIR=str(tmp), KEA_PIDFILE_DIR=str(tmp))
    try:
        p = lab.popen(ns, [kea, "-c", str(conf)], stdout=logf, stderr=subprocess.STDOUT, env=env)
    finally:
        logf.close()
    # Kea is ready once its UDP socket on port 67 exists (it logs little at WARN).
    try:
        wait_for(lambda: p.poll() is not None
                 or ":67 " in lab.ns_exec(ns, "ss", "-lun", check=False).stdout,
                 10, interval=0.1, what="kea-dhcp4 to bind port 67")
    except TimeoutError:
        raise AssertionError(f"kea-dhcp4 did not bind port 67: {log.read_text()}")
    if p.poll() is not None:
        raise AssertionError(f"kea-dhcp4 exited {p.returncode}: {log.read_text()}")
    time.sleep(0.2)  # raw packet socket is opened right after the UDP one
    return p


# --------------------------------------------------------------------------
# small lab utilities


def iface_mac(lab: labnet.Lab, ns: str, ifname: str) -> str:
    r = lab.ns_exec(ns, "ip", "-j", "link", "show", "dev", ifname)
    return json.loads(r.stdout)[0]["address"]


def set_iface_mac(lab: labnet.Lab, ns: str, ifname: str, mac: str) -> None:
    lab.ns_exec(ns, "ip", "link", "set", "dev", ifname, "address", mac)


def lease_rows_for(state_dir: Path, *, mac: str | None = None,
                   address: str | None = None) -> list[dict]:
    out = []
    for r in leases(state_dir):
        if mac is not None and norm_mac(r["mac"]) != norm_mac(mac):
            continue
        if address is not None and r["address"] != address:
            continue
        out.append(r)
    return out


def is_reply(msg: int, xid: int):
    return lambda r: r.op == 2 and r.xid == xid and r.msg_type == msg


def discover(agent: "Agent", chaddr: str, options: bytes = b"", timeout: float = 4,
             **kw) -> tuple["Reply | None", list["Reply"]]:
    """Broadcast a DISCOVER from `chaddr`; returns (first OFFER or None, all replies)."""
    import random
    xid = random.getrandbits(32)
    got = agent.exchange(dhcp_frame(chaddr=chaddr, xid=xid, msg_type=DISCOVER,
                                    options=options, **kw),
                         timeout=timeout, want=is_reply(OFFER, xid))
    offers = [r for r in got if is_reply(OFFER, xid)(r)]
    return (offers[0] if offers else None), got


def dora(agent: "Agent", chaddr: str, options: bytes = b"", timeout: float = 4):
    """DISCOVER/OFFER/REQUEST/ACK with the broadcast flag; returns (offer, ack)
    and fails the test, showing what came back, when a step gets no answer."""
    offer, got = discover(agent, chaddr, options, timeout)
    assert offer is not None, f"no OFFER for {chaddr}; saw:\n{describe_all(got)}"
    xid = offer.xid  # RFC 2131 table 5: REQUEST keeps the OFFER's xid
    req = options + opt(50, ip_bytes(offer.yiaddr)) + opt(54, ip_bytes(offer.server_id))
    got = agent.exchange(dhcp_frame(chaddr=chaddr, xid=xid, msg_type=REQUEST, options=req),
                         timeout=timeout, want=is_reply(ACK, xid))
    acks = [r for r in got if is_reply(ACK, xid)(r)]
    assert acks, (f"no ACK for {chaddr} requesting {offer.yiaddr} from {offer.server_id}; "
                  f"saw:\n{describe_all(got)}")
    return offer, acks[0]


# --------------------------------------------------------------------------
# relays and hostile load


def relay_config(path: Path, relays: tuple[str, ...] = ("10.77.0.2",),
                 subnet: str = "10.77.0.0/16", extra: str = "") -> list[str]:
    """netbootd args for a network whose relays are trusted (netbootd drops
    any other giaddr).  perfdhcp is a relay (giaddr = its own address), so
    every test running it lists that address here."""
    listed = ", ".join(f'"{r}"' for r in relays)
    write_config(path, f'{extra}\n[[networks]]\nname = "lab"\nsubnet = "{subnet}"\n'
                       f'relays = [{listed}]\n')
    return ["--config", str(path)]


def flood_template(frame, ip_span: tuple[str, int] | None = None) -> dict:
    """A frame for helpers/dhcp_flood.py: where its MACs, xid and (option 50
    or giaddr, whichever `ip_span` = (first address, count) names the range
    of) address sit, so each copy gets fresh values."""
    raw = bytearray(bytes(frame))
    raw[14 + 20 + 6:14 + 20 + 8] = b"\0\0"     # UDP checksum 0: none (RFC 768); copies differ
    bootp = 14 + 20 + 8
    t = {"hex": raw.hex(), "mac": [6, bootp + 28], "xid": bootp + 4, "ip": None}
    if ip_span is not None:
        t["ip_base"], t["ip_span"] = int(ipaddress.IPv4Address(ip_span[0])), ip_span[1]
        at = raw.find(b"\x32\x04", bootp + 240)
        t["ip"] = at + 2 if at > 0 else bootp + 24          # option 50, else giaddr
    return t


def start_flood(lab: labnet.Lab, ns: str, iface: str, templates: list[dict], rate: int,
                seconds: float, log_path: Path) -> subprocess.Popen:
    """helpers/dhcp_flood.py in `ns`: `rate` frames/s for `seconds` (bounded)."""
    errf = open(log_path, "w")
    try:
        p = lab.popen(ns, [PYTHON, str(HELPERS / "dhcp_flood.py"), "--iface", iface,
                           "--rate", str(rate), "--seconds", str(seconds)],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, text=True)
    finally:
        errf.close()
    p.stdin.write(json.dumps({"templates": templates}))
    p.stdin.close()
    return p


def logged_counters(nb: "Netbootd") -> dict:
    """The DHCP counters netbootd logs when it stops ('dhcp stopped: {...}')."""
    import ast
    found = re.findall(r"dhcp stopped: (\{.*\})", nb.log_path.read_text(errors="replace"))
    return ast.literal_eval(found[-1]) if found else {}


@contextlib.contextmanager
def client_agent(lab: labnet.Lab, lan, tmp_path: Path, name: str = "cli"):
    """The scapy agent on the ``name`` end of a lab link (DHCP ports absorbed,
    log in tmp_path/agent.log), closed afterwards."""
    agent = Agent(lab, lan.ns[name], lan.ifs[name], absorb=(67, 68),
                  log_path=tmp_path / "agent.log")
    try:
        yield agent
    finally:
        agent.close()
