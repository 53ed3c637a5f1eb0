"""SQLite store (WAL): schema versions, migrations, batched writes, tolerant loads.

Blocking calls: ``apply`` runs on the group-commit thread (net/commit.py),
``load_*`` at start-up before the reactor serves anything.  One connection
per thread (check_same_thread stays on).
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import threading
from importlib import resources

from ..model import Account, Host, HostState, Lease, LeaseState, Token, int2ip, ip2int
from ..writes import (
    AccountDelete, AccountWrite, EventWrite, ExportDelete, ExportWrite, HostDelete, HostWrite,
    InventoryWrite, LeaseWrite, TokenWrite, TrimEvents,
)
from . import eventlog
from .interface import BadWrite, StoreError
from .networks import NETWORK_SQL, SELECT_NETWORKS, network_rows
from .rows import host_of as _host_of, host_row as _host_row, insert_rows

log = logging.getLogger("netbootd.store")

DB_NAME = "netbootd.sqlite3"


def private_state_dir(state_dir: str) -> None:
    """Make the state dir 0700 (it holds the database, tokens' hashes, agent
    secrets, the admin token): created so, or tightened when it is ours and looser
    (with a warning); someone else's is left alone, with a warning."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    st = os.stat(state_dir)
    mode = stat.S_IMODE(st.st_mode)
    if mode == 0o700:
        return
    if st.st_uid != os.geteuid():
        if mode & 0o077:
            log.warning("state dir %s is mode %04o and owned by uid %d, not us: left as is; "
                        "make it 0700", state_dir, mode, st.st_uid)
        return
    os.chmod(state_dir, 0o700)
    if mode & 0o077:
        log.warning("state dir %s was mode %04o: tightened to 0700", state_dir, mode)


def private_file(path: str, create: bool = True) -> None:
    """`path` 0600: created empty so (whatever the umask), or tightened with a
    warning.  SQLite gives the -wal/-shm/-journal files it creates the mode of
    the database file, so a 0600 database keeps them 0600 too.

    An existing file is never opened here, only chmod'ed: closing any fd of a
    file drops every POSIX lock this process holds on it, SQLite's lock on
    -shm included; another process reading the database then truncated -shm
    and the daemon died of SIGBUS on its mapping (test_durability)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        if not create:
            return
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
            return
        except FileExistsError:              # made meanwhile: check it as it is
            mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
        log.warning("%s was mode %04o: tightened to 0600", path, mode)


def load_migrations() -> list[str]:
    """The schema steps, package data (store/migrations/NNNN_name.sql): file
    i (from 1) migrates from version i-1 to i.  A released file is never
    edited; a schema change is a new file with the next number."""
    files = sorted((f for f in resources.files(__package__).joinpath("migrations").iterdir()
                    if f.name.endswith(".sql")), key=lambda f: f.name)
    for i, f in enumerate(files, 1):
        if not f.name.startswith(f"{i:04d}_"):
            raise StoreError(f"store/migrations/{f.name}: expected step {i:04d} here")
    return [f.read_text(encoding="utf-8") for f in files]


def statements(sql: str) -> list[str]:
    """One migration's statements: comment lines dropped, split on ';' (the
    steps hold no ';' inside a string literal)."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [stmt for stmt in body.split(";") if stmt.strip()]


MIGRATIONS: list[str] = load_migrations()
SCHEMA_VERSION = len(MIGRATIONS)

# An upsert, not INSERT OR REPLACE: a renewal updates its row in place, and
# the mac index is left alone unless the mac changed (REPLACE deletes and
# re-inserts both): 40 -> 31 us of commit-thread CPU per returning client's
# DORA, measured with batches of 15 renewals among 1,000 leases.
_LEASE_HEAD = ("INSERT INTO leases(address, network, client_key, mac, hostname, state, starts, "
               "ends) VALUES ")
