"""TFTP on every served interface's address (replies leave from the address
the client asked, even on a multi-homed host)."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service

from ...writes import event
from ..bootfiles import discover_media, files_root, ipxe_binaries
from ..metrics import protocol_families
from .core import Core

log = logging.getLogger("netbootd")

# The discover kernel and initrd, by the names HTTP serves them under
# /files/ (policy/boot.py): the UEFI net medium's GRUB loads them over TFTP.
DISCOVER_NAMES = ("netbootd/vmlinuz", "netbootd/discover.img")


class TftpService(service.Service):
    name = "tftp"

    def __init__(self, core: Core):
        self.core = core
        self.server = None
        self.by_iface: dict = {}        # interface name -> its listener

    def startService(self) -> None:
        from ..tftp import TftpServer
        core, b = self.core, self.core.cfg.boot
        root = files_root(core.cfg)
        os.makedirs(root, exist_ok=True)
        # Boot files are small: served from memory (read once, here, at start).
        own = {}
        for name, path in ipxe_binaries(core.cfg).items():
            with open(path, "rb") as f:
                own[name] = f.read()
        generated = Generated(own, self._discover_paths())
        self.server = server = TftpServer(core.reactor, [root], generated=generated,
                                          on_event=self._event, total=b.tftp_max_transfers,
                                          first_total=b.tftp_max_unconfirmed)
        for ifa in core.ifaces:
            self.attach_interface(ifa)
        log.info("tftp: port %d on %s (root %s; iPXE: %s)", b.tftp_port,
                 ",".join(i.ip for i in core.ifaces), root, ", ".join(sorted(generated)) or "none")
        core.expose(transfers=lambda: transfer_rows(server),
                    metrics=lambda: metric_families(server))
        super().startService()

    def _discover_paths(self) -> dict:
        """name -> path of the discover kernel and initrd, the same dict
        HTTP serves /files/netbootd/... from (filled when the initrd build
        ends; one build for both), or, without the HTTP service, our own."""
        http = None
        if self.parent is not None:
            try:
                http = self.parent.getServiceNamed("http")
            except KeyError:
                pass
        app = getattr(http, "app", None)
        if app is not None:
            return app.generated
        paths: dict = {}
        discover_media(self.core.cfg, paths)
        return paths

    def attach_interface(self, ifa) -> None:
        """Listen on ifa's address (bound to it); a listener it had is closed
        first (an address change).  Transfers under way keep their sockets."""
        self.detach_interface(ifa.name)
        self.by_iface[ifa.name] = self.server.listen(self.core.cfg.boot.tftp_port,
                                                     interface=ifa.name, ip=ifa.ip)

    def detach_interface(self, name: str) -> None:
        listener = self.by_iface.pop(name, None)
        if listener is not None:
            listener.close()
            self.server.listeners.remove(listener)

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


class Generated(Mapping):
    """The names TFTP serves from no root: the iPXE binaries (bytes) and
    DISCOVER_NAMES, looked up live in ``paths`` (name -> file path), the
    dict the discover initrd's build fills in when it ends."""

    def __init__(self, own: dict, paths: Mapping):
        self.own = own
        self.paths = paths

    def __getitem__(self, name):
        if name in self.own:
            return self.own[name]
        if name in DISCOVER_NAMES:
            return self.paths[name]            # KeyError while not built yet
        raise KeyError(name)

    def __contains__(self, name) -> bool:
        return name in self.own or (name in DISCOVER_NAMES and name in self.paths)

    def __iter__(self):
        yield from self.own
        yield from (n for n in DISCOVER_NAMES if n in self.paths)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def transfer_rows(server) -> list[dict]:
    """The TFTP transfers under way, for the status page (started: wall clock)."""
    return [{"proto": "tftp", "client": x.addr[0], "file": x.filename,
             "bytes": x.session.bytes_acked, "size": x.session.source.size,
             "started": x.started_at}
            for x in list(server.transfers.values())]


def metric_families(server):
    """The server's counters (transfer.<outcome>, refused.<reason>, rx/tx,
    drop, the rest) and the transfers under way."""
    own = {"transfer": CounterMetricFamily("netbootd_tftp_transfers",
                                           "TFTP transfers ended, by outcome",
                                           labels=["outcome"]),
           "refused": CounterMetricFamily("netbootd_tftp_refused",
                                          "TFTP requests refused, by reason", labels=["reason"])}
    return [*protocol_families("tftp", server.counters, own),
            GaugeMetricFamily("netbootd_tftp_transfers_active", "TFTP transfers under way",
                              value=len(server.transfers))]
