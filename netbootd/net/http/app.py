"""What the HTTP resources share: the registry, the commit path, settings."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import threads

from ...policy.boot import Renderer
from ...registry.hosts import Registry


@dataclass
class HttpApp:
    registry: Registry
    submit: Callable[..., None]          # GroupCommitter.submit(writes, on_commit=None)
    renderer: Renderer
    clock: object                        # .seconds()
    token: str
    default_profile: str = "discover"
    http_base: str | None = None         # override for URLs in scripts
    roots: list[str] = field(default_factory=list)        # served directories, in order
    generated: dict[str, str] = field(default_factory=dict)  # name -> file path
    counters: Counter = field(default_factory=Counter)
    ip_to_mac: Callable[[str], str | None] = lambda ip: None
    store: object = None                 # store.sqlite.Store, read from worker threads
    version: str = "0"
    mode: str = "full"
    started: float = 0.0
    pools: Callable[[], list] = lambda: []
    transfers: Callable[[], list] = lambda: []

    active: dict = field(default_factory=dict)   # HTTP file transfers under way
    # Event streams (SSE) hold a connection and a poll each: capped in all and
    # per client address, so one client cannot take every slot.
    max_streams: int = 32
    max_streams_per_source: int = 4
    streams: Counter = field(default_factory=Counter)    # client address -> open streams

    def active_transfers(self) -> list[dict]:
        return [{"proto": "http", "client": t["client"], "file": t["file"],
                 "bytes": getattr(t["request"], "sentLength", 0), "size": t["size"],
                 "started": t["started"]} for t in list(self.active.values())]

    def read(self, fn, *args):
        """Run a blocking read (SQLite) off the reactor thread (DESIGN rule 8)."""
        return threads.deferToThread(fn, *args)

    # Reads used by the API; None-safe so the boot path works without a store.
    def store_events(self, after, limit, mac=None, kind=None, newest=False) -> list:
        return self.store.events(after, limit, mac, kind, newest) if self.store else []

    def store_last_events(self) -> dict:
        return self.store.last_events() if self.store else {}

    def store_leases(self) -> list:
        import time
        return self.store.leases_view(time.time()) if self.store else []

    def commit_then(self, writes: list, reply: Callable[[], None]) -> None:
        """Nothing is acknowledged before it is stored (DESIGN.md)."""
        self.submit(writes, reply)
