#!/usr/bin/env python3
"""The storm's simulated hosts: N machines powering on at once, each doing
what its firmware and then iPXE do (one asyncio process, run inside the
client namespace that bench/storm/run.py or the CI test built).

Per host (MAC 02:5b:<4 bytes of its index>, a share of them BIOS, the rest
x64 UEFI; option sets from the captured firmware, bench/storm/firmware.py):
  1. firmware DHCP: DISCOVER, OFFER, REQUEST, ACK, broadcast from its own MAC
     (AF_PACKET, source 0.0.0.0) with the broadcast flag, retransmitted after
     4, 8, 16, 32 s (PXE spec) - give up after that; a NAK starts over with a
     new xid (4 times at most);
  2. TFTP of the boot file the ACK names, from the leased address, with the
     firmware's RRQ options (UEFI: tsize probe + abort, then windowsize 4);
     an unanswered packet is sent again after 1, 2, 4, 4... s, 8 times at most;
  3. iPXE's DHCP (user class iPXE, retransmit after 1, 2, 4, 8 s): the boot
     file is now the URL of the host's boot script;
  4. HTTP GET of the script, then of the kernel and initrd it names, on one
     keep-alive connection (iPXE's order); a failed request (refused, reset,
     30 s without a byte) reconnects and asks again, 4 times at most.
Replies come broadcast (every host sets the flag: EDK2 does; iPXE does not,
its unicast replies would need a MAC per host on this side); they arrive on
one UDP socket on port 68.  The leased addresses are local to the client
namespace through one `local` route over the pool (set up by the caller).

DHCP latencies are the kernel's receive timestamp (SO_TIMESTAMPNS) minus the
send time, so the client's own loop delay (reported: loop_lag_max_s) does not
count against the server.

Output: JSON {hosts: [per host], cpu_s, ...} on stdout or --out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import firmware  # noqa: E402
from tftpget import TftpError, TftpGet  # noqa: E402
from httpget import HttpClient, HttpFailed  # noqa: E402

SO_BINDTODEVICE = 25
SO_TIMESTAMPNS = 35
NAK_RESTARTS = 4
FIRMWARE_DHCP = (4, 8, 16, 32)      # PXE spec 2.1: DISCOVER/REQUEST timeouts
IPXE_DHCP = (1, 2, 4, 8)


def host_mac(i: int, tag: int = 0x5B, sequential: bool = False) -> bytes:
    """02:<tag>:<4 bytes>: host i's MAC; scattered by an odd multiplier (a
    bijection mod 2**32, so unique) unless `sequential` (dnsmasq picks an
    address by hashing the MAC and does not hold its offers: with sequential
    MACs a burst of new clients is offered the same addresses and NAKed)."""
    return bytes((0x02, tag)) + struct.pack("!I", i if sequential else (i * 2654435761) & 0xFFFFFFFF)


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass
class HostResult:
    index: int
    mac: str
    family: str
    ip: str | None = None
    started: float = 0.0            # all times: seconds since the storm's start
    leased: float | None = None     # firmware's ACK
    bootfile: float | None = None   # TFTP done
    script: float | None = None     # boot script fetched (after iPXE's ACK)
    done: float | None = None       # kernel + initrd fetched
    error: str | None = None
    bootfile_name: str = ""
    script_url: str = ""
    bytes: dict = field(default_factory=dict)
    retries: dict = field(default_factory=lambda: {"dhcp": 0, "tftp": 0, "http": 0})
    # per transmission answered: seconds from the last DISCOVER / REQUEST
    # sent to its OFFER / ACK (the worst of both stages)
    discover_offer: float = 0.0
    request_ack: float = 0.0
    naks: int = 0


class Dhcp:
    """Sends broadcast frames from any MAC; hands replies to waiters by xid,
    each with the kernel's receive time (SO_TIMESTAMPNS), so a busy client
    loop does not count as a slow server."""

    def __init__(self, ifname: str):
        self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        self.tx.bind((ifname, 0))
        self.tx.setblocking(False)
        self.rx = rx_socket(ifname)
        self.waiters: dict[int, asyncio.Queue] = {}
        self.ident = random.randrange(65536)
        self.send_drops = 0
        self.stray = 0

    def start(self, loop) -> None:
        loop.add_reader(self.rx.fileno(), self._readable)

    def close(self, loop) -> None:
        loop.remove_reader(self.rx.fileno())
        self.rx.close()
        self.tx.close()

    def send(self, mac: bytes, msg: bytes) -> float:
        """Sends; the wall-clock time it left (the clock of SO_TIMESTAMPNS)."""
        self.ident += 1
        try:
            self.tx.send(firmware.ether_frame(mac, msg, self.ident))
        except (BlockingIOError, OSError):
            self.send_drops += 1          # a full queue: the retransmit timer covers it
        return time.time()

    def _readable(self) -> None:
        for _ in range(256):
            try:
                data, anc, _flags, _addr = self.rx.recvmsg(2048, 64)
            except (BlockingIOError, InterruptedError):
                return
            at = time.time()
            for level, typ, val in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(val) >= 16:
                    sec, ns = struct.unpack("qq", val[:16])
                    at = sec + ns / 1e9
            r = firmware.parse_reply(data)
            q = self.waiters.get(r.xid) if r else None
            if q is None:
                self.stray += 1
            else:
                q.put_nowait((at, r))


def rx_socket(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", 68))
    s.setblocking(False)
    return s


async def dora(dhcp: Dhcp, h: HostResult, mac: bytes, uuid: bytes, stage: firmware.Stage,
               timeouts) -> firmware.Reply:
    """One DISCOVER/OFFER/REQUEST/ACK with retransmissions; the ACK (with
    the offer's boot file when the ACK carries none).  A NAK (or an ACK of
    another address) starts over with a new xid, as EDK2 goes back to INIT."""
    t0 = time.monotonic()
    for _restart in range(NAK_RESTARTS):
        xid = random.getrandbits(32)
        q: asyncio.Queue = asyncio.Queue()
        dhcp.waiters[xid] = q
        try:
            offer = await _exchange(dhcp, h, mac, q, t0, timeouts, 2, "discover_offer",
                                    firmware.host_options(stage.discover, mac, uuid), xid)
            sid = socket.inet_aton(offer.server_id or offer.siaddr)
            opts = firmware.host_options(stage.request, mac, uuid,
                                         socket.inet_aton(offer.yiaddr), sid)
            ack = await _exchange(dhcp, h, mac, q, t0, timeouts, 5, "request_ack", opts, xid,
                                  nak_ok=True)
        finally:
            dhcp.waiters.pop(xid, None)
        if ack.mtype == 5 and ack.yiaddr == offer.yiaddr:
            if not ack.bootfile:
                ack.bootfile = offer.bootfile
            if ack.siaddr == "0.0.0.0":
                ack.siaddr = offer.siaddr
            return ack
        h.retries["dhcp"] += 1                # NAK: DISCOVER again
        h.naks += 1
    raise TimeoutError(f"DHCP NAKed {NAK_RESTARTS} times")


async def _exchange(dhcp, h, mac, q, t0, timeouts, want, lat_key, opts, xid, nak_ok=False):
    mtype_sent = 1 if want == 2 else 3
    for n, wait in enumerate(timeouts):
        if n:
            h.retries["dhcp"] += 1
        secs = int(time.monotonic() - t0)
        sent = dhcp.send(mac, firmware.dhcp_message(xid, secs, mac, [(53, bytes((mtype_sent,)))]
                                                    + opts[1:]))
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                at, r = await asyncio.wait_for(q.get(), left)
            except asyncio.TimeoutError:
                break
            if r.chaddr != mac or not (r.mtype == want or (nak_ok and r.mtype == 6)):
                continue
            setattr(h, lat_key, max(getattr(h, lat_key), at - sent))
            return r
    raise TimeoutError(f"no {'OFFER' if want == 2 else 'ACK'} after "
                       f"{len(timeouts)} tries ({sum(timeouts)} s)")


def parse_script(text: str, base: str) -> tuple[str | None, list[str], str | None]:
    """(kernel URL, initrd URLs, chain URL) of an iPXE script."""
    kernel, initrds, chain = None, [], None
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or words[0].startswith(":"):
            continue
        cmd, args, i = words[0], [], 1
        while i < len(words) and words[i] not in ("||", "&&"):
            if words[i] in ("--name", "-n", "--timeout"):
                i += 2
                continue
            if not words[i].startswith("-"):
                args.append(words[i])
            i += 1
        if not args:
            continue
        url = args[0] if "://" in args[0] else base + args[0]
        if cmd in ("kernel", "imgexec", "imgfetch") and kernel is None:
            kernel = url
        elif cmd in ("initrd", "module"):
            initrds.append(url)
        elif cmd == "chain" and kernel is None and chain is None:
            chain = url
    return kernel, initrds, chain


async def boot(i: int, a, dhcp: Dhcp, stages: dict, t0: float, sem) -> HostResult:
    mac = host_mac(i, a.mac_tag, a.sequential_macs)
    family = "bios" if a.bios_every and i % a.bios_every == 0 else "uefi"
    h = HostResult(i, mac_text(mac), family)
    uuid = struct.pack("!I", i) + bytes((0x57, 0x0F, 0x5B)) + bytes(9)
    await asyncio.sleep(random.uniform(0, a.spread) if a.spread else 0)
    h.started = time.monotonic() - t0
    fw, ipxe = stages[family]
    try:
        ack = await dora(dhcp, h, mac, uuid, fw, FIRMWARE_DHCP)
        h.ip, h.leased = ack.yiaddr, time.monotonic() - t0
        h.bootfile_name = ack.bootfile
        tftp_server = ack.next_server or (ack.siaddr if ack.siaddr != "0.0.0.0" else ack.server_id)
        size = 0
        for opts, probe in firmware.RRQS[family]:
            try:
                got = await TftpGet.fetch(h.ip, tftp_server, ack.bootfile, opts, probe,
                                          a.tftp_port)
            except TftpError as e:
                h.retries["tftp"] += e.retransmits
                raise
            h.retries["tftp"] += got.retransmits
            size = got.size
        h.bytes["bootfile"] = size
        h.bootfile = time.monotonic() - t0
        ack2 = await dora(dhcp, h, mac, uuid, ipxe, IPXE_DHCP)
        if ack2.yiaddr != h.ip:
            raise RuntimeError(f"iPXE got {ack2.yiaddr}, the firmware {h.ip}")
        h.script_url = ack2.bootfile
        async with sem:
            http = HttpClient(h.ip, a.http_idle)
            try:
                url, kernel, initrds = ack2.bootfile, None, []
                for _hop in range(3):
                    text = (await http.get(url, keep=True)).decode("utf-8", "replace")
                    base = url.split("/", 3)
                    kernel, initrds, chain = parse_script(text, "/".join(base[:3]))
                    if not chain:
                        break
                    url = chain
                h.script = time.monotonic() - t0
                if not kernel:
                    raise RuntimeError(f"no kernel in the boot script: {text[:200]!r}")
                h.bytes["kernel"] = await http.get(kernel)
                h.bytes["initrd"] = sum([await http.get(u) for u in initrds])
            finally:
                h.retries["http"] += http.retries
                http.close()
        h.done = time.monotonic() - t0
    except (OSError, TimeoutError, RuntimeError, HttpFailed, asyncio.TimeoutError) as e:
        h.error = f"{type(e).__name__}: {e}"[:300]
    return h


LAG = [0.0, 0]          # the client loop's worst lateness, ticks over 100 ms late


async def loop_lag(tick: float = 0.05) -> None:
    """How late the client's own loop runs (its latencies include this)."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(tick)
        late = time.monotonic() - t - tick
        LAG[0] = max(LAG[0], late)
        LAG[1] += late > 0.1


