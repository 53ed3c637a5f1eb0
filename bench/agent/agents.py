#!/usr/bin/env python3
"""Simulated discover agents (iso_builder/agent/) against netbootd's agent API.

    agents.py setup  --server http://127.0.0.1:8080 --admin-token-file F
    agents.py enroll --server URL --token nbt1.. --n 1000 --concurrency 16 --secrets OUT
    agents.py poll   --server URL --secrets FILE --duration 60 [--interval 10]

Run by bench/agent/run.py inside the lab's server namespace (it reaches the
daemon on that namespace's loopback).  Every call is what the agent's `api`
(iso_builder/agent/lib.sh) sends: HTTP/1.0, `Connection: close`, one new TCP
connection per call, the agent secret as `Authorization: Agent <secret>`.
Simulated host i calls from its own loopback address, 127.0.<1 + i // 250>.
<1 + i % 250>, so the per-source limits see 1,000 sources, as on a real LAN.

* setup: creates the account "bench" (approval auto) and an enrollment token
  through the admin API; prints {"account": .., "token": ..}.
* enroll: registers hosts 0..n-1 with the token and their identifiers (two
  NIC MACs, SMBIOS UUID, serials), then posts each one's inventory (a
  qemu-shaped document: 2 disks, 2 NICs, DMI); `--concurrency` callers, each
  waiting for its reply before the next call (closed loop).  Secrets go to
  --secrets (0600).  Prints one JSON line: per phase the calls, statuses,
  seconds, rate, the daemon's CPU seconds (--server-pid, /proc) and ours.
* poll: every host polls GET /api/v1/agent/next; after each reply it sleeps
  as the agent does when told `wait` with backoff off: a pause drawn from
  [interval/2, interval] ("equal jitter"; --jitter), first polls spread over
  one mean pause.  Polls for --duration s after --warmup s (or until SIGTERM)
  and prints one JSON line: polls, statuses, latency, the daemon's CPU over
  the window (% of one core, ms per poll) and ours.

Only the standard library, asyncio with plain Protocols (no streams: the
client must stay cheap next to the daemon).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402

TIMEOUT = 30.0          # seconds per call (the agent: nc -w 10 under timeout 30)


def source(i: int) -> str:
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def mac(i: int, nic: int = 0) -> str:
    return f"02:ab:{nic:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}"


def identity(i: int) -> dict:
    return {"macs": [mac(i), mac(i, 1)], "uuid": f"6b1e0000-0000-4000-8000-{i:012x}",
            "serial": f"BENCH-SYS-{i:06d}", "board_serial": f"BENCH-BRD-{i:06d}"}


def inventory(i: int) -> dict:
    ids = identity(i)
    return {
        "schema": 1,
        "cpu": {"model": "QEMU Virtual CPU version 2.5+", "sockets": 1, "cores": 2, "threads": 2},
        "memory": {"bytes": 2 << 30},
        "disks": [{"name": f"vd{c}", "bytes": (8 + k) << 30, "model": "QEMU HARDDISK",
                   "serial": f"BENCH-D{k}-{i:06d}", "rotational": False,
                   "transport": "virtio", "readonly": False, "removable": False}
                  for k, c in enumerate("ab")],
        "nics": [{"name": f"eth{k}", "mac": mac(i, k), "driver": "virtio_net", "link": True,
                  "speed": 1000, "mtu": 1500} for k in range(2)],
        "dmi": {"system": {"vendor": "QEMU", "product": "Standard PC (Q35 + ICH9, 2009)",
                           "serial": ids["serial"], "uuid": ids["uuid"]},
                "board": {"vendor": "QEMU", "product": "bench", "serial": ids["board_serial"]},
                "bios": {"vendor": "SeaBIOS", "version": "1.16.3-debian", "date": "04/01/2014"}},
        "firmware": "bios", "secure_boot": None,
    }


# --------------------------------------------------------------------------
# one HTTP/1.0 call per connection
# --------------------------------------------------------------------------
class _Call(asyncio.Protocol):
    def __init__(self, request: bytes, done: asyncio.Future):
        self.request, self.done, self.chunks = request, done, []

    def connection_made(self, transport):
        transport.write(self.request)

    def data_received(self, data):
        self.chunks.append(data)

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(b"".join(self.chunks))


class Client:
    def __init__(self, server: str):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname, u.port or 80
        self.hostport = u.netloc
        self.prefix = u.path.rstrip("/")

    async def call(self, method: str, path: str, src: str | None, body=None,
                   auth: str | None = None) -> tuple[int, dict | None]:
        """(HTTP status, the JSON body or None); status 0: no answer."""
        loop = asyncio.get_running_loop()
        data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = [f"{method} {self.prefix}{path} HTTP/1.0", f"Host: {self.hostport}",
                "User-Agent: netbootd-agent/2 (bench)"]
        if auth:
            head.append(f"Authorization: {auth}")
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        head += ["Connection: close", "", ""]
        done = loop.create_future()
        transport = None
        try:
            transport, _ = await asyncio.wait_for(loop.create_connection(
                lambda: _Call("\r\n".join(head).encode() + data, done), self.host, self.port,
                local_addr=(src, 0) if src else None), TIMEOUT)
            raw = await asyncio.wait_for(done, TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            if transport is not None:
                transport.abort()
            return 0, None
        status_line, _, rest = raw.partition(b"\r\n")
        parts = status_line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            return 0, None
        try:
            doc = json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")
        except ValueError:
            doc = None
        return int(parts[1]), doc


# --------------------------------------------------------------------------
# CPU and latency bookkeeping
# --------------------------------------------------------------------------
class Meter:
    """The daemon's CPU (common.tree_cpu of --server-pid: all threads), ours
    (getrusage) and the wall clock, between start() and stop()."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def _now(self):
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return (time.monotonic(), common.tree_cpu(self.pid) if self.pid else 0.0,
                ru.ru_utime + ru.ru_stime)

    def start(self):
        self.t0 = self._now()

    def stop(self, ops: int) -> dict:
        t1 = self._now()
        wall, daemon, ours = (b - a for a, b in zip(self.t0, t1))
        wall = max(wall, 1e-6)
        out = {"seconds": round(wall, 3), "per_s": round(ops / wall, 1),
               "client_cpu_pct": round(100 * ours / wall, 1)}
        if self.pid:
            out.update(daemon_cpu_s=round(daemon, 3),
                       daemon_cpu_pct=round(100 * daemon / wall, 2),
                       daemon_ms_per_op=round(1000 * daemon / ops, 3) if ops else None)
        return out


