#!/usr/bin/env python3
"""Raw-frame DHCP agent, run *inside* a lab network namespace.

    ip netns exec NS python dhcp_agent.py --iface IF [--absorb 67,68]

The test process (outside the namespace) builds DHCP frames with scapy and
drives this agent over stdin/stdout, one JSON object per line:

    -> {"op": "send", "frame": "<hex Ethernet frame>"}
    <- {"ok": true}
    -> {"op": "collect", "timeout": 3.0, "count": 0}
    <- {"ok": true, "frames": [{"t": 12.3, "hex": "..."}, ...]}
    -> {"op": "quit"}

`collect` returns the server-side frames received since the last collect
(IPv4/UDP with source port 67 or 4011, i.e. DHCP replies from servers or
relays, excluding our own outgoing frames); it waits `timeout` seconds, or
less if `count` > 0 frames have arrived.

`--absorb` binds UDP sockets on the given ports inside the namespace and
discards what arrives, so unicast replies to a port we "own" (a relay's 67,
a client's 68) do not trigger ICMP port-unreachable back to the server.

Stdlib only (fast start); nothing here leaves the namespace it runs in.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import threading
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SERVER_PORTS = (67, 4011)


def is_server_reply(frame: bytes) -> bool:
    if len(frame) < 14 + 20 + 8:
        return False
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    if ethertype == 0x8100:  # one VLAN tag
        ethertype = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    if ethertype != 0x0800:
        return False
    ihl = (frame[off] & 0x0F) * 4
    if frame[off + 9] != 17:
        return False
    sport, _dport = struct.unpack_from("!HH", frame, off + ihl)
    return sport in SERVER_PORTS


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--absorb", default="", help="comma-separated UDP ports to bind and drain")
    args = ap.parse_args()

    raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    raw.bind((args.iface, 0))
    mac = raw.getsockname()[4].hex(":")

    absorbers = []
    for port in filter(None, args.absorb.split(",")):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.bind(("0.0.0.0", int(port)))
        absorbers.append(s)

    frames: list[dict] = []
    cond = threading.Condition()

    def reader() -> None:
        while True:
            data, addr = raw.recvfrom(65535)
            if addr[2] == PACKET_OUTGOING or not is_server_reply(data):
                continue
            with cond:
                frames.append({"t": time.time(), "hex": data.hex()})
                cond.notify_all()

    def drain(s: socket.socket) -> None:
        while True:
            s.recv(65535)

    threading.Thread(target=reader, daemon=True).start()
    for s in absorbers:
        threading.Thread(target=drain, args=(s,), daemon=True).start()

    def reply(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "mac": mac})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            op = cmd.get("op")
            if op == "send":
                raw.send(bytes.fromhex(cmd["frame"]))
                reply({"ok": True})
            elif op == "collect":
                timeout = min(float(cmd.get("timeout", 1.0)), 30.0)
                want = int(cmd.get("count", 0))
                deadline = time.monotonic() + timeout
                with cond:
                    while True:
                        left = deadline - time.monotonic()
                        if left <= 0 or (want and len(frames) >= want):
                            break
                        cond.wait(left)
                    out = list(frames)
                    frames.clear()
                reply({"ok": True, "frames": out})
            elif op == "quit":
                reply({"ok": True})
                return 0
            else:
                reply({"ok": False, "error": f"unknown op {op!r}"})
        except Exception as e:  # report, keep serving
            reply({"ok": False, "error": repr(e)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
