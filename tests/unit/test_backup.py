"""State backup/restore (netbootd/store/backup.py) and the state lock (netbootd/store/lock.py)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from netbootd.auth import admin_token as secrets
from netbootd.store import backup as state, lock as statelock
from netbootd.model import Host
from netbootd.store.sqlite import DB_NAME, SCHEMA_VERSION, Store
from netbootd.writes import HostWrite, event

EVENTS_PER_BATCH = 5


def _mac(i: int) -> str:
    return f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def _populate(sd: str, n: int = 3) -> Store:
    s = Store(sd)
    for i in range(n):
        s.apply([HostWrite(Host(_mac(i), first_seen=1.0 + i, last_seen=2.0 + i)),
                 event(3.0 + i, _mac(i), "agent.register", ip=f"10.0.0.{i + 1}")])
    return s


def _dump(db: str) -> list:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [(t, c.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall())
                for t in ("hosts", "leases", "events")]
    finally:
        c.close()


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def sd(tmp_path):
    d = str(tmp_path / "state")
    _populate(d).close()
    secrets.ensure_token(d)
    return d


def _rewrite(src: str, dst: str, change) -> None:
    """Copy a tarball member by member through change(name, bytes) -> bytes |
    None (None drops the member); change may return extra (name, bytes) pairs
    under the key '+'."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin:
            data = change(m.name, tin.extractfile(m).read())
            if data is None:
                continue
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
        for name, data in change("+", b"") or []:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tout.addfile(ti, io.BytesIO(data))


# -- snapshot consistency -------------------------------------------------

def test_backup_while_another_connection_writes_is_a_consistent_snapshot(sd, tmp_path):
    """A writer thread commits batches of one new host + 5 events as fast as it
    can while three backups are taken; every snapshot passes integrity_check
    and holds whole batches only (events == 5 x hosts, 5 per host), taken
    mid-stream (fewer hosts than at the end)."""
    stop = threading.Event()
    written = []

    def writer():
        s = Store(sd, sync="normal")
        i = 1000
        while not stop.is_set():
            s.apply([HostWrite(Host(_mac(i), first_seen=i, last_seen=i))] +
                    [event(float(i), _mac(i), "test.batch", n=k) for k in range(EVENTS_PER_BATCH)])
            written.append(i)
            i += 1
        s.close()

    # Baseline rows from the fixture: 3 hosts with 1 event each.
    base = sqlite3.connect(os.path.join(sd, DB_NAME))
    base.execute("DELETE FROM events")
    base.execute("DELETE FROM hosts")
    base.commit()
    base.close()
    t = threading.Thread(target=writer)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while len(written) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        for k in range(3):
            state.backup(sd, f"live-{k}")
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(10)
    final_hosts = len(written)
    for k in range(3):
        out = tmp_path / f"x{k}"
        out.mkdir()
        m, staged = state.extract_verified(state.archive_path(sd, f"live-{k}"), str(out))
        c = sqlite3.connect(staged["database"])
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        hosts = c.execute("SELECT COUNT(*) FROM hosts").fetchone()[0]
        events = c.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        per_host = {n for (n,) in c.execute("SELECT COUNT(*) FROM events GROUP BY mac")}
        c.close()
        assert 0 < hosts < final_hosts, (hosts, final_hosts)
        assert events == EVENTS_PER_BATCH * hosts
        assert per_host == {EVENTS_PER_BATCH}
        assert m["schema_version"] == SCHEMA_VERSION


# -- manifest and contents ------------------------------------------------

