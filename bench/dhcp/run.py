#!/usr/bin/env python3
"""DHCP lease-rate benchmark: netbootd vs Kea vs dnsmasq, driven by perfdhcp.

For every server a fresh lab is built (labnet.Lab): a server namespace
(10.77.0.1/16) and a client namespace (10.77.0.2/16) joined by a veth pair.
perfdhcp runs in the client namespace and acts as a relay (giaddr 10.77.0.2,
source port 67; netbootd's config lists it as the network's relay), so every
DHCP packet stays inside namespaces this script created.  Nothing is ever started on the host's real interfaces.

Servers (same pool of 65,279 addresses, 1 h leases, state on disk):
  netbootd       full mode, its defaults (SQLite WAL, sync=full: fsync per group commit)
  kea            kea-dhcp4, memfile persist=true, multi-threading off
  dnsmasq        defaults (ping before offer, lease file rewritten on every change)
  dnsmasq-fast   --no-ping --leasefile-ro
(both dnsmasq runs get --dhcp-lease-max large enough for the pool)

Scenarios:
  unique     every DORA from a new client (perfdhcp -R 52000, -u address
             uniqueness check); the server is restarted with an empty state
             directory before every trial, so the pool never runs out.
  returning  1,000 clients that already hold leases (warm-up first), each
             repeating DORA (perfdhcp -R 1000); the server keeps its state.

For each (server, scenario) the highest offered rate (-r) at which fewer than
2.5% of the exchanges fail is searched (doubling ramp, then geometric
bisection, then the best rate must pass a second time: --confirm; when it
fails, the bisection goes on below it).  A trial's
failures are (DISCOVERs sent - ACKs received) / DISCOVERs sent; its lease rate
is ACKs / sending duration (perfdhcp's own "Rate" line reads low).  The
reported figure is the lease rate of the best rate that passed twice.

perfdhcp is pinned to CPU 0 and every server to CPU 1 (taskset), identically
for all servers; --no-pin disables that.  The machine is shared: the bench
holds an flock (--lock), waits (bounded) while other processes keep the CPUs
busy, measures the CPU they take during each trial and re-runs a failed trial
they perturbed (--redo); "bg cpu%" in the table shows what remained.

Optional diagnostic servers: netbootd-nolimit (defaults but rate limits off),
netbootd-normal (sync = "normal": Kea's durability, no fsync per commit).

Usage (as root):  .venv/bin/python bench/dhcp/run.py [--quick] [--servers ...]
Results: a table on stdout, JSON in bench/results/dhcp-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import ast
import csv
import fcntl
import datetime as _dt
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402
from common import BUSY_WARN, REPO, RESULTS, BenchError, log, tail  # noqa: E402

HERE = Path(__file__).resolve().parent
labnet = common.load_labnet()

SERVER_ADDR = "10.77.0.1"
CLIENT_ADDR = "10.77.0.2"
PREFIX = 16
POOL_FIRST, POOL_LAST = "10.77.1.0", "10.77.255.254"   # 65,279 addresses
LEASE_TIME = 3600
UNIQUE_CLIENTS = 52_000          # perfdhcp -R for the unique scenario (< pool)
UNIQUE_MAX_EXCHANGES = 50_000    # -n cap per unique trial: perfdhcp overshoots -n by a
                                 # few, and a client must never come back (-u)
RETURNING_CLIENTS = 1_000
DROP_LIMIT = 2.5                 # percent
# netbootd's goals, same-run leases/s over Kea's: issue 10 wants returning clients
# clearly ahead (a renewal should cost less than a new lease).
GOALS = {"unique": 1.0, "returning": 1.2}
PERFDHCP = shutil.which("perfdhcp") or "/usr/sbin/perfdhcp"
KEA = shutil.which("kea-dhcp4") or "/usr/sbin/kea-dhcp4"
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
NETBOOTD = str(REPO / ".venv" / "bin" / "netbootd")


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------
class Server:
    name = "?"
    label = "?"
    start_rate = 1000            # first rate the search tries
    stop_timeout = 15.0
    # Extra arguments for the warm-up of the returning-clients scenario
    # (None: warm up the server as it will be measured).
    warmup_extra: list[str] | None = None
    # Seconds a server may spend on its start-up work after it answers
    # (netbootd: the discover initrd build), on top of --start-timeout.
    start_work_timeout = 0.0

    def __init__(self, args):
        self.args = args
        self.proc = None
        self.logfile = None

    def version(self) -> str:
        return ""

    def command(self, ifname: str, state: Path) -> list[str]:
        raise NotImplementedError

    def env(self, state: Path) -> dict | None:
        return None

    def start(self, lab, ns: str, ifname: str, state: Path, cpu: str | None,
              extra: list[str] | None = None) -> None:
        state.mkdir(parents=True, exist_ok=True)
        self.logfile = state / f"{self.name}.log"
        out = open(self.logfile, "ab")
        cmd = self.command(ifname, state) + list(extra or [])
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        self.lab = lab
        self.proc = lab.popen(ns, cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env(state))
        out.close()
        deadline = time.monotonic() + self.args.start_timeout + self.start_work_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} during start:\n"
                                 f"{tail(self.logfile)}")
            if self.is_ready(lab, ns):
                time.sleep(0.2 + self.args.start_settle)
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {self.args.start_timeout}s:\n{tail(self.logfile)}")

    def is_ready(self, lab, ns: str) -> bool:
        r = lab.ns_exec(ns, "ss", "-Hlun", "sport = :67", check=False, timeout=10)
        return bool(r.stdout.strip())

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        rc = common.stop_in_lab(self.lab, self.proc, self.stop_timeout)
        self.proc = None
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def persisted(self, state: Path) -> int | None:
        """Distinct addresses leased in the on-disk state (after stop), or None."""
        return None

    def counters(self) -> dict | None:
        return None

    def log_problems(self) -> list[str]:
        if not self.logfile:
            return []
        pat = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|\bFATAL\b|Unhandled", re.I)
        try:
            return [l for l in self.logfile.read_text(errors="replace").splitlines() if pat.search(l)]
        except OSError:
            return []


class Netbootd(Server):
    name = "netbootd"
    label = "netbootd (full, defaults)"
    start_rate = 2000
    stop_timeout = 60.0

    def version(self) -> str:
        py = str(Path(NETBOOTD).with_name("python"))
        r = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('netbootd'))"],
                           capture_output=True, text=True)
        return f"netbootd {r.stdout.strip() or '?'}"

    def command(self, ifname, state):
        extra = ""
        if self.args.netbootd_config:
            extra = Path(self.args.netbootd_config).read_text()
        return [NETBOOTD, "serve", "--config", str(relay_config(state, extra)), "--mode", "full",
                "--interface", ifname, "--state-dir", str(state)]

    start_work_timeout = 120.0

    def is_ready(self, lab, ns):
        try:
            conf = (self.logfile.parent / "netbootd-bench.toml").read_text()
            return netbootd_settled(self.logfile.read_text(errors="replace"),
                                    builds_initrd="discover_initrd" not in conf
                                    and not getattr(self.args, "cold_start", False))
        except OSError:
            return False

    def persisted(self, state):
        db = state / "netbootd.sqlite3"
        if not db.exists():
            return None
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM leases WHERE state = 'active' "
                               "AND network = 'bench'").fetchone()[0]
        finally:
            con.close()


    def counters(self) -> dict | None:
        """Best effort: the counters netbootd logs when it stops (not part of
        the contract; None when the line is absent or unreadable)."""
        try:
            text = self.logfile.read_text(errors="replace")
        except (OSError, AttributeError):
            return None
        found = re.findall(r"(?:dhcp|netbootd) stopped: (\{.*\})", text)
        if not found:
            return None
        try:
            return ast.literal_eval(found[-1])
        except (ValueError, SyntaxError):
            return None


def netbootd_settled(log_text: str, builds_initrd: bool = True) -> bool:
    """netbootd is ready and done with its start-up work: its discover initrd
    is built (or reused, or failed: any `discover initrd:` line).  With a
    fresh state directory the build costs ~2 s of CPU (gzip of ~8 MB) in a
    thread on the server's own CPU, and ran inside the first trials: a
    restarted daemon reuses its image, so the steady state is after it."""
    return "netbootd ready" in log_text and (not builds_initrd or "discover initrd:" in log_text)


# --networks N --leases M (issue 14): N-1 more networks (each a /22 that no
# packet reaches) and M active leases spread over them, stored before the
# server starts, so the daemon serves N networks and holds M more leases.
NET_SHAPE = {"networks": 1, "leases": 0}


def relay_config(state: Path, extra: str = "") -> Path:
    """netbootd's config for the bench: `extra` (a user's TOML, without a
    [[networks]] entry) plus the interface's subnet with perfdhcp's address
    as a trusted relay (netbootd drops any giaddr not configured)."""
    state.mkdir(parents=True, exist_ok=True)
    conf = state / "netbootd-bench.toml"
    more = shape_toml(NET_SHAPE["networks"])
    conf.write_text(f'{extra}\n[[networks]]\nname = "bench"\nsubnet = "10.77.0.0/{PREFIX}"\n'
                    f'relays = ["{CLIENT_ADDR}"]\n{more}')
    # The leases go to the extra networks x0..xN of this config (from --networks,
    # or from a variant's TOML: --netbootd-src many=DIR:TOML, the same-run A/B).
    extras = len(re.findall(r'^name = "x\d+"$', conf.read_text(), re.M))
    if NET_SHAPE["leases"] and extras and not (state / "netbootd.sqlite3").exists():
        seed_leases(state, extras, NET_SHAPE["leases"])
    return conf


def shape_toml(networks: int) -> str:
    """The extra networks of --networks as TOML (for a --netbootd-src variant)."""
    return "".join(f'[[networks]]\nname = "x{i}"\nsubnet = "{_shape_subnet(i)}"\n'
                   for i in range(networks - 1))


def _shape_subnet(i: int) -> str:
    return f"10.{128 + i // 64}.{(i % 64) * 4}.0/22"


def seed_leases(state: Path, networks: int, count: int) -> None:
    """`count` active leases (1 day) spread over the extra networks, written
    through netbootd's own store before it starts."""
    import ipaddress
    from netbootd.model import Lease, LeaseState
    from netbootd.store.sqlite import Store
    from netbootd.writes import LeaseWrite
    if networks < 1:
        raise BenchError("--leases needs --networks >= 2 (the leases go to the extra networks)")
    now = time.time()
    store = Store(str(state))
    try:
        batch = []
        for k in range(count):
            i, j = k % networks, k // networks
            net = ipaddress.IPv4Network(_shape_subnet(i))
            if j + 1 >= net.num_addresses - 1:
                raise BenchError(f"--leases {count}: more than {networks} /22 networks hold")
            mac = bytes([2, 0x5e, k >> 24 & 255, k >> 16 & 255, k >> 8 & 255, k & 255])
            batch.append(LeaseWrite(Lease(int(net.network_address) + 1 + j, f"x{i}",
                                          b"\x01\x01" + mac, mac.hex(":"), LeaseState.ACTIVE,
                                          now, now + 86400)))
            if len(batch) == 5000:
                store.apply(batch)
                batch = []
        store.apply(batch)
    finally:
        store.close()


