"""Secrets at rest (issue 11 item 8): a real `netbootd serve` keeps its state dir
0700 and every file in it 0600 (the database and its -wal/-shm, the admin token,
the enrollment keys, backups), after a start, a `state backup` and a `state
restore`, whatever the umask and whoever made the state dir beforehand."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from netbootd.auth import enroll

from .harness import build_pair, netbootd_bin

MAC = "52:54:00:5a:00:01"
API = "http://10.77.0.1:8080/api/v1"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def _loose(sd: Path) -> list[str]:
    """What others could read: the state dir or backups/ not 0700, any file in the
    state dir not 0600.  files/ (the public boot files root) is not secret and
    sits behind the 0700 state dir."""
    bad = [f"{d.relative_to(sd.parent)} {_mode(d):04o}" for d in (sd, sd / "backups")
           if d.exists() and _mode(d) != 0o700]
    for root, dirs, files in os.walk(sd):
        if Path(root) == sd and "files" in dirs:
            dirs.remove("files")
        for name in files:
            p = Path(root, name)
            if _mode(p) & 0o077:
                bad.append(f"{p.relative_to(sd)} {_mode(p):04o}")
    return bad


def _state(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([netbootd_bin(), "state", *args], capture_output=True, text=True,
                          timeout=60)


def _stub_config(tmp_path: Path) -> Path:
    """A config whose discover initrd is a stub outside the state dir (no build)."""
    stub = tmp_path / "discover-stub.img"
    stub.write_bytes(b"stub initrd")
    cfg = tmp_path / "netbootd.toml"
    cfg.write_text(f'[boot]\ndiscover_initrd = "{stub}"\n')
    return cfg


@pytest.fixture
def permissive_umask():
    """The daemon and the CLI inherit umask 022: the default that made the
    database 0644."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.interop
def test_state_dir_and_secrets_stay_private_through_start_backup_restore(
        lab, netbootd_factory, tmp_path, permissive_umask):
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    srv, cli = lan.ns["srv"], lan.ns["cli"]
    cfg = _stub_config(tmp_path)
    sd = tmp_path / "state"
    sd.mkdir(mode=0o755)                            # made looser beforehand (a package, an admin)
    os.chmod(sd, 0o755)
    ring = enroll.KeyRing.load_or_create(str(sd))   # present whether or not the daemon makes it
    kid_at_backup = ring.current
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", lan.ifs["srv"],
                                "--config", str(cfg)], state_dir=sd).start()

    def register(mac: str) -> None:
        r = lab.ns_exec(cli, "curl", "-s", "-m", "10", "--data",
                        json.dumps({"mac": mac, "ip": "10.77.0.9"}), API + "/agent/register",
                        check=False, timeout=20)
        assert r.returncode == 0 and mac in r.stdout, (r.stdout, r.stderr)

    register(MAC)                                   # a commit: the WAL exists now
    names = {p.name for p in sd.iterdir()}
    assert {"netbootd.sqlite3", "netbootd.sqlite3-wal", "netbootd.sqlite3-shm",
            "admin.token", enroll.KEYS_FILE} <= names, names
    assert _loose(sd) == [], f"after start: {_loose(sd)}"

    r = _state("backup", "-n", "b1", "--state-dir", str(sd), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert (sd / "backups" / "b1.tar.gz").is_file()
    assert _loose(sd) == [], f"after backup: {_loose(sd)}"

    register("52:54:00:5a:00:02")
    ring.rotate(str(sd))
    assert nb.stop() == 0, nb.log_tail()
    r = _state("restore", "-n", "b1", "--state-dir", str(sd), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert any(p.name.startswith("pre-restore-") for p in (sd / "backups").iterdir())
    assert "enrollment keys: " + str(sd / enroll.KEYS_FILE) in r.stdout, r.stdout
    assert enroll.KeyRing.load_or_create(str(sd)).current == kid_at_backup   # keys came back
    assert _loose(sd) == [], f"after restore: {_loose(sd)}"

    nb.start()                                      # the restored database reopened
    register("52:54:00:5a:00:03")
    assert _loose(sd) == [], f"after restart: {_loose(sd)}"


@pytest.mark.interop
def test_a_loose_state_dir_from_an_older_netbootd_is_tightened(
        lab, netbootd_factory, tmp_path, permissive_umask):
    """State written by an older netbootd (database, WAL and token 0644 in a 0755
    dir) is tightened at start, and the daemon says so in its log."""
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    sd = tmp_path / "state"
    nb = netbootd_factory(lan.ns["srv"], ["--mode", "full", "--interface", lan.ifs["srv"],
                                          "--config", str(_stub_config(tmp_path))],
                          state_dir=sd).start()
    assert nb.stop() == 0, nb.log_tail()
    os.chmod(sd, 0o755)
    loosened = [p for p in sd.iterdir() if p.is_file() and p.name != "netbootd.lock"]
    assert {"netbootd.sqlite3", "admin.token"} <= {p.name for p in loosened}
    for p in loosened:                 # the lock file holds a PID only: not a secret
        os.chmod(p, 0o644)
    nb.start()
    assert _loose(sd) == [], _loose(sd)
    log = nb.log_path.read_text(errors="replace")
    assert "tightened" in log, nb.log_tail(30)
