"""State backup and restore (`netbootd state backup|list|restore`).

A backup is ONE tarball, <state_dir>/backups/<NAME>.tar.gz (0600, in a 0700
directory: it holds the admin token):

    manifest.json          first member: versions, creation time, sha256 of every other member
    db/netbootd.sqlite3    a consistent snapshot taken with SQLite's online backup API
    secrets/admin.token    if the state dir has one
    secrets/enroll-keys.json   the enrollment token signing keys, if any (without
                           them no token on any boot medium verifies after a restore)
    config/<file>          the config file in use, if any (its path is in the manifest)
    media/index.json       name, size, sha256 of the generated media (files root, discover.img)

Media files themselves are NOT copied (they can be large and are regenerated
or re-downloaded); only their index is kept, and restore reports where the
media on disk differs from it.

The snapshot is safe while the daemon runs: the backup API reads the database
inside one read transaction (pages=-1: a single step), which in WAL mode sees
one committed state and never blocks the writer.  Restore is not: it takes the
state lock (statelock.py) that a running daemon holds, verifies every checksum
before touching anything, keeps a safety copy of the current database and
then replaces it atomically (write, fsync, rename).

Everything here is blocking file work for the CLI; the daemon never calls it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time

from ..auth import admin_token as secrets
from ..auth.enroll import KEYS_FILE
from . import lock as statelock
from .media_index import default_media, media_differences, media_index, sha256_file
from .sqlite import DB_NAME, SCHEMA_VERSION, private_file, private_state_dir

BACKUPS_DIR = "backups"
SUFFIX = ".tar.gz"
FORMAT = "netbootd-state-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DB_MEMBER = "db/" + DB_NAME
TOKEN_MEMBER = "secrets/" + secrets.TOKEN_FILE
KEYS_MEMBER = "secrets/" + KEYS_FILE
_SECRET_ROLES = ("token", "enroll-keys")   # restored 0600
MEDIA_MEMBER = "media/index.json"
_MAX_MANIFEST = 1 << 20
# Letters, digits, '-', '_', '.'; starting with a letter or digit (so never
# '.', '..' or a hidden file); no path separators.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BackupError(RuntimeError):
    pass


# -- names and paths ------------------------------------------------------

def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise BackupError(f"bad backup name {name!r}: use 1-128 letters, digits, '-', '_' "
                          f"or '.', starting with a letter or digit")
    return name


def backups_dir(state_dir: str, create: bool = False) -> str:
    path = os.path.join(state_dir, BACKUPS_DIR)
    if os.path.islink(path):
        raise BackupError(f"{path} is a symlink; refusing to use it")
    if create:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)   # tighten a directory made by someone else
    return path


def archive_path(state_dir: str, name: str) -> str:
    return os.path.join(backups_dir(state_dir), validate_name(name) + SUFFIX)


def netbootd_version() -> str:
    try:
        from .. import __version__
        return __version__
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("netbootd")
        except PackageNotFoundError:
            return "unknown"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_private_file(path: str) -> None:
    """Create an empty 0600 file (O_EXCL): never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# -- database -------------------------------------------------------------

def snapshot_db(src_path: str, dest_path: str) -> int:
    """Copy a live database with the online backup API into a new 0600 file
    (rollback-journal mode, a single self-contained file); return its schema
    version.  Raises BackupError if the copy fails its integrity check."""
    _new_private_file(dest_path)
    # mode=rw: never create a missing source database.
    src = sqlite3.connect(f"file:{src_path}?mode=rw", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest_path, isolation_level=None)
        try:
            src.backup(dst)   # pages=-1: one step, one read transaction, one commit point
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            version = dst.execute("PRAGMA user_version").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if check != "ok":
        raise BackupError(f"snapshot of {src_path} fails its integrity check: {check}")
    return int(version)