_LEASE_TAIL = (" ON CONFLICT(address) DO UPDATE SET "
               "network=excluded.network, client_key=excluded.client_key, mac=excluded.mac, "
               "hostname=excluded.hostname, state=excluded.state, starts=excluded.starts, "
               "ends=excluded.ends")
_HOST_COLS = ("mac, state, arch, vendor_class, uuid, hostname, interface, first_seen, last_seen, "
              "ip, profile, profile_args, account, ids, secret_hash, agent_addr, action, hw")
_HOST_HEAD = f"INSERT INTO hosts({_HOST_COLS}) VALUES "
_HOST_TAIL = (" ON CONFLICT(mac) DO UPDATE SET "
             "state=excluded.state, arch=excluded.arch, vendor_class=excluded.vendor_class, "
             "uuid=excluded.uuid, hostname=excluded.hostname, interface=excluded.interface, "
             "last_seen=excluded.last_seen, ip=excluded.ip, profile=excluded.profile, "
             "profile_args=excluded.profile_args, account=excluded.account, ids=excluded.ids, "
             "secret_hash=excluded.secret_hash, agent_addr=excluded.agent_addr, action=excluded.action, "
             "hw=excluded.hw")
_ACCOUNT_SQL = ("INSERT OR REPLACE INTO accounts(id, name, approval, profile, profile_args, created) "
                "VALUES (?,?,?,?,?,?)")
_TOKEN_SQL = ("INSERT OR REPLACE INTO tokens(id, account, hash, label, created, expires, max_uses, "
              "uses, revoked) VALUES (?,?,?,?,?,?,?,?,?)")
# Inventory documents kept per host (the newest): history, bounded.
INVENTORY_PER_HOST = 20
# Events kept per host (the newest); older ones are trimmed in the background.
EVENTS_PER_HOST = 500
# Events of MACs that are not hosts (DHCP offers to clients that never took a
# lease: a random-MAC flood, issue 16) are kept only this many in all, newest first.
ORPHAN_EVENTS = 5000


# What a read of a database another process writes may raise (locked, gone,
# half-created): callers outside store/ catch this, never sqlite3's names.
DatabaseError = sqlite3.Error


def is_write_fault(exc: BaseException) -> bool:
    """Did one write's value fail the batch (as opposed to the database:
    disk full, I/O error, locked)?  Such a batch is bisected by the group
    committer so only the bad write is dropped.  OverflowError is an
    integer past SQLite's 64 bits ("Python int too large to convert to
    SQLite INTEGER"); ProgrammingError only for a value it cannot bind."""
    if isinstance(exc, (OverflowError, TypeError, ValueError, BadWrite,
                        sqlite3.IntegrityError, sqlite3.DataError)):
        return True
    return isinstance(exc, sqlite3.ProgrammingError) and "binding" in str(exc)


def event_dict(row) -> dict:
    """An events row as the API shows it (detail parsed from its JSON)."""
    try:
        detail = json.loads(row["detail"])
    except (ValueError, TypeError):
        detail = {"raw": row["detail"]}
    return {"id": row["id"], "ts": row["ts"], "mac": row["mac"], "kind": row["kind"],
            "detail": detail}


