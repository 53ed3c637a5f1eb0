"""The state store: callers open it here and use it through the Store
interface (interface.py); which implementation serves a state dir is decided
here alone.  SQLite (sqlite.py) is the one store today.

backup.py and lock.py work on the state dir's files beside the store."""
from __future__ import annotations

from .interface import BadWrite, Store, StoreError
from .sqlite import DatabaseError, SqliteStore

# What a read of a store another process writes may raise (busy, locked, gone,
# half-created): callers outside store/ catch this name, never a driver's.
__all__ = ["BadWrite", "DatabaseError", "Store", "StoreError", "open_readonly", "open_store"]


def open_store(state_dir: str, *, sync: str = "full", create: bool = True) -> Store | None:
    """The state dir's store, created and migrated to this netbootd's schema;
    with create=False, None when the state dir has no store yet (an offline
    read must not create one).  sync: "full" survives power loss, "normal" a
    process crash (config [dhcp] sync)."""
    if not create and not SqliteStore.exists(state_dir):
        return None
    return SqliteStore(state_dir, sync)


def open_readonly(state_dir: str) -> Store | None:
    """The store of a daemon that runs beside us, for reads only: never
    created, migrated nor written here; None until the daemon created it."""
    return SqliteStore.open_readonly(state_dir)