def _db_facts(path: str) -> tuple[int, str]:
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (int(c.execute("PRAGMA user_version").fetchone()[0]),
                c.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        c.close()


# -- media index ----------------------------------------------------------

# -- backup ---------------------------------------------------------------

def backup(state_dir: str, name: str, *, config_path: str | None = None,
           files_root: str | None = None, discover_img: str | None = None,
           force: bool = False, now: float | None = None) -> dict:
    """Write <state_dir>/backups/<name>.tar.gz; return its manifest (plus
    "archive" and "archive_size")."""
    validate_name(name)
    db_path = os.path.join(state_dir, DB_NAME)
    if not os.path.isfile(db_path):
        raise BackupError(f"no state database {db_path}")
    bdir = backups_dir(state_dir, create=True)
    final = os.path.join(bdir, name + SUFFIX)
    if os.path.lexists(final) and not force:
        raise BackupError(f"{final} exists; pick another name or pass --force")
    created = time.time() if now is None else now
    staging = tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=bdir)   # 0700
    try:
        members: list[tuple[str, str, str]] = []   # (member name, role, staged path)
        db_copy = os.path.join(staging, "db")
        schema = snapshot_db(db_path, db_copy)
        members.append((DB_MEMBER, "database", db_copy))
        tok = secrets.token_path(state_dir)
        if os.path.isfile(tok):
            members.append((TOKEN_MEMBER, "token", tok))
        keys = os.path.join(state_dir, KEYS_FILE)
        if os.path.isfile(keys):
            members.append((KEYS_MEMBER, "enroll-keys", keys))
        config = None
        if config_path:
            config_path = os.path.abspath(config_path)
            member = "config/" + os.path.basename(config_path)
            members.append((member, "config", config_path))
            config = {"path": config_path, "member": member}
        froot, dimg = default_media(state_dir, files_root, discover_img)
        index = media_index(froot, dimg, exclude=(bdir,))
        index_path = os.path.join(staging, "media-index.json")
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1, sort_keys=True)
        members.append((MEDIA_MEMBER, "media-index", index_path))

        # Files are read once into the staging area or hashed as read: what is
        # hashed is what is archived (the token could be rotated meanwhile).
        staged = []
        for member, role, path in members:
            with open(path, "rb") as f:
                data = f.read() if role in ("config", *_SECRET_ROLES) else None
            if data is not None:
                path = os.path.join(staging, role)
                _new_private_file(path)
                with open(path, "wb") as f:
                    f.write(data)
            digest, size = sha256_file(path)
            staged.append(({"name": member, "role": role, "size": size, "sha256": digest}, path))
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
            "netbootd_version": netbootd_version(), "schema_version": schema,
            "created": created, "created_utc": _utc(created),
            "state_dir": os.path.abspath(state_dir), "config": config,
            "media": {"files_root": froot, "discover_img": dimg,
                      "entries": len(index["entries"]), "copied": False},
            "files": [e for e, _ in staged],
        }
        tmp_tar = os.path.join(staging, "archive" + SUFFIX)
        _write_tar(tmp_tar, manifest, staged, int(created))
        if force:
            os.replace(tmp_tar, final)
        else:
            try:
                os.link(tmp_tar, final)   # atomic create-if-absent: never overwrites
            except FileExistsError:
                raise BackupError(f"{final} exists; pick another name or pass --force") from None
        _fsync_dir(bdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest["archive"] = final
    manifest["archive_size"] = os.path.getsize(final)
    return manifest


def _write_tar(path: str, manifest: dict, staged: list, mtime: int) -> None:
    def info(name: str, size: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime, ti.type = size, 0o600, mtime, tarfile.REGTYPE
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    _new_private_file(path)
    with open(path, "r+b") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            tf.addfile(info(MANIFEST, len(body)), io.BytesIO(body))
            for entry, src in staged:
                with open(src, "rb") as f:
                    tf.addfile(info(entry["name"], entry["size"]), f)
        raw.flush()
        os.fsync(raw.fileno())


# -- reading archives -----------------------------------------------------

def _read_manifest(tf: tarfile.TarFile, path: str) -> dict:
    first = tf.next()
    if first is None or first.name != MANIFEST or not first.isreg():
        raise BackupError(f"{path}: first member is not {MANIFEST}")
    if first.size > _MAX_MANIFEST:
        raise BackupError(f"{path}: {MANIFEST} is implausibly large")
    try:
        m = json.loads(tf.extractfile(first).read())
    except ValueError as e:
        raise BackupError(f"{path}: {MANIFEST} is not JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise BackupError(f"{path}: not a netbootd state backup")
    if m.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{path}: backup format {m.get('format_version')} is not "
                          f"supported (this netbootd reads {FORMAT_VERSION})")
    files = m.get("files")
    if not isinstance(files, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str)
            and isinstance(e.get("size"), int) and isinstance(e.get("sha256"), str)
            for e in files):
        raise BackupError(f"{path}: manifest file list is malformed")
    if not isinstance(m.get("schema_version"), int):
        raise BackupError(f"{path}: manifest has no schema version")
    return m


def read_manifest(path: str) -> dict:
    try:
        with tarfile.open(path, "r:gz") as tf:
            return _read_manifest(tf, path)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BackupError(f"{path}: unreadable: {e}") from None


def list_backups(state_dir: str) -> list[dict]:
    """One row per tarball in the backups dir, oldest first (unreadable ones
    carry an "error")."""
    bdir = backups_dir(state_dir)
    rows = []
    try:
        names = sorted(n for n in os.listdir(bdir) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    for fn in names:
        path = os.path.join(bdir, fn)
        row = {"name": fn[:-len(SUFFIX)], "archive": path, "size": os.path.getsize(path)}
        try:
            m = read_manifest(path)
            row.update(created=m.get("created"), created_utc=m.get("created_utc"),
                       schema_version=m["schema_version"],
                       netbootd_version=m.get("netbootd_version"),
                       config=(m.get("config") or {}).get("path"),
                       files=[e["name"] for e in m["files"]])
        except BackupError as e:
            row["error"] = str(e)
        rows.append(row)
    rows.sort(key=lambda r: (r.get("created") or 0, r["name"]))
    return rows


def extract_verified(path: str, into: str) -> tuple[dict, dict[str, str]]:
    """Stream every member of `path` into the directory `into` (0600 files,
    named by role, never by the member's own name) and check each against the
    manifest: regular file, listed once, size and sha256 equal, none missing,
    none extra.  Returns (manifest, {role: staged path})."""
    try:
        with tarfile.open(path, "r:gz") as tf:
            m = _read_manifest(tf, path)
            want = {e["name"]: e for e in m["files"]}
            if len(want) != len(m["files"]):
                raise BackupError(f"{path}: manifest lists a member twice")
            got: dict[str, str] = {}
            for n, member in enumerate(tf):
                if n == 0:
                    continue   # manifest.json, read above (iteration restarts at member 0)
                e = want.get(member.name)
                if e is None or member.name in got:
                    raise BackupError(f"{path}: member {member.name!r} is not in the manifest")
                if not member.isreg():
                    raise BackupError(f"{path}: member {member.name!r} is not a regular file")
                dest = os.path.join(into, f"member-{n}")
                _new_private_file(dest)
                h, size = hashlib.sha256(), 0
                src = tf.extractfile(member)
                with open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                if size != e["size"] or h.hexdigest() != e["sha256"]:
                    raise BackupError(f"{path}: {member.name} does not match its checksum in "
                                      f"the manifest (tampered or corrupt); nothing restored")
                got[member.name] = dest
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BackupError(f"{path}: unreadable: {e}") from None
    missing = sorted(set(want) - set(got))
    if missing:
        raise BackupError(f"{path}: members missing from the archive: {', '.join(missing)}")
    return m, {want[name].get("role", name): p for name, p in got.items()}


# -- restore --------------------------------------------------------------

def _safety_copy(db_path: str, bdir: str, now: float) -> str | None:
    """Keep the current database as backups/pre-restore-<time>.sqlite3 (via the
    backup API, so committed WAL content is included; a raw copy of the files
    if the database is too broken to read)."""
    if not os.path.exists(db_path):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    for i in range(100):
        dest = os.path.join(bdir, f"pre-restore-{stamp}{'-%d' % i if i else ''}.sqlite3")
        if not os.path.lexists(dest):
            break
    try:
        snapshot_db(db_path, dest)
    except (sqlite3.DatabaseError, BackupError):
        for suffix in ("", "-wal"):
            if os.path.exists(db_path + suffix):
                if os.path.exists(dest + suffix):
                    os.unlink(dest + suffix)
                _new_private_file(dest + suffix)
                shutil.copyfile(db_path + suffix, dest + suffix)
    return dest


def _checkpoint(db_path: str) -> None:
    """Fold the WAL into the database so deleting -wal loses nothing even if
    we stop between deleting it and the rename (the safety copy has it too)."""
    try:
        c = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, timeout=5)
        try:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            c.close()
    except sqlite3.DatabaseError:
        pass


def _install(staged: str, dest: str, mode: int) -> None:
    os.chmod(staged, mode)
    with open(staged, "rb") as f:
        os.fsync(f.fileno())
    os.replace(staged, dest)
    _fsync_dir(os.path.dirname(dest) or ".")


def restore(state_dir: str, name: str, *, restore_config: bool = False,
            now: float | None = None) -> dict:
    """Restore <state_dir>/backups/<name>.tar.gz into state_dir.  Raises
    statelock.StateLocked while a daemon holds the state dir, BackupError for a
    bad archive or a schema newer than this netbootd; in both cases nothing
    has been changed."""
    path = archive_path(state_dir, name)
    if not os.path.isfile(path):
        raise BackupError(f"no backup {name!r} ({path})")
    now = time.time() if now is None else now
    private_state_dir(state_dir)
    private_file(path, create=False)     # an archive copied in by hand: it holds secrets
    with statelock.acquire(state_dir):
        staging = tempfile.mkdtemp(prefix=".restore-", dir=state_dir)   # same fs: rename
        try:
            m, staged = extract_verified(path, staging)
            if "database" not in staged:
                raise BackupError(f"{path}: no database in the backup")
            if m["schema_version"] > SCHEMA_VERSION:
                raise BackupError(
                    f"{path}: schema version {m['schema_version']} is newer than this "
                    f"netbootd supports ({SCHEMA_VERSION}); restore it with a newer netbootd")
            version, check = _db_facts(staged["database"])
            if version != m["schema_version"] or check != "ok":
                raise BackupError(f"{path}: database does not match its manifest (schema "
                                  f"{version}, integrity: {check})")
            result = {"archive": path, "manifest": m, "schema_version": version,
                      "migrates_to": SCHEMA_VERSION if version < SCHEMA_VERSION else None}

            # -- from here on the state dir changes --
            db_path = os.path.join(state_dir, DB_NAME)
            bdir = backups_dir(state_dir, create=True)
            result["safety_copy"] = _safety_copy(db_path, bdir, now)
            if os.path.exists(db_path):
                _checkpoint(db_path)
            # Stale WAL/SHM/journal would be replayed onto the restored file.
            for suffix in ("-wal", "-shm", "-journal"):
                try:
                    os.unlink(db_path + suffix)
                except FileNotFoundError:
                    pass
            _install(staged["database"], db_path, 0o600)
            result["database"] = db_path

            result["token"] = None
            if "token" in staged:
                _install(staged["token"], secrets.token_path(state_dir), 0o600)
                result["token"] = secrets.token_path(state_dir)
            result["enroll_keys"] = None
            if "enroll-keys" in staged:
                keys = os.path.join(state_dir, KEYS_FILE)
                _install(staged["enroll-keys"], keys, 0o600)
                result["enroll_keys"] = keys

            cfg = m.get("config")
            result["config"] = None
            if cfg and "config" in staged:
                result["config"] = {"path": cfg["path"], "member": cfg["member"],
                                    "restored": False}
                if restore_config:
                    target = cfg["path"]
                    tdir = os.path.dirname(target) or "."
                    os.makedirs(tdir, exist_ok=True)
                    mode = os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o600
                    tmp = os.path.join(tdir, f".{os.path.basename(target)}.restore-{os.getpid()}")
                    shutil.copyfile(staged["config"], tmp)
                    _install(tmp, target, mode)
                    result["config"]["restored"] = True

            result["media_differences"] = []
            if "media-index" in staged:
                with open(staged["media-index"], encoding="utf-8") as f:
                    result["media_differences"] = media_differences(json.load(f))
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)