class SqliteStore:
    """The Store interface (interface.py) on one SQLite file in the state dir."""
    _readonly = False
    is_write_fault = staticmethod(is_write_fault)

    def __init__(self, state_dir: str, sync: str = "full"):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, DB_NAME)
        self.sync = sync
        self._local = threading.local()
        private_state_dir(state_dir)
        private_file(self.path)          # 0600 before SQLite opens it (never the umask's)
        for suffix in ("-wal", "-shm"):  # an older netbootd's, made with the umask's mode
            private_file(self.path + suffix, create=False)
        self.migrate()

    @staticmethod
    def exists(state_dir: str) -> bool:
        return os.path.exists(os.path.join(state_dir, DB_NAME))

    @classmethod
    def open_readonly(cls, state_dir: str) -> "SqliteStore | None":
        """The store of a daemon that runs beside us (the lab watching its
        VM boot), for reads only: never created nor migrated here; None
        while the daemon has not created it yet."""
        if not cls.exists(state_dir):
            return None
        path = os.path.join(state_dir, DB_NAME)
        self = cls.__new__(cls)
        self.state_dir, self.path, self.sync = state_dir, path, "normal"
        self._local = threading.local()
        self._readonly = True
        return self

    # -- connections ----------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None and self._readonly:
            c = self._local.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                                   timeout=5)
        if c is None:
            c = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            c.execute("PRAGMA journal_mode=WAL")
            # FULL: each group commit is fsynced (survives power loss);
            # NORMAL: survives a process crash (kill -9), not power loss.
            c.execute(f"PRAGMA synchronous={'FULL' if self.sync == 'full' else 'NORMAL'}")
            c.execute("PRAGMA foreign_keys=ON")
            self._local.conn = c
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    def migrate(self) -> None:
        c = self.conn()
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}, newer than this "
                             f"netbootd ({SCHEMA_VERSION}); refusing to touch it")
        for v in range(version, SCHEMA_VERSION):
            c.execute("BEGIN IMMEDIATE")
            try:
                for stmt in statements(MIGRATIONS[v]):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version={v + 1}")
                c.execute("COMMIT")
            except Exception:
                c.execute("ROLLBACK")
                raise
            log.info("store: migrated %s to schema version %d", self.path, v + 1)

    # -- writes (group commit) -------------------------------------------
    def apply(self, batch: list) -> None:
        """Write one batch of writes (netbootd/writes.py) in one transaction;
        a TrimEvents trims old events afterwards."""
        leases, hosts, events, deleted = {}, {}, [], set()
        admin: list = []          # accounts, tokens, inventory: rare, in order
        trim = False
        for w in batch:
            t = type(w)
            if t is LeaseWrite:
                item = w.lease
                leases[item.address] = (
                    int2ip(item.address), item.network, item.client_key, item.mac,
                    item.hostname, item.state.value, item.starts, item.ends)
            elif t is EventWrite:
                events.append((w.ts, w.mac, w.kind, w.detail))
            elif t is HostWrite:
                item = w.host
                deleted.discard(item.mac)           # the later write in a batch wins
                hosts[item.mac] = _host_row(item)
            elif t is HostDelete:
                hosts.pop(w.mac, None)
                deleted.add(w.mac)
            elif t is TrimEvents:
                trim = True
            elif t in _ADMIN_SQL:
                admin.append(_ADMIN_SQL[t](w))
            else:
                raise BadWrite(f"unknown write {w!r:.80}")
        c = self.conn()
        if not getattr(self._local, "writer", False):
            # The committing connection: a 16 MiB cache and a checkpoint per
            # 8,000 pages took 29-33 -> 21-23 us of CPU per returning DORA when
            # events were indexed by (mac, id) (bench/dhcp/README.md,
            # 2026-12-05); the WAL stays under ~32 MB.
            for pragma in ("cache_size=-16384", "wal_autocheckpoint=8000",
                           "journal_size_limit=33554432"):
                c.execute("PRAGMA " + pragma)
            self._local.writer = True
        c.execute("BEGIN")
        try:
            if deleted:
                c.executemany("DELETE FROM hosts WHERE mac = ?", [(m,) for m in deleted])
            # Multi-row statements (store/rows.py): few GIL hand-offs per commit.
            if hosts:
                insert_rows(c, _HOST_HEAD, _HOST_TAIL, 18, list(hosts.values()))
            if leases:
                insert_rows(c, _LEASE_HEAD, _LEASE_TAIL, 8, list(leases.values()))
            if events:
                eventlog.append(c, events)
            for stmts in admin:
                for sql, args in stmts:
                    c.execute(sql, args)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        if trim:
            self.trim_events()

    def stored(self, write):
        """What the store holds for the row a write targets (a Host or Lease,
        None when absent or for other kinds): after a write was dropped,
        memory is set back to this."""
        if type(write) is HostWrite:
            found = self._hosts("WHERE mac = ?", (write.host.mac,))
        elif type(write) is LeaseWrite:
            found = self._leases("WHERE address = ?", (int2ip(write.lease.address),))
        else:
            return None
        return found[0] if found else None

    def trim_events(self, keep: int = EVENTS_PER_HOST, orphans: int = ORPHAN_EVENTS) -> int:
        """Keep the newest `keep` events of each host and the newest `orphans`
        events of MACs that are no host; returns rows deleted."""
        return eventlog.trim(self.conn(), keep, orphans)

    # -- reads ------------------------------------------------------------
    def load_leases(self) -> list[Lease]:
        """Every stored lease, oldest first; unreadable rows are logged and
        skipped, never fatal."""
        return self._leases("ORDER BY starts")

    def _leases(self, tail: str, args: tuple = ()) -> list[Lease]:
        out = []
        for row in self.conn().execute(
                "SELECT address, network, client_key, mac, hostname, state, starts, ends "
                "FROM leases " + tail, args):
            try:
                out.append(Lease(ip2int(row[0]), str(row[1]), bytes(row[2]), str(row[3]),
                                 LeaseState(row[5]), float(row[6]), float(row[7]), row[4]))
            except (ValueError, TypeError) as e:
                log.warning("store: skipping unreadable lease row %r: %s", row, e)
        return out

    def load_hosts(self) -> list[Host]:
        return self._hosts("")

    def load_accounts(self) -> list[Account]:
        out = []
        for r in self.query("SELECT * FROM accounts ORDER BY created, name"):
            try:
                args = json.loads(r["profile_args"] or "{}")
                out.append(Account(r["id"], r["name"], r["approval"], r["profile"],
                                   args if isinstance(args, dict) else {}, float(r["created"])))
            except (ValueError, TypeError) as e:
                log.warning("store: skipping unreadable account row %r: %s", tuple(r), e)
        return out

    def load_tokens(self) -> list[Token]:
        out = []
        for r in self.query("SELECT * FROM tokens ORDER BY created, id"):
            try:
                out.append(Token(r["id"], r["account"], r["hash"], r["label"],
                                 float(r["created"]), r["expires"], r["max_uses"],
                                 int(r["uses"]), r["revoked"]))
            except (ValueError, TypeError) as e:
                log.warning("store: skipping unreadable token row %r: %s", tuple(r), e)
        return out

    def inventory(self, mac: str, limit: int = 1) -> list[dict]:
        """A host's inventory documents, newest first: [{"ts", "doc"}]."""
        out = []
        for r in self.query("SELECT ts, doc FROM inventory WHERE mac = ? ORDER BY id DESC "
                            "LIMIT ?", (mac, limit)):
            try:
                out.append({"ts": r["ts"], "doc": json.loads(r["doc"])})
            except ValueError:
                log.warning("store: skipping unreadable inventory of %s", mac)
        return out

    def load_exports(self) -> list[ExportWrite]:
        """Every export (the desired state the export backend is rebuilt to), as
        the ExportWrite values that stored them, by volume."""
        out = []
        for r in self.query(f"SELECT {_EXPORT_COLS} FROM exports ORDER BY volume"):
            try:
                out.append(ExportWrite(*(r[k] for k in _EXPORT_COLS.split(", "))))
            except (ValueError, TypeError) as e:
                log.warning("store: skipping unreadable export row of %r: %s", r["volume"], e)
        return out

    def load_networks(self) -> list[dict]:
        """Every stored network (id, name, origin, doc JSON text, created, updated)."""
        return network_rows(self.query(SELECT_NETWORKS))

    def _hosts(self, tail: str, args: tuple = ()) -> list[Host]:
        out = []
        for row in self.conn().execute(
                f"SELECT {_HOST_COLS} FROM hosts " + tail, args):
            try:
                out.append(_host_of(row))
            except (ValueError, TypeError) as e:
                log.warning("store: skipping unreadable host row %r: %s", row, e)
        return out

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        c = self.conn()
        c.row_factory = sqlite3.Row
        try:
            return c.execute(sql, args).fetchall()
        finally:
            c.row_factory = None

    # -- API reads (run on a worker thread; each thread has its own connection)
    def events(self, after: int | None, limit: int, mac: str | None = None,
               kind: str | None = None, newest: bool = False) -> list[dict]:
        """Events in ascending id order: those after `after`, or (newest=True)
        the newest `limit` ones."""
        rows = self.query(*eventlog.select(after, limit, mac, kind, newest))
        out = [event_dict(r) for r in rows]
        return out[::-1] if newest else out

    def timeline(self, mac: str) -> list[dict]:
        """A host's events and the daemon's own (no MAC), oldest first, with
        the detail as its stored JSON text."""
        return [dict(r) for r in self.query(eventlog.TIMELINE, (mac, mac))]

    def host(self, mac: str) -> Host | None:
        found = self._hosts("WHERE mac = ?", (mac,))
        return found[0] if found else None

    def last_events(self) -> dict[str, dict]:
        """The newest event of every host, by MAC."""
        rows = self.query(eventlog.LAST)
        return {r["mac"]: event_dict(r) for r in rows}

    def leases_view(self, now: float) -> list[dict]:
        out = []
        for r in self.query("SELECT address, mac, state, hostname, network, starts, ends "
                            "FROM leases"):
            d = dict(r)
            if d["state"] == "active" and d["ends"] <= now:
                d["state"] = "expired"
            out.append(d)
        out.sort(key=lambda d: tuple(int(x) for x in d["address"].split(".")))
        return out