def test_manifest_is_first_and_lists_every_member_with_size_and_sha256(sd, tmp_path):
    cfgfile = tmp_path / "netbootd.toml"
    cfgfile.write_text('mode = "full"\n')
    os.makedirs(os.path.join(sd, "files", "images"))
    big = os.path.join(sd, "files", "images", "disk.iso")
    with open(big, "wb") as f:
        f.write(os.urandom(4096))
    with open(os.path.join(sd, "discover.img"), "wb") as f:
        f.write(b"initrd" * 100)
    m = state.backup(sd, "full", config_path=str(cfgfile), now=1700000000.0)
    with tarfile.open(m["archive"], "r:gz") as tf:
        members = tf.getmembers()
        assert members[0].name == "manifest.json"
        manifest = json.loads(tf.extractfile(members[0]).read())
        data = {mm.name: tf.extractfile(mm).read() for mm in members[1:]}
    assert set(data) == {"db/netbootd.sqlite3", "secrets/admin.token", "config/netbootd.toml",
                         "media/index.json"}, "media files themselves are never copied"
    for e in manifest["files"]:
        assert hashlib.sha256(data[e["name"]]).hexdigest() == e["sha256"]
        assert len(data[e["name"]]) == e["size"]
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["netbootd_version"] == state.netbootd_version()
    assert manifest["created"] == 1700000000.0
    assert manifest["created_utc"] == "2023-11-14T22:13:20Z"
    assert manifest["config"] == {"path": str(cfgfile), "member": "config/netbootd.toml"}
    assert data["config/netbootd.toml"] == cfgfile.read_bytes()
    assert data["secrets/admin.token"] == open(secrets.token_path(sd), "rb").read()
    index = {e["name"]: e for e in json.loads(data["media/index.json"])["entries"]}
    assert index["files/images/disk.iso"]["sha256"] == _sha(big)
    assert index["files/images/disk.iso"]["size"] == 4096
    assert index["discover.img"]["size"] == 600
    assert [r["name"] for r in state.list_backups(sd)] == ["full"]
    assert state.list_backups(sd)[0]["schema_version"] == SCHEMA_VERSION


def test_backup_without_config_token_or_media_holds_the_database_and_an_empty_index(tmp_path):
    sd = str(tmp_path / "bare")
    _populate(sd).close()
    m = state.backup(sd, "bare")
    assert [e["name"] for e in m["files"]] == ["db/netbootd.sqlite3", "media/index.json"]
    assert m["config"] is None and m["media"]["entries"] == 0


# -- names ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "/abs", "a\\b", ".hidden",
                                  "-x", "a b", "a\x00b", "é", "x" * 129, "a:b"])
def test_bad_backup_names_are_refused(sd, name):
    with pytest.raises(state.BackupError, match="bad backup name"):
        state.backup(sd, name)
    assert not os.path.exists(os.path.join(sd, "backups")) or not [
        n for n in os.listdir(os.path.join(sd, "backups")) if not n.startswith(".")]


@pytest.mark.parametrize("name", ["nightly", "2024-01-01_03.00", "A", "x" * 128])
def test_good_backup_names_are_accepted(sd, name):
    assert state.backup(sd, name)["archive"].endswith(f"/backups/{name}.tar.gz")


def test_existing_backup_is_not_overwritten_without_force(sd):
    first = state.backup(sd, "same", now=1.0)
    with pytest.raises(state.BackupError, match="exists"):
        state.backup(sd, "same", now=2.0)
    assert state.read_manifest(first["archive"])["created"] == 1.0
    state.backup(sd, "same", force=True, now=2.0)
    assert state.read_manifest(first["archive"])["created"] == 2.0
    assert not [n for n in os.listdir(os.path.join(sd, "backups")) if n.startswith(".")]


# -- permissions ----------------------------------------------------------

def test_backups_dir_is_0700_and_archives_token_db_and_safety_copy_are_0600(sd):
    os.makedirs(os.path.join(sd, "backups"), mode=0o755)
    os.chmod(os.path.join(sd, "backups"), 0o755)
    old = os.umask(0)   # the modes must not depend on the caller's umask
    try:
        m = state.backup(sd, "perm")
        r = state.restore(sd, "perm")
    finally:
        os.umask(old)
    assert _mode(os.path.join(sd, "backups")) == 0o700
    assert _mode(m["archive"]) == 0o600
    assert _mode(secrets.token_path(sd)) == 0o600
    assert _mode(os.path.join(sd, DB_NAME)) == 0o600
    assert _mode(r["safety_copy"]) == 0o600
    assert _mode(statelock.lock_path(sd)) == 0o600


