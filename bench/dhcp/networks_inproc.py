#!/usr/bin/env python3
"""CPU per DORA through the real decode + DhcpEngine with 1 network vs many
networks and many leases held (issue 14), in one process: no sockets, no root.

    .venv/bin/python bench/dhcp/networks_inproc.py [--networks 100] [--leases 50000]

Both shapes run alternately (--rounds), each round a fresh engine: `clients`
unique clients do DISCOVER + REQUEST (relayed, as perfdhcp sends them) on the
"bench" network, then the same clients DORA again (returning).  Reported: the
median process CPU per DORA of each shape and their ratio, plus what a replan
(a network added, the lease table and engine swapped) and a status/metrics
read of every network's usage cost with the big shape.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))      # the repo's netbootd

from netbootd.codec import dhcp, dhcp_options as o  # noqa: E402
from netbootd.config import BootConfig, parse  # noqa: E402
from netbootd.model import Lease, LeaseState  # noqa: E402
from netbootd.net.interfaces import IfAddr  # noqa: E402
from netbootd.net.services.dhcp import pool_rows  # noqa: E402
from netbootd.policy.dhcp_engine import DhcpEngine, EngineSettings, Ingress  # noqa: E402
from netbootd.policy.leases import LeaseTable  # noqa: E402
from netbootd.policy.plan import make_plan  # noqa: E402
from netbootd.policy.vnet import Vnet  # noqa: E402
from netbootd.registry.hosts import Registry  # noqa: E402

SERVER, RELAY = "10.77.0.1", "10.77.0.2"
CFG = parse('mode = "full"\n')
IFACES = [IfAddr("eth0", SERVER, 16)]


def shape(networks: int) -> list[Vnet]:
    out = [Vnet(name="bench", subnet="10.77.0.0/16", relays=(RELAY,))]
    out += [Vnet(name=f"x{i}", subnet=f"10.{128 + i // 64}.{(i % 64) * 4}.0/22",
                 relays=(f"10.200.{i // 250}.{i % 250 + 1}",)) for i in range(networks - 1)]
    return out


def engine(networks: int, leases: int):
    plan = make_plan(CFG, IFACES, shape(networks))
    table = LeaseTable(list(plan.networks))
    extra = [n for n in plan.networks if n.name != "bench"]
    for k in range(leases):
        n = extra[k % len(extra)]
        mac = bytes([2, 0x5e, 0, k >> 16 & 255, k >> 8 & 255, k & 255])
        table.load(Lease(int(n.subnet.network_address) + 1 + k // len(extra), n.name,
                         b"\x01\x01" + mac, mac.hex(":"), LeaseState.ACTIVE, 0.0, 1e12))
    s = EngineSettings(per_mac_pps=1e9, new_clients_per_interface_pps=1e9)
    e = DhcpEngine(s, list(plan.networks), table, Registry(), BootConfig())
    e.set_networks(list(plan.networks), dict(plan.attached))
    return e, plan


def frame(mtype: int, mac: bytes, xid: int, requested: bytes | None = None) -> bytes:
    p = dhcp.Packet(o.BOOTREQUEST, 1, 6, 1, xid, 0, 0, b"\0" * 4, b"\0" * 4, b"\0" * 4,
                    bytes([10, 77, 0, 2]), mac + b"\0" * 10)
    p.options[o.OPT_MESSAGE_TYPE] = bytes((mtype,))
    p.options[o.OPT_PARAM_REQUEST] = bytes([1, 3, 6, 51, 54])
    if requested is not None:
        p.options[o.OPT_REQUESTED_IP] = requested
        p.options[o.OPT_SERVER_ID] = bytes([10, 77, 0, 1])
    return dhcp.encode(p, 576)


def doras(e, clients: int, now: float) -> float:
    """CPU seconds for one DORA per client."""
    ing = Ingress("eth0", SERVER, "bench")
    frames = []
    t0 = time.process_time()
    for i in range(clients):
        mac = bytes([2, 0x77, 0, i >> 16 & 255, i >> 8 & 255, i & 255])
        out = e.handle(dhcp.decode(frame(o.DISCOVER, mac, i)), ing, now)
        offer = dhcp.decode(out.reply)
        out = e.handle(dhcp.decode(frame(o.REQUEST, mac, i, offer.yiaddr)), ing, now)
        frames.append(out.kind)
    cpu = time.process_time() - t0
    assert frames.count("ACK") == clients, frames[:5]
    return cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--networks", type=int, default=100)
    ap.add_argument("--leases", type=int, default=50000)
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    res = {"single": {"unique": [], "returning": []}, "many": {"unique": [], "returning": []}}
    for r in range(args.rounds):
        for name, (nets, held) in (("single", (1, 0)), ("many", (args.networks, args.leases))):
            e, _ = engine(nets, held)
            gc.collect()
            gc.freeze()       # what runtime/gcpace.py does in the daemon: survivors frozen
            res[name]["unique"].append(doras(e, args.clients, 1000.0) / args.clients)
            res[name]["returning"].append(doras(e, args.clients, 1001.0) / args.clients)
    print(f"{args.clients} clients, {args.rounds} alternating rounds; CPU per DORA (median):")
    for kind in ("unique", "returning"):
        a = statistics.median(res["single"][kind])
        b = statistics.median(res["many"][kind])
        print(f"  {kind:9s} 1 network {a * 1e6:6.1f} us   {args.networks} networks + "
              f"{args.leases} leases {b * 1e6:6.1f} us   rate ratio {a / b:.2f}x")
    e, plan = engine(args.networks, args.leases)
    t0 = time.process_time()
    more = [*plan.vnets, Vnet(name="added", subnet="10.250.0.0/24")]
    p2 = make_plan(CFG, IFACES, more)
    e.leases.set_networks(list(p2.networks))
    e.set_networks(list(p2.networks), dict(p2.attached))
    t1 = time.process_time()
    rows = pool_rows(e.leases, 1000.0, p2)
    t2 = time.process_time()
    print(f"  replan with {len(more)} networks, {len(e.leases.by_addr)} leases: "
          f"{(t1 - t0) * 1e3:.1f} ms CPU; every network's usage (status, /metrics): "
          f"{(t2 - t1) * 1e3:.1f} ms for {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
