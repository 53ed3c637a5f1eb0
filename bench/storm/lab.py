"""The storm's world: two namespaces, the servers, the client run.

  server ns  10.77.0.1/16 on one veth end: netbootd (full DHCP, TFTP, HTTP,
             DNS, hooks to bench/storm/sink.py on its loopback), or the peer
             dnsmasq (DHCP + TFTP, --no-ping) + nginx (HTTP, sendfile on)
  client ns  10.77.0.2/16 on the other end (the API checks come from it);
             the pool 10.77.16.0/20 is routed `local` there, so every leased
             address is the client's own without an `ip addr add` per host;
             bench/storm/client.py runs here
Both ends get `tc netem loss X%` when asked.  Every address exists only in
these namespaces; every process is started and stopped by PID, the
namespaces go on close (labnet.Lab).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
VENV = REPO / ".venv" / "bin"
PY = str(VENV / "python") if (VENV / "python").exists() else sys.executable
NETBOOTD = str(VENV / "netbootd")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
IPXE_DIR = Path("/usr/lib/ipxe")
BOOT_FILES = ("ipxe.efi", "undionly.kpxe")

SERVER, CLIENT, PREFIX = "10.77.0.1", "10.77.0.2", 16
POOL_NET, POOL_FIRST, POOL_LAST = "10.77.16.0/20", "10.77.16.1", "10.77.31.254"
HTTP_PORT = 8080
SINK_PORT = 9099


def _sysctls(lab, ns: str) -> None:
    for k, v in (("net.ipv4.neigh.default.gc_thresh1", 8192),
                 ("net.ipv4.neigh.default.gc_thresh2", 16384),
                 ("net.ipv4.neigh.default.gc_thresh3", 32768),
                 ("net.ipv4.conf.all.rp_filter", 0), ("net.ipv4.conf.default.rp_filter", 0),
                 ("net.core.somaxconn", 4096), ("net.ipv4.tcp_max_syn_backlog", 4096),
                 ("net.ipv4.ip_local_port_range", "10000 65000")):
        lab.ns_exec(ns, "sysctl", "-qw", f"{k}={v}", check=False)


def add_loss(lab, ns: str, dev: str, loss: float) -> str:
    """Lose `loss` % of the frames that reach `dev` (so with both ends set,
    `loss` % each way): `tc netem loss` where the kernel has netem, else (this
    VM's kernel) an nftables netdev ingress chain dropping on a random number
    (numgen) - the same independent per-frame loss, and like a wire's, the
    sender never learns of it (an egress drop would fail its sendto with
    ENOBUFS).  Everything lives in the namespace and goes with it."""
    r = lab.ns_exec(ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", f"{loss:g}%",
                    "limit", "100000", check=False)
    if r.returncode == 0:
        return "tc netem"
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not os.access(nft, os.X_OK):
        raise RuntimeError(f"--loss needs tc netem ({r.stderr.strip()}) or nft (Debian: nftables)")
    script = ("table netdev storm {\n chain lose {\n  type filter hook ingress device \"%s\" "
              "priority 0;\n  numgen random mod 1000000 < %d counter drop\n }\n}\n"
              % (dev, int(round(loss * 10_000))))
    r2 = subprocess.run(["ip", "netns", "exec", ns, nft, "-f", "-"], input=script,
                        capture_output=True, text=True, timeout=30)
    if r2.returncode != 0:
        raise RuntimeError(f"nft: {r2.stderr.strip()}")
    return "nftables netdev ingress numgen"


class World:
    def __init__(self, lab, work: Path, loss: float = 0.0):
        self.lab, self.work = lab, work
        self.sns = lab.namespace("srv")
        self.cns = lab.namespace("cli")
        self.sif, self.cif = lab.link(self.sns, f"{SERVER}/{PREFIX}", self.cns,
                                      f"{CLIENT}/{PREFIX}")
        for ns in (self.sns, self.cns):
            _sysctls(lab, ns)
        lab.ns_exec(self.cns, "ip", "route", "add", "local", POOL_NET, "dev", "lo")
        self.loss = loss
        self.loss_method = None
        if loss:
            for ns, dev in ((self.sns, self.sif), (self.cns, self.cif)):
                self.loss_method = add_loss(lab, ns, dev, loss)


    # -- the files every server serves -----------------------------------------
    def make_files(self, kernel_bytes: int, initrd_bytes: int) -> dict:
        """<work>/files/{vmlinuz,initrd.img} (pseudo-random bytes) and
        <work>/tftp/ with the iPXE binaries; world-readable (dnsmasq and
        nginx workers run as nobody/www-data)."""
        os.chmod(self.work, 0o755)
        files, tftp = self.work / "files", self.work / "tftp"
        files.mkdir(exist_ok=True)
        tftp.mkdir(exist_ok=True)
        block = os.urandom(1 << 20)
        for name, size in (("vmlinuz", kernel_bytes), ("initrd.img", initrd_bytes)):
            with open(files / name, "wb") as f:
                left = size
                while left > 0:
                    f.write(block[:min(left, len(block))])
                    left -= len(block)
        for b in BOOT_FILES:
            shutil.copyfile(IPXE_DIR / b, tftp / b)
        for d in (files, tftp):
            os.chmod(d, 0o755)
            for p in d.iterdir():
                os.chmod(p, 0o644)
        return {"kernel": kernel_bytes, "initrd": initrd_bytes,
                **{b: (tftp / b).stat().st_size for b in BOOT_FILES}}

    # -- the client ---------------------------------------------------------------
    def run_client(self, out: Path, hosts: int, timeout: float, cpu: str | None,
                   extra: list[str] = ()) -> dict:
        cmd = [PY, str(HERE / "client.py"), "--ifname", self.cif, "--hosts", str(hosts),
               "--timeout", str(timeout), "--out", str(out), *extra]
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        log = out.with_suffix(".log")
        with open(log, "wb") as f:
            p = self.lab.popen(self.cns, cmd, stdout=f, stderr=subprocess.STDOUT)
            try:
                p.wait(timeout + 60)
            except subprocess.TimeoutExpired:
                self.lab.stop(p)
        self.lab.procs.remove(p)
        if not out.exists():
            raise RuntimeError(f"storm client wrote nothing (exit {p.returncode}):\n"
                               + log.read_text(errors="replace")[-3000:])
        return json.loads(out.read_text())

    def run_check(self, storm_json: Path, sink: Path | None) -> dict:
        cmd = [PY, str(HERE / "check.py"), str(storm_json), "--server", SERVER,
               "--http-port", str(HTTP_PORT), "--src", CLIENT]
        if sink:
            cmd += ["--sink", str(sink)]
        r = self.lab.ns_exec(self.cns, *cmd, check=False, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"check failed: {r.stderr[-3000:]}")
        return json.loads(r.stdout)

    # -- drops: the UDP MIB of each namespace, the kernel's backlog -----------------
    def udp_mib(self) -> dict:
        out = {}
        for role, ns in (("server", self.sns), ("client", self.cns)):
            r = self.lab.ns_exec(ns, "cat", "/proc/net/snmp", check=False, timeout=10)
            rows = [l.split()[1:] for l in r.stdout.splitlines() if l.startswith("Udp:")]
            if len(rows) >= 2:
                out[role] = {k: int(v) for k, v in zip(rows[0], rows[1])}
        out["softnet_dropped"] = softnet_dropped()
        return out

    # -- process facts --------------------------------------------------------------
    @staticmethod
    def rss_peak_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0


def softnet_dropped() -> int:
    """Packets the kernel dropped from its per-CPU input backlog (all CPUs,
    the whole machine: netdev_max_backlog overflows; veth lands there)."""
    try:
        return sum(int(l.split()[1], 16) for l in open("/proc/net/softnet_stat"))
    except (OSError, IndexError, ValueError):
        return 0


def mib_delta(a: dict, b: dict) -> dict:
    keys = ("InDatagrams", "NoPorts", "InErrors", "RcvbufErrors", "SndbufErrors")
    out = {role: {k: b[role][k] - a[role][k] for k in keys if k in b[role]}
           for role in ("server", "client") if role in a and role in b}
    out["softnet_dropped"] = b["softnet_dropped"] - a["softnet_dropped"]
    return out


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(st[st.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return out


class Proc:
    """A server process started in a namespace, waited for until `ready(log)`."""

    def __init__(self, world: World, name: str, cmd: list[str], ready, cpu: str | None,
                 timeout: float = 60.0, env: dict | None = None):
        self.world, self.name = world, name
        self.logfile = world.work / f"{name}.log"
        if cpu is not None:
            cmd = ["taskset", "-c", cpu, *cmd]
        with open(self.logfile, "ab") as f:
            self.proc = world.lab.popen(world.sns, cmd, stdout=f, stderr=subprocess.STDOUT,
                                        env=env)
        deadline = time.monotonic() + timeout
        while not ready(self):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after {timeout:g} s:\n{self.tail()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc in self.world.lab.procs:
            rc = self.world.lab.stop(self.proc, timeout=timeout)
            self.world.lab.procs.remove(self.proc)
            return rc
        return self.proc.returncode


def listening(world: World, port: int, udp: bool = False) -> bool:
    r = world.lab.ns_exec(world.sns, "ss", "-Hlun" if udp else "-Hltn", f"sport = :{port}",
                          check=False, timeout=10)
    return bool(r.stdout.strip())


def start_netbootd(world: World, cpu: str | None, extra_toml: str = "",
                   hooks: bool = True, src: str | None = None
                   ) -> tuple[Proc, Proc | None, Path, Path]:
    """netbootd serve --mode full on the server end, its discover kernel and
    initrd the generated files, hooks to a sink.  `src`: a directory holding
    another netbootd package (e.g. `git archive REV netbootd iso_builder`),
    put first on PYTHONPATH - an A/B of two versions in one run.
    (daemon, sink, state, sink file)."""
    state = world.work / "state"
    state.mkdir(exist_ok=True)
    sink_file = world.work / "hooks.jsonl"
    sink_file.unlink(missing_ok=True)          # one trial's hooks, not the last one's too
    sink = None
    if hooks:
        sink = Proc(world, "sink", [PY, str(HERE / "sink.py"), "--port", str(SINK_PORT),
                                    "--out", str(sink_file)], lambda p: "sink ready" in p.text(),
                    None)
    conf = state / "storm.toml"
    files = world.work / "files"
    conf.write_text(
        f"{extra_toml}\n"
        f'[boot]\ndiscover_kernel = "{files / "vmlinuz"}"\n'
        f'discover_initrd = "{files / "initrd.img"}"\n'
        f'files_root = "{files}"\n'
        + (f'[hooks]\nwebhooks = ["http://127.0.0.1:{SINK_PORT}/hook"]\n' if hooks else "")
        + f'[[networks]]\nname = "storm"\nsubnet = "10.77.0.0/{PREFIX}"\n'
        f'ranges = ["{POOL_FIRST}-{POOL_LAST}"]\n')
    nb = Proc(world, "netbootd", [NETBOOTD, "serve", "--config", str(conf), "--mode", "full",
                                  "--interface", world.sif, "--state-dir", str(state)],
              lambda p: "netbootd ready" in p.text() and listening(world, HTTP_PORT), cpu,
              env=dict(os.environ, PYTHONPATH=src) if src else None)
    return nb, sink, state, sink_file


DNSMASQ_BOOT = "#!ipxe\nkernel http://{s}:{p}/files/vmlinuz initrd=initrd.img console=ttyS0\n" \
               "initrd http://{s}:{p}/files/initrd.img\nboot\n"


def start_peer(world: World, cpu: str | None, hosts: int) -> list[Proc]:
    """dnsmasq (DHCP + TFTP: the same pool, the same boot files, iPXE gets
    a boot script URL) and nginx (1 worker, sendfile on) serving the same
    files and a static boot script naming them."""
    d = world.work / "peer"
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o777)
    www = d / "www"
    (www / "boot").mkdir(parents=True, exist_ok=True)
    (www / "boot" / "storm.ipxe").write_text(DNSMASQ_BOOT.format(s=SERVER, p=HTTP_PORT))
    for p in (www, www / "boot"):
        os.chmod(p, 0o755)
    os.chmod(www / "boot" / "storm.ipxe", 0o644)
    dns = Proc(world, "dnsmasq", [
        DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
        f"--interface={world.sif}", "--bind-interfaces", "--log-facility=-", "--no-ping",
        f"--dhcp-range={POOL_FIRST},{POOL_LAST},255.255.0.0,3600",
        f"--dhcp-lease-max={max(1000, 4 * hosts)}", f"--dhcp-leasefile={d / 'dnsmasq.leases'}",
        f"--pid-file={d / 'dnsmasq.pid'}",
        "--dhcp-userclass=set:ipxe,iPXE", "--dhcp-match=set:efi64,option:client-arch,7",
        "--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi", "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
        f"--dhcp-boot=tag:ipxe,http://{SERVER}:{HTTP_PORT}/boot/storm.ipxe",
        "--enable-tftp", f"--tftp-root={world.work / 'tftp'}", f"--tftp-max={max(50, 2 * hosts)}"],
        lambda p: listening(world, 67, udp=True) and listening(world, 69, udp=True), cpu)
    conf = d / "nginx.conf"
    temp = "\n".join(f"    {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi",
                                                                "uwsgi", "scgi"))
    conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile 16384;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    access_log {d}/access.log;
{temp}
    server {{
        listen {SERVER}:{HTTP_PORT} backlog=4096;
        location /files/ {{ alias {world.work / 'files'}/; }}
        location /boot/ {{ alias {www / 'boot'}/; }}
    }}
}}
""")
    try:
        ngx = Proc(world, "nginx", [NGINX, "-c", str(conf), "-e", str(d / "nginx-error.log")],
                   lambda p: listening(world, HTTP_PORT), cpu)
    except Exception:
        dns.stop()
        raise
    return [dns, ngx]
