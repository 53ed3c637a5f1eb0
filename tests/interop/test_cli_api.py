"""The CLI over the daemon's API, with a real daemon in a namespace."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from .harness import build_pair, netbootd_bin

MAC = "52:54:00:aa:00:01"


@pytest.mark.interop
def test_cli_lists_shows_follows_and_changes_hosts_through_the_api(lab, netbootd_factory):
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    srv, cli, srv_if = lan.ns["srv"], lan.ns["cli"], lan.ifs["srv"]
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", srv_if]).start()
    run = lambda *a: lab.ns_exec(srv, netbootd_bin(), *a, check=False, timeout=30)   # noqa: E731
    lab.ns_exec(cli, "curl", "-s", "--data", json.dumps({"mac": MAC, "ip": "10.77.0.9"}),
                "http://10.77.0.1:8080/api/v1/agent/register")
    r = run("hosts", "list", "--json", "--server", "http://10.77.0.1:8080")
    assert r.returncode == 0, r.stderr
    assert [h["mac"] for h in json.loads(r.stdout)] == [MAC]
    r = run("hosts", "list", "--server", "http://10.77.0.1:8080")
    assert "MAC" in r.stdout.splitlines()[0] and MAC in r.stdout and "registered" in r.stdout

    follow = lab.popen(srv, [netbootd_bin(), "events", "-f", "--json", "--mac", MAC,
                             "--server", "http://10.77.0.1:8080"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    r = run("hosts", "retire", MAC, "--server", "http://10.77.0.1:8080",
            "--state-dir", str(nb.state_dir))
    assert r.returncode == 0 and r.stdout.strip() == f"{MAC}: retired", r.stderr
    time.sleep(2.5)
    lab.stop(follow)
    lines = [json.loads(ln) for ln in follow.stdout.read().splitlines() if ln.startswith("{")]
    assert any(e["kind"] == "host.state" and e["detail"]["new"] == "retired" for e in lines)

    r = run("hosts", "show", MAC, "--json", "--server", "http://10.77.0.1:8080")
    host = json.loads(r.stdout)
    assert host["state"] == "retired" and [e["kind"] for e in host["timeline"]][0] in (
        "host.discovered", "agent.register")
    r = run("hosts", "approve", MAC, "--server", "http://10.77.0.1:8080",
            "--state-dir", str(nb.state_dir))
    assert r.returncode == 1 and "409" in r.stderr
    r = run("hosts", "retire", MAC, "--server", "http://10.77.0.1:8080",
            "--state-dir", "/nonexistent")
    assert r.returncode != 0 and "token" in (r.stderr + r.stdout)
    # the state dir named without --server: read directly, same answer
    r = subprocess.run([netbootd_bin(), "hosts", "list", "--json", "--state-dir",
                        str(nb.state_dir)], capture_output=True, text=True, timeout=30)
    assert [h["mac"] for h in json.loads(r.stdout)] == [MAC]
    # ... and the same table: the offline path prints the API path's columns
    offline = subprocess.run([netbootd_bin(), "hosts", "list", "--state-dir", str(nb.state_dir)],
                             capture_output=True, text=True, timeout=30)
    online = run("hosts", "list", "--server", "http://10.77.0.1:8080")
    assert offline.stdout.splitlines()[0].split() == online.stdout.splitlines()[0].split()
    assert MAC in offline.stdout.splitlines()[1]


@pytest.mark.interop
def test_cli_hosts_list_pages_through_the_api(lab, netbootd_factory, tmp_path):
    """hosts list shows --limit hosts and says how to get the rest; --all walks
    every page (same columns, one JSON list); --cursor continues."""
    from .harness import write_config
    lan = build_pair(lab, "10.77.0.1/24", "10.77.0.2/24")
    srv, cli, srv_if = lan.ns["srv"], lan.ns["cli"], lan.ifs["srv"]
    cfg = write_config(tmp_path / "netbootd.toml", "[hosts]\nnew_per_source_pps = 1000.0\n")
    netbootd_factory(srv, ["--mode", "full", "--interface", srv_if, "--config", str(cfg)]).start()
    macs = [f"52:54:00:aa:01:{i:02x}" for i in range(25)]
    for mac in macs:
        lab.ns_exec(cli, "curl", "-sf", "--data", json.dumps({"mac": mac}),
                    "http://10.77.0.1:8080/api/v1/agent/register")
    run = lambda *a: lab.ns_exec(srv, netbootd_bin(), "hosts", "list", "--server",   # noqa: E731
                                 "http://10.77.0.1:8080", *a, check=False, timeout=30)
    r = run("--json", "--limit", "10")
    assert r.returncode == 0 and [h["mac"] for h in json.loads(r.stdout)] == macs[:10]
    assert "10 of 25 hosts shown" in r.stderr and "--cursor " in r.stderr
    cursor = r.stderr.split("--cursor ", 1)[1].split()[0]
    r = run("--json", "--limit", "10", "--cursor", cursor)
    assert [h["mac"] for h in json.loads(r.stdout)] == macs[10:20]
    r = run("--json", "--limit", "10", "--all")
    assert [h["mac"] for h in json.loads(r.stdout)] == macs and r.stderr == ""
    r = run("--all")
    assert r.stdout.splitlines()[0].split()[:2] == ["MAC", "STATE"]
    assert len(r.stdout.splitlines()) == 26
