#!/usr/bin/env python3
"""Disk capture throughput: netbootd's capture vs ``dd | nc`` over the same link, same run
(issue 13 items 4 and 6).

The link (--link):
  loopback  both ends on this machine's 127.0.0.1 (both share the cores: this measures CPU)
  veth      two network namespaces made for the run (netbootd/lab/netns.py) joined by a
            veth pair with addresses that exist only there (10.213.13.1-2/30); --rate
            (e.g. 1gbit) shapes the agent's egress with tbf (burst 256kb, latency 20ms),
            as a NIC of that speed would.  The namespaces are removed at the end.
With --pin (the default for veth) the agent side (capture.sh / dd|nc) runs on core 0 and
the server side (netbootd / nc -l) on core 1 (taskset), for both methods: one core per
side, as on two machines.
The "disk" is a file of --size-mib (random bytes, one eighth zeros in the middle: a used
disk's shape), read from the page cache by both sides (it is read once before the trials).

  capture  a netbootd process (the real site, SQLite store and a ``file`` pool under
           --work; started per trial, not timed) with a capture queued for a host; the
           agent's own code (iso_builder/agent/capture.sh: dd per chunk, sha256sum,
           lib.sh's nc transport: one stream per attempt, or with --transport chunk one
           POST per chunk as over https) run by the initrd's static busybox with PATH holding
           only its applets, exactly as in the initrd, its scratch dir on /dev/shm
           (a tmpfs, as /run in the initrd).  Timed from the agent's start to
           its "done" report (the server fsyncs the volume before answering the last
           chunk).
  dd|nc    openQRM's step: ``busybox dd if=DISK bs=4M | busybox nc 127.0.0.1 PORT`` into
           ``busybox nc -l -p PORT > FILE`` (the same busybox); timed until the receiver exited and FILE was
           fsync'ed.

The trials alternate.  Reported per method: median MB/s (10^6 bytes/s) and CPU seconds
per GB of the sending side (the agent / dd+nc: rusage of the reaped children) and of the
receiving side (netbootd's process / nc -l), and the ratio capture/dd|nc of the medians.

Usage: .venv/bin/python bench/storage/capture.py [--quick] [--trials N] [--size-mib N]
       [--chunk-mib N] [--link loopback|veth] [--rate 1gbit] [--pin|--no-pin]
       [--transport stream|chunk] [--hasher busybox|openssl|pack[,...]]
Results: a report on stdout, JSON in bench/results/storage-capture-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE.parent))

from common import RESULTS, check_machine, cpu_model, log, save_json, tree_cpu  # noqa: E402

MiB = 1 << 20
MAC = "52:54:00:be:ec:01"
TIMEOUT = 600


# -- the server (a child process: --serve) -------------------------------------------
def serve(work: Path, size: int, chunk: int, host: str = "127.0.0.1",
          pack: str | None = None) -> None:
    """netbootd's site on ``host`` with one file pool and a capture queued for a host;
    prints {"port", "secret", "job"} and exits when the capture ends.  ``pack``: the
    agent tool pack served (with its .sha256) as the daemon serves it from its state dir,
    so the capture action names it."""
    from twisted.internet import reactor

    from netbootd import config
    from netbootd.auth.enroll import KeyRing
    from netbootd.net.commit import GroupCommitter
    from netbootd.net.http.app import HttpApp
    from netbootd.net.http.site import build_site
    from netbootd.net.storage import Storage
    from netbootd.policy.boot import Renderer
    from netbootd.registry.hosts import Registry
    from netbootd.storage import open_pool
    from netbootd.store.sqlite import Store

    store = Store(str(work / "state"))
    committer = GroupCommitter(reactor, store.apply, 0.001)
    registry = Registry()
    app = HttpApp(registry=registry, submit=committer.submit, renderer=Renderer(),
                  clock=reactor, token="c" * 64, store=store, mode="full",
                  state_dir=str(work / "state"),
                  ring=KeyRing.load_or_create(str(work / "state")))
    cfg = config.parse(f'[[storage.pools]]\nname = "default"\nroot = "{work / "pool"}"\n'
                       'reflink = false\novercommit = 1.0\n[storage.iscsi]\n'
                       'iqn_base = "iqn.2026-01.lan.bench"\nbackend = "none"\n').storage
    st = Storage(cfg, registry, committer.submit, reactor, "127.0.0.1")
    p = cfg.pools[0]
    st.pools["default"] = open_pool("file", "default", p.thresholds(), root=p.root,
                                    reflink=False)
    st.ready = True
    app.storage = st
    if pack:
        from netbootd.net.capture import TOOLS_NAME
        app.generated[TOOLS_NAME] = pack
    port = reactor.listenTCP(0, build_site(app), interface=host)
    reply, writes = app.agents.register(MAC, "127.0.0.1", None, None, None, "127.0.0.1",
                                        reactor.seconds())
    committer.submit(writes)
    registry.hosts[MAC].hw = {"disk_list": [{"name": "vdz", "bytes": size, "serial": None}]}
    captures = app.admit_body.__self__.captures
    captures.chunk_size = chunk

    def started(view):
        print(json.dumps({"port": port.getHost().port, "secret": reply["secret"],
                          "job": view["id"]}), flush=True)
        st.jobs[view["id"]].finished.addBoth(ended)

    def ended(job):
        print(json.dumps({"state": job.state, "result": job.result,
                          "error": job.error and job.error.reason}), flush=True)
        reactor.callLater(0.1, reactor.stop)

    def failed(f):
        print(json.dumps({"error": f.getErrorMessage()}), flush=True)
        reactor.stop()
    reactor.callWhenRunning(lambda: captures.start(MAC, "vdz", "cap", None)
                            .addCallbacks(started, failed))
    reactor.callLater(TIMEOUT, reactor.stop)
    reactor.run()
    committer.stop()


# -- the link ----------------------------------------------------------------------------
class Link:
    """Where the two sides run: argv prefixes for the agent side and the server side and
    the server's address.  close() removes the namespaces (and what still runs there)."""

    def __init__(self, kind: str, rate: str | None, pin: bool,
                 slow_start_after_idle: bool = True):
        self.kind, self.rate, self.pin, self.lab = kind, rate, pin, None
        self.host, self.agent, self.server = "127.0.0.1", [], []
        if kind == "veth":
            from netbootd.lab.netns import Lab, available
            why = available()
            if why:
                raise SystemExit(f"--link veth: {why}")
            self.lab = Lab()
            try:
                a, s = self.lab.namespace("agent"), self.lab.namespace("server")
                dev, peer = self.lab.link(a, "10.213.13.1/30", s, "10.213.13.2/30")
                if rate:
                    self.lab.ns_exec(a, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                                     "rate", rate, "burst", "256kb", "latency", "20ms")
                if not slow_start_after_idle:    # per namespace: the agent's only
                    self.lab.ns_exec(a, "sysctl", "-qw",
                                     "net.ipv4.tcp_slow_start_after_idle=0")
            except BaseException:
                self.lab.close()
                raise
            self.host = "10.213.13.2"
            # absolute paths: the agent's PATH holds only busybox applets (an ip of its own)
            ip = shutil.which("ip")
            self.agent, self.server = [ip, "netns", "exec", a], [ip, "netns", "exec", s]
        elif rate:
            raise SystemExit("--rate needs --link veth (tbf on loopback would shape "
                             "everything on this machine)")
        if pin:
            taskset = shutil.which("taskset")
            if taskset is None:
                raise SystemExit("--pin needs taskset (util-linux)")
            if self.lab is not None:
                # a veth delivers in the sender's softirq: RPS moves each side's receive
                # processing onto that side's core, as a NIC on its own machine would
                for ns, ifc, mask in ((a, dev, 1), (s, peer, 2)):
                    self.lab.ns_exec(ns, "sh", "-c", f"echo {mask} > "
                                     f"/sys/class/net/{ifc}/queues/rx-0/rps_cpus")
            self.agent += [taskset, "-c", "0"]
            self.server += [taskset, "-c", "1"]

    def describe(self) -> str:
        where = "loopback" if self.kind == "loopback" else (
            f"veth between two namespaces, {self.rate or 'no rate limit'}")
        return where + (", agent on core 0 / server on core 1" if self.pin else ", unpinned")

    def close(self) -> None:
        if self.lab is not None:
            self.lab.close()


