#!/usr/bin/env python3
"""After a storm against netbootd: did the daemon's whole path keep up?
Run inside the client namespace (it talks to the daemon's API and DNS as
the hosts would), with the storm client's JSON:

  * leases: GET /api/v1/leases - every booted host holds an active lease on
    the address it used;
  * hosts and timelines: GET /api/v1/hosts/<mac> for every host - it exists
    and its timeline has dhcp.offer, dhcp.ack, tftp.finished (its boot file),
    http.script, and an http.file with status 200 for the kernel and for
    every initrd; failure kinds in the timeline are listed;
  * DNS: every host asks the daemon's DNS, from its own address, for the PTR
    of its address and then the A record of that name: it must be its own;
  * hooks: the webhook sink's file (bench/storm/sink.py) - how many events
    of each kind were posted (host.discovered once per host).

Output: JSON with the counts and the first problems of each kind.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import socket
import sys
import time

from dnslib import QTYPE, DNSRecord

REQUIRED = ("dhcp.offer", "dhcp.ack", "tftp.finished", "http.script")
# tftp.aborted is not one: EDK2 ends its size probe with an ERROR (events.py).
FAILURE_KINDS = ("tftp.failed", "tftp.refused", "dhcp.nak", "pool.exhausted",
                 "boot.unsupported", "store.write_dropped")


class Api:
    def __init__(self, server: str, port: int, src: str):
        self.args = (server, port)
        self.src = src
        self.c = None

    def get(self, path: str):
        for attempt in range(3):
            if self.c is None:
                self.c = http.client.HTTPConnection(*self.args, timeout=30,
                                                    source_address=(self.src, 0))
            try:
                self.c.request("GET", path)
                r = self.c.getresponse()
                body = r.read()
                if r.status == 200:
                    return json.loads(body)
                if r.status != 429 and r.status < 500:
                    return None
            except (OSError, http.client.HTTPException):
                pass
            self.c.close()
            self.c = None
            time.sleep(0.5 * (attempt + 1))
        return None


def dns_check(server: str, host: dict, port: int = 53) -> str | None:
    """None when PTR(ip) -> name and A(name) -> ip, else what went wrong."""
    ip = host["ip"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2.0)
    try:
        s.bind((ip, 0))
        rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
        names = _ask(s, server, port, rev, "PTR")
        if not names:
            return f"no PTR for {ip}"
        addrs = _ask(s, server, port, names[0], "A")
        if ip not in addrs:
            return f"A {names[0]} -> {addrs}, not {ip}"
        host["dns_name"] = names[0]
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        s.close()


def _ask(s, server, port, name, qtype) -> list[str]:
    # 6 tries: with --loss the check's own packets are dropped too, and what is
    # checked is the daemon's zone, not the link
    for _ in range(6):
        q = DNSRecord.question(name, qtype)
        s.sendto(q.pack(), (server, port))
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            continue
        r = DNSRecord.parse(data)
        if r.header.id != q.header.id:
            continue
        return [str(rr.rdata).rstrip(".") for rr in r.rr if rr.rtype == getattr(QTYPE, qtype)]
    raise OSError(f"no DNS answer for {qtype} {name}")


def check(storm: dict, server: str, http_port: int, src: str, sink: str | None,
          dns_port: int = 53) -> dict:
    api = Api(server, http_port, src)
    problems: dict[str, list] = collections.defaultdict(list)
    hosts = [h for h in storm["hosts"] if h.get("done") is not None]
    leases = api.get("/api/v1/leases") or []
    active = {r["mac"]: r for r in leases if r.get("state") == "active"}
    out = {"hosts_booted": len(hosts), "leases_active": len(active), "with_lease": 0,
           "registered": 0, "complete_timeline": 0, "dns_ok": 0, "timeline_kinds": {},
           "failure_events": {}}
    kinds_total: collections.Counter = collections.Counter()
    failures: collections.Counter = collections.Counter()
    for h in hosts:
        mac = h["mac"]
        lease = active.get(mac)
        if lease and lease.get("ip", lease.get("address")) == h["ip"]:
            out["with_lease"] += 1
        else:
            problems["lease"].append(f"{mac} {h['ip']}: {lease}")
        doc = api.get(f"/api/v1/hosts/{mac}?limit=200")
        if not doc:
            problems["host"].append(f"{mac}: no host")
            continue
        out["registered"] += 1
        tl = doc.get("timeline") or []
        kinds = collections.Counter(e.get("kind") for e in tl)
        kinds_total.update(kinds)
        failures.update({k: n for k, n in kinds.items() if k in FAILURE_KINDS})
        missing = [k for k in REQUIRED if not kinds.get(k)]
        files_ok = {(e.get("detail") or {}).get("path") for e in tl
                    if e.get("kind") == "http.file" and (e.get("detail") or {}).get("status") == 200}
        if len(files_ok) < 1 + (1 if h["bytes"].get("initrd") else 0):
            missing.append(f"http.file 200 (have {sorted(x for x in files_ok if x)})")
        if missing:
            problems["timeline"].append(f"{mac}: missing {', '.join(missing)}")
        else:
            out["complete_timeline"] += 1
    for h in hosts:
        err = dns_check(server, h, dns_port)
        if err:
            problems["dns"].append(f"{h['mac']}: {err}")
        else:
            out["dns_ok"] += 1
    out["timeline_kinds"] = dict(sorted(kinds_total.items()))
    out["failure_events"] = dict(failures)
    if sink:
        hooks: collections.Counter = collections.Counter()
        posts = 0
        try:
            with open(sink) as f:
                for line in f:
                    posts += 1
                    for ev in json.loads(line).get("events", []):
                        hooks[ev.get("kind")] += 1
        except OSError as e:
            problems["hooks"].append(str(e))
        out["hook_posts"] = posts
        out["hook_events"] = dict(hooks)
        discovered = hooks.get("host.discovered", 0)
        if discovered < len(hosts):
            problems["hooks"].append(f"host.discovered posted {discovered} times for "
                                     f"{len(hosts)} hosts")
    out["problems"] = {k: v[:10] for k, v in problems.items()}
    out["problem_counts"] = {k: len(v) for k, v in problems.items()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("storm_json")
    ap.add_argument("--server", required=True)
    ap.add_argument("--http-port", type=int, default=8080)
    ap.add_argument("--dns-port", type=int, default=53)
    ap.add_argument("--src", required=True, help="address the API calls come from")
    ap.add_argument("--sink", help="the webhook sink's file")
    a = ap.parse_args()
    with open(a.storm_json) as f:
        storm = json.load(f)
    print(json.dumps(check(storm, a.server, a.http_port, a.src, a.sink, a.dns_port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