# -- restore --------------------------------------------------------------

def test_restore_brings_back_db_and_token_and_keeps_the_previous_db(sd):
    db = os.path.join(sd, DB_NAME)
    before = _dump(db)
    token = open(secrets.token_path(sd)).read()
    state.backup(sd, "b")
    s = Store(sd)
    s.apply([HostWrite(Host(_mac(99), first_seen=9, last_seen=9))])   # leaves a -wal behind
    changed = _dump(db)
    secrets.rotate_token(sd)
    r = state.restore(sd, "b")
    s.close()
    assert _dump(db) == before
    assert open(secrets.token_path(sd)).read() == token
    assert _dump(r["safety_copy"]) == changed, "the safety copy includes WAL content"
    assert os.path.basename(r["safety_copy"]).startswith("pre-restore-")
    assert Store(sd).load_hosts()[0].mac == _mac(0)


def test_restore_removes_stale_wal_and_shm_files(sd):
    db = os.path.join(sd, DB_NAME)
    state.backup(sd, "b")
    for suffix in ("-wal", "-shm", "-journal"):
        with open(db + suffix, "wb") as f:
            f.write(b"garbage" * 100)
    state.restore(sd, "b")
    assert not any(os.path.exists(db + s) for s in ("-wal", "-shm", "-journal"))
    assert len(Store(sd).load_hosts()) == 3


def test_restore_writes_the_config_back_only_when_asked(sd, tmp_path):
    cfgfile = tmp_path / "etc" / "netbootd.toml"
    cfgfile.parent.mkdir()
    cfgfile.write_text('mode = "full"\n')
    state.backup(sd, "c", config_path=str(cfgfile))
    cfgfile.write_text('mode = "proxy"\n')
    r = state.restore(sd, "c")
    assert r["config"] == {"path": str(cfgfile), "member": "config/netbootd.toml",
                           "restored": False}
    assert cfgfile.read_text() == 'mode = "proxy"\n'
    r = state.restore(sd, "c", restore_config=True)
    assert r["config"]["restored"] and cfgfile.read_text() == 'mode = "full"\n'


def test_restore_into_an_empty_state_dir(sd, tmp_path):
    m = state.backup(sd, "move")
    new = tmp_path / "new-state"
    (new / "backups").mkdir(parents=True)
    os.link(m["archive"], new / "backups" / "move.tar.gz")
    r = state.restore(str(new), "move")
    assert r["safety_copy"] is None
    assert _dump(str(new / DB_NAME)) == _dump(os.path.join(sd, DB_NAME))


def test_restore_reports_media_that_differ_from_the_index(sd):
    img = os.path.join(sd, "discover.img")
    with open(img, "wb") as f:
        f.write(b"x" * 10)
    state.backup(sd, "m")
    os.unlink(img)
    r = state.restore(sd, "m")
    assert r["media_differences"] == [f"{img}: missing (10 bytes at backup time)"]


@pytest.mark.parametrize("how", ["db bytes", "token bytes", "extra member", "traversal member",
                                 "missing member", "manifest not first"])
