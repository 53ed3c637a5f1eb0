"""Storage wired into a real daemon (issue 13 item 3): `netbootd serve` in a
namespace with [storage] (a file pool, tgt exports through netbootd's own tgtd),
volumes made and exported with the CLI, and libiscsi's tools in the client
namespace logging in with the IQN and CHAP secret taken from that host's boot
script (GET /boot/<mac>.ipxe).  Another IQN sees nothing; a SIGKILLed tgtd is
restarted and its exports rebuilt from the database; SIGTERM stops tgtd."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time

import pytest

from netbootd.storage.tgtd import answers

from .harness import build_pair, netbootd_bin, require_bin, wait_for, write_config

A, B = "52:54:00:13:01:0a", "52:54:00:13:01:0b"
SRV = "http://10.77.0.1:8080"


def boot_values(lab, ns, mac):
    r = lab.ns_exec(ns, "curl", "-sS", f"{SRV}/boot/{mac.replace(':', '-')}.ipxe", check=False,
                    timeout=30)
    return r.stdout, dict(re.findall(r"^set (\S+) (\S+)$", r.stdout, re.M))


@pytest.mark.interop
def test_a_volume_made_and_sanboot_assigned_with_the_cli_is_reachable_by_that_host_only(
        lab, netbootd_factory, tmp_path):
    require_bin("tgtd", "tgtadm", "iscsi-ls", "iscsi-readcapacity16", "curl")
    control = random.randrange(20000, 32768)
    while answers("tgtadm", control):
        control = random.randrange(20000, 32768)
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    srv, cli, srv_if = lan.ns["srv"], lan.ns["cli"], lan.ifs["srv"]
    cfg = write_config(tmp_path / "netbootd.toml", f"""
[[storage.pools]]
name = "default"
root = "{tmp_path / 'pool'}"
min_free_percent = 1

