"""`netbootd net bridge add|del` run inside namespaces (`ip netns exec`):
made through pyroute2, idempotent, refusing the default route's interface
unless --force; `netbootd net show` against a running daemon."""
from __future__ import annotations

import json

import pytest

from .harness import PYTHON, build_pair, netbootd_bin, write_config

pytestmark = pytest.mark.interop


def cli(lab, ns, *args, check=True):
    r = lab.ns_exec(ns, netbootd_bin(), *args, check=False, timeout=60)
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def link(lab, ns, name) -> dict:
    return json.loads(lab.ns_exec(ns, "ip", "-j", "-d", "addr", "show", "dev", name).stdout)[0]


def test_bridge_add_is_idempotent_and_del_removes_it(lab):
    lan = build_pair(lab)
    ns, port = lan.ns["cli"], lan.ifs["cli"]
    br = f"{lab.prefix}br"
    r = cli(lab, ns, "net", "bridge", "add", br, "--port", port, "--address", "10.77.9.1/24")
    assert f"created bridge {br}" in r.stdout and f"added {port} to {br}" in r.stdout
    assert link(lab, ns, port)["master"] == br
    b = link(lab, ns, br)
    assert b["linkinfo"]["info_kind"] == "bridge" and "UP" in b["flags"]
    assert {(a["local"], a["prefixlen"]) for a in b["addr_info"] if a["family"] == "inet"} \
        == {("10.77.9.1", 24)}
    # the same again: nothing to do, said so, exit 0
    r = cli(lab, ns, "net", "bridge", "add", br, "--port", port, "--address", "10.77.9.1/24")
    assert r.stdout.strip() == f"bridge {br}: already as asked: nothing to do"
    r = cli(lab, ns, "net", "bridge", "add", br, "--port", port, "--json")
    assert json.loads(r.stdout) == {"bridge": br, "changed": False, "done": []}
    # traffic flows through the bridge: a TCP connect to its address from srv
    # is refused (RST from the bridge's host), not timed out
    lab.ns_exec(lan.ns["srv"], "ip", "addr", "add", "10.77.9.2/24", "dev", lan.ifs["srv"])
    r = lab.ns_exec(lan.ns["srv"], PYTHON, "-c", "import socket\ntry:\n"
                    " socket.create_connection(('10.77.9.1', 9), timeout=3)\n"
                    "except ConnectionRefusedError:\n print('refused')", check=False)
    assert r.stdout.strip() == "refused", r
    # bad input: named, exit 1, nothing made
    r = cli(lab, ns, "net", "bridge", "add", f"{br}x", "--port", "nope0", check=False)
    assert r.returncode == 1 and "port 'nope0' does not exist" in r.stderr
    r = cli(lab, ns, "net", "bridge", "add", f"{br}x", "--port", port, "--address", "10.1.2.3",
            check=False)
    assert r.returncode == 1 and "--address" in r.stderr
    assert lab.ns_exec(ns, "ip", "link", "show", f"{br}x", check=False).returncode != 0
    r = cli(lab, ns, "net", "bridge", "del", br)
    assert r.stdout.strip() == f"deleted bridge {br}"
    assert link(lab, ns, port).get("master") is None
    r = cli(lab, ns, "net", "bridge", "del", br)
    assert r.stdout.strip() == f"bridge {br}: does not exist: nothing to do"


def test_bridge_with_vlan_port(lab):
    lan = build_pair(lab)
    ns, port = lan.ns["cli"], lan.ifs["cli"]
    br = f"{lab.prefix}bv"
    r = cli(lab, ns, "net", "bridge", "add", br, "--port", port, "--vlan", "10", check=False)
    if r.returncode != 0:
        # This kernel has no 802.1Q (no 8021q, no modules): the error says so
        # and no half-made bridge is left behind.
        assert "cannot create VLAN 10" in r.stderr and "8021q" in r.stderr, r.stderr
        assert lab.ns_exec(ns, "ip", "link", "show", br, check=False).returncode != 0
        pytest.skip("this kernel cannot make 802.1Q links")
    assert link(lab, ns, f"{port}.10")["master"] == br
    cli(lab, ns, "net", "bridge", "del", br)
    assert lab.ns_exec(ns, "ip", "link", "show", f"{port}.10", check=False).returncode != 0


def test_default_route_interface_is_refused_unless_forced(lab):
    lan = build_pair(lab)
    ns, port = lan.ns["cli"], lan.ifs["cli"]
    lab.ns_exec(ns, "ip", "route", "add", "default", "via", "10.77.0.1", "dev", port)
    br = f"{lab.prefix}bd"
    r = cli(lab, ns, "net", "bridge", "add", br, "--port", port, check=False)
    assert r.returncode == 1 and "carries this host's default route" in r.stderr, r.stderr
    assert lab.ns_exec(ns, "ip", "link", "show", br, check=False).returncode != 0
    cli(lab, ns, "net", "bridge", "add", br, "--port", port, "--force")
    assert link(lab, ns, port)["master"] == br
    r = cli(lab, ns, "net", "bridge", "del", br, check=False)
    assert r.returncode == 1 and "default route" in r.stderr
    cli(lab, ns, "net", "bridge", "del", br, "--force")
    assert lab.ns_exec(ns, "ip", "link", "show", br, check=False).returncode != 0


def test_net_show_from_the_daemon_and_locally(lab, netbootd_factory, tmp_path):
    lan = build_pair(lab)
    srv = lan.ns["srv"]
    cfg = write_config(tmp_path / "nb.toml", 'mode = "full"\n[[networks]]\nname = "one"\n'
                       'subnet = "10.77.0.0/16"\nipv6_ra_quench = false\n')
    netbootd_factory(srv, ["--config", str(cfg), "--interface", lan.ifs["srv"]]).start()
    rows = {r["name"]: r for r in json.loads(cli(lab, srv, "net", "show", "--json",
                                                 "--config", str(cfg)).stdout)}
    me = rows[lan.ifs["srv"]]
    assert (me["served"], me["served_ip"], me["network"], me["ra"]) == \
        (True, "10.77.0.1", "one", "off for this network")
    assert me["ipv4"] == ["10.77.0.1/16"] and rows["lo"]["served"] is False
    table = cli(lab, srv, "net", "show", "--config", str(cfg)).stdout
    assert "NAME" in table and lan.ifs["srv"] in table and "10.77.0.1/16" in table
    # without a daemon: this host's interfaces, nothing claimed as served
    local = json.loads(cli(lab, lan.ns["cli"], "net", "show", "--local", "--json").stdout)
    assert {r["name"] for r in local} == {"lo", lan.ifs["cli"]}
    assert all(r["served"] is None for r in local)
