"""`netbootd state backup|restore` against a real `netbootd serve --mode full`
inside a network namespace: backup -> change -> restore -> identical API
answers.  The API is queried with curl inside the server namespace; the
lease comes from a real busybox udhcpc in the client namespace."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from .harness import (HELPERS, iface_mac, netbootd_bin, require_bin, wait_for, write_config)

SERVER = "10.77.0.1"
API = f"http://{SERVER}:8080/api/v1"
MACS = ["52:54:00:5e:00:01", "52:54:00:5e:00:02", "52:54:00:5e:00:03"]


class ApiClient:
    def __init__(self, lab, ns: str):
        self.lab, self.ns = lab, ns

    def call(self, method: str, path: str, body: dict | None = None,
             token: str | None = None) -> tuple[int, object]:
        cmd = ["curl", "-s", "-m", "10", "-X", method, "-w", "\n%{http_code}"]
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        r = self.lab.ns_exec(self.ns, *cmd, API + path, check=False, timeout=20)
        text, _, code = r.stdout.rpartition("\n")
        try:
            return int(code), (json.loads(text) if text.strip() else None)
        except ValueError:
            return int(code or 0), text

    def answers(self) -> dict:
        """What an admin sees: the host and lease lists (status + body)."""
        return {p: self.call("GET", p) for p in ("/hosts", "/leases")}


def _state(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([netbootd_bin(), "state", *args], capture_output=True, text=True,
                          timeout=60)


def _udhcpc(lab, ns: str, ifname: str, events, release: bool) -> None:
    """busybox udhcpc: DORA and quit (-q), or (release=True) DORA, then SIGTERM
    with -R so it unicasts a DHCPRELEASE from the bound address."""
    bb = require_bin("busybox")["busybox"]
    events.write_text("")
    cmd = ["env", f"UDHCPC_EVENTS={events}", bb, "udhcpc", "-i", ifname, "-f", "-n",
           "-t", "5", "-T", "1", "-s", str(HELPERS / "udhcpc_record.sh")]
    if not release:
        r = lab.ns_exec(ns, *cmd, "-q", check=False, timeout=40)
        assert r.returncode == 0, f"udhcpc got no lease: {r.stdout}{r.stderr}"
        return
    p = lab.popen(ns, cmd + ["-R"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "event=bound" in events.read_text() or p.poll() is not None, 20,
                 what="udhcpc bound")
    finally:
        lab.stop(p, signal.SIGTERM, timeout=10)


@pytest.fixture
def served(lab, netbootd_factory, tmp_path):
    """netbootd serve --mode full in 'srv' (10.77.0.1/24), a DHCP client
    namespace 'cli' joined by one veth; the discover initrd is a stub so the
    start-up does not build one."""
    require_bin("curl")
    srv, cli = lab.namespace("srv"), lab.namespace("cli")
    a, b = lab.link(srv, f"{SERVER}/24", cli, "10.77.0.2/24")
    stub = tmp_path / "discover-stub.img"
    stub.write_bytes(b"stub initrd")
    cfg = write_config(tmp_path / "netbootd.toml",
                       f'[dhcp]\nlease_time = 3600\n\n[boot]\ndiscover_initrd = "{stub}"\n')
    sd = tmp_path / "state"
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", a, "--config", str(cfg)],
                          state_dir=sd)
    return nb.start(), ApiClient(lab, srv), (cli, b), cfg, sd


@pytest.mark.interop
def test_backup_change_restore_gives_identical_api_answers(served, lab, tmp_path):
    """Hosts registered by the agent API and a udhcpc lease are backed up while
    the daemon serves; then a profile is assigned, a host registered and the
    lease released; after SIGTERM, `state restore` and a fresh start,
    /api/v1/hosts and /api/v1/leases answer exactly as at backup time."""
    nb, api, (cli, cli_if), cfg, sd = served
    for i, mac in enumerate(MACS):
        code, reply = api.call("POST", "/agent/register", {"mac": mac, "ip": f"10.77.0.{50 + i}"})
        assert code == 200, reply
    _udhcpc(lab, cli, cli_if, tmp_path / "udhcpc-1.events", release=False)
    cli_mac = iface_mac(lab, cli, cli_if)
    at_backup = api.answers()
    assert at_backup["/hosts"][0] == 200 and len(at_backup["/hosts"][1]["hosts"]) >= len(MACS)
    assert at_backup["/leases"][0] == 200, at_backup["/leases"]
    assert [lease["state"] for lease in at_backup["/leases"][1]
            if lease["mac"] == cli_mac] == ["active"], at_backup["/leases"]

    r = _state("backup", "-n", "before-change", "--state-dir", str(sd), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert api.answers() == at_backup, "taking a backup changed what the API answers"

    token = (sd / "admin.token").read_text().strip()
    code, reply = api.call("POST", f"/hosts/{MACS[0]}/assign", {"profile": "localboot"}, token)
    assert code == 200 and reply["profile"] == "localboot", reply
    code, _ = api.call("POST", "/agent/register", {"mac": "52:54:00:5e:00:99", "ip": "10.77.0.99"})
    assert code == 200
    _udhcpc(lab, cli, cli_if, tmp_path / "udhcpc-2.events", release=True)

    def released():
        a = api.answers()
        return a if any(lease["mac"] == cli_mac and lease["state"] == "released"
                        for lease in a["/leases"][1]) else None
    changed = wait_for(released, 10, what="the lease to be released")
    assert changed["/hosts"] != at_backup["/hosts"]
    assert changed["/leases"] != at_backup["/leases"]

    assert nb.stop() == 0, nb.log_tail()
    r = _state("restore", "-n", "before-change", "--state-dir", str(sd), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "previous database kept as" in r.stdout and "config not restored" in r.stdout
    nb.start()
    after = api.answers()
    assert after == at_backup, (f"API answers differ after restore:\nbackup: {at_backup}\n"
                                f"after:  {after}\nlog:\n{nb.log_tail(30)}")
    # The restored lease table is the authority again: the same client gets
    # its address back.
    _udhcpc(lab, cli, cli_if, tmp_path / "udhcpc-3.events", release=False)
    addr = [lease["address"] for lease in at_backup["/leases"][1] if lease["mac"] == cli_mac]
    assert f"ip={addr[0]}" in (tmp_path / "udhcpc-3.events").read_text()


@pytest.mark.interop
def test_restore_is_refused_while_the_daemon_serves(served, tmp_path):
    """The serving daemon holds <state_dir>/netbootd.lock: `state restore`
    exits 1 naming its PID and changes nothing; a backup still works."""
    nb, api, _cli, cfg, sd = served
    assert api.call("POST", "/agent/register", {"mac": MACS[0], "ip": "10.77.0.50"})[0] == 200
    r = _state("backup", "-n", "live", "--state-dir", str(sd))
    assert r.returncode == 0, r.stderr
    before = api.answers()
    db_files = sorted(p.name for p in sd.iterdir())
    r = _state("restore", "-n", "live", "--state-dir", str(sd))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "refusing to restore" in r.stderr and str(nb.pid) in r.stderr, r.stderr
    assert sorted(p.name for p in sd.iterdir()) == db_files
    assert sorted(p.name for p in (sd / "backups").iterdir()) == ["live.tar.gz"]
    assert api.answers() == before and nb.alive()
