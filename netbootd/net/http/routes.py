"""The /api route table and its one dispatcher.

Each `Route` is (method, path pattern, handler, auth).  Dispatch, the 404 /
405 (with Allow) / 401 answers and the OpenAPI document's paths
(openapi.py) all come from the same table, so a route cannot exist in one
and not the other.

auth: "none"  a read, open to anyone who can reach the port (CONTRACT-api.md);
      "agent" the discover initrd's callbacks: no token (the initrd has none),
              narrow, new hosts rate-limited by the handler;
      "admin" needs `Authorization: Bearer <admin token>`.

A handler is called as handler(request, **path_params) and returns a JSON
value (200), a Deferred of one (replied when it fires: after a commit or a
read off the reactor thread), or `Streaming` when it writes the response
itself (the event stream).  It raises errors.ApiError for every refusal;
`_reply_error` is the one place those become responses."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.web import resource, server

from .common import authorized, error, send_json
from .errors import ApiError, MethodNotAllowed, NotFound, Unauthorized

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


def _reply_error(request, e: ApiError) -> bytes:
    for k, v in e.headers.items():
        request.setHeader(k, v)
    return error(request, e.status, e.reason)


class Router(resource.Resource):
    """Mounted at /api: every request below it is matched against the table."""
    isLeaf = True

    def __init__(self, routes: list[Route], token: str):
        super().__init__()
        self.routes = list(routes)
        self.token = token
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
