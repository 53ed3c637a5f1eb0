#!/usr/bin/env python3
"""Boot storm (issue 15): N simulated hosts power on at once and boot through
netbootd's whole path, then through dnsmasq + nginx, in the same run.

The world (bench/storm/lab.py): a server namespace (10.77.0.1) and a client
namespace joined by one veth pair, optionally with netem loss on both ends
(--loss 2 = 2%).  The simulated hosts (bench/storm/client.py, one asyncio
process in the client namespace, pinned to CPU 0; the servers to CPU 1) do
what firmware and iPXE do: DHCP with the captured firmware's options, TFTP
of the boot file (ipxe.efi / undionly.kpxe), iPXE's DHCP, HTTP of the boot
script, then the kernel (--kernel-mb, 8) and initrd (--initrd-mb, 40).

Servers, one trial each per repetition (order rotating):
  netbootd        `netbootd serve --mode full`, its defaults; the generated
                  kernel/initrd as its discover kernel/initrd, hooks to a sink
  dnsmasq+nginx   dnsmasq (DHCP + TFTP, --no-ping, the same pool and boot
                  files, --tftp-max raised for N) + nginx (1 worker, sendfile
                  on) serving the same files and a static boot script

After netbootd's trial, bench/storm/check.py (in the client namespace)
checks leases, hosts, timelines, DNS names and hooks of every host.

Reported: per host and in total the times to lease, to boot file, to the
end of the initrd; failures; retries (DHCP, TFTP, HTTP); the max
DISCOVER->OFFER and REQUEST->ACK of any transmission; each server's CPU
seconds and peak RSS, the client's CPU.  Goals: 0 failures, wall time
<= 1.0x dnsmasq+nginx, RSS < 150 MB at 1,000 hosts, every DHCP answer
within 1 s.  Every run is bounded: --timeout per storm (300 s).

Usage (as root):  .venv/bin/python bench/storm/run.py [--hosts 1000] [--loss 2]
Results: a report on stdout, JSON in bench/results/storm-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import ast
import atexit
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))            # bench/, for common
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import lab as stormlab  # noqa: E402
from common import RESULTS, log  # noqa: E402

labnet = common.load_labnet()
MB = 1 << 20
GOAL_RSS_MB = 150


def pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))], 3)


def summarize(storm: dict) -> dict:
    hosts = storm["hosts"]
    ok = [h for h in hosts if h["done"] is not None]
    fails = [h for h in hosts if h["error"] or h["done"] is None]
    out = {"hosts": len(hosts), "booted": len(ok), "failures": len(fails),
           "wall_s": storm["wall_s"], "client_cpu_s": storm["cpu_s"],
           "errors": sorted({h["error"] for h in fails if h["error"]})[:10],
           "retries": {k: sum(h["retries"][k] for h in hosts) for k in ("dhcp", "tftp", "http")},
           "hosts_with_retries": sum(1 for h in hosts if any(h["retries"].values())),
           "max_discover_offer_s": round(max((h["discover_offer"] for h in hosts), default=0), 3),
           "max_request_ack_s": round(max((h["request_ack"] for h in hosts), default=0), 3),
           "send_drops": storm.get("send_drops"), "stray_replies": storm.get("stray_replies"),
           "naks": sum(h.get("naks", 0) for h in hosts),
           "client_loop_lag_max_s": storm.get("loop_lag_max_s"),
           "client_loop_lag_ticks_over_100ms": storm.get("loop_lag_over_100ms")}
    for key in ("leased", "bootfile", "script", "done"):
        xs = [h[key] - h["started"] for h in ok]
        out[f"t_{key}"] = {"p50": pct(xs, 50), "p95": pct(xs, 95), "max": pct(xs, 100)}
    out["last_done_s"] = round(max((h["done"] for h in ok), default=0), 3)
    nbytes = sum(sum(h["bytes"].values()) for h in ok)
    out["bytes"] = nbytes
    out["MBps"] = round(nbytes / MB / max(out["last_done_s"], 1e-9), 1)
    return out


class Trial:
    def __init__(self, a, world, name: str, out: Path):
        self.a, self.world, self.name, self.out = a, world, name, out

    def run(self) -> dict:
        a, w = self.a, self.world
        server_cpu = None if a.no_pin else "1"
        client_cpu = None if a.no_pin else "0"
        procs, sink, sink_file = [], None, None
        res = {"server": self.name}
        try:
            if self.name.startswith("netbootd"):
                if w.work.joinpath("state").exists():
                    shutil.rmtree(w.work / "state")
                src = a.netbootd_src if self.name == "netbootd-src" else None
                nb, sink, _, sink_file = stormlab.start_netbootd(w, server_cpu, src=src)
                procs = [nb]
                self._quiet(nb.pid)
            else:
                procs = stormlab.start_peer(w, server_cpu, a.hosts)
            pids = [p.pid for p in procs]
            cpu0 = sum(common.tree_cpu(p) for p in pids)
            busy0 = common._cpu_times()
            mib0 = w.udp_mib()
            storm_json = self.out / f"storm-{self.name}.json"
            storm = w.run_client(storm_json, a.hosts, a.timeout, client_cpu,
                                 ["--bios-every", str(a.bios_every), "--spread", str(a.spread),
                                  "--http-idle", str(a.http_idle)]
                                 + (["--sequential-macs"] if a.sequential_macs else []))
            cpu1 = sum(common.tree_cpu(p) for p in pids)
            busy1 = common._cpu_times()
            res["udp_drops"] = stormlab.mib_delta(mib0, w.udp_mib())
            res.update(summarize(storm))
            res["server_cpu_s"] = round(cpu1 - cpu0, 2)
            res["machine_busy_pct"] = round(100 * (1 - (busy1[1] - busy0[1]) /
                                                   max(1, busy1[0] - busy0[0])), 1)
            # peak RSS: the daemon; the peer: dnsmasq + nginx master + worker
            rss = 0
            for p in pids:
                rss += stormlab.World.rss_peak_kb(p)
                rss += sum(stormlab.World.rss_peak_kb(c) for c in stormlab.children(p))
            res["server_rss_peak_mb"] = round(rss / 1024, 1)
            res["alive_after"] = all(p.alive() for p in procs)
            if self.name.startswith("netbootd"):
                time.sleep(a.settle)          # hooks and the last group commit
                res["check"] = w.run_check(storm_json, sink_file)
            res["per_host"] = [{k: h[k] for k in ("mac", "family", "ip", "started", "leased",
                                                  "bootfile", "script", "done", "error",
                                                  "retries", "discover_offer", "request_ack")}
                               for h in storm["hosts"]]
        finally:
            for p in procs + ([sink] if sink else []):
                rc = p.stop()
                res.setdefault("exit", {})[p.name] = rc
                if p.name.startswith("netbootd"):
                    res["daemon_counters"] = stopped_counters(p.text())
                probs = [l for l in p.text().splitlines()
                         if any(k in l for k in ("Traceback", "ERROR", "CRITICAL", "Unhandled"))]
                if probs:
                    res.setdefault("log_problems", {})[p.name] = probs[:10]
        return res

    def _quiet(self, pid: int, longest: float = 60.0) -> None:
        """Until the daemon is idle (< 3% of a core for 2 s in a row)."""
        t0, calm, last = time.monotonic(), 0, common.tree_cpu(pid)
        while time.monotonic() - t0 < longest and calm < 2:
            time.sleep(1.0)
            now = common.tree_cpu(pid)
            calm = calm + 1 if 100 * (now - last) < 3 else 0
            last = now


def stopped_counters(text: str) -> dict:
    """The counters netbootd logs as each service stops ("tftp stopped: {...}"),
    the TFTP ones kept whole, the others only when not zero."""
    out = {}
    for svc, body in re.findall(r"(\w+) stopped: (\{.*\})", text):
        try:
            d = ast.literal_eval(body)
        except (ValueError, SyntaxError):
            continue
        out[svc] = d if svc == "tftp" else {k: v for k, v in d.items() if v}
    return out


def goals(doc: dict) -> list[dict]:
    by = {}
    for t in doc["trials"]:
        by.setdefault(t["server"], []).append(t)
    nb, peer = by.get("netbootd", []), by.get("dnsmasq+nginx", [])
    out = []
    if nb:
        out.append({"goal": "0 failures (netbootd)", "value": sum(t["failures"] for t in nb),
                    "met": all(t["failures"] == 0 for t in nb)})
        lat = max(max(t["max_discover_offer_s"], t["max_request_ack_s"]) for t in nb)
        out.append({"goal": "every DHCP answer within 1 s (max s)", "value": lat,
                    "met": lat <= 1.0})
        rss = max(t["server_rss_peak_mb"] for t in nb)
        out.append({"goal": f"peak RSS < {GOAL_RSS_MB} MB (at {doc['args']['hosts']} hosts)",
                    "value": rss, "met": rss < GOAL_RSS_MB})
        ck = [t.get("check", {}) for t in nb]
        whole = all(c.get("complete_timeline") == c.get("hosts_booted") == t["hosts"]
                    and c.get("with_lease") == t["hosts"] and c.get("dns_ok") == t["hosts"]
                    for c, t in zip(ck, nb))
        out.append({"goal": "every host: lease, complete timeline, DNS name, hook",
                    "value": [{k: c.get(k) for k in ("with_lease", "complete_timeline", "dns_ok",
                                                     "problem_counts")} for c in ck],
                    "met": whole and not any(c.get("problem_counts") for c in ck)})
    if nb and peer and all(t["booted"] for t in nb + peer):
        r = statistics.median(t["last_done_s"] for t in nb) / \
            max(1e-9, statistics.median(t["last_done_s"] for t in peer))
        whole = all(t["failures"] == 0 for t in nb + peer)
        # with failures on either side the times compare different work
        out.append({"goal": "wall time <= 1.0x dnsmasq+nginx", "value": round(r, 3),
                    "met": (r <= 1.0) if whole else None})
    return out


def report(doc: dict) -> None:
    print(f"\nboot storm: {doc['args']['hosts']} hosts, loss {doc['args']['loss']}%, "
          f"kernel {doc['files']['kernel'] // MB} MB + initrd {doc['files']['initrd'] // MB} MB")
    cols = ("server", "fail", "wall s", "lease p50/max", "bootfile p50/max", "done p50/max",
            "retries d/t/h", "DO/RA max s", "srv CPU s", "RSS MB", "cli CPU s", "busy%")
    print(" | ".join(cols))
    for t in doc["trials"]:
        f = lambda k: f"{t[k]['p50']}/{t[k]['max']}"   # noqa: E731
        r = t["retries"]
        print(" | ".join(str(x) for x in (
            t["server"], t["failures"], t["last_done_s"], f("t_leased"), f("t_bootfile"),
            f("t_done"), f"{r['dhcp']}/{r['tftp']}/{r['http']}",
            f"{t['max_discover_offer_s']}/{t['max_request_ack_s']}", t["server_cpu_s"],
            t["server_rss_peak_mb"], t["client_cpu_s"], t["machine_busy_pct"])))
        print(f"   client loop: worst lag {t['client_loop_lag_max_s']} s; NAKs {t['naks']}; "
              f"UDP/kernel drops {t.get('udp_drops')}")
        if t["errors"]:
            print(f"   errors: {t['errors'][:3]}")
        if t.get("check"):
            c = t["check"]
            print(f"   check: leases {c['with_lease']}, hosts {c['registered']}, complete "
                  f"timelines {c['complete_timeline']}, DNS {c['dns_ok']} / {c['hosts_booted']}; "
                  f"hooks {c.get('hook_events')}; failure events {c['failure_events']}; "
                  f"problems {c['problem_counts']}")
            for k, v in c["problems"].items():
                print(f"   ! {k}: {v[:2]}")
        tc = (t.get("daemon_counters") or {}).get("tftp")
        if tc:
            keys = ("transfer.started", "transfer.finished", "transfer.finished_unacked",
                    "transfer.failed", "transfer.aborted", "transfer.dropped", "drop.cap_total",
                    "drop.cap_client", "drop.unconfirmed_full", "drop.cap_at_confirm",
                    "transfer.evicted", "transfer.unanswered")
            print("   daemon tftp: " + ", ".join(f"{k} {tc[k]}" for k in keys if k in tc))
        for n, probs in (t.get("log_problems") or {}).items():
            print(f"   ! {n} log: {probs[0][:200]}")
    print()
    for g in doc["goals"]:
        verdict = {True: "MET", False: "NOT MET", None: "n/a (a server had failures)"}[g["met"]]
        print(f"goal {g['goal']}: {g['value']} -> {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=200)
    ap.add_argument("--loss", type=float, default=0.0,
                    help="%% of frames lost on each link end (tc netem, else nftables numgen)")
    ap.add_argument("--servers", default="netbootd,dnsmasq+nginx")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--netbootd-src", help="a directory with another netbootd package (e.g. "
                    "`git archive REV netbootd | tar -x -C DIR`): adds server netbootd-src")
    ap.add_argument("--kernel-mb", type=float, default=8)
    ap.add_argument("--initrd-mb", type=float, default=40)
    ap.add_argument("--bios-every", type=int, default=5, help="every Nth host BIOS (20%%)")
    ap.add_argument("--sequential-macs", action="store_true",
                    help="host MACs in sequence (default: scattered; see client.py)")
    ap.add_argument("--spread", type=float, default=0.0, help="power-on spread, s")
    ap.add_argument("--timeout", type=float, default=300.0, help="hard limit per storm, s")
    ap.add_argument("--http-idle", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=3.0, help="s before the checks")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench-storm: needs root (network namespaces)", file=sys.stderr)
        return 2
    reason = labnet.available()
    if reason:
        print(f"bench-storm: {reason}", file=sys.stderr)
        return 2
    names = [n for n in a.servers.split(",") if n]
    if a.netbootd_src and "netbootd-src" not in names:
        names.insert(1, "netbootd-src")
    if "dnsmasq+nginx" in names and not (os.access(stormlab.NGINX, os.X_OK)
                                         and os.access(stormlab.DNSMASQ, os.X_OK)):
        log("!! dnsmasq or nginx not installed: the peer is skipped")
        names.remove("dnsmasq+nginx")
    started = _dt.datetime.now()
    work = Path(tempfile.mkdtemp(prefix="storm-"))
    lab = labnet.Lab()
    atexit.register(lab.close)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(3))
    others, busy = common.check_machine()
    doc = {"bench": "storm", "started": started.isoformat(timespec="seconds"),
           "args": vars(a), "host": {"cpu": common.cpu_model(), "nproc": os.cpu_count(),
                                     "kernel": platform.release(), "busy_before_pct": round(busy, 1),
                                     "other_benchmarks": others},
           "trials": []}
    try:
        world = stormlab.World(lab, work, a.loss)
        doc["loss_method"] = world.loss_method
        doc["files"] = world.make_files(int(a.kernel_mb * MB), int(a.initrd_mb * MB))
        for rep in range(a.reps):
            k = rep % len(names)
            for name in names[k:] + names[:k]:
                log(f"== {name}: {a.hosts} hosts, loss {a.loss:g}% (rep {rep + 1}/{a.reps})")
                out = work / f"rep{rep}"
                out.mkdir(exist_ok=True)
                t = Trial(a, world, name, out).run()
                t["rep"] = rep
                doc["trials"].append(t)
                log(f"   {name}: {t['booted']}/{t['hosts']} booted, last at {t['last_done_s']} s, "
                    f"{t['failures']} failures, server CPU {t['server_cpu_s']} s, "
                    f"RSS {t['server_rss_peak_mb']} MB")
    finally:
        lab.close()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept: {work}")
    doc["goals"] = goals(doc)
    report(doc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = f"-{a.hosts}h" + (f"-loss{a.loss:g}" if a.loss else "")
    path = common.save_json(doc, a.out, "storm", started, False)
    final = path.with_name(path.stem + tag + ".json")
    path.rename(final)
    print(f"JSON: {final}")
    return 0 if all(g["met"] for g in doc["goals"] if "failures" in g["goal"]) else 1


if __name__ == "__main__":
    sys.exit(main())
