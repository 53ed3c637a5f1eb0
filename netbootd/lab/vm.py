"""`netbootd lab`: boot a real firmware in qemu against netbootd, privately.

Topology (../shared/LAB.md):

    [srv ns] netbootd --mode full, 10.80.0.1/24 on a veth
        |  veth
    [wire ns] bridge (STP off) -- tap -- qemu (SeaBIOS + iPXE ROM, or OVMF)
        |  veth (proxy mode only)
    [dhcp ns] dnsmasq handing out addresses only (proxy mode)

Every address lives only inside these namespaces; everything is torn down
on every exit path.  The boot timeline is read from netbootd's store as it
grows, so what the lab prints is exactly what `netbootd hosts show` keeps.
Used by the CLI and by the e2e tests (tests/e2e).
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ..store import DatabaseError, open_readonly
from . import netns as labnet

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
SERVER_IP = "10.80.0.1"
DHCP_PEER_IP = "10.80.0.2"
GUEST_MAC = "52:54:00:77:00:10"
GUEST_UUID = "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010"
FIRMWARES = ("bios", "uefi", "uefi-http")


class LabFailed(RuntimeError):
    pass


def missing_parts(firmware: str = "bios", mode: str = "full") -> str | None:
    """None when a lab can run here, else what is missing (for skips)."""
    reason = labnet.available()
    if reason:
        return reason
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 is not installed (Debian: qemu-system-x86)"
    if firmware != "bios" and not os.path.exists(OVMF_CODE):
        return f"{OVMF_CODE} is missing (Debian: ovmf)"
    if mode == "proxy" and shutil.which("dnsmasq") is None:
        return "dnsmasq is not installed (Debian: dnsmasq-base)"
    return None


@dataclass
class LabOptions:
    firmware: str = "bios"            # bios | uefi | uefi-http
    mode: str = "full"                # full | proxy (beside dnsmasq)
    nic: str = "virtio-net-pci"       # or e1000
    memory: int = 512
    timeout: float = 300.0
    state_dir: str | None = None
    mac: str = GUEST_MAC
    uuid: str = GUEST_UUID
    extra_config: str = ""            # appended to netbootd's TOML config
    echo: bool = True                 # print the timeline as it happens
    # IPv6 on the server's interface, so netbootd's RA quench answers iPXE's
    # router solicitations (off: iPXE waits ~13 s for a router at each boot).
    ipv6: bool = True


@dataclass
class LabResult:
    registered: bool
    elapsed: float
    timeline: list[dict] = field(default_factory=list)
    state: str | None = None
    console: str = ""


class LabBoot:
    def __init__(self, opts: LabOptions, out=None):
        if opts.firmware not in FIRMWARES:
            raise ValueError(f"firmware must be one of {FIRMWARES}")
        self.o = opts
        self.out = out or (lambda s: print(s, flush=True))
        self.lab = labnet.Lab()
        self.workdir = tempfile.mkdtemp(prefix="netbootd-lab-")
        self.state_dir = opts.state_dir or os.path.join(self.workdir, "state")
        self.daemon: subprocess.Popen | None = None
        self.qemu: subprocess.Popen | None = None
        self._console = bytearray()
        self._console_lock = threading.Lock()
        self._console_log = open(os.path.join(self.workdir, "console.log"), "wb")
        self._seen = 0
        self.t0 = 0.0

    # -- context ----------------------------------------------------------
    def __enter__(self) -> "LabBoot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for p in (self.qemu, self.daemon):
            if p is not None:
                self.lab.stop(p)
        self.lab.close()
        self._console_log.close()
        if self.o.state_dir is None and os.environ.get("NETBOOTD_LAB_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- set-up -----------------------------------------------------------
    def _config(self) -> str:
        # ttyS0 last: the agent's console lines reach qemu's serial (stdout).
        return (f'mode = "{self.o.mode}"\n'
                '[boot]\ndiscover_cmdline = "console=tty0 console=ttyS0"\n'
                "[dhcp]\nlease_time = 600\n"
                + ("" if self.o.mode == "proxy" else
                   '[[networks]]\nname = "lab"\nsubnet = "10.80.0.0/24"\n'
                   'ranges = ["10.80.0.100-10.80.0.199"]\n')
                + self.o.extra_config)

    def start(self) -> None:
        lab = self.lab
        srv = lab.namespace("srv")
        wire = lab.namespace("wire")
        srv_if, wire_srv = lab.link(srv, f"{SERVER_IP}/24", wire, None)
        tap = lab.tap(wire)
        ports = [wire_srv, tap]
        if self.o.mode == "proxy":
            dhcp_ns = lab.namespace("dhcp")
            dhcp_if, wire_dhcp = lab.link(dhcp_ns, f"{DHCP_PEER_IP}/24", wire, None)
            ports.append(wire_dhcp)
        lab.bridge(wire, ports)
        if self.o.ipv6:
            for key, val in (("accept_dad", "0"), ("disable_ipv6", "0")):
                lab.ns_exec(srv, "sysctl", "-qw", f"net.ipv6.conf.{srv_if}.{key}={val}")
        if self.o.mode == "proxy":
            leasefile = os.path.join(self.workdir, "dnsmasq.leases")
            lab.popen(dhcp_ns, ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                                "--port=0", f"--interface={dhcp_if}", "--bind-interfaces",
                                "--dhcp-range=10.80.0.100,10.80.0.199,255.255.255.0,600",
                                f"--dhcp-leasefile={leasefile}", "--log-dhcp",
                                f"--pid-file={os.path.join(self.workdir, 'dnsmasq.pid')}"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.makedirs(self.state_dir, exist_ok=True)
        cfg = os.path.join(self.workdir, "netbootd.toml")
        with open(cfg, "w") as f:
            f.write(self._config())
        self.daemon = lab.popen(srv, [sys.executable, "-m", "netbootd", "serve", "--config", cfg,
                                      "--interface", srv_if, "--state-dir", self.state_dir],
                                stdout=open(os.path.join(self.workdir, "netbootd.log"), "wb"),
                                stderr=subprocess.STDOUT)
        self._wait_ready()
        self.t0 = time.monotonic()
        self.qemu = lab.popen(wire, self._qemu_cmd(tap), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._pump_console, daemon=True).start()

    def _wait_ready(self, timeout: float = 60) -> None:
        log = os.path.join(self.workdir, "netbootd.log")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with open(log, "rb") as f:
                text = f.read()
            # The discover initrd is built off the reactor after "ready": a
            # firmware that asks for it sooner gets a 404 and retries ~10 s
            # later, which hides what the boot itself costs.
            if b"netbootd ready" in text and b"discover initrd:" in text:
                return
            if self.daemon.poll() is not None:
                raise LabFailed("netbootd exited:\n" + text.decode(errors="replace")[-3000:])
            time.sleep(0.1)
        raise LabFailed("netbootd did not become ready in time")

    def _qemu_cmd(self, tap: str) -> list[str]:
        o = self.o
        nic = f"{o.nic},netdev=n0,mac={o.mac}"
        cmd = ["qemu-system-x86_64", "-m", str(o.memory), "-nographic", "-no-reboot",
               "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
               "-smbios", f"type=1,uuid={o.uuid}"]
        if o.firmware == "bios":
            cmd += ["-machine", "pc", "-device", nic, "-boot", "n"]
        else:
            vars_copy = os.path.join(self.workdir, "OVMF_VARS.fd")
            shutil.copyfile(OVMF_VARS, vars_copy)
            # No option ROM: EDK2's own PXE / HTTP Boot client runs (LAB.md).
            cmd += ["-machine", "q35", "-device", nic + ",romfile=",
                    "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
            if o.firmware == "uefi-http":
                cmd += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
                        "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]
        return cmd

    # -- console ----------------------------------------------------------
    def _pump_console(self) -> None:
        fd = self.qemu.stdout.fileno()
        while True:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return
                self._console_log.write(chunk)
                self._console_log.flush()
                with self._console_lock:
                    self._console += chunk
            elif self.qemu.poll() is not None:
                return

    def console_text(self) -> str:
        with self._console_lock:
            return self._console.decode("utf-8", "replace")

    def wait_console(self, needle: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in self.console_text():
                return True
            if self.qemu.poll() is not None:
                return needle in self.console_text()
            time.sleep(0.1)
        return False

    def type_console(self, text: str, per_char_timeout: float = 5.0) -> None:
        """Type into the firmware console one byte at a time, waiting for
        each echo (LAB.md: firmware consoles drop fast input)."""
        for ch in text:
            before = len(self._console)
            self.qemu.stdin.write(ch.encode())
            self.qemu.stdin.flush()
            end = time.monotonic() + per_char_timeout
            while len(self._console) == before and time.monotonic() < end:
                time.sleep(0.02)

    # -- timeline -----------------------------------------------------------
    def timeline(self) -> list[dict]:
        return self._read(lambda st: st.timeline(self.o.mac), [])

    def host_state(self) -> str | None:
        h = self._read(lambda st: st.host(self.o.mac), None)
        return h.state.value if h is not None else None

    def _read(self, fn, default):
        """A read of the daemon's store while it runs (read-only, never
        created here); `default` until it exists or when it is busy."""
        st = open_readonly(self.state_dir)
        if st is None:
            return default
        try:
            return fn(st)
        except DatabaseError:
            return default
        finally:
            st.close()

    def _echo_new(self, start: float) -> None:
        rows = self.timeline()
        for r in rows[self._seen:]:
            self.out(f"  +{r['ts'] - start:6.1f}s  {r['kind']:<16} {r['detail']}")
        self._seen = len(rows)

    def wait_registered(self, timeout: float | None = None) -> LabResult:
        """Wait until the booted agent has called netbootd back."""
        timeout = timeout or self.o.timeout
        start_wall = time.time()
        end = time.monotonic() + timeout
        state = None
        while time.monotonic() < end:
            if self.o.echo:
                self._echo_new(start_wall)
            state = self.host_state()
            if state in ("registered", "idle", "active"):
                break
            if self.qemu.poll() is not None:
                break
            time.sleep(0.5)
        if self.o.echo:
            self._echo_new(start_wall)
        return LabResult(state in ("registered", "idle", "active"),
                         time.monotonic() - self.t0, self.timeline(), state, self.console_text())


def main(args) -> int:
    """CLI entry: `netbootd lab [--uefi | --http-boot] [--proxy] [--nic e1000]`."""
    firmware = "uefi-http" if args.http_boot else ("uefi" if args.uefi else "bios")
    mode = "proxy" if args.proxy else "full"
    why = missing_parts(firmware, mode)
    if why:
        print(f"netbootd lab: cannot run here: {why}", file=sys.stderr)
        return 2
    opts = LabOptions(firmware=firmware, mode=mode, nic=args.nic, timeout=args.timeout,
                      ipv6=os.environ.get("NETBOOTD_LAB_IPV6", "1") != "0")
    print(f"netbootd lab: booting a {firmware} VM ({args.nic}) against netbootd in {mode} mode "
          f"(TCG: 30-90 s)...", flush=True)
    with LabBoot(opts) as lab:
        try:
            lab.start()
        except (LabFailed, labnet.LabError) as e:
            print(f"netbootd lab: {e}", file=sys.stderr)
            return 1
        res = lab.wait_registered()
        marker = [ln for ln in res.console.splitlines() if "NETBOOTD-AGENT" in ln]
        print(f"netbootd lab: host {opts.mac} is {res.state or 'unknown'} after "
              f"{res.elapsed:.1f}s" + (f"; agent said: {marker[-1].strip()}" if marker else ""))
        if not res.registered:
            print("netbootd lab: the host did not call back; last console lines:\n"
                  + "\n".join(res.console.splitlines()[-25:]), file=sys.stderr)
            return 1
    return 0


