"""Send IPv6 router solicitations on one interface and print the first
router advertisement as JSON (a raw ICMPv6 socket; the kernel's own
autoconfiguration plays no part).  Bounded: --tries solicitations, --wait
seconds after each.

    rs_client.py --iface IF [--tries 6] [--wait 0.5] [--hops 255] [--listen S]
"""
from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
from netbootd.codec import icmp6  # noqa: E402

IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--tries", type=int, default=6)
    ap.add_argument("--wait", type=float, default=0.5)
    ap.add_argument("--hops", type=int, default=255)
    a = ap.parse_args()
    index = socket.if_nametoindex(a.iface)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s.setsockopt(socket.SOL_SOCKET, 25, a.iface.encode())
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, a.hops)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    t0 = time.monotonic()
    for n in range(a.tries):
        s.sendto(icmp6.encode_rs(), (icmp6.ALL_ROUTERS, 0, 0, index))
        end = time.monotonic() + a.wait
        while (left := end - time.monotonic()) > 0:
            if not select.select([s], [], [], left)[0]:
                break
            data, anc, _, addr = s.recvmsg(1500, socket.CMSG_SPACE(4))
            if not data or data[0] != icmp6.ROUTER_ADVERTISEMENT:
                continue
            hops = next((struct.unpack("=i", d[:4])[0] for lvl, typ, d in anc
                         if typ == IPV6_HOPLIMIT), None)
            ra = icmp6.decode_ra(data)
            print(json.dumps({"src": addr[0].split("%")[0], "hops": hops, "solicitations": n + 1,
                              "after": round(time.monotonic() - t0, 3),
                              "lifetime": ra.router_lifetime, "flags": ra.flags,
                              "prefixes": len(ra.prefixes),
                              "lladdr": ra.source_lladdr.hex() if ra.source_lladdr else None}))
            return 0
    print(json.dumps({"src": None, "solicitations": a.tries}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
