#!/usr/bin/env python3
"""CPU per returning-client DORA inside one process: no sockets, no lab, no root.

    .venv/bin/python bench/dhcp/inproc.py            # both parts
    .venv/bin/python bench/dhcp/inproc.py --part path
    .venv/bin/python bench/dhcp/inproc.py --part store --sync normal
    .venv/bin/python bench/dhcp/inproc.py --part store --sync full --events-per-host 500 \
        --sizes 60,120,400      # a store in use: its events(mac, id) index is large

On the shared 2-core VM a live bench (cpu_at.py, run.py) moves with whatever
else runs; the CPU of a fixed piece of work measured with process/thread CPU
time moves much less, so this is where a change to the decode -> engine ->
protocol path, or to what a commit costs, shows first.

* ``path``: 1,000 clients hold a lease (relayed, as perfdhcp sends them);
  then each does DISCOVER + REQUEST through ``codec.dhcp.decode``,
  ``DhcpEngine.handle`` and ``DhcpProtocol`` (with a GroupCommitter whose
  store does nothing and a socket that only counts).  Reported per DORA:
  decode alone, decode + engine, the whole protocol path one datagram per
  read, and in read batches of 16.  Best of --reps.
* ``store``: ``SqliteStore.apply`` (a real database under --workdir) of what
  one returning DORA writes (its lease, the offer and ack events), k DORAs per
  commit: the commit thread's CPU per DORA against the batch a commit window
  gathers (k = offered rate x window when the thread keeps up).

The live server spends more than this per DORA (syscalls, reactor wake-ups,
cold caches between datagrams; bench/dhcp/README.md has both side by side).
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))      # the repo's netbootd

from twisted.internet import defer, task  # noqa: E402

from netbootd.codec import dhcp  # noqa: E402
from netbootd.codec import dhcp_options as o  # noqa: E402
from netbootd.config import BootConfig  # noqa: E402
from netbootd.model import Lease, LeaseState  # noqa: E402
from netbootd.net.commit import GroupCommitter  # noqa: E402
from netbootd.net.dhcp import DhcpProtocol  # noqa: E402
from netbootd.policy.dhcp_engine import DhcpEngine, EngineSettings, Ingress  # noqa: E402
from netbootd.policy.leases import LeaseTable, int2ip, ip2int, whole_subnet  # noqa: E402
from netbootd.registry.hosts import Registry  # noqa: E402
from netbootd.store.sqlite import SqliteStore  # noqa: E402
from netbootd.writes import LeaseWrite, event_json  # noqa: E402

SERVER, RELAY = "10.77.0.1", "10.77.0.2"
PRL = bytes((1, 28, 2, 3, 15, 6, 12))          # perfdhcp's parameter request list


class CountingTransport:
    """DhcpProtocol's transport and its socket in one: counts the replies."""

    def __init__(self):
        self.sent = 0
        self.socket = self

    def sendto(self, data, dest):
        self.sent += 1

    def fileno(self):
        return -1


def _mac(i: int) -> bytes:
    return bytes((0x52, 0x54, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255))


def _wire(mtype: int, i: int, requested: str | None = None) -> bytes:
    opts = {o.OPT_MESSAGE_TYPE: bytes((mtype,))}
    if requested:
        opts[o.OPT_REQUESTED_IP] = socket.inet_aton(requested)
        opts[o.OPT_SERVER_ID] = socket.inet_aton(SERVER)
    opts[o.OPT_PARAM_REQUEST] = PRL
    return dhcp.encode(dhcp.Packet(op=1, xid=i, giaddr=socket.inet_aton(RELAY), chaddr=_mac(i),
                                   options=opts), 1500)


def _best(fn, reps: int, n: int) -> float:
    """Least CPU per item over reps runs of fn() (n items each), in us."""
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return 1e6 * best / n


