"""Shared twisted.web plumbing: bounded request bodies, JSON replies, tokens."""
from __future__ import annotations

import json

from twisted.web import server

from ... import secrets

MAX_BODY = 64 * 1024


class BoundedRequest(server.Request):
    """A request whose body is never buffered past MAX_BODY; the resource
    answers 413 when `body_too_large` is set."""

    body_too_large = False

    def handleContentChunk(self, data: bytes) -> None:
        if self.body_too_large:
            return
        if self.content.tell() + len(data) > MAX_BODY:
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


def json_body(request) -> tuple[dict | None, bytes | None]:
    """(body, None) or (None, error reply)."""
    if getattr(request, "body_too_large", False):
        return None, error(request, 413, f"body larger than {MAX_BODY} bytes")
    raw = request.content.read() if request.content is not None else b""
    if not raw:
        return {}, None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        return None, error(request, 400, f"body is not JSON: {e}")
    if not isinstance(body, dict):
        return None, error(request, 400, "body must be a JSON object")
    return body, None


def authorized(request, token: str) -> bool:
    hdr = request.requestHeaders.getRawHeaders(b"authorization")
    return secrets.check(token, hdr[0] if hdr else None)


def client_ip(request) -> str | None:
    peer = request.getClientAddress()
    return getattr(peer, "host", None)


def local_base(request, port_override: str | None = None) -> str:
    """http://<the address the client reached us on>:<port>."""
    host = request.getHost()
    return port_override or f"http://{host.host}:{host.port}"
