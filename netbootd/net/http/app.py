"""What the HTTP site is built from: the registry, the commit path, the
store, settings.  HttpApp is the one bag the wiring fills; site.py hands each
handler only the parts it uses (api.py, stream.py, status.py)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import defer, threads

from ...policy.boot import Renderer
from ...registry.hosts import Registry
from .views import last_events_of


@dataclass
class HttpApp:
    registry: Registry
    submit: Callable[..., None]          # GroupCommitter.submit(writes, on_commit=None)
    renderer: Renderer
    clock: object                        # .seconds()
    token: str
    default_profile: str = "discover"
    http_base: str | None = None         # override for URLs in scripts
    # [http] TLS: the certificate (the media API's default pin), the https port, and
    # who may send the admin token over plain http (routes.admin_plain_refusal)
    tls_cert: str | None = None
    tls_port: int | None = None
    admin_over_plain: str = "allow"
    roots: list[str] = field(default_factory=list)        # served directories, in order
    generated: dict[str, str] = field(default_factory=dict)  # name -> file path
    counters: Counter = field(default_factory=Counter)
    ip_to_mac: Callable[[str], str | None] = lambda ip: None
    store: object = None                 # a netbootd.store.Store, read from worker threads
    version: str = "0"
    mode: str = "full"
    started: float = 0.0
    pools: Callable[[], list] = lambda: []
    transfers: Callable[[], list] = lambda: []
    # MAC -> active Lease, for the MACs given (all when None): host views
    # fall back to the lease's address and name (views.lease_lookup).
    leases: Callable[..., dict] = lambda macs=None: {}
    accounts: object = None              # registry.accounts.Accounts
    agents: object = None                # registry.agent.Agents
    ring: object = None                  # auth.enroll.KeyRing (token signing keys)
    state_dir: str | None = None         # the enrollment key ring lives there
    storage: object = None               # net/storage.Storage when [storage] is configured
    networks: object = None              # net/networks.Networks (the daemon's; None: no changes)
    # () -> interface rows (net/services/netlink.py sets it; None: not followed)
    interfaces: Callable[[], list | None] = lambda: None

    active: dict = field(default_factory=dict)   # HTTP file transfers under way
    # Event streams (SSE) hold a connection and a poll each: capped in all and
    # per client address, so one client cannot take every slot.
    max_streams: int = 32
    max_streams_per_source: int = 4
    streams: Counter = field(default_factory=Counter)    # client address -> open streams

    def __post_init__(self):
        """Accounts, tokens and agents of their own when none are given (tests,
        benches): an empty account book and a signing key held in memory."""
        if self.accounts is None:
            from ...registry.accounts import Accounts
            self.accounts = Accounts()
        if self.ring is None:
            import os
            from ...auth.enroll import KEY_BYTES, KeyRing
            self.ring = KeyRing({"mem0": os.urandom(KEY_BYTES)}, "mem0")
        if self.agents is None:
            from ...registry.agent import Agents
            self.agents = Agents(self.registry, self.accounts, self.ring)

    def active_transfers(self) -> list[dict]:
        return [{"proto": "http", "client": t["client"], "file": t["file"],
                 "bytes": getattr(t["request"], "sentLength", 0), "size": t["size"],
                 "started": t["started"]} for t in list(self.active.values())]

    @property
    def reads(self) -> "StoreReads":
        return StoreReads(self.store)

    def commit_then(self, writes: list, reply: Callable[[], None]) -> None:
        """Nothing is acknowledged before it is stored (DESIGN.md)."""
        self.submit(writes, reply)

    def committed(self, writes: list, obj) -> defer.Deferred:
        """A Deferred firing with `obj` once `writes` are stored."""
        d = defer.Deferred()
        self.submit(writes, lambda: d.callback(obj))
        return d


class StoreReads:
    """The store's reads the HTTP side uses, each run off the reactor thread
    (DESIGN rule 8) and returning a Deferred; empty without a store, so the
    boot path and benches work without one."""

    def __init__(self, store, run=threads.deferToThread):
        self.store = store
        self.run = run

    def events(self, after, limit, mac=None, kind=None, newest=False) -> defer.Deferred:
        if self.store is None:
            return defer.succeed([])
        return self.run(self.store.events, after, limit, mac, kind, newest)

    def last_events(self, macs: list[str]) -> defer.Deferred:
        """MAC -> newest event, for a page of hosts (views.last_events_of)."""
        if self.store is None:
            return defer.succeed({})
        return self.run(last_events_of, self.store.events, macs)

    def inventory(self, mac: str, limit: int = 1) -> defer.Deferred:
        if self.store is None:
            return defer.succeed([])
        return self.run(self.store.inventory, mac, limit)

    def leases(self, now: float) -> defer.Deferred:
        if self.store is None:
            return defer.succeed([])
        return self.run(self.store.leases_view, now)
