"""Shared twisted.web plumbing: bounded request bodies, JSON replies, tokens."""
from __future__ import annotations

import json
import logging
import re

from twisted.web import resource, server

from ...auth import admin_token as secrets
from .errors import ApiError, BadRequest, TooLarge

log = logging.getLogger("netbootd.http")

MAX_BODY = 64 * 1024
# The agent's inventory (policy/inventory.MAX_BYTES): a host with hundreds of
# disks and NICs posts more than any admin call.  Only on this path.
BIG_BODY = 256 * 1024
BIG_BODY_PATHS = frozenset({b"/api/v1/agent/inventory"})
# Deeper JSON is refused before parsing: json.loads recurses per level and a
# body of 1,000 '[' raised RecursionError (a 500 page and a traceback per
# request).  No API body is nested more than a few levels.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


class BoundedRequest(server.Request):
    """A request whose body is never buffered past MAX_BODY; the resource
    answers 413 when `body_too_large` is set."""

    body_too_large = False
    big_body = None     # a body the site's admit_body took from the headers (api_capture.py)

    def gotLength(self, length) -> None:
        admit = getattr(getattr(self.channel, "site", None), "admit_body", None)
        if admit is not None and length:
            self.big_body = admit(self, getattr(self.channel, "_command", b""),
                                  getattr(self.channel, "_path", b""), length)
        if self.big_body is not None:
            self.content = self.big_body
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.big_body is not None:
            self.big_body.write(data)
            return
        if self.body_too_large:
            return
        limit = BIG_BODY if self.path in BIG_BODY_PATHS else MAX_BODY
        if self.content.tell() + len(data) > limit:
            self.body_too_large = True
            return
        super().handleContentChunk(data)


def send_json(request, code: int, obj) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(obj, indent=1, default=str).encode() + b"\n"


def error(request, code: int, reason: str) -> bytes:
    return send_json(request, code, {"error": reason, "status": code})


def read_json(request) -> dict:
    """The request's JSON object body ({} when empty); raises TooLarge or
    BadRequest naming what is wrong."""
    if getattr(request, "body_too_large", False):
        limit = BIG_BODY if request.path in BIG_BODY_PATHS else MAX_BODY
        raise TooLarge(f"body larger than {limit} bytes")
    raw = request.content.read() if request.content is not None else b""
    if not raw:
        return {}
    if json_depth(raw) > MAX_JSON_DEPTH:
        count(request, "http.bad_json")
        log.warning("http: %s %s from %s: JSON body nested deeper than %d, refused",
                    request.method.decode("ascii", "replace"), request.path[:80],
                    client_ip(request), MAX_JSON_DEPTH)
        raise BadRequest(f"body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def json_body(request) -> tuple[dict | None, bytes | None]:
    """(body, None) or (None, error reply): read_json for code that renders
    its own replies (the status page test's stand-in API)."""
    try:
        return read_json(request), None
    except ApiError as e:
        return None, error(request, e.status, e.reason)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of [ and { in a JSON text (brackets in strings
    ignored); linear in the body, which MAX_BODY bounds."""
    depth = deepest = 0
    for b in _JSON_STRING.sub(b'""', raw).translate(None, _NOT_BRACKET):
        if b in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def count(request, key: str) -> None:
    """Bump an HTTP counter (app.counters, exported on /metrics) from code
    that holds only the request: the site's limits share that Counter."""
    limits = getattr(getattr(request, "site", None), "limits", None)
    if limits is not None:
        limits.counters[key] += 1


def authorized(request, token: str) -> bool:
    """Authorization: Bearer <token>.  The scheme name is case-insensitive
    (RFC 7235 §2.1: "bearer", "BEARER" are the same scheme); the token is
    compared in constant time by secrets.check."""
    hdr = request.requestHeaders.getRawHeaders(b"authorization")
    scheme, _, cred = (hdr[0] if hdr else b"").strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return secrets.check(token, b"Bearer " + cred.strip())


def client_ip(request) -> str | None:
    peer = request.getClientAddress()
    return getattr(peer, "host", None)


def local_base(request, port_override: str | None = None) -> str:
    """<scheme>://<the address the client reached us on>:<port>, or the
    configured base ([boot] http_base).  A request that came over TLS gets an
    https base: a plain http:// override is not used for it (an agent on a
    pinned medium must not be sent to download its kernel in cleartext)."""
    secure = request.isSecure()
    if port_override and (not secure or port_override.startswith("https://")):
        return port_override
    host = request.getHost()
    return f"{'https' if secure else 'http'}://{host.host}:{host.port}"


class NotFound(resource.Resource):
    """JSON 404 (twisted's default page is HTML, and deprecated)."""
    isLeaf = True

    def render(self, request):
        return error(request, 404, "no such route")
