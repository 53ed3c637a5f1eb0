"""The HTTP site: /boot, /files, /api."""
from __future__ import annotations

import re

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web import http, resource, server

from ...runtime.fdlimit import http_connection_cap, soft_limit
from .api import build_routes
from .app import HttpApp
from .boot import BootScripts
from .common import BoundedRequest, NotFound
from .files import Files
from .limits import ConnectionLimits, LimitedChannel, LimitedSite
from .metrics import MetricsPage
from .routes import Router
from .status import Static, StatusPage


class Root(resource.Resource):
    def getChild(self, name, request):
        return NotFound()


# A query parameter whose name speaks of a credential: its value never reaches
# the access log.  The API refuses tokens outside the Authorization header, but
# a client that sends one anyway must not have it written to disk (log files
# are read by more people than the admin token is meant for).
_SECRET_PARAM = re.compile(
    rb"((?:^|[?&;])[^=&;#]*(?:token|auth|bearer|key|secret|passw)[^=&;#]*=)[^&;#]*", re.I)


# An enrollment token or agent secret anywhere in a URI (auth/enroll.py formats).
_CREDENTIAL = re.compile(rb"\b(nbt1|nba1)\.[A-Za-z0-9._~%-]+")


def redact_uri(uri: bytes) -> bytes:
    return _CREDENTIAL.sub(rb"\1.REDACTED", _SECRET_PARAM.sub(rb"\1REDACTED", uri))


class _Redacted:
    """The request as the access-log formatter sees it: the URI redacted."""

    def __init__(self, request):
        self._request = request
        self.uri = redact_uri(request.uri)

    def __getattr__(self, name):
        return getattr(self._request, name)


def _needs_redaction(uri: bytes) -> bool:
    """Whether either pattern above can match: a secret parameter needs '=',
    a credential its prefix (the regexes run only then)."""
    return b"=" in uri or b"nbt1." in uri or b"nba1." in uri


def _esc(s: bytes) -> str:
    """twisted.web.http._escape, without repr() for plain printable ASCII."""
    if s.isascii() and b'"' not in s and b"\\" not in s:
        t = s.decode("ascii")
        if t.isprintable():
            return t
    return http._escape(s)


def access_log_line(timestamp, request) -> str:
    """twisted's combined log format (http.combinedLogFormatter), the URI
    redacted; the same line, built without a wrapper object, repr() or
    regexes for the plain requests that are most of them (file downloads)."""
    uri = request.uri
    addr = request.getClientAddress()
    if _needs_redaction(uri) or not isinstance(addr, (IPv4Address, IPv6Address)):
        return http.combinedLogFormatter(timestamp, _Redacted(request))
    ip = _esc(addr.host.encode())
    referrer = request.getHeader(b"referer")
    agent = request.getHeader(b"user-agent")
    return (f'"{ip}" - - {timestamp} "{_esc(request.method)} {_esc(uri)} '
            f'{_esc(request.clientproto)}" {request.code:d} {request.sentLength or "-"} '
            f'"{_esc(referrer) if referrer else "-"}" "{_esc(agent) if agent else "-"}"')


# Answered polls of idle agents: 1,000 agents polling every 10 s made ~15% of
# the daemon's poll CPU an access-log line each (bench/agent).  Counted in
# /metrics (api.agent_next) instead; refusals and errors are still logged.
QUIET_PATHS = frozenset({b"/api/v1/agent/next"})


class NetbootSite(LimitedSite, server.Site):
    protocol = LimitedChannel

    def log(self, request):
        if request.code == 200 and request.path in QUIET_PATHS:
            return
        super().log(request)


def build_site(app: HttpApp, metrics=None, limits: ConnectionLimits | None = None) -> server.Site:
    root = Root()
    root.putChild(b"boot", BootScripts(app))
    root.putChild(b"files", Files(app))
    root.putChild(b"api", Router(build_routes(app), app.token, app.admin_over_plain,
                                 app.tls_port if app.tls_cert else None))
    root.putChild(b"", StatusPage(app.registry, app, app.reads, app.leases))
    root.putChild(b"static", Static())
    if metrics is not None:
        root.putChild(b"metrics", MetricsPage(metrics))
    site = NetbootSite(root, logFormatter=access_log_line)
    site.limits = limits or ConnectionLimits(
        app.clock, total=http_connection_cap(soft_limit()), per_source=32,
        request_timeout=10.0, idle_timeout=30.0, counters=app.counters)
    site.requestFactory = BoundedRequest
    site.admit_body = getattr(app, "admit_body", None)   # capture chunks (api_capture.py)
    site.displayTracebacks = False
    site.noisy = False
    return site