async def storm(a) -> dict:
    loop = asyncio.get_running_loop()
    stages = {f: firmware.load(f) for f in firmware.SOURCES}
    dhcp = Dhcp(a.ifname)
    dhcp.start(loop)
    lag = asyncio.ensure_future(loop_lag())
    sem = asyncio.Semaphore(a.http_parallel or a.hosts)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(boot(i + a.first, a, dhcp, stages, t0, sem))
             for i in range(a.hosts)]
    done, pending = await asyncio.wait(tasks, timeout=a.timeout)
    for t in pending:
        t.cancel()
    hosts = []
    for i, t in enumerate(tasks):
        if t in done:
            hosts.append(asdict(t.result()))
        else:
            hosts.append(asdict(HostResult(i + a.first, mac_text(host_mac(i + a.first, a.mac_tag,
                                                                    a.sequential_macs)),
                                           "?", error=f"not done after the {a.timeout:g} s "
                                                      f"time limit")))
    wall = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    dhcp.close(loop)
    lag.cancel()
    return {"hosts": hosts, "wall_s": round(wall, 3), "loop_lag_max_s": round(LAG[0], 3),
            "loop_lag_over_100ms": LAG[1],
            "cpu_s": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 3),
            "send_drops": dhcp.send_drops, "stray_replies": dhcp.stray,
            "max_rss_kb": r1.ru_maxrss}


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--first", type=int, default=0, help="index of the first host (its MAC)")
    ap.add_argument("--mac-tag", type=int, default=0x5B, help="second byte of every MAC")
    ap.add_argument("--sequential-macs", action="store_true",
                    help="MACs 02:5b:00:00:00:00, ...:01, ... (default: scattered)")
    ap.add_argument("--bios-every", type=int, default=5,
                    help="every Nth host is BIOS, the others UEFI (0: all UEFI)")
    ap.add_argument("--spread", type=float, default=0.0,
                    help="power-on times spread uniformly over this many seconds")
    ap.add_argument("--timeout", type=float, default=300.0, help="hard limit of the storm, s")
    ap.add_argument("--http-idle", type=float, default=30.0,
                    help="an HTTP request with no byte for this long is retried")
    ap.add_argument("--http-parallel", type=int, default=0,
                    help="at most this many hosts in the HTTP phase at once (0: no cap)")
    ap.add_argument("--tftp-port", type=int, default=69)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ifname", required=True, help="the client namespace's interface")
    ap.add_argument("--out", help="write the JSON here (default stdout)")
    add_args(ap)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    doc = asyncio.run(storm(a))
    text = json.dumps(doc)
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, a.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