def _listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on ``port`` in the network namespace of ``pid``."""
    lines = []
    for name in ("tcp", "tcp6"):             # busybox nc -l: an IPv6 socket where it can
        try:
            lines += Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            pass
    return any(f.split()[1].endswith(f":{port:04X}") and f.split()[3] == "0A" for f in lines)


# -- the two methods ---------------------------------------------------------------------
def busybox_path(work: Path) -> str:
    from iso_builder import initrd as initrd_mod
    bb = initrd_mod.find_busybox()
    d = work / "bbbin"
    d.mkdir(exist_ok=True)
    for app in initrd_mod.busybox_applets(bb):
        name = app.rsplit("/", 1)[-1]
        if not (d / name).exists():
            (d / name).symlink_to(bb)
    return str(d)


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def trial_capture(work: Path, bbpath: str, disk: Path, size: int, chunk: int,
                  link: Link, transport: str = "stream", hasher: str = "busybox",
                  pack: Path | None = None) -> dict:
    """hasher: busybox (NB_CAPTURE_HASH=busybox), openssl (this machine's on the agent's
    PATH, as the boot media's initrd has it) or pack (PATH: busybox only; the server
    serves ``pack`` and the agent fetches it as a real one does, inside the timing)."""
    tdir = Path(tempfile.mkdtemp(dir=work, prefix="cap-"))
    server = subprocess.Popen(link.server + [sys.executable, __file__, "--serve", str(tdir),
                                             str(size), str(chunk), link.host,
                                             *([str(pack)] if hasher == "pack" else [])],
                              stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        if "error" in info:
            raise RuntimeError(f"server: {info['error']}")
        sysdir = tdir / "sys" / "block" / "vdz"
        sysdir.mkdir(parents=True)
        (sysdir / "size").write_text(f"{size // 512}\n")
        (tdir / "proc").mkdir()
        (tdir / "proc" / "uptime").write_text("1.00 1.00\n")
        # the agent's scratch dir is a tmpfs in the initrd: /dev/shm here
        run = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="nb-capture-run-"))
        agent = REPO / "iso_builder" / "agent"
        script = (f". {agent}/lib.sh; . {agent}/inventory.sh; . {agent}/actions.sh\n"
                  f"server=http://{link.host}:{info['port']} secret='{info['secret']}'\n"
                  "finish() { :; }\napi GET /api/v1/agent/next\n"
                  "cp \"$NB_RUN/http.flat\" \"$NB_RUN/next.flat\"\n"
                  "act capture \"$(jget \"$NB_RUN/next.flat\" id)\" \"$NB_RUN/next.flat\"\n")
        path = bbpath
        if hasher == "openssl":         # as an initrd carrying Debian's openssl would
            (work / "openssl-bin").mkdir(exist_ok=True)
            if not (work / "openssl-bin" / "openssl").exists():
                (work / "openssl-bin" / "openssl").symlink_to(shutil.which("openssl"))
            path = f"{work / 'openssl-bin'}:{bbpath}"
        env = {"PATH": path, "NB_LIB": str(agent), "NB_RUN": str(run),
               "NB_SYS": str(tdir / "sys"), "NB_PROC": str(tdir / "proc"),
               "NB_CAPTURE_DEV": str(disk),
               "NB_CAPTURE_STREAM": "1" if transport == "stream" else "0",
               "NB_CAPTURE_HASH": "busybox" if hasher == "busybox" else "auto"}
        srv0, cpu0, t0 = tree_cpu(server.pid), children_cpu(), time.monotonic()
        r = subprocess.run(link.agent + [f"{bbpath}/sh", "-c", script], env=env, capture_output=True,
                           text=True, timeout=TIMEOUT)
        wall = time.monotonic() - t0
        srv = tree_cpu(server.pid) - srv0
        agent_cpu = children_cpu() - cpu0
        end = json.loads(server.stdout.readline() or "{}")
        server.wait(30)
        if end.get("state") != "done":
            raise RuntimeError(f"capture did not end done: {end} {r.stdout[-400:]}")
        want = "hasher=busybox" if hasher == "busybox" else "hasher=openssl"
        if want not in r.stdout:
            raise RuntimeError(f"the agent did not hash with {hasher}: {r.stdout[-600:]}")
        same = _same(disk, tdir / "pool" / "volumes" / "cap")
        return {"seconds": wall, "send_cpu": agent_cpu, "recv_cpu": srv, "identical": same,
                "sparse_skipped": end["result"]["sparse_skipped"]}
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        shutil.rmtree(tdir, ignore_errors=True)
        if "run" in locals():
            shutil.rmtree(run, ignore_errors=True)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def trial_ddnc(work: Path, bbpath: str, disk: Path, size: int, link: Link) -> dict:
    out = work / "ddnc.img"
    port = _free_port()
    with open(out, "wb") as f:
        recv = subprocess.Popen(link.server + [f"{bbpath}/nc", "-l", "-p", str(port)],
                                stdin=subprocess.PIPE, stdout=f)
    try:
        for _ in range(250):          # listening? (no probe connection: nc -l takes one)
            if _listening(recv.pid, port):
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"nc -l -p {port} is not listening")
        cpu0, t0 = children_cpu(), time.monotonic()
        subprocess.run(link.agent + [f"{bbpath}/sh", "-c", f"dd if={disk} bs=4M 2>/dev/null | "
                                     f"nc {link.host} {port}"], env={"PATH": bbpath},
                       check=True, timeout=TIMEOUT)
        send_cpu = children_cpu() - cpu0
        _, status, ru = os.wait4(recv.pid, 0)
        recv.returncode = status
        fd = os.open(out, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        wall = time.monotonic() - t0
        same = os.path.getsize(out) == size and _same(disk, out)
        return {"seconds": wall, "send_cpu": send_cpu, "recv_cpu": ru.ru_utime + ru.ru_stime,
                "identical": same}
    finally:
        if recv.returncode is None and recv.poll() is None:
            recv.kill()
            recv.wait()
        out.unlink(missing_ok=True)


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


def make_disk(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left, pos = size, 0
        while left:
            n = min(16 * MiB, left)
            zero = size * 7 // 16 <= pos < size * 9 // 16
            f.write(bytes(n) if zero else os.urandom(n))
            left -= n
            pos += n
    with open(path, "rb") as f:            # warm: both sides read from the page cache
        while f.read(16 * MiB):
            pass


def main() -> int:
    if len(sys.argv) in (6, 7) and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
              *sys.argv[6:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB, 1 trial")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--chunk-mib", type=int, default=16)
    ap.add_argument("--link", choices=("loopback", "veth"), default="loopback")
    ap.add_argument("--rate", help="veth only: tbf rate on the agent's egress (e.g. 1gbit)")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None,
                    help="agent side on core 0, server side on core 1 (default: veth only)")
    ap.add_argument("--transport", choices=("stream", "chunk"), default="stream",
                    help="the agent's: one request per attempt (http's default) or one "
                         "per chunk (https's)")
    ap.add_argument("--hasher", default="busybox",
                    help="the agent's sha256, a comma list (each a capture method of the "
                         "run): busybox (sha256sum, the initrd's), openssl (this machine's "
                         "on the agent's PATH, as on boot media) or pack (the agent tool "
                         "pack, iso_builder/hashtool.py, served and fetched by the agent)")
    ap.add_argument("--slow-start-after-idle", action=argparse.BooleanOptionalAction,
                    default=True, help="veth: the agent namespace's "
                    "net.ipv4.tcp_slow_start_after_idle (the kernel's default: on)")
    ap.add_argument("--work", default="/var/tmp")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.quick:
        args.size_mib, args.trials = 64, 1
    started = _dt.datetime.now()
    others, busy = check_machine()
    size, chunk = args.size_mib * MiB, args.chunk_mib * MiB
    if args.pin is None:
        args.pin = args.link == "veth"
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("--pin needs two cores")
    hashers = [h for h in args.hasher.split(",") if h]
    if not hashers or any(h not in ("busybox", "openssl", "pack") for h in hashers):
        raise SystemExit(f"--hasher: a comma list of busybox, openssl, pack; got {args.hasher!r}")
    link = Link(args.link, args.rate, args.pin, args.slow_start_after_idle)
    work = Path(tempfile.mkdtemp(dir=args.work, prefix="nb-capture-bench-"))
    try:
        bbpath = busybox_path(work)
        disk = work / "disk.img"
        make_disk(disk, size)
        pack = None
        if "pack" in hashers:
            from iso_builder import hashtool
            from iso_builder.initrd import cache_dir
            built = hashtool.build_pack(work / hashtool.PACK_NAME, cache_dir())
            if built is None:
                raise SystemExit("--hasher pack: no openssl to pack")
            pack = Path(built["path"])
            log(f"tool pack: {built['size']} bytes gzip'ed ({built['uncompressed_size']} "
                "unpacked)")
        methods = {("capture" if len(hashers) == 1 else f"capture-{h}"): h for h in hashers}
        runs: dict[str, list] = {**{m: [] for m in methods}, "ddnc": []}
        order = list(runs)
        for i in range(args.trials):
            for name in order if i % 2 == 0 else order[::-1]:
                r = (trial_capture(work, bbpath, disk, size, chunk, link, args.transport,
                                   methods[name], pack)
                     if name != "ddnc"
                     else trial_ddnc(work, bbpath, disk, size, link))
                r["mb_s"] = size / 1e6 / r["seconds"]
                runs[name].append(r)
                log(f"trial {i + 1} {name}: {r['mb_s']:.1f} MB/s, send "
                    f"{r['send_cpu']:.2f} s CPU, receive {r['recv_cpu']:.2f} s CPU, "
                    f"identical={r['identical']}")
        gb = size / 1e9
        summary = {}
        for name, rs in runs.items():
            summary[name] = {
                "mb_s": round(statistics.median(r["mb_s"] for r in rs), 1),
                "send_cpu_s_per_gb": round(statistics.median(r["send_cpu"] for r in rs) / gb, 2),
                "recv_cpu_s_per_gb": round(statistics.median(r["recv_cpu"] for r in rs) / gb, 2),
                "identical": all(r["identical"] for r in rs)}
        ratios = {m: round(summary[m]["mb_s"] / summary["ddnc"]["mb_s"], 2) for m in methods}
        ratio = ratios[next(iter(methods))]
        print(f"capture ({args.transport}, {args.hasher} sha256) of {args.size_mib} MiB over {link.describe()}, "
              f"chunk {args.chunk_mib} MiB, "
              f"{args.trials} trials (medians); machine {busy:.0f}% busy before")
        print(f"{'method':16} {'MB/s':>8} {'send CPU s/GB':>14} {'recv CPU s/GB':>14}")
        for name, s in summary.items():
            print(f"{name:16} {s['mb_s']:8.1f} {s['send_cpu_s_per_gb']:14.2f} "
                  f"{s['recv_cpu_s_per_gb']:14.2f}  identical={s['identical']}")
        for m, x in ratios.items():
            print(f"ratio {m} / dd|nc: {x}x")
        doc = {"bench": "storage-capture", "started": started.isoformat(), "cpu": cpu_model(),
               "link": args.link, "rate": args.rate, "pin": args.pin,
               "link_text": link.describe(), "size_mib": args.size_mib, "chunk_mib": args.chunk_mib, "trials": args.trials,
               "transport": args.transport, "hasher": args.hasher,
               "slow_start_after_idle": args.slow_start_after_idle,
               "busy_before": busy, "other_benchmarks": others, "runs": runs,
               "summary": summary, "ratio": ratio, "ratios": ratios}
        print("results:", save_json(doc, args.out, "storage-capture", started, args.quick))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        link.close()


if __name__ == "__main__":
    sys.exit(main())