def path_costs(clients: int, reps: int) -> dict[str, float]:
    clock = task.Clock()
    clock.advance(1_700_000_000)
    net = whole_subnet("bench", SERVER, 16, relays=frozenset({ip2int(RELAY)}))
    engine = DhcpEngine(EngineSettings(per_mac_pps=1e9, new_clients_per_interface_pps=1e9),
                        [net], LeaseTable([net]), Registry(), BootConfig())
    committer = GroupCommitter(clock, lambda batch: None, 0.002,
                               run_in_thread=lambda fn, batch: defer.succeed(fn(batch)))
    proto = DhcpProtocol(engine, Ingress("v0", SERVER, "bench"), committer, clock, None,
                         arp=lambda *a: None)
    proto.transport = CountingTransport()
    src = (RELAY, o.SERVER_PORT)
    disc = [_wire(o.DISCOVER, i) for i in range(clients)]
    proto.datagramsReceived([(d, src) for d in disc])
    held = {lease.mac: lease.address for lease in engine.leases.by_addr.values()}
    req = [_wire(o.REQUEST, i, int2ip(held[_mac(i).hex(":")])) for i in range(clients)]
    proto.datagramsReceived([(r, src) for r in req])
    clock.advance(0.01)
    ing = proto.ingress

    def decode():
        for i in range(clients):
            dhcp.decode(disc[i])
            dhcp.decode(req[i])

    def engine_only():
        now = clock.seconds()
        for i in range(clients):
            engine.handle(dhcp.decode(disc[i]), ing, now)
            engine.handle(dhcp.decode(req[i]), ing, now)

    def one_by_one():
        for i in range(clients):
            proto.datagramsReceived([(disc[i], src)])
            proto.datagramsReceived([(req[i], src)])
            if i % 8 == 7:
                clock.advance(0.002)             # a commit window every 8 DORAs
        clock.advance(0.01)

    def batched():
        for k in range(0, clients, 16):
            proto.datagramsReceived([(d, src) for d in disc[k:k + 16]])
            proto.datagramsReceived([(r, src) for r in req[k:k + 16]])
            clock.advance(0.002)
        clock.advance(0.01)

    out = {name: round(_best(fn, reps, clients), 1) for name, fn in (
        ("decode", decode), ("decode+engine", engine_only),
        ("protocol, 1 datagram per read", one_by_one),
        ("protocol, reads of 16", batched))}
    expected = 2 * clients * (1 + 2 * reps)          # warm-up + two protocol parts
    if proto.transport.sent != expected:
        raise SystemExit(f"inproc: {proto.transport.sent} replies sent, "
                         f"expected {expected}: the path did not answer every request")
    return out