class NetbootdNoLimit(Netbootd):
    """Diagnostic variant (not in the default set): the defaults, but with the
    per-MAC and new-client rate limits raised out of the way."""
    name = "netbootd-nolimit"
    label = "netbootd (rate limits off)"

    def command(self, ifname, state):
        conf = relay_config(state, "[dhcp.rate_limit]\nper_mac_pps = 1000000\n"
                                   "new_clients_per_interface_pps = 1000000\n")
        return [NETBOOTD, "serve", "--config", str(conf), "--mode", "full", "--interface", ifname,
                "--state-dir", str(state)]


class NetbootdNormal(Netbootd):
    """Diagnostic variant (not in the default set): [dhcp] sync = "normal",
    the durability Kea's memfile gives (a commit survives kill -9, not a power
    cut: no fsync per group commit), so both servers pay for the same thing."""
    name = "netbootd-normal"
    label = "netbootd (sync normal)"

    def command(self, ifname, state):
        conf = relay_config(state, '[dhcp]\nsync = "normal"\n')
        return [NETBOOTD, "serve", "--config", str(conf), "--mode", "full", "--interface", ifname,
                "--state-dir", str(state)]


class NetbootdFrom(Netbootd):
    """netbootd imported from another source tree (first on PYTHONPATH), e.g.
    the previous commit from `git archive HEAD netbootd | tar -x -C DIR`:
    old and new code in the same run (--netbootd-src LABEL=DIR)."""

    def __init__(self, args, label: str, src: str, conf: str | None = None):
        super().__init__(args)
        self.name = f"netbootd-{label}"
        self.label = f"netbootd ({label})"
        self.src = src
        self.conf = conf            # TOML of this variant (else --netbootd-config)

    def env(self, state):
        return dict(os.environ, PYTHONPATH=self.src)

    def command(self, ifname, state):
        if self.conf is None:
            return super().command(ifname, state)
        return [NETBOOTD, "serve", "--config", str(relay_config(state, Path(self.conf).read_text())),
                "--mode", "full", "--interface", ifname, "--state-dir", str(state)]


