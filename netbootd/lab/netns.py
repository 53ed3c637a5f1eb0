"""Private lab networks: network namespaces, veth pairs and bridges.

Used by the interop/e2e tests, the benchmarks and (later) ``netbootd lab``.
Every name carries a per-lab unique prefix so two labs can run at once, and
``Lab.close()`` removes everything it made (namespaces take their veth ends
with them).  Nothing here touches the host's real interfaces: every address
lives inside a namespace this module created.

Requires root (CAP_NET_ADMIN) and iproute2.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field


class LabError(RuntimeError):
    pass


def available() -> str | None:
    """Return None when labs can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = f"nbprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


@dataclass
class Lab:
    """A set of namespaces joined by veth pairs, torn down by close().

    Typical use::

        with Lab() as lab:
            srv = lab.namespace("srv")
            cli = lab.namespace("cli")
            lab.link(srv, "10.77.0.1/16", cli, "10.77.0.2/16")
            proc = lab.popen(srv, ["netbootd", "serve", ...])
    """

    prefix: str = field(default_factory=lambda: "nb" + uuid.uuid4().hex[:6])
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    _links: int = 0

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- topology -------------------------------------------------------
    def namespace(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.ns_exec(name, "ip", "link", "set", "lo", "up")
        # IPv6 off: no router solicitations or DAD chatter in the lab.
        self.ns_exec(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", check=False)
        self.ns_exec(name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", check=False)
        return name

    def link(self, ns_a: str, addr_a: str | None, ns_b: str, addr_b: str | None,
             mtu: int | None = None) -> tuple[str, str]:
        """Join two namespaces with a veth pair; returns (ifname_a, ifname_b).

        Interface names are short (IFNAMSIZ is 16) and unique per lab.
        """
        self._links += 1
        a = f"{self.prefix}a{self._links}"
        b = f"{self.prefix}b{self._links}"
        _run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        _run("ip", "link", "set", a, "netns", ns_a)
        _run("ip", "link", "set", b, "netns", ns_b)
        for ns, ifname, addr in ((ns_a, a, addr_a), (ns_b, b, addr_b)):
            if mtu:
                self.ns_exec(ns, "ip", "link", "set", ifname, "mtu", str(mtu))
            if addr:
                self.ns_exec(ns, "ip", "addr", "add", addr, "dev", ifname)
            self.ns_exec(ns, "ip", "link", "set", ifname, "up")
        return a, b

    def bridge(self, ns: str, ports: list[str]) -> str:
        """Create a bridge (STP off) in `ns` enslaving `ports`; returns its name."""
        self._links += 1
        br = f"{self.prefix}br{self._links}"
        self.ns_exec(ns, "ip", "link", "add", br, "type", "bridge", "stp_state", "0",
                     "forward_delay", "0")
        for p in ports:
            self.ns_exec(ns, "ip", "link", "set", p, "master", br)
        self.ns_exec(ns, "ip", "link", "set", br, "up")
        return br

    def tap(self, ns: str) -> str:
        """A tap device in `ns` (for qemu's -netdev tap,ifname=...)."""
        self._links += 1
        name = f"{self.prefix}t{self._links}"
        self.ns_exec(ns, "ip", "tuntap", "add", name, "mode", "tap")
        self.ns_exec(ns, "ip", "link", "set", name, "up")
        return name

    # -- processes ------------------------------------------------------
    def ns_exec(self, ns: str, *args: str, check: bool = True,
                timeout: float | None = 60) -> subprocess.CompletedProcess:
        r = subprocess.run(["ip", "netns", "exec", ns, *args], capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise LabError(f"[{ns}] {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def popen(self, ns: str, args: list[str], **kw) -> subprocess.Popen:
        """Start a process inside `ns`; it is killed (by PID) on close()."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        p = subprocess.Popen(["ip", "netns", "exec", ns, *args], start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Signal a process we started and wait for it; escalate to SIGKILL."""
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        return p.returncode

    def close(self) -> None:
        for p in reversed(self.procs):
            try:
                self.stop(p, signal.SIGTERM, timeout=5)
            except Exception:
                pass
        self.procs.clear()
        for ns in reversed(self.namespaces):
            # Kill anything still living in the namespace that we started
            # (e.g. a daemonised child), then delete it.
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            for _ in range(50):
                if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
        self.namespaces.clear()
