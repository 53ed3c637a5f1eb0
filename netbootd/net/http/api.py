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
from .api_accounts import AccountsApi, HostAgentApi, TokensApi
from .api_agent import AgentApi
from .api_capture import CaptureApi
from .api_media import MediaApi
from .api_networks import NetworksApi
from .api_net import NetApi
from .api_storage import StorageApi
from .common import read_json
from .errors import BadRequest, Conflict, NotFound
from .openapi import document
from .routes import Route
from .stream import EventStreams
from .views import hosts_json, host_json, status_json

DEFAULT_PAGE = 100
TIMELINE = 200


class HostsApi:
    """Hosts: paged list, one host with its timeline, the admin actions."""

    def __init__(self, registry, clock, committed, reads, leases, accounts):
        self.registry, self.clock, self.committed = registry, clock, committed
        self.reads, self.leases, self.accounts = reads, leases, accounts

    def list(self, request):
        """A page of hosts (keyset paging on (first_seen, mac)), the cursor of
        the next one and the counts: a list of every host grew to 10 MB under a
        random-MAC flood, and the status page polled it every 2 s."""
        state = v.state(v.str_arg(request, "state"))
        arch, q, cursor = (v.str_arg(request, k) for k in ("arch", "q", "cursor"))
        account = self._account_filter(v.str_arg(request, "account"))
        limit = v.int_arg(request, "limit", DEFAULT_PAGE, lo=1)
        reg = self.registry
        match = self._matcher(state, arch, q, account) \
            if (state or arch or q or account is not None) else None
        try:
            hosts, nxt, total = page(reg.hosts.values(), limit, cursor, match)
        except BadCursor as e:
            raise BadRequest(str(e)) from None
        counts = {"hosts": len(reg.hosts), "states": state_counts(reg.hosts.values()),
                  "seen": len(reg.seen)}
        macs = [h.mac for h in hosts]
        leases = self.leases(macs)
        names = self.accounts.name_of
        return self.reads.last_events(macs).addCallback(lambda last: {
            "hosts": hosts_json(hosts, last, leases, names), "next": nxt, "total": total,
            "counts": counts})

    def _account_filter(self, ref):
        """?account=NAME (or "-": hosts in no account) -> an account id, "" or None."""
        if ref is None:
            return None
        if ref == "-":
            return ""
        a = self.accounts.get(ref)
        if a is None:
            raise NotFound(f"no account {ref!r}")
        return a.id

    def _matcher(self, state, arch, q, account=None):
        ql = q.lower() if q else None
        # q matches what the views show: the lease's address and name too.
        shown = self.leases() if q else {}

        def match(h):
            view = host_json(h, None, shown.get(h.mac))
            return ((account is None or (h.account or "") == account)
                    and (not state or h.state.value == state)
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
        return host_json(h, last_event, self.leases([h.mac]).get(h.mac), self.accounts.name_of)

    def get(self, request, mac):
        """One host: its view, timeline and latest inventory document."""
        h = self._host(v.mac(mac))
        limit = v.int_arg(request, "limit", TIMELINE)
        d = self.reads.events(None, limit, h.mac, None, True)

        def with_inventory(tl):
            return self.reads.inventory(h.mac).addCallback(lambda inv: dict(
                self._view(h, tl[-1] if tl else None), timeline=tl,
                inventory=inv[0] if inv else None))
        return d.addCallback(with_inventory)

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
        if h.state.value not in ("discovered", "error", "pending"):
            raise Conflict(f"host is {h.state.value}, only discovered or pending hosts can be "
                           "approved")
        host, writes = self.registry.approve(h.mac, self.clock.seconds())
        writes += self.host_agent.agents.approved(host, self.clock.seconds())
        return self.committed(writes, self._view(host))

    def retire(self, request, mac):
        h = self._host(v.mac(mac))
        host, writes = self.registry.retire(h.mac, self.clock.seconds())
        return self.committed(writes, self._view(host))

    def patch(self, request, mac):
        h = self._host(v.mac(mac))
        body = read_json(request)
        unknown = set(body) - {"hostname", "account"}
        if unknown:
            raise BadRequest(f"{sorted(unknown)[0]}: not a patchable field")
        if not body:
            raise BadRequest("nothing to change")
        # everything is checked before anything changes (a 400 changes nothing)
        name = v.hostname(body["hostname"]) if "hostname" in body else None
        target = self.host_agent.account_of(body["account"]) if "account" in body else None
        writes = []
        if "account" in body:
            writes += self.host_agent.move(h, target, self.clock.seconds())
        if "hostname" in body:
            writes += self.registry.set_hostname(h.mac, name, self.clock.seconds())[1]
        return self.committed(writes, self._view(h))

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

    def transfers(self, request):
        return self.info.transfers()

    def events(self, request):
        after = v.int_arg(request, "after", 0, hi=2 ** 62)
        limit = v.int_arg(request, "limit", 200)
        mac = v.str_arg(request, "mac")
        if mac is not None:
            mac = v.mac(mac)
        # No cursor: the newest `limit` (of one host too, as the store's
        # readers show them), ascending; with ?after=: the next ones.
        return self.reads.events(after, limit, mac, v.str_arg(request, "kind"), after == 0)

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
A = "/api/v1/accounts"
V = "/api/v1/volumes"
ROUTES = [
    Route("POST", "/api/v1/agent/register", AgentApi.register, "agent"),
    Route("GET", "/api/v1/agent/next", AgentApi.next, "agent"),
    Route("POST", "/api/v1/agent/inventory", AgentApi.inventory, "agent"),
    Route("POST", "/api/v1/agent/report", AgentApi.report, "agent"),
    Route("GET", A, AccountsApi.list),
    Route("POST", A, AccountsApi.create, "admin"),
    Route("GET", A + "/{name}", AccountsApi.get),
    Route("PATCH", A + "/{name}", AccountsApi.patch, "admin"),
    Route("DELETE", A + "/{name}", AccountsApi.delete, "admin"),
    Route("GET", A + "/{name}/media", MediaApi.get, "admin"),
    Route("GET", "/api/v1/tokens", TokensApi.list, "admin"),
    Route("POST", "/api/v1/tokens", TokensApi.create, "admin"),
    Route("POST", "/api/v1/tokens/{token_id}/revoke", TokensApi.revoke, "admin"),
    Route("POST", "/api/v1/tokens/rotate-key", TokensApi.rotate_key, "admin"),
    Route("POST", H + "/actions", HostAgentApi.queue, "admin"),
    Route("POST", H + "/reset", HostAgentApi.reset, "admin"),
    Route("GET", "/api/v1/hosts", HostsApi.list),
    Route("GET", H, HostsApi.get),
    Route("PATCH", H, HostsApi.patch, "admin"),
    Route("DELETE", H, HostsApi.delete, "admin"),
    Route("POST", H + "/assign", HostsApi.assign, "admin"),
    Route("POST", H + "/approve", HostsApi.approve, "admin"),
    Route("POST", H + "/retire", HostsApi.retire, "admin"),
    Route("GET", H + "/timeline", HostsApi.timeline),
    Route("GET", "/api/v1/leases", OverviewApi.leases),
    Route("GET", "/api/v1/networks", NetworksApi.list),
    Route("POST", "/api/v1/networks", NetworksApi.create, "admin"),
    Route("GET", "/api/v1/networks/{name}", NetworksApi.get),
    Route("PUT", "/api/v1/networks/{name}", NetworksApi.update, "admin"),
    Route("DELETE", "/api/v1/networks/{name}", NetworksApi.delete, "admin"),
    Route("POST", "/api/v1/networks/{name}/leases", NetworksApi.add_leases, "admin"),
    Route("POST", "/api/v1/networks/{name}/leases/remove", NetworksApi.remove_leases, "admin"),
    Route("GET", "/api/v1/net/interfaces", NetApi.list),
    Route("GET", "/api/v1/events", OverviewApi.events),
    Route("GET", "/api/v1/events/stream", EventStreams.open),
    Route("GET", "/api/v1/events/kinds", OverviewApi.event_kinds),
    Route("GET", "/api/v1/transfers", OverviewApi.transfers),
    Route("GET", "/api/v1/status", OverviewApi.status),
    Route("GET", "/api/v1/openapi.json", OverviewApi.openapi),
    Route("GET", V, StorageApi.list),
    Route("POST", V, StorageApi.create, "admin"),
    Route("GET", V + "/{name}", StorageApi.get),
    Route("DELETE", V + "/{name}", StorageApi.delete, "admin"),
    Route("POST", V + "/{name}/resize", StorageApi.resize, "admin"),
    Route("POST", V + "/{name}/snapshot", StorageApi.snapshot, "admin"),
    Route("POST", V + "/{name}/clone", StorageApi.clone, "admin"),
    Route("GET", "/api/v1/exports", StorageApi.exports),
    Route("DELETE", "/api/v1/exports/{name}", StorageApi.unexport, "admin"),
    Route("POST", H + "/sanboot", StorageApi.sanboot, "admin"),
    Route("POST", H + "/chap", StorageApi.rotate_chap, "admin"),
    Route("POST", "/api/v1/deploy", StorageApi.deploy, "admin"),
    Route("GET", "/api/v1/jobs/{job}", StorageApi.job),
    Route("POST", H + "/capture", CaptureApi.start, "admin"),
    Route("GET", "/api/v1/agent/capture/{job}", CaptureApi.status, "agent"),
    Route("POST", "/api/v1/agent/capture/{job}/{offset}", CaptureApi.chunk, "agent"),
    Route("POST", "/api/v1/agent/capture/{job}/stream/{offset}", CaptureApi.stream, "agent"),
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
    hosts = HostsApi(app.registry, app.clock, app.committed, reads, app.leases, app.accounts)
    hosts.host_agent = HostAgentApi(app.registry, app.accounts, app.agents, app.clock,
                                    app.committed, hosts._view)
    from ..capture import Captures, tool_pack
    captures = Captures(lambda: app.storage, app.registry, app.agents, app.submit, app.clock,
                        tools=lambda: tool_pack(app.generated))
    capture_api = CaptureApi(captures, app.agents, app.counters)
    app.admit_body = capture_api.admit          # site.py: big bodies of capture chunks
    return bind(ROUTES,
                AgentApi(app.agents, app.clock, app.counters, app.committed, app.submit,
                         app.leases, app.http_base),
                hosts, hosts.host_agent,
                AccountsApi(app.accounts, app.registry, app.clock, app.committed),
                TokensApi(app.accounts, app.ring, app.state_dir, app.clock, app.committed),
                MediaApi(app.accounts, app.ring, app.state_dir, app.clock, app.committed,
                         app.http_base, app.tls_cert),
                OverviewApi(reads, app, app.registry),
                EventStreams(reads.events, app.clock, app.counters, app.max_streams,
                             app.max_streams_per_source, app.streams),
                # set by net/services/storage.py once [storage] is opened (None: off)
                StorageApi(lambda: app.storage, app.clock), capture_api,
                NetworksApi(lambda: app.networks, app.pools),
                NetApi(lambda: app.interfaces()))
