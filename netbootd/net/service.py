"""The one wiring module: config + reactor -> MultiService.

Everything that binds a socket or owns a thread is built here and started and
stopped by the service tree, so SIGTERM gives a clean shutdown: listeners
close first, then pending lease writes are committed, then the store closes.
"""
from __future__ import annotations

import ipaddress
import logging
from collections import Counter

import glob
import os
import sys

from twisted.application import service
from twisted.internet import defer, task, threads

from ..codec.dhcp_options import PXE_PORT, SERVER_PORT
from ..config import Config
from ..policy.dhcp_engine import DhcpEngine, EngineSettings, Ingress
from .. import __version__
from ..runtime.gcpace import GcPacer
from .hooks import Hooks
from .metrics import Metrics
from ..policy.leases import LeaseTable, int2ip, ip2int
from ..policy.plan import plan_networks
from ..policy.boot import Renderer
from ..registry.hosts import Registry
from ..writes import TrimEvents, event
from ..store.sqlite import Store, is_write_fault
from ..auth import admin_token as secrets
from . import interfaces
from .commit import GroupCommitter, dropped_events, restore_memory
from .dhcp import DhcpProtocol
from .probe import IcmpProber
from .udp import UdpEndpoint

log = logging.getLogger("netbootd")


class Core(service.Service):
    """What every protocol shares: store, registry, group commit.  Started
    first and stopped last, so pending writes are committed after every
    listener has closed."""
    name = "core"

    def __init__(self, cfg: Config, reactor, store: Store):
        self.cfg = cfg
        self.reactor = reactor
        self.store = store
        self.registry: Registry | None = None
        self.committer: GroupCommitter | None = None
        self.leases: LeaseTable | None = None     # set by the DHCP service
        self.ifaces: list[interfaces.IfAddr] = []
        self.started = 0.0
        self._observers: list = []
        self._trim = None

    def observe(self, fn) -> None:
        """fn(writes) runs on the reactor thread after each committed batch
        (DNS zone, metrics, event hooks)."""
        self._observers.append(fn)

    def _dropped(self, dropped: list) -> None:
        """Writes the store could not take (net/commit.py): memory is set back
        to the store, and each drop is an event in a later batch."""
        restore_memory(dropped, self.registry, self.leases)
        self.committer.submit(dropped_events(dropped, self.reactor.seconds()))

    def _committed(self, writes: list) -> None:
        for fn in self._observers:
            try:
                fn(writes)
            except Exception:
                log.exception("observer %r failed", fn)

    def startService(self) -> None:
        self.ifaces = interfaces.resolve(self.cfg.interfaces)
        hc = self.cfg.hosts
        self.registry = Registry(self.store.load_hosts(), seen_max=hc.seen_max,
                                 seen_ttl=hc.seen_ttl, new_per_source_pps=hc.new_per_source_pps,
                                 new_total_pps=hc.new_total_pps)
        self.started = self.reactor.seconds()
        self.committer = GroupCommitter(self.reactor, self.store.apply,
                                        self.cfg.dhcp.commit_window_ms / 1000.0,
                                        on_committed=self._committed,
                                        is_write_fault=is_write_fault, reread=self.store.stored,
                                        on_dropped=self._dropped)
        self._trim = task.LoopingCall(self.committer.submit, [TrimEvents()])
        self._trim.clock = self.reactor
        self._trim.start(600, now=False)
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._trim is not None and self._trim.running:
            self._trim.stop()
        if self.committer is not None:
            yield self.committer.drain()
            self.committer.stop()
        self.store.close()

    def pools(self) -> list[dict]:
        """Every served network with its pool usage (API / status page)."""
        if self.leases is None:
            return []
        now = self.reactor.seconds()
        out = []
        for name, st in self.leases.nets.items():
            n = st.network
            used, size = self.leases.usage(name, now)
            out.append({"name": name, "subnet": str(n.subnet),
                        "ranges": [f"{int2ip(lo)}-{int2ip(hi)}" for lo, hi in n.ranges],
                        "router": n.router, "dns": list(n.dns), "domain": n.domain,
                        "lease_time": n.lease_time, "interface": n.interface,
                        "size": size, "used": used})
        return out

    def transfers(self) -> list[dict]:
        """Transfers under way (TFTP and HTTP files), for the status page."""
        out = []
        tftp = self.parent.getServiceNamed("tftp") if self.parent else None
        if tftp is not None and tftp.server is not None:
            for x in list(tftp.server.transfers.values()):
                out.append({"proto": "tftp", "client": x.addr[0], "file": x.filename,
                            "bytes": x.session.bytes_acked, "size": x.session.source.size,
                            "started": x.started_at})
        http = self.parent.getServiceNamed("http") if self.parent else None
        if http is not None and http.app is not None:
            out.extend(http.app.active_transfers())
        return out

    def ip_to_mac(self, ip: str) -> str | None:
        if self.leases is not None:
            lease = self.leases.holder(ip2int(ip), self.reactor.seconds())
            if lease is not None and lease.mac:
                return lease.mac
        for h in self.registry.hosts.values():
            if h.ip == ip:
                return h.mac
        return None


