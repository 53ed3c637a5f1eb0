"""The /api route table and its one dispatcher.

Each `Route` is (method, path pattern, handler, auth).  Dispatch, the 404 /
405 (with Allow) / 401 answers and the OpenAPI document's paths
(openapi.py) all come from the same table, so a route cannot exist in one
and not the other.

auth: "none"  a read, open to anyone who can reach the port (CONTRACT-api.md);
      "agent" the discover initrd's callbacks: no token (the initrd has none),
              narrow, new hosts rate-limited by the handler;
      "admin" needs `Authorization: Bearer <admin token>`, and, on the plain-http
              port, a peer [http] admin_over_plain allows (admin_plain_refusal).

A handler is called as handler(request, **path_params) and returns a JSON
value (200), a Deferred of one (replied when it fires: after a commit or a
read off the reactor thread), or `Streaming` when it writes the response
itself (the event stream).  It raises errors.ApiError for every refusal;
`_reply_error` is the one place those become responses."""
from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Callable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, server

from .common import authorized, client_ip, count, error, send_json
from .errors import ApiError, Forbidden, MethodNotAllowed, NotFound, Unauthorized

log = logging.getLogger("netbootd.http")

AUTH_LEVELS = ("none", "agent", "admin")
Streaming = server.NOT_DONE_YET


@dataclass(frozen=True)
class Route:
    method: str                  # GET, POST, PATCH, DELETE (HEAD follows GET)
    pattern: str                 # "/api/v1/hosts/{mac}": {name} matches one segment
    handler: Callable
    auth: str = "none"

    def __post_init__(self):
        if self.auth not in AUTH_LEVELS:
            raise ValueError(f"{self.method} {self.pattern}: auth {self.auth!r}")

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(s for s in self.pattern.split("/") if s)


def _match(segments: tuple[str, ...], path: list[str]) -> dict[str, str] | None:
    if len(segments) != len(path):
        return None
    params = {}
    for want, got in zip(segments, path):
        if want.startswith("{") and want.endswith("}"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


def is_loopback(peer: str | None) -> bool:
    """127.0.0.0/8, ::1 and ::ffff:127.x.y.z; anything else (None, a name) is not."""
    try:
        a = ipaddress.ip_address((peer or "").split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(a, "ipv4_mapped", None)
    return (mapped or a).is_loopback


def admin_plain_refusal(policy: str, peer: str | None, https_url: str | None,
                        local: str | None = None) -> str | None:
    """Why an admin call (or one carrying a Bearer token) that arrived over plain
    http from `peer` is refused under [http] admin_over_plain = `policy`, or None:
    "allow" lets it through, "loopback" only from this machine, "refuse" never.
    This machine: a loopback peer, or a peer that is the address the call came in
    on (`local`: only the machine itself connects from it - the CLI with --server
    http://<its own address>).  The reason names the https URL to use instead
    (None: no TLS configured)."""
    if policy == "allow":
        return None
    if policy == "loopback" and (is_loopback(peer) or (peer is not None and peer == local)):
        return None
    who = "from this machine only" if policy == "loopback" else "never"
    use = f"use {https_url}" if https_url else "call from the daemon's machine (127.0.0.1)"
    return (f"the admin token is accepted over plain http {who} ([http] admin_over_plain = "
            f"\"{policy}\"): {use}; a token already sent this way crossed the network in "
            "cleartext (netbootd token rotate)")


def _reply_error(request, e: ApiError) -> bytes:
    for k, v in e.headers.items():
        request.setHeader(k, v)
    return error(request, e.status, e.reason)


class Router(resource.Resource):
    """Mounted at /api: every request below it is matched against the table."""
    isLeaf = True

    def __init__(self, routes: list[Route], token: str, admin_over_plain: str = "allow",
                 tls_port: int | None = None):
        super().__init__()
        self.routes = list(routes)
        self.token = token
        self.admin_over_plain, self.tls_port = admin_over_plain, tls_port
        seen = set()
        for r in self.routes:
            if (r.method, r.segments) in seen:
                raise ValueError(f"route {r.method} {r.pattern} is listed twice")
            seen.add((r.method, r.segments))
        # Routes without parameters by (method, path): the agents' polls and the
        # status page's reads skip the scan of the table.
        self._static = {(r.method, r.segments): r for r in self.routes
                        if not any(s.startswith("{") for s in r.segments)}

    def resolve(self, method: str, path: list[str]) -> tuple[Route, dict]:
        """The route and its path parameters, or NotFound / MethodNotAllowed."""
        hit = self._static.get(("GET" if method == "HEAD" else method, tuple(path)))
        if hit is not None:
            return hit, {}
        matched = [(r, p) for r in self.routes
                   for p in [_match(r.segments, path)] if p is not None]
        if not matched:
            raise NotFound("no such route")
        want = "GET" if method == "HEAD" else method
        for r, params in matched:
            if r.method == want:
                return r, params
        raise MethodNotAllowed(method, sorted({r.method for r, _ in matched}))

    def render(self, request):
        method = request.method.decode("ascii", "replace")
        try:
            path = ["api"] + [p.decode("utf-8") for p in request.postpath if p]
        except UnicodeDecodeError:
            return error(request, 404, "no such route")
        try:
            route, params = self.resolve(method, path)
            if self.admin_over_plain != "allow" and not request.isSecure():
                self._plain_check(request, route)
            if route.auth == "admin" and not authorized(request, self.token):
                raise Unauthorized()
            result = route.handler(request, **params)
        except ApiError as e:
            return _reply_error(request, e)
        if result is Streaming:
            return result
        if isinstance(result, defer.Deferred):
            result.addBoth(self._finish, request)
            return server.NOT_DONE_YET
        return send_json(request, 200, result)

    def _plain_check(self, request, route: Route) -> None:
        """Forbidden for an admin route, or any call with a Bearer token, over plain
        http from a peer admin_over_plain does not allow (agent calls carry
        "Agent ...", reads none: they pass)."""
        hdr = request.getHeader(b"authorization") or b""
        if route.auth != "admin" and not hdr.strip().lower().startswith(b"bearer"):
            return
        peer, local = client_ip(request), request.getHost().host
        url = None
        if self.tls_port is not None:
            host = f"[{local}]" if ":" in local else local
            url = f"https://{host}:{self.tls_port}{request.uri.decode('ascii', 'replace')}"
        why = admin_plain_refusal(self.admin_over_plain, peer, url, local)
        if why is not None:
            count(request, "http.admin_plain_refused")
            log.warning("http: %s %s from %s: admin call over plain http refused "
                        "(admin_over_plain = %s)", request.method.decode("ascii", "replace"),
                        request.path[:80].decode("ascii", "replace"), peer,
                        self.admin_over_plain)
            raise Forbidden(why)

    def _finish(self, result, request) -> None:
        if request.finished or request._disconnected:
            return
        if isinstance(result, Failure):
            if result.check(ApiError):
                body = _reply_error(request, result.value)
            else:
                log.error("api: %s %s failed: %s", request.method.decode("ascii", "replace"),
                          request.path[:80], result.getErrorMessage())
                body = error(request, 500, "internal error")
        else:
            body = send_json(request, 200, result)
        request.write(body)
        request.finish()
