"""Typed store writes: what the engines hand to the group commit.

Every change the daemon makes is one of these values; the store applies a
batch of them in one transaction, and after the commit the observers (the
DNS zone, the metrics, the hooks) follow the same batch.  Each consumer
dispatches on the type and declares the types it ignores, so a new write
type that some consumer forgot is caught by tests/unit/test_writes.py, not
by a host whose name lingers in DNS.

Frozen and slotted: a write is shared by the store thread and the reactor
thread's observers, so nobody may change it after submit.  Known gap: the
Host and Lease a HostWrite/LeaseWrite points at are the registry's and the
lease table's live objects, which the reactor keeps changing in place; the
store thread can read a row while it changes (a newer write of the same row
follows in a later batch), and restore_memory's "still current" check cannot
see such a newer write.  Snapshotting them at write time closes both.
Pure: model and stdlib only (policy builds these).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .model import Account, Host, Lease, Token


@dataclass(frozen=True, slots=True)
class HostWrite:
    """Insert or update a host row (the later write of a batch wins)."""
    host: Host
    name = "host"               # a short name for logs and store.write_dropped


@dataclass(frozen=True, slots=True)
class HostDelete:
    """Delete a host row (its leases and events stay: they are history)."""
    mac: str
    name = "host_delete"


@dataclass(frozen=True, slots=True)
class LeaseWrite:
    """Insert or update a lease row, keyed by its address."""
    lease: Lease
    name = "lease"


@dataclass(frozen=True, slots=True)
class EventWrite:
    """One event of a host's timeline.  ``kind`` is from events.CATALOG;
    ``detail`` is JSON text (host-controlled values stay data)."""
    ts: float
    mac: str | None
    kind: str
    detail: str
    name = "event"


@dataclass(frozen=True, slots=True)
class TrimEvents:
    """Trim old events after the batch (a periodic write of the daemon)."""
    name = "trim"


@dataclass(frozen=True, slots=True)
class AccountWrite:
    """Insert or update an account (a copy: accounts change rarely)."""
    account: Account
    name = "account"


@dataclass(frozen=True, slots=True)
class AccountDelete:
    """Delete an account and its tokens (it holds no hosts by then)."""
    id: str
    name = "account_delete"


@dataclass(frozen=True, slots=True)
class TokenWrite:
    """Insert or update an enrollment token row (a copy; the hash, never the text)."""
    token: Token
    name = "token"


@dataclass(frozen=True, slots=True)
class InventoryWrite:
    """One inventory document of a host (JSON text, validated), kept with history."""
    ts: float
    mac: str
    doc: str
    name = "inventory"


@dataclass(frozen=True, slots=True)
class ExportWrite:
    """Insert or replace one export (issue 13): volume ``volume`` of pool ``pool``
    exported to host ``mac`` only (its initiator IQN), with that host's CHAP.
    The secrets are secrets at rest: they live in the 0600 database and the host's
    own boot script, never in a repr, a log line, an event or a view."""
    volume: str
    pool: str
    mac: str
    initiator_iqn: str
    target_iqn: str
    chap_user: str | None
    chap_secret: str | None = field(default=None, repr=False)
    mutual_user: str | None = None
    mutual_secret: str | None = field(default=None, repr=False)
    created: float = 0.0
    name = "export"


@dataclass(frozen=True, slots=True)
class ExportDelete:
    """Delete the export of a volume (it was unexported)."""
    volume: str
    name = "export_delete"


@dataclass(frozen=True, slots=True)
class NetworkWrite:
    """Insert or update a network by name (issue 14): ``doc`` is the checked
    definition as JSON text (policy/vnet.py Vnet.to_doc), ``origin`` "config"
    or "api"."""
    network: str
    origin: str
    doc: str
    ts: float = 0.0
    name = "network"


@dataclass(frozen=True, slots=True)
class NetworkDelete:
    """Delete a network (its leases stay: they are held until they end)."""
    network: str
    name = "network_delete"


WRITE_TYPES = (HostWrite, HostDelete, LeaseWrite, EventWrite, TrimEvents, AccountWrite,
               AccountDelete, TokenWrite, InventoryWrite, ExportWrite, ExportDelete,
               NetworkWrite, NetworkDelete)
Write = (HostWrite | HostDelete | LeaseWrite | EventWrite | TrimEvents | AccountWrite
         | AccountDelete | TokenWrite | InventoryWrite | ExportWrite | ExportDelete
         | NetworkWrite | NetworkDelete)
# Writes only the store cares about (no observer follows them).
ADMIN_WRITES = (AccountWrite, AccountDelete, TokenWrite, InventoryWrite, ExportWrite,
                ExportDelete, NetworkWrite, NetworkDelete)

# One encoder for every event: json.dumps() with options builds a new one per call.
_EVENT_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str).encode


def event_json(ts: float, mac: str | None, kind: str, detail: str, _new=object.__new__,
               _ts=EventWrite.ts.__set__, _mac=EventWrite.mac.__set__,
               _kind=EventWrite.kind.__set__, _detail=EventWrite.detail.__set__) -> EventWrite:
    """An event whose detail the caller already serialized as JSON (hot path).
    Fills the slots directly: a frozen dataclass's __init__ goes through
    object.__setattr__ per field, 2x the cost (an event per DHCP exchange)."""
    w = _new(EventWrite)
    _ts(w, ts)
    _mac(w, mac)
    _kind(w, kind)
    _detail(w, detail)
    return w


def event(ts: float, mac: str | None, kind: str, **detail) -> EventWrite:
    """A store write for one event (`detail` becomes JSON; host data stays data)."""
    return event_json(ts, mac, kind, _EVENT_JSON(detail))


def write_mac(w) -> str | None:
    """The MAC a write is about, if any (for store.write_dropped)."""
    t = type(w)
    if t is HostWrite:
        return w.host.mac
    if t is LeaseWrite:
        return w.lease.mac
    if t is EventWrite or t is HostDelete or t is InventoryWrite or t is ExportWrite:
        return w.mac
    return None