def _account_sql(w: AccountWrite) -> list:
    a = w.account
    return [(_ACCOUNT_SQL, (a.id, a.name, a.approval, a.profile,
                            json.dumps(a.profile_args, sort_keys=True), a.created))]


def _token_sql(w: TokenWrite) -> list:
    t = w.token
    return [(_TOKEN_SQL, (t.id, t.account, t.hash, t.label, t.created, t.expires, t.max_uses,
                          t.uses, t.revoked))]


def _inventory_sql(w: InventoryWrite) -> list:
    return [("INSERT INTO inventory(mac, ts, doc) VALUES (?,?,?)", (w.mac, w.ts, w.doc)),
            ("DELETE FROM inventory WHERE mac = ? AND id NOT IN (SELECT id FROM inventory "
             "WHERE mac = ? ORDER BY id DESC LIMIT ?)", (w.mac, w.mac, INVENTORY_PER_HOST))]


_EXPORT_COLS = ("volume, pool, mac, initiator_iqn, target_iqn, chap_user, chap_secret, "
                "mutual_user, mutual_secret, created")


def _export_sql(w: ExportWrite) -> list:
    return [(f"INSERT OR REPLACE INTO exports({_EXPORT_COLS}) VALUES ({','.join('?' * 10)})",
             (w.volume, w.pool, w.mac, w.initiator_iqn, w.target_iqn, w.chap_user,
              w.chap_secret, w.mutual_user, w.mutual_secret, w.created))]


_ADMIN_SQL = {
    AccountWrite: _account_sql,
    AccountDelete: lambda w: [("DELETE FROM tokens WHERE account = ?", (w.id,)),
                              ("DELETE FROM accounts WHERE id = ?", (w.id,))],
    TokenWrite: _token_sql,
    InventoryWrite: _inventory_sql,
    ExportWrite: _export_sql,
    ExportDelete: lambda w: [("DELETE FROM exports WHERE volume = ?", (w.volume,))],
    **NETWORK_SQL,
}


# The name the daemon's tests and older callers import; new code opens a store
# through netbootd.store (open_store, open_readonly).
Store = SqliteStore