def unique_costs(clients: int, reps: int, profile: str | None = None,
                 paced: bool = False) -> dict[str, float]:
    """CPU per NEW-client DORA on the reactor thread's path: reads of 16
    (DISCOVERs, then their REQUESTs), the group commit run in place (a store
    that does nothing) and the committed batch handed to what the daemon
    hands it to (the DNS zone, the metrics).  Every rep brings new MACs.
    With ``paced`` the daemon's GcPacer runs on the fake clock (16 DORAs per
    2 ms: ~8,000 DORA/s as it sees it), its ticks inside the timed part."""
    import cProfile
    import pstats

    from netbootd.net.metrics import Metrics
    from netbootd.policy.zone import Zone
    clock = task.Clock()
    clock.advance(1_700_000_000)
    net = whole_subnet("bench", SERVER, 16, relays=frozenset({ip2int(RELAY)}))
    engine = DhcpEngine(EngineSettings(per_mac_pps=1e9, new_clients_per_interface_pps=1e9),
                        [net], LeaseTable([net]), Registry(), BootConfig())
    zone = Zone("lab", [net.subnet], [SERVER])
    metrics = Metrics(lambda: [])

    def committed(writes):
        zone.apply(writes, clock.seconds())
        metrics.observe(writes)
    committer = GroupCommitter(clock, lambda batch: None, 0.002,
                               run_in_thread=lambda fn, batch: defer.succeed(fn(batch)),
                               on_committed=committed)
    proto = DhcpProtocol(engine, Ingress("v0", SERVER, "bench"), committer, clock, None,
                         arp=lambda *a: None)
    proto.transport = CountingTransport()
    src = (RELAY, o.SERVER_PORT)
    prof = cProfile.Profile() if profile else None
    pacer = None
    if paced:
        from netbootd.runtime.gcpace import GcPacer
        pacer = GcPacer(clock)
        pacer.start()
    best = float("inf")
    for rep in range(reps + 1):                      # rep 0 warms up
        ids = range((rep + 1) << 16 | 0, ((rep + 1) << 16) + clients)
        disc = [_wire(o.DISCOVER, i) for i in ids]
        cpu = 0.0
        reqs = []
        for k in range(0, clients, 16):
            t = time.process_time()
            if prof and rep:
                prof.enable()
            proto.datagramsReceived([(d, src) for d in disc[k:k + 16]])
            if prof:
                prof.disable()
            cpu += time.process_time() - t
            reqs.append(k)
        held = {lease.mac: lease.address for lease in engine.leases.by_addr.values()}
        req = [_wire(o.REQUEST, i, int2ip(held[_mac(i).hex(":")])) for i in ids]
        for k in range(0, clients, 16):
            t = time.process_time()
            if prof and rep:
                prof.enable()
            proto.datagramsReceived([(r, src) for r in req[k:k + 16]])
            clock.advance(0.002)
            if prof:
                prof.disable()
            cpu += time.process_time() - t
        clock.advance(0.01)
        if rep:
            best = min(best, cpu)
    if pacer is not None:
        print(f"  gc pacer: {pacer.ticks} ticks, storm {getattr(pacer, 'storm', None)}, "
              f"young threshold {__import__('gc').get_threshold()[0]}")
        pacer.stop()
    if proto.transport.sent != 2 * clients * (reps + 1):
        raise SystemExit(f"inproc: {proto.transport.sent} replies sent, "
                         f"expected {2 * clients * (reps + 1)}")
    if prof:
        prof.dump_stats(profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return {"protocol + commit observers, reads of 16": round(1e6 * best / clients, 1)}


def zone_costs(clients: int, reps: int) -> float:
    """Zone.apply of what new clients commit (host, lease, 3 events each),
    batches of 50 into a fresh zone: least CPU per client, in us."""
    from netbootd.model import Host, HostState
    from netbootd.policy.zone import Zone
    from netbootd.writes import HostWrite
    batches = []
    for b in range(0, clients, 50):
        w: list = []
        for i in range(b, min(b + 50, clients)):
            mac = _mac(i).hex(":")
            w += [event_json(1.0, mac, "dhcp.offer", "{}"),
                  event_json(1.0, mac, "host.discovered", "{}"),
                  HostWrite(Host(mac, HostState.DISCOVERED, None, None, None, None, "v0",
                                 1.0, 1.0)),
                  LeaseWrite(Lease(0x0A000100 + i, "bench", b"\x01" + _mac(i), mac,
                                   LeaseState.ACTIVE, 1.0, 3601.0)),
                  event_json(1.0, mac, "dhcp.ack", "{}")]
        batches.append(w)
    best = float("inf")
    for _ in range(reps):
        zone = Zone("lab", ["10.0.0.0/8"], [SERVER])
        t = time.process_time()
        for w in batches:
            zone.apply(w, 2.0)
        best = min(best, time.process_time() - t)
    return round(1e6 * best / clients, 2)


def _dora_writes(i: int, t: float) -> list:
    mac = _mac(i).hex(":")
    ip = 0x0A4D0100 + i
    detail = '{"file":null,"iface":"v0","ip":"%s"}' % int2ip(ip)
    lease = Lease(ip, "bench", b"\x01" + _mac(i), mac, LeaseState.ACTIVE, t, t + 3600)
    return [event_json(t, mac, "dhcp.offer", detail), LeaseWrite(lease),
            event_json(t, mac, "dhcp.ack", detail)]


def store_costs(sync: str, workdir: str, reps: int, sizes=(1, 2, 4, 8, 16, 32, 64),
                events_per_host: int = 0) -> dict:
    """With `events_per_host`, the store first gets that many events per
    client, interleaved as a live run writes them (a store in use: the
    daemon keeps up to 500 per host)."""
    d = tempfile.mkdtemp(prefix="bench-dhcp-inproc-", dir=workdir)
    try:
        store = SqliteStore(d, sync=sync)
        clients = 512
        for k in range(0, events_per_host, 40):
            store.apply([event_json(1.0, _mac(i).hex(":"), "dhcp.ack", '{"ip":"10.77.1.1"}')
                         for _ in range(min(40, events_per_host - k)) for i in range(clients)])
        store.apply([w for i in range(clients) for w in _dora_writes(i, 1.0)])
        out = {}
        for k in sizes:
            best = None
            for rep in range(reps):
                c0, w0 = time.thread_time(), time.monotonic()
                for b in range(0, clients, k):
                    store.apply([w for i in range(b, b + k)
                                 for w in _dora_writes(i % clients, 2.0 + rep)])
                cpu, wall = time.thread_time() - c0, time.monotonic() - w0
                if best is None or cpu < best[0]:
                    best = (cpu, wall)
            commits = -(-clients // k)
            out[k] = {"cpu_us_per_dora": round(1e6 * best[0] / clients, 1),
                      "wall_us_per_commit": round(1e6 * best[1] / commits)}
        store.close()
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("path", "store", "both", "unique", "zone"), default="both")
    ap.add_argument("--profile", help="unique: cProfile the timed part into this file")
    ap.add_argument("--gc", choices=("cpython", "paced"), default="cpython",
                    help="unique: CPython's own collection, or the daemon's GcPacer")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--sync", choices=("full", "normal", "both"), default="both")
    ap.add_argument("--workdir", default="/var/tmp", help="where the store's database goes")
    ap.add_argument("--events-per-host", type=int, default=0,
                    help="store: events per client in the store before measuring")
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64",
                    help="store: DORAs per commit to measure")
    a = ap.parse_args()
    if a.clients < 16:
        ap.error("--clients: at least 16")
    if a.part in ("path", "both"):
        print(f"CPU per returning DORA ({a.clients} clients, best of {a.reps}; us)")
        for name, us in path_costs(a.clients, a.reps).items():
            print(f"  {name:34} {us:7.1f}")
    if a.part == "unique":
        print(f"CPU per NEW-client DORA ({a.clients} new clients a rep, best of {a.reps}; us)")
        for name, us in unique_costs(a.clients, a.reps, a.profile, a.gc == "paced").items():
            print(f"  {name:42} {us:7.1f}")
    if a.part == "zone":
        print(f"Zone.apply per new client ({a.clients} clients, batches of 50, "
              f"best of {a.reps}): {zone_costs(a.clients, a.reps)} us")
    if a.part in ("store", "both"):
        for sync in (("full", "normal") if a.sync == "both" else (a.sync,)):
            print(f"SqliteStore.apply, sync = {sync}: DORAs per commit -> "
                  "CPU us per DORA (commit thread), wall us per commit")
            sizes = tuple(int(x) for x in a.sizes.split(","))
            for k, row in store_costs(sync, a.workdir, a.reps, sizes,
                                      a.events_per_host).items():
                print(f"  {k:3} {row['cpu_us_per_dora']:7.1f} {row['wall_us_per_commit']:8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
