"""The one client of the daemon's JSON API, used by every command that talks to it.

Reads need no token (the read routes are open on the admin listener, see
docs/CONTRACT-api.md); changes carry the admin token read from the state dir.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from .. import config as config_mod
from .common import effective_config, print_json


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


def error_of(reply) -> str:
    """The API's reason in a reply ({"error": ...}), or the reply itself."""
    if isinstance(reply, dict) and "error" in reply:
        return str(reply["error"])
    return json.dumps(reply, default=str)[:200]


def admin_call(args, method: str, path: str, body: dict | None = None,
               what: str = "request"):
    """A call with the admin token for a command (args: --server, --state-dir,
    --config); the reply, or None after printing `netbootd: WHAT refused
    (STATUS): reason` on stderr (the command then exits 1)."""
    code, reply = ApiClient(effective_config(args), args.server).change(method, path, body)
    if not 200 <= code < 300:
        print(f"netbootd: {what} refused ({code}): {error_of(reply)}", file=sys.stderr)
        return None
    return reply


def admin_command(args, method: str, path: str, body: dict | None, what: str,
                  human) -> int:
    """A whole admin command: the call, then the reply as JSON (--json) or
    `human(reply)`; the exit status (1 when refused)."""
    reply = admin_call(args, method, path, body, what)
    if reply is None:
        return 1
    print_json(reply) if args.json else print(human(reply))
    return 0
