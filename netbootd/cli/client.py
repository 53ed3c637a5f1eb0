"""The one client of the daemon's JSON API, used by every command that talks to it.

Reads need no token (the read routes are open on the admin listener, see
docs/CONTRACT-api.md); changes carry the admin token read from the state dir.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from .. import config as config_mod


class Unreachable(OSError):
    """No daemon answered at the base URL (the caller may read the store instead)."""


def request(url: str, method: str = "GET", body: dict | None = None,
            token: str | None = None, timeout: float = 30) -> tuple[int, dict | list]:
    """One JSON request; (status, decoded body).  Connection errors (OSError)
    propagate: callers decide whether that is fatal or means "no daemon"."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, {"error": e.reason}


def base_url(cfg: config_mod.Config, server: str | None) -> str:
    return server or f"http://127.0.0.1:{cfg.boot.http_port}"


class ApiClient:
    """The daemon at `base`.  `get` raises Unreachable when nothing answers
    (a read may fall back to the store); `change` exits with a message, since
    a change needs the daemon."""

    def __init__(self, cfg: config_mod.Config, server: str | None = None):
        self.cfg = cfg
        self.base = base_url(cfg, server)

    def get(self, path: str, **params) -> tuple[int, dict | list]:
        q = {k: v for k, v in params.items() if v is not None}
        url = self.base + path + ("?" + urllib.parse.urlencode(q) if q else "")
        try:
            return request(url, timeout=10)
        except OSError as e:
            raise Unreachable(str(e)) from e

    def change(self, method: str, path: str, body: dict | None = None
               ) -> tuple[int, dict | list]:
        """A mutating call with the admin token from the state dir."""
        from ..auth import admin_token
        try:
            with open(admin_token.token_path(self.cfg.state_dir), encoding="ascii") as f:
                token = f.read().strip()
        except OSError as e:
            raise SystemExit(f"netbootd: cannot read the admin token: {e}")
        try:
            return request(self.base + path, method, body, token)
        except OSError as e:
            raise SystemExit(f"netbootd: cannot reach the daemon at {self.base}: {e}")
