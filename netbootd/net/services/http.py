"""HTTP: boot scripts, files, the agent and admin API, the status page and
/metrics, behind connection caps sized from the fd limit."""
from __future__ import annotations

import logging
import os

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service
from twisted.internet import defer, ssl
from twisted.protocols.tls import TLSMemoryBIOFactory

from ... import __version__
from ...auth import admin_token, tls
from ...policy.boot import Renderer
from ...runtime.fdlimit import http_connection_cap, soft_limit
from ..bootfiles import discover_media, files_root, ipxe_binaries
from ..http.limits import ConnectionLimits
from .core import Core

log = logging.getLogger("netbootd")

# HTTP counters about connections, not requests (net/http/limits.py).
CONN_KEYS = frozenset(("http.conn_refused_source", "http.conn_refused_total",
                       "http.conn_evicted", "http.request_timeout", "http.idle_timeout"))


def http_limits(h, clock, counters) -> ConnectionLimits:
    """HTTP connection caps from [http], the total derived from the fd limit
    (fdlimit.py) so DHCP, DNS, TFTP and SQLite keep descriptors."""
    return ConnectionLimits(clock, total=http_connection_cap(soft_limit(), h.max_connections),
                            per_source=h.max_per_source, request_timeout=h.request_timeout,
                            idle_timeout=h.idle_timeout, counters=counters)


class HttpService(service.Service):
    name = "http"

    def __init__(self, core: Core):
        self.core = core
        self.port = None
        self.app = None
        self.metrics = None       # net/metrics.Metrics when [metrics] is enabled
        self.limits = None
        self.tls_port = None
        self.listeners: list[tuple[str, str, int]] = []

    def startService(self) -> None:
        from ..http.app import HttpApp
        from ..http.site import build_site
        from ..http.views import lease_lookup
        cfg, core = self.core.cfg, self.core
        b = cfg.boot
        token, _ = admin_token.ensure_token(cfg.state_dir)   # __main__ shows a new one
        root = files_root(cfg)
        os.makedirs(root, exist_ok=True)
        generated: dict[str, str] = dict(ipxe_binaries(cfg))
        discover_media(cfg, generated)
        self.app = HttpApp(
            registry=core.registry, accounts=core.accounts, agents=core.agents, ring=core.ring,
            state_dir=cfg.state_dir, submit=core.committer.submit,
            renderer=Renderer(b.templates_dir, b.discover_cmdline), clock=core.reactor,
            token=token, default_profile=b.default_profile, http_base=b.http_base,
            tls_cert=cfg.http.tls_cert, tls_port=cfg.http.tls_port,
            admin_over_plain=cfg.http.admin_plain(),
            roots=[root], generated=generated, ip_to_mac=core.ip_to_mac, store=core.store,
            version=__version__, mode=cfg.mode, started=core.started, pools=core.pools,
            transfers=core.transfers, networks=core.networks, max_streams=cfg.http.max_streams,
            max_streams_per_source=cfg.http.max_streams_per_source,
            leases=lease_lookup(lambda: core.leases, core.reactor))
        h = cfg.http
        # Checked before any port opens: a key others can read is refused (TlsError).
        facts = tls.check_pair(h.tls_cert, h.tls_key) if h.tls_cert is not None else None
        self.limits = limits = http_limits(cfg.http, core.reactor, self.app.counters)
        self.port = core.reactor.listenTCP(b.http_port,
                                           build_site(self.app, self.metrics, limits),
                                           interface=b.http_listen)
        log.info("http: listening on %s:%d (files: %s; at most %d connections, %d per source)",
                 b.http_listen, self.port.getHost().port, root, limits.total, limits.per_source)
        self.listeners = [("http", b.http_listen, self.port.getHost().port)]
        if h.tls_cert is not None:
            # The same site (one set of caps for both ports) behind TLS.
            self.tls_port = listen_tls(core.reactor, h.tls_port, self.port.factory,
                                       h.tls_cert, h.tls_key, b.http_listen)
            self.listeners.append(("https", b.http_listen, self.tls_port.getHost().port))
            log.info("https: listening on %s:%d (certificate %s, %s, until %s; pin %s; "
                     "admin token over plain http: %s)",
                     b.http_listen, self.tls_port.getHost().port, h.tls_cert, facts["subject"],
                     facts["not_after"], facts["pin"], h.admin_plain())
        app = self.app
        listeners = self.listeners
        core.expose(transfers=app.active_transfers,
                    metrics=lambda: metric_families(app.counters, limits, app.active, listeners))
        super().startService()

    def stopService(self):
        super().stopService()
        ds = [p.stopListening() for p in (self.tls_port, self.port) if p is not None]
        return defer.gatherResults([d for d in ds if d is not None]) if ds else None


class _TlsFactory(TLSMemoryBIOFactory):
    """TLS around the site; a connection the site refuses at accept (its caps:
    buildProtocol -> None) is closed at once, as on the plain port."""

    def buildProtocol(self, addr):
        inner = self.wrappedFactory.buildProtocol(addr)
        return None if inner is None else self.protocol(self, inner)


def listen_tls(reactor, port: int, site, cert_path: str, key_path: str, interface: str):
    """`site` over TLS (TLS 1.2+, the certificate and key as PEM files) on `port`.
    The transport a request sees is a TLSMemoryBIOProtocol, not a tcp.Server:
    file sending that needs the socket (sendfile) must take the ordinary path."""
    with open(cert_path, "rb") as f:
        cert = f.read()
    with open(key_path, "rb") as f:
        key = f.read()
    # cryptography objects (pyOpenSSL deprecates passing its own X509/PKey)
    opts = ssl.CertificateOptions(privateKey=load_pem_private_key(key, None),
                                  certificate=x509.load_pem_x509_certificate(cert),
                                  raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
    return reactor.listenTCP(port, _TlsFactory(opts, False, site), interface=interface)


def metric_families(counters, limits, active, listeners=()):
    """Requests by type, connections closed by a bound, connections open,
    file transfers under way and the listeners (http, https)."""
    listening = GaugeMetricFamily("netbootd_http_listener", "HTTP listeners (1 each) by "
                                  "scheme, address and port", labels=["scheme", "address", "port"])
    for scheme, address, port in listeners:
        listening.add_metric([scheme, address, str(port)], 1)
    requests = CounterMetricFamily(
        "netbootd_http_requests", "HTTP requests by type (boot script, file, agent "
        "API, refusals)", labels=["type"])
    conns = CounterMetricFamily(
        "netbootd_http_connections_closed", "HTTP connections closed by a bound "
        "(cap per source or in total, eviction, request or idle deadline)",
        labels=["reason"])
    for key, n in sorted(counters.items()):
        if key in CONN_KEYS:
            conns.add_metric([key[5:]], n)
        else:
            requests.add_metric([key[5:] if key.startswith("http.") else key], n)
    return [requests, conns, listening,
            GaugeMetricFamily("netbootd_http_connections_open", "HTTP connections open",
                              value=limits.open),
            GaugeMetricFamily("netbootd_http_transfers_active",
                              "HTTP file transfers under way", value=len(active))]
