"""/api/v1 (docs/CONTRACT-api.md): the agent's callbacks (unauthenticated,
narrow) and the admin routes.  Every POST/PATCH/DELETE outside /agent needs
the bearer token; reads are open (read-only without a token).  Database reads
run off the reactor thread; the registry is the in-memory authority."""
from __future__ import annotations

import dataclasses
import re

from twisted.internet import defer
from twisted.web import resource, server

from ...model import arch_name, normalize_mac
from ...policy.boot import ProfileError, validate_args
from ...policy.dhcp_engine import sanitize_hostname
from ...registry.hosts import BadCursor, page, state_counts
from .app import HttpApp
from .common import authorized, client_ip, error, json_body, NotFound, send_json

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_IP_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
MAX_LIMIT = 1000
DEFAULT_PAGE = 100
_STATES = frozenset(("discovered", "registered", "idle", "assigned", "booting", "active",
                     "error", "retired"))


def host_json(h, last_event=None) -> dict:
    d = dataclasses.asdict(h)
    d["state"] = h.state.value
    d["arch_name"] = arch_name(h.arch) if h.arch is not None else None
    d["last_event"] = last_event
    return d


def last_events_of(app: HttpApp, macs: list[str]) -> dict:
    """The newest event of each host on a page (indexed on (mac, id)): one
    page costs `limit` index probes, not a scan of every host's events."""
    out = {}
    for mac in macs:
        ev = app.store_events(None, 1, mac, None, True)
        if ev:
            out[mac] = ev[-1]
    return out


def _int_arg(request, name: str, default: int, hi: int = MAX_LIMIT) -> int:
    raw = request.args.get(name.encode())
    if not raw:
        return default
    try:
        v = int(raw[0])
    except ValueError:
        raise ValueError(f"{name}: not an integer") from None
    if not 0 <= v <= hi:
        raise ValueError(f"{name}: must be 0..{hi}")
    return v


def _str_arg(request, name: str) -> str | None:
    raw = request.args.get(name.encode())
    return raw[0].decode("utf-8", "replace") if raw else None


def _reply_later(request, d: defer.Deferred, code: int = 200):
    """Finish `request` with the JSON the Deferred yields."""
    def ok(obj):
        if not request.finished and not request._disconnected:
            request.write(send_json(request, code, obj))
            request.finish()

    def bad(f):
        if not request.finished and not request._disconnected:
            request.write(error(request, 500, "internal error"))
            request.finish()
    d.addCallbacks(ok, bad)
    return server.NOT_DONE_YET


def _commit_reply(app: HttpApp, request, writes: list, obj, code: int = 200):
    """Reply only after the change is stored (DESIGN durability promise)."""
    body = send_json(request, code, obj)

    def done():
        if not request.finished and not request._disconnected:
            request.write(body)
            request.finish()
    app.commit_then(writes, done)
    return server.NOT_DONE_YET


class _Dir(resource.Resource):
    """An inner node whose unknown children are JSON 404s."""

    def getChild(self, name, request):
        return NotFound()

    def render(self, request):
        return error(request, 404, "no such route")


class Api(_Dir):
    def __init__(self, app: HttpApp):
        super().__init__()
        v1 = _Dir()
        self.putChild(b"v1", v1)
        agent = _Dir()
        v1.putChild(b"agent", agent)
        agent.putChild(b"register", AgentRegister(app))
        agent.putChild(b"next", AgentNext(app))
        v1.putChild(b"hosts", Hosts(app))
        v1.putChild(b"leases", Leases(app))
        v1.putChild(b"networks", Networks(app))
        v1.putChild(b"events", Events(app))
        v1.putChild(b"transfers", Transfers(app))
        v1.putChild(b"status", Status(app))
        from .openapi import OpenApi
        v1.putChild(b"openapi.json", OpenApi())


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def render(self, request):
        # Unknown methods and mutating calls without a token get JSON errors.
        m = request.method.decode("ascii", "replace")
        if not hasattr(self, "render_" + m) or m == "HEAD" and not hasattr(self, "render_GET"):
            request.setHeader(b"allow", ", ".join(sorted(
                a[7:] for a in dir(self) if a.startswith("render_") and a[7:].isupper()
                and a[7:] != "HEAD")).encode())
            return error(request, 405, f"method {m} not allowed here")
        if m in ("POST", "PATCH", "PUT", "DELETE") and getattr(self, "needs_token", True) \
                and not authorized(request, self.app.token):
            request.setHeader(b"www-authenticate", b'Bearer realm="netbootd"')
            return error(request, 401, "missing or bad bearer token")
        return super().render(request)