def test_tampered_archive_is_refused_and_nothing_is_changed(sd, how):
    path = state.backup(sd, "t")["archive"]
    _populate(sd, 5).close()   # the state moves on after the backup
    db = os.path.join(sd, DB_NAME)
    before = _dump(db), open(secrets.token_path(sd), "rb").read()

    def change(name, data):
        if name == "+":
            return {"extra member": [("notes.txt", b"hi")],
                    "traversal member": [("../../evil", b"x")]}.get(how)
        if how == "db bytes" and name == "db/netbootd.sqlite3":
            return data[:-1] + bytes([data[-1] ^ 1])
        if how == "token bytes" and name == "secrets/admin.token":
            return b"0" * 64 + b"\n"
        if how == "missing member" and name == "secrets/admin.token":
            return None
        return data

    tampered = path + ".new"
    if how == "manifest not first":
        with tarfile.open(path, "r:gz") as tin:
            members = [(m, tin.extractfile(m).read()) for m in tin]
        with tarfile.open(tampered, "w:gz") as tout:
            for m, data in members[1:] + members[:1]:
                tout.addfile(m, io.BytesIO(data))
    else:
        _rewrite(path, tampered, change)
    os.replace(tampered, path)
    with pytest.raises(state.BackupError):
        state.restore(sd, "t")
    assert (_dump(db), open(secrets.token_path(sd), "rb").read()) == before
    assert [n for n in os.listdir(os.path.join(sd, "backups"))] == ["t.tar.gz"], \
        "no safety copy, no leftovers: nothing was touched"
    assert not [n for n in os.listdir(sd) if n.startswith(".restore-")]
    assert not os.path.exists(os.path.join(os.path.dirname(sd), "evil"))


def test_a_newer_schema_than_this_netbootd_supports_is_refused(tmp_path):
    newer = str(tmp_path / "newer")
    _populate(newer).close()
    c = sqlite3.connect(os.path.join(newer, DB_NAME))
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.close()
    m = state.backup(newer, "future")
    assert m["schema_version"] == SCHEMA_VERSION + 1
    sd = str(tmp_path / "current")
    _populate(sd).close()
    os.makedirs(os.path.join(sd, "backups"))
    os.link(m["archive"], os.path.join(sd, "backups", "future.tar.gz"))
    before = _dump(os.path.join(sd, DB_NAME))
    with pytest.raises(state.BackupError, match="newer than this netbootd"):
        state.restore(sd, "future")
    assert _dump(os.path.join(sd, DB_NAME)) == before


def test_an_unknown_backup_name_is_reported(sd):
    with pytest.raises(state.BackupError, match="no backup 'nope'"):
        state.restore(sd, "nope")


# -- the state lock -------------------------------------------------------

_HOLDER = ("import sys\nfrom netbootd.store import lock as statelock\n"
           "h = statelock.acquire(sys.argv[1])\nprint('locked', flush=True)\n"
           "sys.stdin.read()\n")


def _hold_lock(sd: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, sd], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_restore_is_refused_while_another_process_holds_the_state_lock(sd):
    state.backup(sd, "b")
    _populate(sd, 6).close()
    db = os.path.join(sd, DB_NAME)
    before = _dump(db)
    holder = _hold_lock(sd)
    try:
        assert statelock.is_locked(sd) == holder.pid
        with pytest.raises(statelock.StateLocked) as ei:
            state.restore(sd, "b")
        assert ei.value.pid == holder.pid
        assert str(holder.pid) in str(ei.value)
        assert _dump(db) == before
        assert os.listdir(os.path.join(sd, "backups")) == ["b.tar.gz"]
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert statelock.is_locked(sd) is None
    state.restore(sd, "b")
    assert _dump(db) != before


def test_the_lock_dies_with_its_holder_even_on_sigkill(sd):
    holder = _hold_lock(sd)
    holder.kill()
    holder.wait(10)
    assert statelock.is_locked(sd) is None
    with statelock.acquire(sd) as h:
        assert h.held and statelock.is_locked(sd) == os.getpid()


def test_a_second_acquire_fails_even_in_the_same_process(sd):
    with statelock.acquire(sd):
        with pytest.raises(statelock.StateLocked, match=f"process {os.getpid()}"):
            statelock.acquire(sd)
    assert statelock.is_locked(sd) is None
    statelock.acquire(sd).release()


def test_is_locked_is_none_without_a_lock_file(tmp_path):
    assert statelock.is_locked(str(tmp_path)) is None