def netbootd_sources(specs: list[str], args) -> list[NetbootdFrom]:
    """--netbootd-src LABEL=DIR[:TOML] values as servers (TOML: that variant's
    config, e.g. another commit_window_ms); ValueError names a bad one."""
    out = []
    for spec in specs:
        label, _, src = spec.partition("=")
        src, _, conf = src.partition(":")
        if not label or not src or not (Path(src) / "netbootd").is_dir():
            raise ValueError(f"--netbootd-src {spec}: want LABEL=DIR[:TOML] with DIR/netbootd")
        if conf and not Path(conf).is_file():
            raise ValueError(f"--netbootd-src {spec}: no config file {conf}")
        out.append(NetbootdFrom(args, label, str(Path(src).resolve()), conf or None))
    return out


class Kea(Server):
    name = "kea"
    label = "Kea (memfile persist, 1 thread)"
    start_rate = 4000

    def version(self) -> str:
        return "kea-dhcp4 " + subprocess.run([KEA, "-v"], capture_output=True, text=True).stdout.strip()

    def env(self, state):
        return dict(os.environ, KEA_LOCKFILE_DIR=str(state), KEA_PIDFILE_DIR=str(state))

    def command(self, ifname, state):
        conf = {"Dhcp4": {
            "interfaces-config": {"interfaces": [ifname]},
            "multi-threading": {"enable-multi-threading": False},
            "lease-database": {"type": "memfile", "persist": True,
                               "name": str(state / "kea-leases4.csv")},
            "valid-lifetime": LEASE_TIME,
            "subnet4": [{"id": 1, "subnet": f"10.77.0.0/{PREFIX}",
                         "pools": [{"pool": f"{POOL_FIRST} - {POOL_LAST}"}],
                         "option-data": [{"name": "routers", "data": SERVER_ADDR}]}],
            "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}],
                         "severity": self.args.kea_log_severity}],
        }}
        path = state / "kea-dhcp4.json"
        path.write_text(json.dumps(conf, indent=1))
        return [KEA, "-c", str(path)]

    def persisted(self, state):
        path = state / "kea-leases4.csv"
        if not path.exists():
            return None
        last = {}
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                last[row["address"]] = row
        return sum(1 for r in last.values() if r.get("valid_lifetime") not in ("0", None)
                   and r.get("state", "0") == "0")


class Dnsmasq(Server):
    name = "dnsmasq"
    label = "dnsmasq (defaults)"
    start_rate = 100
    # With pings on, every new address blocks dnsmasq for 3 s (PING_WAIT), so
    # 1,000 clients could not be warmed up in any reasonable time: the warm-up
    # runs with --no-ping on the same lease file, then dnsmasq is restarted
    # with its defaults.  Returning clients are never pinged.
    warmup_extra = ["--no-ping"]
    extra: list[str] = []

    def version(self) -> str:
        return subprocess.run([DNSMASQ, "-v"], capture_output=True, text=True).stdout.splitlines()[0]

    def command(self, ifname, state):
        return [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                f"--interface={ifname}", "--log-facility=-",
                f"--dhcp-range={POOL_FIRST},{POOL_LAST},255.255.0.0,{LEASE_TIME}",
                f"--dhcp-option=option:router,{SERVER_ADDR}",
                "--dhcp-lease-max=100000",
                f"--dhcp-leasefile={state / 'dnsmasq.leases'}",
                f"--pid-file={state / 'dnsmasq.pid'}", *self.extra]

    def start(self, lab, ns, ifname, state, cpu, extra=None):
        state.mkdir(parents=True, exist_ok=True)
        os.chmod(state, 0o777)    # dnsmasq drops to 'nobody' and rewrites its lease file
        super().start(lab, ns, ifname, state, cpu, extra)

    def persisted(self, state):
        if "--leasefile-ro" in self.extra:
            return None
        path = state / "dnsmasq.leases"
        if not path.exists():
            return None
        return len({l.split()[2] for l in path.read_text().splitlines() if len(l.split()) >= 3})

    def log_problems(self):
        return [l for l in super().log_problems() if "DHCPNAK" not in l]


class DnsmasqFast(Dnsmasq):
    name = "dnsmasq-fast"
    label = "dnsmasq (--no-ping --leasefile-ro)"
    start_rate = 2000
    extra = ["--no-ping", "--leasefile-ro"]
    warmup_extra = None


SERVERS = {c.name: c for c in (Netbootd, NetbootdNoLimit, NetbootdNormal, Kea, Dnsmasq,
                                DnsmasqFast)}


# --------------------------------------------------------------------------
# perfdhcp
# --------------------------------------------------------------------------
_FIELDS = {
    "sent": r"sent packets:\s*(\d+)",
    "received": r"received packets:\s*(\d+)",
    "drops": r"drops:\s*(\d+)",
    "orphans": r"orphans:\s*(\d+)",
    "rejected": r"rejected leases:\s*(\d+)",
    "non_unique": r"non unique addresses:\s*(\d+)",
    "avg_delay_ms": r"avg delay:\s*([\d.]+)\s*ms",
    "max_delay_ms": r"max delay:\s*([\d.]+)\s*ms",
}


def udp_counters(lab, ns: str) -> dict:
    """The namespace's UDP MIB (/proc/net/snmp is per network namespace)."""
    r = lab.ns_exec(ns, "cat", "/proc/net/snmp", check=False, timeout=10)
    rows = [l.split()[1:] for l in r.stdout.splitlines() if l.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    return {k: int(v) for k, v in zip(rows[0], rows[1])}


def udp_delta(before: dict, after: dict) -> dict:
    keys = ("InDatagrams", "OutDatagrams", "RcvbufErrors", "InErrors", "SndbufErrors", "NoPorts")
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if k in after}


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_busy_jiffies() -> tuple[int, int]:
    """(task time: user+nice+system, steal) over all CPUs, in jiffies.  irq and
    softirq time are left out: the bench's own packets cause most of it."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2], (v[7] if len(v) > 7 else 0)


def _pid_jiffies(pid: int | None) -> int:
    """utime + stime of a whole process (all threads), 0 if it is gone."""
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _pid_jiffies_all(pid: int) -> int:
    """utime + stime + cutime + cstime (the process and its reaped children)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15])
    except (OSError, IndexError, ValueError):
        return 0


def our_cpu_seconds(lab) -> float:
    """CPU seconds used so far by everything this bench runs: every process in
    the lab's namespaces (servers, including their threads and helpers) plus
    this script and the children it reaped (perfdhcp, ip, ss ...)."""
    jiffies = 0
    for ns in (lab.namespaces if lab is not None else []):
        r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in r.stdout.split():
            if pid.isdigit():
                jiffies += _pid_jiffies_all(int(pid))
    t = os.times()
    return jiffies / CLK_TCK + t.user + t.system + t.children_user + t.children_system