# -- agent (unauthenticated: the discover initrd has no admin token) ---------
class AgentRegister(_Leaf):
    """POST (JSON) or GET (query) {mac, ip, uuid} from the discover agent."""
    needs_token = False

    def render_GET(self, request):
        return self.render_POST(request)

    def render_POST(self, request):
        body, err = json_body(request)
        if err:
            return err

        bad = [k for k in ("mac", "ip", "uuid") if k in body and not isinstance(body[k], str)]
        if bad:
            return error(request, 400, f"{bad[0]}: must be a string")

        def arg(key):
            return body[key] if key in body else _str_arg(request, key)
        try:
            mac = normalize_mac(arg("mac") or "")
        except ValueError as e:
            return error(request, 400, f"mac: {e}")
        ip = arg("ip") or client_ip(request)
        if ip is not None and not _IP_RE.match(ip):
            return error(request, 400, "ip: not an IPv4 address")
        uuid = (arg("uuid") or "").lower() or None
        if uuid is not None and not _UUID_RE.match(uuid):
            return error(request, 400, "uuid: not a UUID")
        refused = self.app.registry.admit_http(mac, client_ip(request), self.app.clock.seconds())
        if refused:
            self.app.counters["api.agent_new_host_refused"] += 1
            request.setHeader(b"retry-after", b"1")
            return error(request, 429, refused)
        host, writes = self.app.registry.agent_register(mac, ip, uuid, self.app.clock.seconds())
        self.app.counters["api.agent_register"] += 1
        return _commit_reply(self.app, request, writes, {"mac": mac, "state": host.state.value})


class AgentNext(_Leaf):
    needs_token = False

    def render_GET(self, request):
        try:
            mac = normalize_mac(_str_arg(request, "mac") or "")
        except ValueError as e:
            return error(request, 400, f"mac: {e}")
        action, writes = self.app.registry.agent_next(mac, self.app.clock.seconds())
        if writes:
            self.app.submit(writes)
        return send_json(request, 200, {"action": action})


# -- hosts ---------------------------------------------------------------------
class Hosts(_Leaf):
    isLeaf = False

    def render_GET(self, request):
        """A page of hosts (keyset paging on (first_seen, mac)), the cursor of
        the next one and the counts: a list of every host grew to 10 MB under a
        random-MAC flood, and the status page polled it every 2 s."""
        state, arch, q, cursor = (_str_arg(request, k) for k in ("state", "arch", "q",
                                                                  "cursor"))
        if state is not None and state not in _STATES:
            return error(request, 400, f"state: not one of {', '.join(sorted(_STATES))}")
        try:
            limit = _int_arg(request, "limit", DEFAULT_PAGE)
        except ValueError as e:
            return error(request, 400, str(e))
        if limit < 1:
            return error(request, 400, f"limit: must be 1..{MAX_LIMIT}")
        ql = q.lower() if q else None

        def match(h):
            return ((not state or h.state.value == state)
                    and (not arch or str(h.arch) == arch or arch_name(h.arch) == arch)
                    and (not ql or ql in h.mac or ql in (h.hostname or "").lower()
                         or ql in (h.ip or "")))
        reg = self.app.registry
        try:
            hosts, nxt, total = page(reg.hosts.values(), limit, cursor,
                                     match if (state or arch or q) else None)
        except BadCursor as e:
            return error(request, 400, str(e))
        counts = {"hosts": len(reg.hosts), "states": state_counts(reg.hosts.values()),
                  "seen": len(reg.seen)}
        macs = [h.mac for h in hosts]
        d = self.app.read(last_events_of, self.app, macs)
        d.addCallback(lambda last: {"hosts": [host_json(h, last.get(h.mac)) for h in hosts],
                                    "next": nxt, "total": total, "counts": counts})
        return _reply_later(request, d)

    def getChild(self, name: bytes, request):
        return HostItem(self.app, name)