class DhcpService(service.Service):
    name = "dhcp"

    def __init__(self, core: Core):
        self.core = core
        self.cfg = core.cfg
        self.reactor = core.reactor
        self.counters: Counter = Counter()
        self.ports = []
        self.prober = None
        self.engine = None

    def startService(self) -> None:
        cfg, core = self.cfg, self.core
        ifaces = core.ifaces
        nets, attached = plan_networks(cfg, ifaces)
        leases = LeaseTable(nets, cfg.dhcp.rate_limit.unknown_share)
        stored = core.store.load_leases()
        for lease in stored:
            leases.load(lease)
        core.leases = leases
        rl = cfg.dhcp.rate_limit
        settings = EngineSettings(cfg.mode, cfg.dhcp.lease_time, cfg.dhcp.offer_hold,
                                  cfg.dhcp.decline_probation, cfg.dhcp.authoritative,
                                  cfg.dhcp.probe, rl.per_mac_pps, rl.new_clients_per_interface_pps)
        self.engine = DhcpEngine(settings, nets, leases, core.registry, cfg.boot,
                                 self.counters)
        if cfg.dhcp.probe and cfg.mode == "full":
            self.prober = IcmpProber(self.reactor, cfg.dhcp.probe_timeout_ms / 1000.0)
        ports = [SERVER_PORT, PXE_PORT]
        for ifa in ifaces:
            for port in ports:
                ing = Ingress(ifa.name, ifa.ip, attached[ifa.name], port)
                proto = DhcpProtocol(self.engine, ing, core.committer, self.reactor, self.prober)
                self.ports.append(UdpEndpoint(self.reactor, interfaces.udp_socket(ifa.name, port),
                                              proto))
        for n in nets:
            log.info("dhcp: network %s %s pool=%d lease=%ss", n.name, n.subnet, n.pool_size,
                     n.lease_time)
        log.info("dhcp: %s mode on %s; loaded %d leases, %d hosts", cfg.mode,
                 ",".join(f"{i.name}={i.ip}/{i.prefix}" for i in ifaces), len(stored),
                 len(core.registry.hosts))
        super().startService()

    def stopService(self):
        super().stopService()
        for p in self.ports:
            p.close()
        self.ports = []
        if self.prober is not None:
            self.prober.close()
        log.info("dhcp stopped: %s", dict(sorted(self.counters.items())))


def newest_kernel() -> str | None:
    found = sorted(glob.glob("/boot/vmlinuz-*"), key=os.path.getmtime)
    return found[-1] if found else None


def http_limits(h, clock, counters):
    """HTTP connection caps from [http], the total derived from the fd limit
    (fdlimit.py) so DHCP, DNS, TFTP and SQLite keep descriptors."""
    from ..runtime.fdlimit import http_connection_cap, soft_limit
    from .http.limits import ConnectionLimits
    return ConnectionLimits(clock, total=http_connection_cap(soft_limit(), h.max_connections),
                            per_source=h.max_per_source, request_timeout=h.request_timeout,
                            idle_timeout=h.idle_timeout, counters=counters)