def foreign_sample(lab) -> tuple[float, int, float, int]:
    """(time, busy jiffies, our CPU seconds, steal jiffies); lab may be None."""
    j, st = _stat_busy_jiffies()
    return time.monotonic(), j, our_cpu_seconds(lab), st


def foreign_pct(a, b) -> tuple[float, float]:
    """(% of all CPUs used by processes that are not ours, steal %) between two samples."""
    t0, j0, o0, s0 = a
    t1, j1, o1, s1 = b
    span = max(1e-3, t1 - t0) * (os.cpu_count() or 1)
    return (100.0 * max(0.0, (j1 - j0) / CLK_TCK - (o1 - o0)) / span,
            100.0 * (s1 - s0) / CLK_TCK / span)


_CALIBRATE = ("import time\nt=time.perf_counter()\nx=0\nfor i in range(3_000_000): x+=i*i\n"
              "print(time.perf_counter()-t)")


def cpu_speed(cpu: str | None) -> float | None:
    """Seconds a fixed Python loop takes on the server's CPU (smaller = faster).
    The machine is a VM: its per-core speed drifts with the host's load, and
    this shows it next to each server's numbers."""
    cmd = [sys.executable, "-c", _CALIBRATE]
    if cpu is not None:
        cmd = ["taskset", "-c", cpu, *cmd]
    best = None
    for _ in range(3):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        try:
            v = float(r.stdout.strip())
        except ValueError:
            return None
        best = v if best is None else min(best, v)
    return round(best, 4)


def parse_perfdhcp(out: str) -> dict:
    res = {}
    for key, tag in (("do", "DISCOVER-OFFER"), ("ra", "REQUEST-ACK")):
        m = re.search(r"\*\*\*Statistics for: " + tag + r"\*\*\*(.*?)(?=\*\*\*Statistics for:|\Z)", out, re.S)
        sec = m.group(1) if m else ""
        d = {}
        for f, pat in _FIELDS.items():
            mm = re.search(pat, sec)
            d[f] = (float(mm.group(1)) if "." in mm.group(1) else int(mm.group(1))) if mm else 0
        res[key] = d
    m = re.search(r"Rate:\s*([\d.]+)", out)
    res["perfdhcp_rate"] = float(m.group(1)) if m else None
    return res


