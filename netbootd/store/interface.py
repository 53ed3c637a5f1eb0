"""The Store interface: what the daemon, the CLI and the lab ask of a store.

Only what callers use today (Core, the DHCP service, the HTTP reads, the CLI's
offline reads, the lab), so a second store (PostgreSQL, several daemons
sharing state) has a small seam to fill.  store/sqlite.py is the one
implementation; tests/unit/test_store_contract.py is written against this
Protocol alone and runs for every implementation.

Threads: ``apply``/``stored`` run on the group-commit thread, the reads on API
worker threads, the loads at start-up; an implementation keeps whatever
per-thread state its driver needs.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..model import Account, Host, Lease, Token


class StoreError(RuntimeError):
    """The store cannot be used (for example a schema newer than this netbootd)."""


class BadWrite(StoreError):
    """A write the store cannot take (unknown kind): a fault of that write."""


@runtime_checkable
class Store(Protocol):
    # -- writes: one batch of netbootd/writes.py values, one transaction -----
    def apply(self, batch: list) -> None:
        """Store every write of the batch or none; within a batch the later
        write of a row wins (a HostDelete after a HostWrite deletes, a
        HostWrite after a HostDelete re-creates); a TrimEvents trims events
        after the commit.  An unknown write raises BadWrite."""

    def is_write_fault(self, exc: BaseException) -> bool:
        """Did one write's value fail the batch (so the committer bisects it
        and drops only that write), as opposed to the database failing?"""

    def stored(self, write) -> Host | Lease | None:
        """What is stored for the row a Host/LeaseWrite targets (None when
        absent or for other kinds): memory is set back to it after a drop."""

    def trim_events(self, keep: int = ..., orphans: int = ...) -> int:
        """Keep the newest `keep` events of each MAC and the newest `orphans`
        events of MACs that are no host; returns how many were deleted."""

    # -- the loads at start-up (unreadable rows skipped, never fatal) --------
    def load_hosts(self) -> list[Host]: ...

    def load_leases(self) -> list[Lease]:
        """Every lease, oldest start first."""

    def load_accounts(self) -> list[Account]: ...

    def load_tokens(self) -> list[Token]:
        """Every enrollment token (revoked ones too: they are history)."""

    def inventory(self, mac: str, limit: int = 1) -> list[dict]:
        """A host's inventory documents, newest first: [{"ts", "doc"}]."""

    def load_exports(self) -> list:
        """Every iSCSI export (writes.ExportWrite values, secrets included: the
        storage service rebuilds the target from them), by volume."""

    def load_networks(self) -> list[dict]:
        """Every stored network (issue 14): id, name, origin, doc (JSON text), created,
        updated; in id order."""

    # -- reads (API, CLI, lab) ------------------------------------------------
    def events(self, after: int | None, limit: int, mac: str | None = None,
               kind: str | None = None, newest: bool = False) -> list[dict]:
        """Events as dicts (id, ts, mac, kind, detail parsed) in ascending id
        order: those after id `after`, or (newest=True) the newest `limit`."""

    def timeline(self, mac: str) -> list[dict]:
        """A host's events and the daemon's own (mac None), oldest first, the
        detail as its stored JSON text."""

    def host(self, mac: str) -> Host | None: ...

    def leases_view(self, now: float) -> list[dict]:
        """Every lease as a dict (address, mac, state, hostname, network,
        starts, ends), by address; an active lease past its end reads
        "expired"."""

    def close(self) -> None:
        """Release this thread's connection."""
