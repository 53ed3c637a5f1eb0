"""Interfaces followed while netbootd runs (net/netlink.py,
net/services/netlink.py): an interface that appears is served, one whose
address changes is served from the new address, one that loses its address
or goes away is dropped, a VLAN interface is served - each seen by a DHCP
client in another namespace (an OFFER only while the interface is served)
and as iface.* events."""
from __future__ import annotations

import ipaddress

import pytest

from .harness import Agent, db_query, discover, wait_for, write_config

pytestmark = pytest.mark.interop

CONFIG = """mode = "full"
interfaces = ["{pattern}"]
[[networks]]
name = "one"
subnet = "10.77.0.0/16"
[[networks]]
name = "two"
subnet = "10.78.0.0/16"
[[networks]]
name = "vlan10"
subnet = "10.79.0.0/16"
"""


def events(nb, kind: str) -> list[dict]:
    import json
    return [json.loads(r["detail"]) for r in
            db_query(nb.state_dir, "SELECT detail FROM events WHERE kind = ?", (kind,))]


def logged(nb, text: str, timeout: float = 10) -> None:
    wait_for(lambda: text in nb.log_path.read_text(errors="replace"), timeout,
             what=f"netbootd to log {text!r}")


def offer_from(agent, mac: str, timeout: float = 3):
    offer, _ = discover(agent, mac, timeout=timeout)
    return offer


@pytest.fixture
def world(lab, netbootd_factory, tmp_path):
    srv = lab.namespace("srv")
    cli = lab.namespace("cli")
    s1, c1 = lab.link(srv, "10.77.0.1/16", cli, None)
    cfg = write_config(tmp_path / "nb.toml", CONFIG.format(pattern=f"{lab.prefix}a*"))
    nb = netbootd_factory(srv, ["--config", str(cfg)]).start()
    agents = []

    def agent(iface):
        a = Agent(lab, cli, iface, absorb=(67, 68), log_path=tmp_path / f"agent-{iface}.log")
        agents.append(a)
        return a
    try:
        yield lab, srv, cli, nb, agent, (s1, c1)
    finally:
        for a in agents:
            a.close()


def test_interface_added_changed_emptied_and_removed_while_running(world):
    lab, srv, cli, nb, agent, (s1, _) = world
    assert offer_from(agent(_first_cli(lab, cli)), "02:77:00:00:00:01").server_id == "10.77.0.1"
    # a second segment appears: served without a restart
    s2, c2 = lab.link(srv, "10.78.0.1/16", cli, None)
    logged(nb, f"netlink: serving {s2} 10.78.0.1/16 (network two)")
    a2 = agent(c2)
    offer = offer_from(a2, "02:78:00:00:00:01")
    assert offer is not None, nb.log_tail()
    assert offer.server_id == "10.78.0.1"
    assert ipaddress.IPv4Address(offer.yiaddr) in ipaddress.IPv4Network("10.78.0.0/16")
    # TFTP followed too: iPXE's binary from the new address
    lab.ns_exec(cli, "ip", "addr", "add", "10.78.0.50/16", "dev", c2)
    assert tftp_size(lab, cli, "10.78.0.1") > 50_000
    # its address changes (the old primary deleted, the new one promoted):
    # the OFFER names the new one
    lab.ns_exec(srv, "sysctl", "-qw", f"net.ipv4.conf.{s2}.promote_secondaries=1")
    lab.ns_exec(srv, "ip", "addr", "add", "10.78.0.5/16", "dev", s2)
    lab.ns_exec(srv, "ip", "addr", "del", "10.78.0.1/16", "dev", s2)
    logged(nb, f"netlink: serving {s2} 10.78.0.5/16")
    assert offer_from(a2, "02:78:00:00:00:02").server_id == "10.78.0.5"
    # the address goes: not served (no OFFER), the first segment still is
    lab.ns_exec(srv, "ip", "addr", "flush", "dev", s2)
    logged(nb, f"netlink: {s2} (10.78.0.5) is gone")
    assert offer_from(a2, "02:78:00:00:00:03", timeout=2) is None
    assert tftp_size(lab, cli, "10.78.0.1") == 0
    assert offer_from(agent(_first_cli(lab, cli)), "02:77:00:00:00:02") is not None
    # and back, then the interface itself goes away
    lab.ns_exec(srv, "ip", "addr", "add", "10.78.0.1/16", "dev", s2)
    wait_for(lambda: offer_from(a2, "02:78:00:00:00:04", timeout=1), 10, interval=0.2,
             what="an OFFER on the re-addressed interface")
    lab.ns_exec(srv, "ip", "link", "del", s2)
    wait_for(lambda: len(events(nb, "iface.down")) >= 2, 10, what="iface.down events")
    assert {e["iface"] for e in events(nb, "iface.up")} == {s2}
    assert [e["ip"] for e in events(nb, "iface.changed")] == ["10.78.0.5"]
    assert nb.alive()


def test_vlan_interface_is_served(world):
    lab, srv, cli, nb, agent, (s1, c1) = world
    vs, vc = f"{s1}.10", f"{c1}.10"
    r = lab.ns_exec(srv, "ip", "link", "add", "link", s1, "name", vs, "type", "vlan", "id", "10",
                    check=False)
    if "Unknown device type" in r.stderr:
        pytest.skip("this kernel cannot make 802.1Q links (no 8021q; no loadable modules here)")
    assert r.returncode == 0, r.stderr
    lab.ns_exec(cli, "ip", "link", "add", "link", c1, "name", vc, "type", "vlan", "id", "10")
    lab.ns_exec(cli, "ip", "link", "set", vc, "up")
    lab.ns_exec(srv, "ip", "addr", "add", "10.79.0.1/16", "dev", vs)
    lab.ns_exec(srv, "ip", "link", "set", vs, "up")
    logged(nb, f"netlink: serving {vs} 10.79.0.1/16 (network vlan10)")
    offer = offer_from(agent(vc), "02:79:00:00:00:01")
    assert offer is not None and offer.server_id == "10.79.0.1", nb.log_tail()
    assert ipaddress.IPv4Address(offer.yiaddr) in ipaddress.IPv4Network("10.79.0.0/16")
    # untagged on the parent still gets the parent's network
    assert offer_from(agent(c1), "02:77:00:00:00:09").server_id == "10.77.0.1"


def tftp_size(lab, ns: str, server: str) -> int:
    r = lab.ns_exec(ns, "curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w",
                    "%{size_download}", f"tftp://{server}/undionly.kpxe", check=False)
    return int(r.stdout or 0)


def _first_cli(lab, cli):
    return f"{lab.prefix}b1"
