"""TFTP on every served interface's address (replies leave from the address
the client asked, even on a multi-homed host)."""
from __future__ import annotations

import logging
import os

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service

from ...writes import event
from ..bootfiles import files_root, ipxe_binaries
from ..metrics import protocol_families
from .core import Core

log = logging.getLogger("netbootd")


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
        generated = {}
        for name, path in ipxe_binaries(core.cfg).items():
            with open(path, "rb") as f:
                generated[name] = f.read()
        self.server = server = TftpServer(core.reactor, [root], generated=generated,
                                          on_event=self._event)
        for ifa in core.ifaces:
            self.attach_interface(ifa)
        log.info("tftp: port %d on %s (root %s; iPXE: %s)", b.tftp_port,
                 ",".join(i.ip for i in core.ifaces), root, ", ".join(sorted(generated)) or "none")
        core.expose(transfers=lambda: transfer_rows(server),
                    metrics=lambda: metric_families(server))
        super().startService()

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