class HostItem(_Leaf):
    ACTIONS = (b"assign", b"approve", b"retire", b"timeline")
    # Methods per sub-route, as in the OpenAPI document.
    METHODS = {None: ("DELETE", "GET", "PATCH"), "assign": ("POST",), "approve": ("POST",),
               "retire": ("POST",), "timeline": ("GET",)}

    def render(self, request):
        path = [p for p in request.postpath if p]
        action = path[0].decode("ascii", "replace") if len(path) == 1 else None
        allowed = self.METHODS.get(action, ())
        m = request.method.decode("ascii", "replace")
        if len(path) <= 1 and allowed and m not in allowed and not (m == "HEAD" and "GET"
                                                                     in allowed):
            request.setHeader(b"allow", ", ".join(allowed).encode())
            return error(request, 405, f"method {m} not allowed here")
        return super().render(request)

    def __init__(self, app: HttpApp, name: bytes):
        super().__init__(app)
        self.name = name

    def _target(self, request):
        """(mac, action, error reply)."""
        try:
            mac = normalize_mac(self.name.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as e:
            return None, None, error(request, 400, f"mac: {e}")
        path = [p for p in request.postpath if p]
        if len(path) > 1 or (path and path[0] not in self.ACTIONS):
            return None, None, error(request, 404, "no such route")
        return mac, (path[0].decode() if path else None), None

    def render_GET(self, request):
        mac, action, err = self._target(request)
        if err:
            return err
        if action not in (None, "timeline"):
            return error(request, 405, f"{action} needs POST")
        h = self.app.registry.get(mac)
        if h is None:
            return error(request, 404, f"no host {mac}")
        try:
            limit = _int_arg(request, "limit", 200)
        except ValueError as e:
            return error(request, 400, str(e))
        d = self.app.read(self.app.store_events, None, limit, mac, None, True)
        if action == "timeline":
            return _reply_later(request, d)
        d.addCallback(lambda tl: dict(host_json(h, tl[-1] if tl else None), timeline=tl))
        return _reply_later(request, d)

    def render_POST(self, request):
        mac, action, err = self._target(request)
        if err:
            return err
        now = self.app.clock.seconds()
        reg = self.app.registry
        if action == "assign":
            body, err = json_body(request)
            if err:
                return err
            extra = sorted(set(body) - {"profile", "args"})
            if extra:
                return error(request, 400, f"{extra[0]}: not a field of an assignment")
            profile = body.get("profile")
            if not isinstance(profile, str):
                return error(request, 400, "profile: required")
            try:
                args = validate_args(profile, body.get("args", {}))
            except ProfileError as e:
                return error(request, 400, str(e))
            host, writes = reg.assign(mac, profile, args, now)
        elif action in ("approve", "retire"):
            if reg.get(mac) is None:
                return error(request, 404, f"no host {mac}")
            if action == "approve" and reg.get(mac).state.value not in ("discovered", "error"):
                return error(request, 409, f"host is {reg.get(mac).state.value}, "
                                           "only discovered hosts can be approved")
            host, writes = getattr(reg, action)(mac, now)
        else:
            return error(request, 405, "POST needs an action: assign, approve or retire")
        return _commit_reply(self.app, request, writes, host_json(host))

    def render_PATCH(self, request):
        mac, action, err = self._target(request)
        if err:
            return err
        if action is not None:
            return error(request, 405, "PATCH applies to the host itself")
        if self.app.registry.get(mac) is None:
            return error(request, 404, f"no host {mac}")
        body, err = json_body(request)
        if err:
            return err
        unknown = set(body) - {"hostname"}
        if unknown:
            return error(request, 400, f"{sorted(unknown)[0]}: not a patchable field")
        if "hostname" not in body:
            return error(request, 400, "nothing to change")
        raw = body["hostname"]
        if raw is not None and not isinstance(raw, str):
            return error(request, 400, "hostname: must be a string or null")
        name = None
        if raw is not None:
            name = sanitize_hostname(raw.encode("utf-8", "replace"))
            if not raw or name != raw.lower():
                return error(request, 400, f"hostname: {raw!r} is not a valid DNS name "
                                           f"(letters, digits, '-', dots; e.g. {name!r})")
        host, writes = self.app.registry.set_hostname(mac, name, self.app.clock.seconds())
        return _commit_reply(self.app, request, writes, host_json(host))

    def render_DELETE(self, request):
        mac, action, err = self._target(request)
        if err:
            return err
        if action is not None:
            return error(request, 405, "DELETE applies to the host itself")
        writes = self.app.registry.delete(mac, self.app.clock.seconds())
        if not writes:
            return error(request, 404, f"no host {mac}")
        return _commit_reply(self.app, request, writes, {"deleted": mac})


# -- leases, networks, events, transfers, status --------------------------------
class Leases(_Leaf):
    def render_GET(self, request):
        network, state = _str_arg(request, "network"), _str_arg(request, "state")
        d = self.app.read(self.app.store_leases)

        def filt(rows):
            return [r for r in rows if (not network or r["network"] == network)
                    and (not state or r["state"] == state)]
        return _reply_later(request, d.addCallback(filt))


class Networks(_Leaf):
    def render_GET(self, request):
        return send_json(request, 200, self.app.pools())


class Transfers(_Leaf):
    def render_GET(self, request):
        return send_json(request, 200, self.app.transfers())


class Events(_Leaf):
    isLeaf = False

    def getChild(self, name: bytes, request):
        if name == b"stream":
            from .stream import EventStream
            return EventStream(self.app)
        return self if name == b"" else NotFound()

    def render_GET(self, request):
        try:
            after = _int_arg(request, "after", 0, hi=2 ** 62)
            limit = _int_arg(request, "limit", 200)
        except ValueError as e:
            return error(request, 400, str(e))
        mac = _str_arg(request, "mac")
        if mac is not None:
            try:
                mac = normalize_mac(mac)
            except ValueError as e:
                return error(request, 400, f"mac: {e}")
        d = self.app.read(self.app.store_events, after, limit, mac, _str_arg(request, "kind"),
                          after == 0 and not mac)
        return _reply_later(request, d)


class Status(_Leaf):
    def render_GET(self, request):
        app = self.app
        counts: dict[str, int] = {}
        for h in app.registry.hosts.values():
            counts[h.state.value] = counts.get(h.state.value, 0) + 1
        d = app.read(app.store_events, 0, 50, None, None, True)
        d.addCallback(lambda ev: {
            "version": app.version, "mode": app.mode, "started": app.started,
            "now": app.clock.seconds(), "hosts": counts, "pools": app.pools(),
            "transfers": app.transfers(), "events": ev})
        return _reply_later(request, d)
