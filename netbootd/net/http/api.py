"""/api/v1 (docs/CONTRACT-api.md): the handlers and the route table.

ROUTES is the one list of API routes: routes.Router dispatches from it and
openapi.document builds the document's paths from it.  Each handler class
is given only what it uses; `build_routes` binds the table to instances.
Database reads run off the reactor thread; the registry is the in-memory
authority; nothing is acknowledged before it is stored."""
from __future__ import annotations

import dataclasses

from ...events import catalog_json
from ...model import arch_name
from ...policy.boot import ProfileError, validate_args
from ...registry.hosts import BadCursor, page, state_counts
from . import validate as v
from .common import client_ip, read_json
from .errors import BadRequest, Conflict, NotFound, TooMany
from .openapi import document
from .routes import Route
from .stream import EventStreams
from .views import hosts_json, host_json, status_json

DEFAULT_PAGE = 100
TIMELINE = 200


class AgentApi:
    """The discover initrd's callbacks: no token (it has none); a call that
    would make a new host is limited per source (registry.admit_http)."""

    def __init__(self, registry, clock, counters, committed, submit):
        self.registry, self.clock, self.counters = registry, clock, counters
        self.committed, self.submit = committed, submit

    def register(self, request):
        """POST (JSON) or GET (query) {mac, ip, uuid}."""
        body = read_json(request)
        bad = [k for k in ("mac", "ip", "uuid") if k in body and not isinstance(body[k], str)]
        if bad:
            raise BadRequest(f"{bad[0]}: must be a string")

        def arg(key):
            return body[key] if key in body else v.str_arg(request, key)
        mac = v.mac(arg("mac") or "")
        ip = v.ipv4(arg("ip") or client_ip(request))
        uuid = v.uuid(arg("uuid"))
        refused = self.registry.admit_http(mac, client_ip(request), self.clock.seconds())
        if refused:
            self.counters["api.agent_new_host_refused"] += 1
            raise TooMany(refused)
        host, writes = self.registry.agent_register(mac, ip, uuid, self.clock.seconds())
        self.counters["api.agent_register"] += 1
        return self.committed(writes, {"mac": mac, "state": host.state.value})

    def next(self, request):
        mac = v.mac(v.str_arg(request, "mac") or "")
        action, writes = self.registry.agent_next(mac, self.clock.seconds())
        if writes:
            self.submit(writes)
        return {"action": action}


class HostsApi:
    """Hosts: paged list, one host with its timeline, the admin actions."""

    def __init__(self, registry, clock, committed, reads, leases):
        self.registry, self.clock, self.committed = registry, clock, committed
        self.reads, self.leases = reads, leases

    def list(self, request):
        """A page of hosts (keyset paging on (first_seen, mac)), the cursor of
        the next one and the counts: a list of every host grew to 10 MB under a
        random-MAC flood, and the status page polled it every 2 s."""
        state = v.state(v.str_arg(request, "state"))
        arch, q, cursor = (v.str_arg(request, k) for k in ("arch", "q", "cursor"))
        limit = v.int_arg(request, "limit", DEFAULT_PAGE, lo=1)
        reg = self.registry
        match = self._matcher(state, arch, q) if (state or arch or q) else None
        try:
            hosts, nxt, total = page(reg.hosts.values(), limit, cursor, match)
        except BadCursor as e:
            raise BadRequest(str(e)) from None
        counts = {"hosts": len(reg.hosts), "states": state_counts(reg.hosts.values()),
                  "seen": len(reg.seen)}
        macs = [h.mac for h in hosts]
        leases = self.leases(macs)
        return self.reads.last_events(macs).addCallback(lambda last: {
            "hosts": hosts_json(hosts, last, leases), "next": nxt, "total": total,
            "counts": counts})

    def _matcher(self, state, arch, q):
        ql = q.lower() if q else None
        # q matches what the views show: the lease's address and name too.
        shown = self.leases() if q else {}

        def match(h):
            view = host_json(h, None, shown.get(h.mac))
            return ((not state or h.state.value == state)
                    and (not arch or str(h.arch) == arch or arch_name(h.arch) == arch)
                    and (not ql or ql in h.mac or ql in (view["hostname"] or "").lower()
                         or ql in (view["ip"] or "")))
        return match

    def _host(self, mac: str):
        h = self.registry.get(mac)
        if h is None:
            raise NotFound(f"no host {mac}")
        return h

    def _view(self, h, last_event=None) -> dict:
        return host_json(h, last_event, self.leases([h.mac]).get(h.mac))

    def get(self, request, mac):
        h = self._host(v.mac(mac))
        limit = v.int_arg(request, "limit", TIMELINE)
        return self.reads.events(None, limit, h.mac, None, True).addCallback(
            lambda tl: dict(self._view(h, tl[-1] if tl else None), timeline=tl))

    def timeline(self, request, mac):
        h = self._host(v.mac(mac))
        return self.reads.events(None, v.int_arg(request, "limit", TIMELINE), h.mac, None, True)

    def assign(self, request, mac):
        mac = v.mac(mac)
        body = read_json(request)
        extra = sorted(set(body) - {"profile", "args"})
        if extra:
            raise BadRequest(f"{extra[0]}: not a field of an assignment")
        profile = body.get("profile")
        if not isinstance(profile, str):
            raise BadRequest("profile: required")
        try:
            args = validate_args(profile, body.get("args", {}))
        except ProfileError as e:
            raise BadRequest(str(e)) from None
        host, writes = self.registry.assign(mac, profile, args, self.clock.seconds())
        return self.committed(writes, self._view(host))

    def approve(self, request, mac):
        h = self._host(v.mac(mac))
        if h.state.value not in ("discovered", "error"):
            raise Conflict(f"host is {h.state.value}, only discovered hosts can be approved")
        host, writes = self.registry.approve(h.mac, self.clock.seconds())
        return self.committed(writes, self._view(host))

    def retire(self, request, mac):
        h = self._host(v.mac(mac))
        host, writes = self.registry.retire(h.mac, self.clock.seconds())
        return self.committed(writes, self._view(host))

    def patch(self, request, mac):
        h = self._host(v.mac(mac))
        body = read_json(request)
        unknown = set(body) - {"hostname"}
        if unknown:
            raise BadRequest(f"{sorted(unknown)[0]}: not a patchable field")
        if "hostname" not in body:
            raise BadRequest("nothing to change")
        name = v.hostname(body["hostname"])
        host, writes = self.registry.set_hostname(h.mac, name, self.clock.seconds())
        return self.committed(writes, self._view(host))

    def delete(self, request, mac):
        mac = v.mac(mac)
        writes = self.registry.delete(mac, self.clock.seconds())
        if not writes:
            raise NotFound(f"no host {mac}")
        return self.committed(writes, {"deleted": mac})


