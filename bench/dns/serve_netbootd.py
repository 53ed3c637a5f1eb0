#!/usr/bin/env python3
"""Run only netbootd's DNS server (netbootd/net/dns.py) on the global reactor.

    python bench/dns/serve_netbootd.py --hosts FILE --port 5300 [--ip 127.0.0.1]

FILE is a hosts file ("10.77.0.5 host00005.netboot.lan host00005" lines, the
same file dnsmasq gets with --addn-hosts): every line becomes a reservation
(a generated MAC, the address, the short name), which is how a netbootd zone
of that many hosts is built without running DHCP.  The server is built as
the daemon builds it, with the rate limit raised out of reach (``--rate``)
so one dnsperf source is not throttled (the bucket code still runs).
Prints "READY <port>" once listening; SIGTERM stops it and prints the
counters to stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repo's netbootd
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", required=True)
    ap.add_argument("--port", type=int, default=5300)
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--domain", default="netboot.lan")
    ap.add_argument("--subnet", default="10.77.0.0/16")
    ap.add_argument("--rate", type=float, default=1e9, help="per-source qps limit")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from twisted.internet import reactor

    from netbootd.net.dns import DnsServer
    from netbootd.policy.zone import Zone

    reservations = []
    with open(args.hosts) as f:
        for i, line in enumerate(f):
            parts = line.split()
            if len(parts) < 2 or parts[0].startswith("#"):
                continue
            mac = "02:00:" + ":".join(f"{(i >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))
            reservations.append((mac, parts[0], parts[-1]))
    zone = Zone(args.domain, [args.subnet], args.ip, reservations=reservations)
    server = DnsServer(reactor, zone, served_subnets=[], rate_limit=args.rate)
    ep, _ = server.listen(args.port, args.ip)

    return common.serve(reactor, lambda: f"READY {ep.socket.getsockname()[1]} names={len(zone.names())}",
                        lambda: dict(server.counters), stop=server.stop)


if __name__ == "__main__":
    sys.exit(main())