def percentiles(lat: list[float]) -> dict:
    if not lat:
        return {}
    s = sorted(lat)
    pick = lambda q: round(1000 * s[min(len(s) - 1, int(q * len(s)))], 2)   # noqa: E731
    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(1000 * s[-1], 2)}


# --------------------------------------------------------------------------
# setup, enroll, poll
# --------------------------------------------------------------------------
async def setup(a) -> dict:
    c = Client(a.server)
    admin = "Bearer " + Path(a.admin_token_file).read_text().strip()
    st, acc = await c.call("POST", "/api/v1/accounts", None,
                           {"name": a.account, "approval": "auto"}, admin)
    if st not in (200, 201):
        raise SystemExit(f"agents setup: POST /api/v1/accounts: HTTP {st} {acc}")
    st, tok = await c.call("POST", "/api/v1/tokens", None,
                           {"account": a.account, "label": "bench/agent"}, admin)
    if st not in (200, 201) or not isinstance(tok, dict) or "token" not in tok:
        raise SystemExit(f"agents setup: POST /api/v1/tokens: HTTP {st} "
                         f"{ {k: v for k, v in (tok or {}).items() if k != 'token'} }")
    return {"account": a.account, "token": tok["token"], "token_id": tok.get("id")}


async def _closed_loop(n: int, conc: int, one) -> tuple[Counter, list[float]]:
    """`one(i)` for i in 0..n-1 by `conc` callers; (statuses, latencies)."""
    statuses: Counter = Counter()
    lat: list[float] = []
    todo = iter(range(n))

    async def worker():
        for i in todo:
            t = time.monotonic()
            st = await one(i)
            lat.append(time.monotonic() - t)
            statuses[st] += 1
    await asyncio.gather(*(worker() for _ in range(conc)))
    return statuses, lat


