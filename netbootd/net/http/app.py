"""What the HTTP resources share: the registry, the commit path, settings."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ...policy.boot import Renderer
from ...registry import Registry


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

    def commit_then(self, writes: list, reply: Callable[[], None]) -> None:
        """Nothing is acknowledged before it is stored (DESIGN.md)."""
        self.submit(writes, reply)