class Bench:
    def __init__(self, args):
        self.args = args
        ncpu = len(os.sched_getaffinity(0))
        self.pin = (not args.no_pin) and ncpu >= 2
        self.client_cpu = "0" if self.pin else None
        self.server_cpu = "1" if self.pin else None
        self.wait_s = args.exit_wait
        self.idle = common.IdleWait(args.wait_idle, first=0.3, say_used_up=True)
        self.redo_budget = args.redo                # perturbed failed trials re-run, whole run

    @staticmethod
    def _foreign_now(lab, seconds: float) -> float:
        a = foreign_sample(lab)
        time.sleep(seconds)
        return foreign_pct(a, foreign_sample(lab))[0]

    def wait_idle(self, lab) -> float:
        """CPU use (%) by processes that are not ours, just before a trial
        (our server's own start-up work does not count).  If other processes
        keep the machine busy, wait up to --wait-idle s for them to stop; all
        waits together never exceed 4 x --wait-idle (the run stays bounded)."""
        return self.idle(lambda seconds: self._foreign_now(lab, seconds))

    # one perfdhcp run ----------------------------------------------------
    def perfdhcp(self, lab, ns: str, rate: int, clients: int, period: float, count: int,
                 unique: bool, server_pid: int | None = None, mac_base: str | None = None) -> dict:
        cmd = [PERFDHCP, "-4", "-g", self.args.perfdhcp_threads, "-l", CLIENT_ADDR, "-r", str(rate),
               "-R", str(clients), "-n", str(count), "-p", f"{period:g}",
               "-W", str(int(self.wait_s * 1e6)), "-d", str(self.args.drop_time)]
        if unique:
            cmd.append("-u")
        if mac_base:
            cmd += ["-b", f"mac={mac_base}"]
        cmd.append(SERVER_ADDR)
        if self.client_cpu is not None:
            cmd = ["taskset", "-c", self.client_cpu, *cmd]
        busy = self.wait_idle(lab)
        snmp0 = {n: udp_counters(lab, n) for n in lab.namespaces}
        s0 = _pid_jiffies(server_pid)
        f0 = foreign_sample(lab)
        t0 = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p = lab.popen(ns, cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            out, _ = p.communicate(timeout=period + self.wait_s + 30)
        except subprocess.TimeoutExpired:
            lab.stop(p, signal.SIGINT, timeout=5)
            out = p.stdout.read() if p.stdout else ""
            raise BenchError(f"perfdhcp did not finish in time:\n{out[-2000:]}")
        finally:
            if p in lab.procs:
                lab.procs.remove(p)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)     # perfdhcp, reaped by now
        # CPU time used during the trial by processes that are not ours.
        foreign, steal = foreign_pct(f0, foreign_sample(lab))
        udp = {("client" if n == ns else "server"): udp_delta(snmp0[n], udp_counters(lab, n))
               for n in lab.namespaces}
        if p.returncode not in (0, 3):
            raise BenchError(f"perfdhcp exit {p.returncode}: {' '.join(cmd)}\n{out[-2000:]}")
        res = parse_perfdhcp(out)
        # Sending duration: perfdhcp stops sending after -p or -n, then waits -W.
        duration = max(wall - self.wait_s, 1e-3)
        sent = res["do"]["sent"]
        acks = res["ra"]["received"]
        fail = 100.0 * (sent - acks) / sent if sent else 100.0
        return {
            "rate": rate, "clients": clients, "period": period, "count": count,
            "duration": round(duration, 3), "discovers": sent, "offers": res["do"]["received"],
            "requests": res["ra"]["sent"], "acks": acks,
            "drop_pct": round(fail, 3), "leases_per_s": round(acks / duration, 1),
            "send_rate": round(sent / duration, 1),
            "perfdhcp_rate": res["perfdhcp_rate"],
            "orphans": res["do"]["orphans"] + res["ra"]["orphans"],
            "rejected": res["do"]["rejected"] + res["ra"]["rejected"],
            "non_unique": res["do"]["non_unique"] + res["ra"]["non_unique"],
            "avg_delay_ms": [res["do"]["avg_delay_ms"], res["ra"]["avg_delay_ms"]],
            "max_delay_ms": [res["do"]["max_delay_ms"], res["ra"]["max_delay_ms"]],
            "udp": udp,
            "cpu_busy_before_pct": round(busy, 1),
            "foreign_cpu_pct": round(foreign, 1),
            "steal_pct": round(steal, 1),
            "server_cpu_s": round((_pid_jiffies(server_pid) - s0) / CLK_TCK, 2) if server_pid else None,
            "client_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2),
        }

    def passed(self, t: dict) -> bool:
        return t["discovers"] > 0 and t["drop_pct"] < self.args.drop_limit and t["non_unique"] == 0

    # rate search ------------------------------------------------------------
    def _trial(self, trial, rate: int, trials: list, phase: str) -> dict:
        t = trial(rate)
        t["pass"] = self.passed(t)
        t["phase"] = phase
        if (not t["pass"] and not t.get("fatal") and self.redo_budget > 0
                and max(t["foreign_cpu_pct"], t["steal_pct"]) > BUSY_WARN):
            # Failed while other processes used the CPUs: run it once more.
            self.redo_budget -= 1
            t["phase"] = phase + "-perturbed"
            trials.append(t)
            log(f"    r={rate:>6}/s  drop={t['drop_pct']:6.2f}%  fail, but other processes used "
                f"{t['foreign_cpu_pct']:.0f}% CPU (steal {t['steal_pct']:.0f}%) meanwhile: once more")
            t = trial(rate)
            t["pass"] = self.passed(t)
            t["phase"] = phase
        trials.append(t)
        log(f"    {'confirm ' if phase == 'confirm' else ''}r={rate:>6}/s  sent={t['discovers']:>6} "
            f"acks={t['acks']:>6} drop={t['drop_pct']:6.2f}%  leases/s={t['leases_per_s']:>8.0f}  "
            f"{'PASS' if t['pass'] else 'fail'}"
            + (f"  non-unique={t['non_unique']}" if t['non_unique'] else "")
            + "".join(f"  {side}-rcvbuf-drops={t['udp'][side]['RcvbufErrors']}"
                      for side in ("server", "client")
                      if t.get("udp", {}).get(side, {}).get("RcvbufErrors"))
            + (f"  [other processes: {t['foreign_cpu_pct']:.0f}% CPU during trial]"
               if t.get("foreign_cpu_pct", 0) > BUSY_WARN else "")
            + (f"  [steal {t['steal_pct']:.0f}%]" if t.get("steal_pct", 0) > BUSY_WARN else ""))
        return t

    def search(self, start: int, trial) -> tuple[dict | None, list[dict]]:
        """Find the highest rate that passes; `trial(rate)` runs one trial.

        Doubling (or halving) ramp until the pass/fail boundary is bracketed,
        geometric bisection until fail/pass <= 1 + tolerance, then (unless
        --confirm 0) the best passing rate is run again: the reported trial
        is the highest rate that passed twice (the lower of its two results).
        """
        a = self.args
        trials: list[dict] = []
        lo = hi = None                     # best passing trial, lowest failing rate
        rate = start
        fatal = False
        while len(trials) < a.max_trials:
            t = self._trial(trial, rate, trials, "search")
            if t.get("fatal"):
                fatal = True
                break
            if t["pass"]:
                if lo is None or rate > lo["rate"]:
                    lo = t
                # perfdhcp could not send at the requested rate: we measure the client.
                if t["send_rate"] < 0.85 * rate:
                    t["client_limited"] = True
                    log("    perfdhcp could not reach the requested rate; stopping the ramp")
                    break
            else:
                hi = rate if hi is None else min(hi, rate)
            if hi is None:
                if rate >= a.max_rate:
                    break
                rate = min(rate * a.ramp, a.max_rate)
            elif lo is None:
                if rate <= a.min_rate:
                    break
                rate = max(a.min_rate, rate // a.ramp)
            else:
                if hi / lo["rate"] <= 1 + a.tolerance:
                    break
                rate = int(round(math.sqrt(hi * lo["rate"])))
                if rate in (hi, lo["rate"]):
                    break
            rate = int(rate)
        if lo is None or fatal or a.confirm <= 0 or lo.get("client_limited"):
            return lo, trials
        best = self._confirm(trial, trials, hi)
        if best is not None:
            return best, trials
        # Nothing passed twice: report the best passing trial below every
        # failed confirmation (unconfirmed), else the lowest passing one.
        failed = [t["rate"] for t in trials if t["phase"] == "confirm" and not t["pass"]]
        floor = min(failed) if failed else lo["rate"]
        below = [t for t in trials if t["pass"] and t["rate"] < floor]
        if below:
            return max(below, key=lambda t: t["rate"]), trials
        return min((t for t in trials if t["pass"]), key=lambda t: t["rate"]), trials

    def _confirm(self, trial, trials: list, hi: int | None) -> dict | None:
        """The highest rate that passes twice.  The best passing rate runs
        again; when that fails, the search goes on below it, bisecting
        between the next passing rate and the failed one down to
        --tolerance as the search did (earlier versions stopped after one
        step, or fell back to the next rate tried, which may be half of it),
        and the best rate found runs again.  At most 2 x --confirm + 4 more
        trials.  Returns the lower of the two passing results, or None."""
        a = self.args
        budget = 2 * a.confirm + 4
        cand = max(t["rate"] for t in trials if t["pass"])
        while budget > 0:
            c = self._trial(trial, cand, trials, "confirm")
            budget -= 1
            if c.get("fatal"):
                return None
            if c["pass"]:
                first = max((t for t in trials if t["rate"] == cand and t["pass"] and t is not c),
                            key=lambda t: t["leases_per_s"])
                best = min(first, c, key=lambda t: t["leases_per_s"])
                best["confirmed"] = True
                return best
            hi = cand if hi is None else min(hi, cand)
            lower = max((t["rate"] for t in trials if t["pass"] and t["rate"] < cand),
                        default=None)
            if lower is None:
                return None
            while hi / lower > 1 + a.tolerance and budget > 1:
                mid = int(round(math.sqrt(lower * hi)))
                if mid in (lower, hi):
                    break
                t = self._trial(trial, mid, trials, "search")
                budget -= 1
                if t.get("fatal"):
                    return None
                if t["pass"]:
                    lower = mid
                else:
                    hi = mid
            cand = lower
        return None

    # one server -------------------------------------------------------------
    def run_server(self, cls) -> dict:
        a = self.args
        srv = cls(a)
        result = {"server": srv.name, "label": srv.label, "version": "", "scenarios": {}}
        try:
            result["version"] = srv.version()
        except Exception as e:        # noqa: BLE001
            result["version"] = f"? ({e})"
        result["cpu_loop_s"] = cpu_speed(self.server_cpu)
        root = Path(tempfile.mkdtemp(prefix=f"bench-dhcp-{srv.name}-", dir=a.workdir))
        log(f"== {srv.label}  [{result['version']}]  state under {root}  "
            f"(CPU check: {result['cpu_loop_s']} s)")
        try:
            with labnet.Lab() as lab:
                log(f"  lab {lab.prefix}: namespaces {lab.prefix}-srv, {lab.prefix}-cli")
                sns = lab.namespace("srv")
                cns = lab.namespace("cli")
                sif, _cif = lab.link(sns, f"{SERVER_ADDR}/{PREFIX}", cns, f"{CLIENT_ADDR}/{PREFIX}")
                for scen, fn in (("unique", self.scenario_unique),
                                 ("returning", self.scenario_returning)):
                    if scen not in a.scenarios:
                        continue
                    try:
                        result["scenarios"][scen] = fn(lab, sns, cns, sif, srv, root)
                    except BenchError as e:
                        # Keep what was measured so far; the lab still comes down.
                        log(f"!! {srv.name}/{scen}: {e}")
                        result["error"] = f"{scen}: {e}"
                        if srv.proc is not None:
                            srv.stop()
        finally:
            srv.proc = None
            if not a.keep_state:
                shutil.rmtree(root, ignore_errors=True)
        return result

    def _record_server_state(self, srv, rc, state: Path, expected: int | None, info: dict) -> None:
        try:
            n = srv.persisted(state)
        except Exception as e:        # noqa: BLE001
            n = f"error: {e}"
        info["persisted_leases"] = n
        ctr = srv.counters()
        if ctr is not None:
            info["server_counters"] = ctr
            drops = {k: v for k, v in ctr.items() if k.startswith("drop.")}
            if drops:
                log(f"    {srv.name} counters: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
        if rc not in (0, None):
            info.setdefault("problems", []).append(f"{srv.name} exit code {rc} on SIGTERM")
        if expected is not None and isinstance(n, int) and n < expected:
            info.setdefault("problems", []).append(
                f"{n} leases on disk after clean stop, but {expected} ACKs were received")
        probs = srv.log_problems()
        if probs:
            info.setdefault("problems", []).append(
                f"{len(probs)} error lines in {srv.name} log, first: {probs[0][:300]}")

    def scenario_unique(self, lab, sns, cns, sif, srv, root) -> dict:
        a = self.args
        log(f"  {srv.name}: unique clients (-R {UNIQUE_CLIENTS}, fresh state per trial)")
        k = [0]

        def trial(rate):
            k[0] += 1
            state = root / f"unique-{k[0]}"
            srv.start(lab, sns, sif, state, self.server_cpu)
            try:
                count = min(int(rate * a.period), UNIQUE_MAX_EXCHANGES)
                t = self.perfdhcp(lab, cns, rate, UNIQUE_CLIENTS, a.period, count, unique=True,
                                  server_pid=srv.proc.pid)
                if not srv.alive():
                    t["fatal"] = f"{srv.name} died during the trial"
                    t["problems"] = [t["fatal"] + ":\n" + tail(srv.logfile)]
            finally:
                rc = srv.stop()
            self._record_server_state(srv, rc, state, t["acks"], t)
            if t.get("problems"):
                for p in t["problems"]:
                    log(f"    ! {p}")
            if not a.keep_state:
                shutil.rmtree(state, ignore_errors=True)
            return t

        best, trials = self.search(srv.start_rate, trial)
        return self._summary(best, trials)

    def scenario_returning(self, lab, sns, cns, sif, srv, root) -> dict:
        a = self.args
        n = a.returning_clients
        log(f"  {srv.name}: {n} returning clients (warm-up, then -R {n} on a running server)")
        state = root / "returning"
        srv.start(lab, sns, sif, state, self.server_cpu, srv.warmup_extra)
        warm = []
        info: dict = {}
        try:
            # Warm-up: every client gets a lease (perfdhcp walks the MACs in order).
            for warm_rate in (500, 200, 100, 50):
                w = self.perfdhcp(lab, cns, warm_rate, n, n / warm_rate + 2, n, unique=False,
                                  server_pid=srv.proc.pid)
                warm.append(w)
                log(f"    warm-up r={warm_rate}/s: {w['acks']}/{n} ACKs")
                if w["acks"] >= n:
                    break
            if warm[-1]["acks"] < n:
                info.setdefault("problems", []).append(
                    f"warm-up: only {warm[-1]['acks']} of {n} clients got an ACK")
            if srv.warmup_extra is not None:
                srv.stop()
                log(f"    restarting {srv.name} without {' '.join(srv.warmup_extra)} after the warm-up")
                srv.start(lab, sns, sif, state, self.server_cpu)

            def trial(rate):
                t = self.perfdhcp(lab, cns, rate, n, a.period, int(rate * a.period), unique=False,
                                  server_pid=srv.proc.pid)
                if not srv.alive():
                    t["fatal"] = f"{srv.name} died during the trial"
                    log(f"    ! {t['fatal']}:\n{tail(srv.logfile)}")
                time.sleep(a.settle)
                return t

            best, trials = self.search(srv.start_rate, trial)
        finally:
            rc = srv.stop()
        # Returning clients must keep their address: the server should hold exactly n leases.
        self._record_server_state(srv, rc, state, None, info)
        if isinstance(info.get("persisted_leases"), int) and info["persisted_leases"] < n:
            info.setdefault("problems", []).append(
                f"{info['persisted_leases']} leases on disk after clean stop for {n} returning clients")
        if isinstance(info.get("persisted_leases"), int) and info["persisted_leases"] > n:
            info.setdefault("problems", []).append(
                f"{info['persisted_leases']} leases on disk for {n} returning clients "
                "(clients did not get their address back)")
        for p in info.get("problems", []):
            log(f"    ! {p}")
        s = self._summary(best, trials)
        s["warmup"] = warm
        s.update(info)
        return s

    @staticmethod
    def _summary(best, trials) -> dict:
        problems = [p for t in trials for p in t.get("problems", [])]
        s = {
            "leases_per_s": best["leases_per_s"] if best else 0.0,
            "drop_pct": best["drop_pct"] if best else None,
            "offered_rate": best["rate"] if best else None,
            "lowest_failing_rate": min((t["rate"] for t in trials if not t["pass"]
                                        and not t.get("phase", "").endswith("perturbed")), default=None),
            "client_limited": bool(best and best.get("client_limited")),
            "confirmed": bool(best and best.get("confirmed")),
            "max_foreign_cpu_pct": max((t.get("foreign_cpu_pct", 0) for t in trials
                                        if not t.get("phase", "").endswith("perturbed")), default=0),
            "trials": trials,
        }
        if problems:
            s["problems"] = problems
        return s


# --------------------------------------------------------------------------
def print_report(results: list[dict], args) -> None:
    by = {r["server"]: r for r in results}
    scen = [s for s in ("unique", "returning") if s in args.scenarios]
    print()
    print(f"DHCP leases/s at < {args.drop_limit:g}% failed exchanges "
          f"(perfdhcp relay in its own netns, -g {args.perfdhcp_threads}; trial "
          f"{args.period:g}s; {args.returning_clients} returning clients; "
          f"{'server CPU1, perfdhcp CPU0' if not args.no_pin else 'unpinned'})")
    hdr = (f"{'server':36} {'scenario':10} {'leases/s':>9} {'drop%':>6} {'offered/s':>9} "
           f"{'fails at':>9} {'bg cpu%':>7} {'cpu s':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        for s in scen:
            d = r["scenarios"].get(s)
            if not d:
                continue
            drop = f"{d['drop_pct']:.2f}" if d["drop_pct"] is not None else "-"
            fails = d["lowest_failing_rate"] or (">max" if not d["client_limited"] else "client")
            note = "  (perfdhcp-limited)" if d["client_limited"] else ""
            if args.confirm and d["offered_rate"] and not d.get("confirmed") and not d["client_limited"]:
                note += "  (not confirmed)"
            note += "  [problems: see JSON]" if d.get("problems") else ""
            print(f"{r['label']:36} {s:10} {d['leases_per_s']:9.0f} {drop:>6} "
                  f"{d['offered_rate'] or '-':>9} {fails:>9} "
                  f"{d.get('max_foreign_cpu_pct', 0):7.0f} {r.get('cpu_loop_s') or 0:6.3f}{note}")
    for nbname in [n for n in by if n.startswith("netbootd")]:
        nb = by[nbname]
        print()
        print(f"ratios {nb['label']} / peer:")
        print(f"  {'':36} " + "  ".join(f"{s:>10}" for s in scen))
        for name in ("kea", "dnsmasq", "dnsmasq-fast"):
            if name not in by:
                continue
            cells = []
            for s in scen:
                a = nb["scenarios"].get(s, {}).get("leases_per_s")
                b = by[name]["scenarios"].get(s, {}).get("leases_per_s")
                cells.append(f"{a / b:9.2f}x" if a is not None and b else f"{'-':>10}")
            print(f"  {by[name]['label']:36} " + "  ".join(cells))
        k = by.get("kea")
        if k and nbname == "netbootd":
            for s in scen:
                a = nb["scenarios"].get(s, {}).get("leases_per_s", 0)
                b = k["scenarios"].get(s, {}).get("leases_per_s", 0)
                goal = GOALS.get(s, 1.0)
                print(f"goal netbootd >= {goal:.1f}x Kea with durable leases, {s}: "
                      f"{'MET' if b and a >= goal * b else 'NOT MET'}")
    for r in results:
        for s in scen:
            for p in r["scenarios"].get(s, {}).get("problems", []):
                print(f"! {r['server']}/{s}: {p.splitlines()[0]}")
        if r.get("error"):
            print(f"! {r['server']}: {r['error'].splitlines()[0]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse ~2 minute version")
    ap.add_argument("--servers", default="netbootd,kea,dnsmasq,dnsmasq-fast",
                    help="comma list of: " + ",".join(SERVERS))
    ap.add_argument("--scenarios", default="unique,returning")
    ap.add_argument("--period", type=float, help="seconds per trial (perfdhcp -p)")
    ap.add_argument("--max-trials", type=int, help="trials per (server, scenario)")
    ap.add_argument("--tolerance", type=float, help="stop bisecting when fail/pass rate <= 1+tol")
    ap.add_argument("--ramp", type=int, default=2)
    ap.add_argument("--min-rate", type=int, default=25)
    ap.add_argument("--max-rate", type=int, default=64000)
    ap.add_argument("--drop-time", type=float, default=1.0, help="perfdhcp -d (s)")
    ap.add_argument("--exit-wait", type=float, help="perfdhcp -W (s)")
    ap.add_argument("--confirm", type=int,
                    help="re-run up to N best passing rates until one passes twice (0: off)")
    ap.add_argument("--redo", type=int,
                    help="re-run up to N failed trials (whole run) during which other "
                         "processes used > 10%% CPU (default 8, --quick 2)")
    ap.add_argument("--settle", type=float, default=1.0, help="pause between returning trials (s)")
    ap.add_argument("--start-timeout", type=float, default=30.0)
    ap.add_argument("--start-settle", type=float, default=0.0,
                    help="extra seconds to wait after a server is ready, before any load "
                         "(default 0: ready means ready; use it to see steady-state capacity "
                         "past start-up work)")
    ap.add_argument("--wait-idle", type=float,
                    help="before a trial, wait up to this many seconds while other processes "
                         "keep the CPUs > 10%% busy (4x this in all; 0: never wait; "
                         "default 30, --quick 10)")
    ap.add_argument("--kea-log-severity", default="INFO",
                    help="Kea logger severity (INFO is Kea's default)")
    ap.add_argument("--netbootd-config", help="TOML added to the config netbootd gets (which "
                    "already has the [[networks]] entry listing perfdhcp as a relay)")
    ap.add_argument("--lock", default="/run/lock/netbootd-bench.lock",
                    help="flock taken for the whole run so benches do not overlap ('' : none)")
    ap.add_argument("--lock-wait", type=float, default=900.0, help="seconds to wait for --lock")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server/perfdhcp to CPUs")
    ap.add_argument("--returning-clients", type=int, default=RETURNING_CLIENTS,
                    help="perfdhcp -R of the returning scenario")
    ap.add_argument("--drop-limit", type=float, default=DROP_LIMIT,
                    help="a rate passes below this %% of failed exchanges")
    ap.add_argument("--perfdhcp-threads", choices=("single", "multi"), default="single",
                    help="perfdhcp -g: one thread, or its default separate receiver thread")
    ap.add_argument("--shape", choices=("default", "wide"), default="default",
                    help="wide: the second harness of issue 10 (10,000 returning clients, "
                         "< 1%% failed, 5 s trials, no pinning, perfdhcp's own threads)")
    ap.add_argument("--networks", type=int, default=1,
                    help="netbootd serves this many networks (the extra ones get no packets)")
    ap.add_argument("--leases", type=int, default=0,
                    help="active leases stored in the extra networks before each start "
                         "(same-run A/B: --networks-toml F, then --netbootd-src many=.:F)")
    ap.add_argument("--networks-toml", metavar="FILE",
                    help="write the --networks extra networks as TOML to FILE and exit")
    ap.add_argument("--netbootd-src", action="append", default=[], metavar="LABEL=DIR[:TOML]",
                    help="also run netbootd imported from DIR (e.g. an older commit's tree), "
                         "with TOML as its config if given; repeatable")
    ap.add_argument("--cold-start", action="store_true",
                    help="netbootd counts as started at its ready line, not once its discover "
                         "initrd is built: the build (~2 s of CPU, fresh state dir) then runs "
                         "inside the first trials, as right after a first start")
    ap.add_argument("--workdir", default="/var/tmp", help="where server state goes (real disk)")
    ap.add_argument("--keep-state", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    NET_SHAPE.update(networks=args.networks, leases=args.leases)
    if args.networks_toml:
        Path(args.networks_toml).write_text(shape_toml(args.networks))
        return 0
    try:
        extra_servers = netbootd_sources(args.netbootd_src, args)
    except ValueError as e:
        ap.error(str(e))
    if args.shape == "wide":
        args.returning_clients, args.drop_limit = 10_000, 1.0
        args.no_pin, args.perfdhcp_threads = True, "multi"
        args.period = args.period or 5.0
    q = args.quick
    args.period = args.period or (2.0 if q else 5.0)
    args.max_trials = args.max_trials or (4 if q else 10)
    args.tolerance = args.tolerance if args.tolerance is not None else (0.5 if q else 0.08)
    args.exit_wait = args.exit_wait if args.exit_wait is not None else (0.5 if q else 1.0)
    args.confirm = args.confirm if args.confirm is not None else (0 if q else 3)
    args.wait_idle = args.wait_idle if args.wait_idle is not None else (10.0 if q else 30.0)
    args.redo = args.redo if args.redo is not None else (2 if q else 8)
    if q and args.ramp == 2:
        args.ramp = 3
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [n for n in names if n not in SERVERS] + [s for s in args.scenarios
                                                   if s not in ("unique", "returning")]
    if bad:
        ap.error(f"unknown: {', '.join(bad)}")
    why = labnet.available()
    if why:
        print(f"bench-dhcp: cannot build labs: {why}", file=sys.stderr)
        return 2
    need = {"netbootd": NETBOOTD, "netbootd-nolimit": NETBOOTD, "netbootd-normal": NETBOOTD, "kea": KEA, "dnsmasq": DNSMASQ, "dnsmasq-fast": DNSMASQ}
    for n in names:
        if not os.access(need[n], os.X_OK):
            print(f"bench-dhcp: {need[n]} not found (needed for {n})", file=sys.stderr)
            return 2
    if not os.access(PERFDHCP, os.X_OK):
        print("bench-dhcp: perfdhcp not found (Debian: kea-admin)", file=sys.stderr)
        return 2

    common.unwind_on_signals()

    lock = take_bench_lock(args.lock, args.lock_wait)     # held until exit
    bench = Bench(args)
    before = foreign_sample(None)
    time.sleep(1.0)
    idle_busy = foreign_pct(before, foreign_sample(None))[0]
    if idle_busy > BUSY_WARN:
        log(f"WARNING: the machine is {idle_busy:.0f}% busy before the bench starts "
            "(other processes): results will be perturbed and noisy")
    t0 = time.monotonic()
    started = _dt.datetime.now().astimezone()
    results = []
    makers = [(n, SERVERS[n]) for n in names] + [
        (x.name, lambda a, x=x: x) for x in extra_servers]
    for n, make in makers:
        try:
            results.append(bench.run_server(make))
        except BenchError as e:
            log(f"!! {n}: {e}")
            results.append({"server": n, "label": n, "error": str(e), "scenarios": {}})
    elapsed = time.monotonic() - t0
    print_report(results, args)
    print("bg cpu% = most CPU (% of all cores) used by other processes during any counted trial; "
          "> 10 means perturbed numbers")
    print("cpu s = time of a fixed Python loop on the server CPU just before that server's runs "
          "(the VM's core speed drifts; compare servers only when these agree within ~10%)")
    if idle_busy > BUSY_WARN:
        print(f"WARNING: machine was {idle_busy:.0f}% busy before the bench started: numbers are perturbed")
    print(f"\n(total {elapsed / 60:.1f} min)")

    doc = {
        "bench": "dhcp", "started": started.isoformat(), "elapsed_s": round(elapsed, 1),
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "cpu_busy_before_start_pct": round(idle_busy, 1),
                 "cpu_model": common.cpu_model(), "python": platform.python_version()},
        "settings": {k: v for k, v in vars(args).items()},
        "method": {"drop_limit_pct": args.drop_limit, "unique_clients": UNIQUE_CLIENTS,
                   "unique_max_exchanges": UNIQUE_MAX_EXCHANGES,
                   "returning_clients": args.returning_clients, "pool": [POOL_FIRST, POOL_LAST],
                   "lease_time": LEASE_TIME, "pinning": bench.pin,
                   "leases_per_s": "ACKs / (perfdhcp wall time - exit wait)",
                   "drop_pct": "(DISCOVERs sent - ACKs received) / DISCOVERs sent"},
        "results": results,
    }
    doc["ratios"] = {}
    for nb in (r for r in results if r["server"].startswith("netbootd")):
        doc["ratios"][nb["server"]] = {
            peer["server"]: {s: (round(nb["scenarios"][s]["leases_per_s"] / peer["scenarios"][s]["leases_per_s"], 3)
                                 if s in nb["scenarios"] and s in peer["scenarios"]
                                 and peer["scenarios"][s]["leases_per_s"] else None)
                             for s in args.scenarios}
            for peer in results if not peer["server"].startswith("netbootd")}
    path = common.save_json(doc, args.out, "dhcp", started, q)
    print(f"JSON: {path}")
    if lock is not None:
        lock.close()
    return 1 if any(r.get("error") for r in results) else 0


def take_bench_lock(path: str, wait: float):
    """Serialise benchmarks on this machine: an exclusive flock on `path`
    (any bench that takes the same lock will not run at the same time).
    Waits up to `wait` seconds, then goes on without it (with a warning)."""
    if not path:
        return None
    try:
        f = open(path, "a+")
    except OSError as e:
        log(f"WARNING: cannot open bench lock {path}: {e}; running without it")
        return None
    deadline = time.monotonic() + wait
    said = False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()} bench/dhcp\n")
            f.flush()
            return f                      # held until the process exits
        except BlockingIOError:
            if time.monotonic() >= deadline:
                log(f"WARNING: bench lock {path} still held after {wait:g}s; running anyway")
                return None
            if not said:
                f.seek(0)
                log(f"waiting (up to {wait:g}s) for the bench lock {path}, held by: "
                    f"{f.read().strip() or '?'}")
                said = True
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