async def enroll(a) -> dict:
    c = Client(a.server)
    secrets: dict[int, str] = {}
    reasons: Counter = Counter()

    async def register(i):
        body = {"mac": mac(i), "token": a.token, "ids": identity(i)}
        st, doc = await c.call("POST", "/api/v1/agent/register", source(i), body)
        if st == 200 and isinstance(doc, dict) and "secret" in doc:
            secrets[i] = doc["secret"]
        elif isinstance(doc, dict):
            reasons[f"{st} {doc.get('error')}"] += 1
        return st

    async def post_inventory(i):
        if i not in secrets:
            return "skipped"
        st, doc = await c.call("POST", "/api/v1/agent/inventory", source(i), inventory(i),
                               "Agent " + secrets[i])
        if st != 200 and isinstance(doc, dict):
            reasons[f"{st} {doc.get('error')}"] += 1
        return st

    out = {"n": a.n, "concurrency": a.concurrency}
    meter = Meter(a.server_pid)
    for phase, fn in (("register", register), ("inventory", post_inventory)):
        meter.start()
        statuses, lat = await _closed_loop(a.n, a.concurrency, fn)
        ok = statuses.get(200, 0)
        out[phase] = dict(meter.stop(ok), ok=ok, statuses={str(k): v for k, v in statuses.items()},
                          **percentiles(lat))
        if a.settle:
            await asyncio.sleep(a.settle)      # the group commit of the last replies
    out["refusals"] = dict(reasons.most_common(5))
    fd = os.open(a.secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({str(i): s for i, s in sorted(secrets.items())}, f)
    return out


async def poll(a) -> dict:
    c = Client(a.server)
    secrets = {int(k): v for k, v in json.loads(Path(a.secrets).read_text()).items()}
    if a.agents:
        secrets = dict(list(secrets.items())[:a.agents])
    lo = a.interval * (1 - a.jitter)
    mean = (lo + a.interval) / 2
    counting = [False]
    statuses: Counter = Counter()
    actions: Counter = Counter()
    lat: list[float] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rng = random.Random(a.seed)

    async def agent(i, secret):
        await asyncio.sleep(rng.uniform(0, mean))
        while not stop.is_set():
            t = time.monotonic()
            st, doc = await c.call("GET", "/api/v1/agent/next", source(i), None, "Agent " + secret)
            if counting[0]:
                lat.append(time.monotonic() - t)
                statuses[st] += 1
                actions[doc.get("action") if isinstance(doc, dict) else None] += 1
            await asyncio.sleep(rng.uniform(lo, a.interval))

    tasks = [asyncio.create_task(agent(i, s)) for i, s in secrets.items()]
    meter = Meter(a.server_pid)
    try:
        await asyncio.wait_for(stop.wait(), a.warmup)
    except asyncio.TimeoutError:
        pass
    counting[0] = True
    meter.start()
    if a.ready_file:
        Path(a.ready_file).write_text("polling\n")
    try:
        await asyncio.wait_for(stop.wait(), a.duration)
    except asyncio.TimeoutError:
        pass
    polls = sum(statuses.values())
    out = dict(meter.stop(polls), agents=len(secrets), interval=a.interval, jitter=a.jitter,
               mean_pause_s=round(mean, 2), polls=polls,
               statuses={str(k): v for k, v in statuses.items()},
               actions={str(k): v for k, v in actions.items()}, **percentiles(lat))
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--admin-token-file", required=True)
    s.add_argument("--account", default="bench")
    e = sub.add_parser("enroll")
    e.add_argument("--token", required=True)
    e.add_argument("--n", type=int, default=1000)
    e.add_argument("--concurrency", type=int, default=16)
    e.add_argument("--secrets", required=True)
    e.add_argument("--settle", type=float, default=1.0)
    p = sub.add_parser("poll")
    p.add_argument("--secrets", required=True)
    p.add_argument("--agents", type=int, default=0, help="first N hosts of --secrets (0: all)")
    p.add_argument("--interval", type=float, default=10.0, help="the pause (the server's hint)")
    p.add_argument("--jitter", type=float, default=0.5,
                   help="pauses drawn from [interval x (1 - jitter), interval] (the agent: 0.5)")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ready-file", help="written when the counted window starts")
    for x in (s, e, p):
        x.add_argument("--server", default="http://127.0.0.1:8080")
        x.add_argument("--server-pid", type=int, help="the daemon, for its CPU (/proc)")
    a = ap.parse_args()
    out = asyncio.run({"setup": setup, "enroll": enroll, "poll": poll}[a.cmd](a))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
