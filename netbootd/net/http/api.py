"""/api/v1: the agent's callbacks (unauthenticated, narrow) and the admin
routes (bearer token on every mutating call).  Issue 5 grows this API."""
from __future__ import annotations

import dataclasses
import re

from twisted.web import resource, server

from ...model import normalize_mac
from ...policy.boot import ProfileError, validate_args
from .app import HttpApp
from .common import authorized, client_ip, error, json_body, send_json

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def host_json(h) -> dict:
    d = dataclasses.asdict(h)
    d["state"] = h.state.value
    return d


def _arg(request, body: dict, key: str) -> str | None:
    if key in body:
        v = body[key]
        return v if isinstance(v, str) else None
    raw = request.args.get(key.encode())
    return raw[0].decode("utf-8", "replace") if raw else None


class Api(resource.Resource):
    def __init__(self, app: HttpApp):
        super().__init__()
        v1 = resource.Resource()
        self.putChild(b"v1", v1)
        agent = resource.Resource()
        v1.putChild(b"agent", agent)
        agent.putChild(b"register", AgentRegister(app))
        agent.putChild(b"next", AgentNext(app))
        v1.putChild(b"hosts", Hosts(app))


class AgentRegister(resource.Resource):
    """POST (JSON) or GET (query) {mac, ip, uuid} from the discover agent."""
    isLeaf = True

    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def render_GET(self, request):
        return self.render_POST(request)

    def render_POST(self, request):
        body, err = json_body(request)
        if err:
            return err
        try:
            mac = normalize_mac(_arg(request, body, "mac") or "")
        except ValueError as e:
            return error(request, 400, f"mac: {e}")
        ip = _arg(request, body, "ip") or client_ip(request)
        if ip is not None and not _IP_RE.match(ip):
            return error(request, 400, "ip: not an IPv4 address")
        uuid = (_arg(request, body, "uuid") or "").lower() or None
        if uuid is not None and not _UUID_RE.match(uuid):
            return error(request, 400, "uuid: not a UUID")
        host, writes = self.app.registry.agent_register(mac, ip, uuid, self.app.clock.seconds())
        self.app.counters["api.agent_register"] += 1
        reply = send_json(request, 200, {"mac": mac, "state": host.state.value})

        def done():
            if not request.finished:
                request.write(reply)
                request.finish()
        self.app.commit_then(writes, done)
        return server.NOT_DONE_YET


class AgentNext(resource.Resource):
    isLeaf = True

    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def render_GET(self, request):
        try:
            mac = normalize_mac((request.args.get(b"mac") or [b""])[0].decode("ascii", "replace"))
        except ValueError as e:
            return error(request, 400, f"mac: {e}")
        action, writes = self.app.registry.agent_next(mac, self.app.clock.seconds())
        if writes:
            self.app.submit(writes)
        return send_json(request, 200, {"action": action})


class Hosts(resource.Resource):
    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def render_GET(self, request):
        hosts = sorted(self.app.registry.hosts.values(), key=lambda h: h.first_seen)
        return send_json(request, 200, [host_json(h) for h in hosts])

    def getChild(self, name: bytes, request):
        return HostItem(self.app, name)


class HostItem(resource.Resource):
    isLeaf = True

    def __init__(self, app: HttpApp, name: bytes):
        super().__init__()
        self.app = app
        self.name = name

    def _mac(self, request):
        try:
            return normalize_mac(self.name.decode("ascii")), None
        except (UnicodeDecodeError, ValueError) as e:
            return None, error(request, 400, f"mac: {e}")

    def render_GET(self, request):
        mac, err = self._mac(request)
        if err:
            return err
        h = self.app.registry.get(mac)
        if h is None or request.postpath not in ([], [b""]):
            return error(request, 404, f"no host {mac}")
        return send_json(request, 200, host_json(h))

    def render_POST(self, request):
        if not authorized(request, self.app.token):
            request.setHeader(b"www-authenticate", b'Bearer realm="netbootd"')
            return error(request, 401, "missing or bad bearer token")
        mac, err = self._mac(request)
        if err:
            return err
        if request.postpath != [b"assign"]:
            return error(request, 404, "unknown action")
        body, err = json_body(request)
        if err:
            return err
        profile = body.get("profile")
        if not isinstance(profile, str):
            return error(request, 400, "profile: required")
        try:
            args = validate_args(profile, body.get("args", {}))
        except ProfileError as e:
            return error(request, 400, str(e))
        host, writes = self.app.registry.assign(mac, profile, args, self.app.clock.seconds())
        reply = send_json(request, 200, host_json(host))

        def done():
            if not request.finished:
                request.write(reply)
                request.finish()
        self.app.commit_then(writes, done)
        return server.NOT_DONE_YET