[storage.iscsi]
iqn_base = "iqn.2026-01.lan.netboot"
tgtd_control = {control}
""")
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", srv_if, "--config", str(cfg)])
    nb.start()
    wait_for(lambda: "storage: 1 pools" in nb.log_path.read_text(), 20, what="storage ready")
    assert "tgt on 10.77.0.1:3260" in nb.log_path.read_text(), nb.log_tail()

    def run(*a):
        return lab.ns_exec(srv, netbootd_bin(), *a, "--server", SRV, "--state-dir",
                           str(nb.state_dir), "--config", str(cfg), check=False, timeout=60)
    r = run("volume", "create", "web01", "--size", "32M")
    assert r.returncode == 0 and "volume web01 (volume) in pool default: 32 MiB" in r.stdout, \
        r.stdout + r.stderr
    r = run("volume", "create", "bad/name", "--size", "32M")
    assert r.returncode == 1 and "contains a slash" in r.stderr
    t0 = time.monotonic()
    r = run("volume", "sanboot", "web01", "--host", A)
    print(f"\nvolume sanboot (CLI, export + assign): {time.monotonic() - t0:.2f} s")
    assert r.returncode == 0 and f"exported to host {A} only" in r.stdout, r.stdout + r.stderr
    r = run("volume", "list", "--json")
    listing = json.loads(r.stdout)
    assert [(v["name"], v["exported_to"]) for v in listing["volumes"]] == [("web01", A)]
    r = run("volume", "delete", "web01")
    assert r.returncode == 1 and "409" in r.stderr and A in r.stderr

    script, vals = boot_values(lab, cli, A)
    target = re.search(r"^sanboot iscsi:10\.77\.0\.1::::?1:(\S+) ", script, re.M)
    assert target and vals["initiator-iqn"].endswith(":host.52540013010a"), script
    tiqn = target.group(1)
    url = f"iscsi://{vals['username']}%{vals['password']}@10.77.0.1"

    def ls(iqn, creds_url):
        return lab.ns_exec(cli, "iscsi-ls", "-i", iqn, creds_url, check=False, timeout=30)

    def readcap(iqn, creds_url):
        return lab.ns_exec(cli, "iscsi-readcapacity16", "-i", iqn, f"{creds_url}/{tiqn}/1",
                           check=False, timeout=30)
    r = ls(vals["initiator-iqn"], url)
    assert tiqn in r.stdout, r.stdout + r.stderr
    r = readcap(vals["initiator-iqn"], url)
    assert r.returncode == 0 and str(32 << 20) in r.stdout, r.stdout + r.stderr
    other = "iqn.2026-01.lan.netboot:host.52540013010b"
    assert tiqn not in ls(other, url).stdout
    assert readcap(other, url).returncode != 0
    assert readcap(vals["initiator-iqn"], "iscsi://10.77.0.1").returncode != 0     # no CHAP
    # B (nothing exported to it yet) gets no CHAP of A's
    _, bvals = boot_values(lab, cli, B)
    assert "password" not in bvals

    # deploy: clone + export + assign in one step; B gets its own target and secret
    r = run("volume", "snapshot", "web01", "golden")
    assert r.returncode == 0 and "(snapshot)" in r.stdout, r.stderr
    r = run("volume", "sanboot", "golden", "--host", B)
    assert r.returncode == 1 and "read-only snapshot" in r.stderr
    r = run("hosts", "assign", B, "sanboot", "--volume", "golden")    # the same, as hosts
    assert r.returncode == 1 and "read-only snapshot" in r.stderr
    t0 = time.monotonic()
    r = run("deploy", B, "--from", "golden", "--name", "web02")
    print(f"deploy (CLI, 32 MiB copy clone + export + assign): {time.monotonic() - t0:.2f} s")
    assert r.returncode == 0 and "cloned golden -> web02" in r.stdout, r.stdout + r.stderr
    r = run("volume", "exports", "--json")
    rows = json.loads(r.stdout)["exports"]
    assert sorted((e["volume"], e["host"], e["chap"]) for e in rows) == \
        [("web01", A, True), ("web02", B, True)]
    assert vals["password"] not in r.stdout
    _, bvals = boot_values(lab, cli, B)
    assert bvals["password"] != vals["password"]
    r = lab.ns_exec(cli, "curl", "-sS", f"{SRV}/metrics", check=False, timeout=30)
    assert 'netbootd_storage_exports 2.0' in r.stdout
    assert 'netbootd_storage_pool_bytes{kind="provisioned",pool="default"}' in r.stdout
    assert vals["password"] not in r.stdout and bvals["password"] not in r.stdout

    # tgtd SIGKILLed: restarted by netbootd, the export rebuilt from the database
    pid = int(subprocess.run(["pgrep", "-f", f"tgtd -f -C {control} "], capture_output=True,
                             text=True).stdout.split()[0])
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    wait_for(lambda: readcap(vals["initiator-iqn"], url).returncode == 0, 20,
             interval=0.1, what="the export back after a tgtd restart")
    print(f"tgtd SIGKILLed -> LUN readable again: {time.monotonic() - t0:.2f} s")

    assert nb.stop() == 0
    assert not answers("tgtadm", control), "tgtd still runs after netbootd stopped"
    # a new netbootd rebuilds the exports from the database at start (same secrets)
    nb.start()
    wait_for(lambda: nb.log_path.read_text().count("storage: 1 pools") == 2, 20,
             what="storage ready again")
    assert readcap(vals["initiator-iqn"], url).returncode == 0
    assert readcap(other, url).returncode != 0
    # netbootd SIGKILLed: its tgtd lives on (serving the hosts); the next netbootd
    # takes it over (stops it, starts its own) and rebuilds
    nb.kill9()
    assert answers("tgtadm", control)
    assert readcap(vals["initiator-iqn"], url).returncode == 0
    nb.start()
    wait_for(lambda: nb.log_path.read_text().count("storage: 1 pools") == 3, 20,
             what="storage ready after a SIGKILL")
    assert "was left by a netbootd that is gone" in nb.log_path.read_text()
    assert readcap(vals["initiator-iqn"], url).returncode == 0
    assert nb.stop() == 0
    assert not answers("tgtadm", control)


@pytest.mark.interop
def test_lio_without_configfs_serves_volumes_without_exports(lab, netbootd_factory, tmp_path):
    """This kernel has no configfs: one log line, volumes still served, sanboot a 409."""
    if os.path.isdir("/sys/kernel/config/target"):
        pytest.skip("this kernel has LIO (configfs): the refusal path cannot be seen here")
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    srv, srv_if = lan.ns["srv"], lan.ifs["srv"]
    cfg = write_config(tmp_path / "netbootd.toml", f"""
[[storage.pools]]
name = "default"
root = "{tmp_path / 'pool'}"

[[storage.pools]]
name = "thin"
backend = "lvm"
vg = "nbtestvg"
thin_pool = "pool"

[storage.iscsi]
backend = "lio"
""")
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", srv_if, "--config", str(cfg)])
    nb.start()
    wait_for(lambda: "storage: 1 pools" in nb.log_path.read_text(), 20, what="storage ready")
    log = nb.log_path.read_text()
    assert "storage: no exports: this kernel has no configfs/LIO" in log, nb.log_tail()
    assert "storage: pool 'thin' cannot open:" in log

    def run(*a):
        return lab.ns_exec(srv, netbootd_bin(), *a, "--server", SRV, "--state-dir",
                           str(nb.state_dir), "--config", str(cfg), check=False, timeout=60)
    r = run("volume", "create", "web01", "--size", "8M", "--pool", "default")
    assert r.returncode == 0, r.stderr
    r = run("volume", "sanboot", "web01", "--host", A)
    assert r.returncode == 1 and "exports are not available: this kernel has no configfs" \
        in r.stderr, r.stderr
    r = run("volume", "list", "--json")
    pools = {p["name"]: p for p in json.loads(r.stdout)["pools"]}
    assert pools["default"]["error"] is None and pools["thin"]["error"]
    assert nb.stop() == 0