class HttpService(service.Service):
    name = "http"

    def __init__(self, core: Core):
        self.core = core
        self.port = None
        self.app = None
        self.metrics = None
        self.limits = None

    def startService(self) -> None:
        from .http.app import HttpApp
        from .http.site import build_site
        from .http.views import lease_lookup
        cfg, core = self.core.cfg, self.core
        b = cfg.boot
        token, created = secrets.ensure_token(cfg.state_dir)
        if created:
            # Shown once; afterwards only root can read it from the state dir.
            print(f"netbootd: admin token (shown once, stored in "
                  f"{secrets.token_path(cfg.state_dir)}): {token}", file=sys.stderr)
        root = files_root(cfg)
        os.makedirs(root, exist_ok=True)
        generated: dict[str, str] = dict(ipxe_binaries(cfg))
        if b.discover_initrd:
            generated["netbootd/discover.img"] = b.discover_initrd
            kernel = b.discover_kernel or newest_kernel()
            if kernel:
                generated["netbootd/vmlinuz"] = kernel
        else:
            self._build_discover(os.path.join(cfg.state_dir, "discover.img"), generated)
        self.app = HttpApp(
            registry=core.registry, submit=core.committer.submit,
            renderer=Renderer(b.templates_dir, b.discover_cmdline), clock=core.reactor,
            token=token, default_profile=b.default_profile, http_base=b.http_base,
            roots=[root], generated=generated, ip_to_mac=core.ip_to_mac, store=core.store,
            version=__version__, mode=cfg.mode, started=core.started, pools=core.pools,
            transfers=core.transfers, max_streams=cfg.http.max_streams,
            max_streams_per_source=cfg.http.max_streams_per_source,
            leases=lease_lookup(lambda: core.leases, core.reactor))
        self.limits = limits = http_limits(cfg.http, core.reactor, self.app.counters)
        self.port = core.reactor.listenTCP(b.http_port,
                                           build_site(self.app, self.metrics, limits),
                                           interface=b.http_listen)
        log.info("http: listening on %s:%d (files: %s; at most %d connections, %d per source)",
                 b.http_listen, self.port.getHost().port, root, limits.total, limits.per_source)
        super().startService()

    def _build_discover(self, path: str, generated: dict) -> None:
        """Build the discover initrd off the reactor thread (DESIGN rule 8),
        only when its inputs changed; its kernel is served with it, since the
        modules inside must match."""
        try:
            from iso_builder.initrd import ensure_discover_initrd
        except ImportError as e:
            log.warning("discover initrd: iso_builder unavailable (%s)", e)
            return

        def done(info):
            generated["netbootd/discover.img"] = info["path"]
            if info.get("vmlinuz"):
                generated["netbootd/vmlinuz"] = info["vmlinuz"]
            log.info("discover initrd: %s (%d bytes, %s) for kernel %s", info["path"],
                     info["size"], "unchanged" if info.get("reused") else "built",
                     info.get("vmlinuz"))

        def failed(f):
            log.error("discover initrd: cannot build it (%s); unassigned hosts cannot boot the "
                      "agent until it exists", f.getErrorMessage())
        threads.deferToThread(ensure_discover_initrd, path).addCallbacks(done, failed)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()


def files_root(cfg: Config) -> str:
    return cfg.boot.files_root or os.path.join(cfg.state_dir, "files")


# iPXE binaries looked for in boot.ipxe_dir (Debian: /usr/lib/ipxe).
IPXE_NAMES = ("undionly.kpxe", "undionly.kkpxe", "ipxe.pxe", "ipxe.efi", "snponly.efi",
              "ipxe.lkrn")


def ipxe_binaries(cfg: Config) -> dict[str, str]:
    """name -> real path of the iPXE binaries (and configured boot files)
    found in boot.ipxe_dir.  Debian's are symlinks into /boot and qemu/, i.e.
    out of the directory: they are trusted here, once, by name, instead of
    serving the directory as a root (whose symlinks would rightly be refused)."""
    b = cfg.boot
    names = set(IPXE_NAMES) | {n for n in (b.bios, b.uefi_x64, b.uefi_x86, b.uefi_arm64) if n}
    found = {}
    for name in sorted(names):
        path = os.path.realpath(os.path.join(b.ipxe_dir, name))
        if os.path.isfile(path):
            found[name] = path
    return found


class TftpService(service.Service):
    """TFTP on every served interface's address (replies leave from the
    address the client asked, even on a multi-homed host)."""
    name = "tftp"

    def __init__(self, core: Core):
        self.core = core
        self.server = None

    def startService(self) -> None:
        from .tftp import TftpServer
        core, b = self.core, self.core.cfg.boot
        root = files_root(core.cfg)
        os.makedirs(root, exist_ok=True)
        # Boot files are small: served from memory (read once, here, at start).
        generated = {}
        for name, path in ipxe_binaries(core.cfg).items():
            with open(path, "rb") as f:
                generated[name] = f.read()
        self.server = TftpServer(core.reactor, [root], generated=generated, on_event=self._event)
        for ifa in core.ifaces:
            self.server.listen(b.tftp_port, interface=ifa.name, ip=ifa.ip)
        log.info("tftp: port %d on %s (root %s; iPXE: %s)", b.tftp_port,
                 ",".join(i.ip for i in core.ifaces), root, ", ".join(sorted(generated)) or "none")
        super().startService()

    def _event(self, ev: dict) -> None:
        ip = ev.get("client")
        mac = self.core.ip_to_mac(ip) if ip else None
        detail = {k: v for k, v in ev.items() if k != "outcome"}
        self.core.committer.submit([event(self.core.reactor.seconds(), mac,
                                          "tftp." + str(ev.get("outcome")), **detail)])

    def stopService(self):
        super().stopService()
        if self.server is not None:
            self.server.stop()
            log.info("tftp stopped: %s", dict(sorted(self.server.counters.items())))


