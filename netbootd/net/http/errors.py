"""Typed API errors, mapped to JSON replies in one place (`reply`).

Handlers raise instead of returning hand-made error bodies, so every error
has the contract's shape `{"error": reason, "status": code}` and the headers
its status needs (Allow on 405, WWW-Authenticate on 401, Retry-After on 429:
RFC 9110 §15.5.6, RFC 6750 §3, RFC 6585 §4).  A leaf module: common.py's
body parser raises these too."""
from __future__ import annotations


class ApiError(Exception):
    status = 500

    def __init__(self, reason: str, headers: dict[bytes, bytes] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self, reason: str = "missing or bad bearer token"):
        super().__init__(reason, {b"www-authenticate": b'Bearer realm="netbootd"'})


class Forbidden(ApiError):
    status = 403


class Refusal(ApiError):
    """A refusal whose status the registry chose (registry/agent.Refused)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason, {b"retry-after": b"1"} if status == 429 else None)
        self.status = status


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405

    def __init__(self, method: str, allowed: list[str]):
        super().__init__(f"method {method} not allowed here",
                         {b"allow": ", ".join(allowed).encode()})


class Conflict(ApiError):
    status = 409


class TooLarge(ApiError):
    status = 413


class TooMany(ApiError):
    status = 429

    def __init__(self, reason: str, retry_after: int = 1):
        super().__init__(reason, {b"retry-after": str(retry_after).encode()})


class Unavailable(ApiError):
    status = 503