class OverviewApi:
    """The read-only views: leases, networks, transfers, events, status."""

    def __init__(self, reads, info, registry):
        self.reads, self.info, self.registry = reads, info, registry

    def leases(self, request):
        network, state = v.str_arg(request, "network"), v.str_arg(request, "state")
        return self.reads.leases(self.info.clock.seconds()).addCallback(lambda rows: [
            r for r in rows if (not network or r["network"] == network)
            and (not state or r["state"] == state)])

    def networks(self, request):
        return self.info.pools()

    def transfers(self, request):
        return self.info.transfers()

    def events(self, request):
        after = v.int_arg(request, "after", 0, hi=2 ** 62)
        limit = v.int_arg(request, "limit", 200)
        mac = v.str_arg(request, "mac")
        if mac is not None:
            mac = v.mac(mac)
        return self.reads.events(after, limit, mac, v.str_arg(request, "kind"),
                                 after == 0 and not mac)

    def status(self, request):
        return self.reads.events(0, 50, None, None, True).addCallback(
            lambda ev: status_json(self.info, self.registry.hosts.values(), ev))

    def openapi(self, request):
        return SPEC

    def event_kinds(self, request):
        return EVENT_KINDS


# -- the table -------------------------------------------------------------------
# (method, pattern, handler, auth); docs for each are in openapi.OPERATIONS.
H = "/api/v1/hosts/{mac}"
ROUTES = [
    Route("POST", "/api/v1/agent/register", AgentApi.register, "agent"),
    Route("GET", "/api/v1/agent/register", AgentApi.register, "agent"),
    Route("GET", "/api/v1/agent/next", AgentApi.next, "agent"),
    Route("GET", "/api/v1/hosts", HostsApi.list),
    Route("GET", H, HostsApi.get),
    Route("PATCH", H, HostsApi.patch, "admin"),
    Route("DELETE", H, HostsApi.delete, "admin"),
    Route("POST", H + "/assign", HostsApi.assign, "admin"),
    Route("POST", H + "/approve", HostsApi.approve, "admin"),
    Route("POST", H + "/retire", HostsApi.retire, "admin"),
    Route("GET", H + "/timeline", HostsApi.timeline),
    Route("GET", "/api/v1/leases", OverviewApi.leases),
    Route("GET", "/api/v1/networks", OverviewApi.networks),
    Route("GET", "/api/v1/events", OverviewApi.events),
    Route("GET", "/api/v1/events/stream", EventStreams.open),
    Route("GET", "/api/v1/events/kinds", OverviewApi.event_kinds),
    Route("GET", "/api/v1/transfers", OverviewApi.transfers),
    Route("GET", "/api/v1/status", OverviewApi.status),
    Route("GET", "/api/v1/openapi.json", OverviewApi.openapi),
]
SPEC: dict = document(ROUTES)
EVENT_KINDS = catalog_json()          # the status page fetches it (events.py)


def bind(routes: list[Route], *handlers) -> list[Route]:
    """The table with each handler bound to the instance of its class."""
    by_class = {type(h).__name__: h for h in handlers}
    out = []
    for r in routes:
        owner = r.handler.__qualname__.split(".")[0]
        if owner not in by_class:
            raise ValueError(f"{r.method} {r.pattern}: no {owner} given")
        out.append(dataclasses.replace(r, handler=getattr(by_class[owner], r.handler.__name__)))
    return out


def build_routes(app) -> list[Route]:
    """The table bound to an HttpApp's parts (site.py)."""
    reads = app.reads
    return bind(ROUTES,
                AgentApi(app.registry, app.clock, app.counters, app.committed, app.submit),
                HostsApi(app.registry, app.clock, app.committed, reads, app.leases),
                OverviewApi(reads, app, app.registry),
                EventStreams(reads.events, app.clock, app.counters, app.max_streams,
                             app.max_streams_per_source, app.streams))