class DnsService(service.Service):
    """Authoritative DNS for the hosts netbootd serves (policy/zone.py),
    following every committed lease/host write (Core.observe)."""
    name = "dns"

    def __init__(self, core: Core):
        self.core = core
        self.server = None

    def startService(self) -> None:
        from twisted.internet.error import CannotListenError

        from ..policy.zone import Zone
        from .dns import DnsServer
        core, dc = self.core, self.core.cfg.dns
        if not dc.enabled:
            return super().startService()
        nets = [st.network for st in core.leases.nets.values()] if core.leases else []
        ifnets = [ipaddress.IPv4Network(f"{i.ip}/{i.prefix}", strict=False) for i in core.ifaces]
        ips = [i.ip for i in core.ifaces] if dc.listen == "interfaces" else [dc.listen]
        now = core.reactor.seconds()
        zone = Zone(dc.domain, [n.subnet for n in nets], ips, ttl=dc.ttl, serial=int(now),
                    reservations=[r for n in nets for r in n.reservations])
        zone.load(core.leases.by_addr.values() if core.leases else (),
                  core.registry.hosts.values(), now)
        core.observe(lambda writes: zone.apply(writes, core.reactor.seconds()))
        self.server = DnsServer(core.reactor, zone,
                                served_subnets={*ifnets, *(n.subnet for n in nets)},
                                forwarders=dc.forwarders, rate_limit=dc.rate_limit_qps)
        for ip in ips:
            try:
                self.server.listen(dc.port, ip)
            except (OSError, CannotListenError) as e:
                log.error("dns: cannot listen on %s:%d (%s); no DNS there", ip, dc.port, e)
        log.info("dns: %s on %s port %d, %d names", dc.domain, ",".join(ips), dc.port,
                 len(zone.names()))
        super().startService()

    def stopService(self):
        super().stopService()
        if self.server is not None:
            log.info("dns stopped: %s", dict(sorted(self.server.counters.items())))
            return self.server.stop()


class Ready(service.Service):
    """Logs the readiness line once every listener is up (tests wait for it)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def startService(self) -> None:
        log.info("netbootd ready: mode=%s", self.cfg.mode)
        super().startService()


class GcService(service.Service):
    """Paced garbage collection (gcpace.py) for the daemon's process; started
    after the services have loaded the store's state (so that state is frozen
    at once) and before the daemon says it is ready."""
    name = "gc"

    def __init__(self, pacer: GcPacer):
        self.pacer = pacer

    def startService(self) -> None:
        self.pacer.start()
        super().startService()

    def stopService(self):
        super().stopService()
        self.pacer.stop()


def makeService(cfg: Config, reactor) -> service.MultiService:
    top = service.MultiService()
    core = Core(cfg, reactor, Store(cfg.state_dir, cfg.dhcp.sync))
    core.setServiceParent(top)
    dhcp = DhcpService(core)
    dhcp.setServiceParent(top)
    DnsService(core).setServiceParent(top)      # after DHCP: it reads core.leases
    http = HttpService(core)
    http.setServiceParent(top)
    tftp = TftpService(core)
    tftp.setServiceParent(top)
    hooks = Hooks(reactor, cfg.hooks)
    if hooks.enabled:
        hooks.setServiceParent(top)
        core.observe(hooks.observe)
    pacer = GcPacer(reactor)
    if cfg.metrics.enabled:
        http.metrics = Metrics(core, dhcp, tftp, http, hooks if hooks.enabled else None,
                               boot_timeout=cfg.metrics.boot_timeout, gc=pacer)
        core.observe(http.metrics.observe)
    GcService(pacer).setServiceParent(top)
    Ready(cfg).setServiceParent(top)
    return top
