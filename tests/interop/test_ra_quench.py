"""The router-advertisement quench (net/ra.py) answering real router
solicitations in namespaces: lifetime 0, no flags, no prefix, hop limit 255,
from the server's link-local address; silent where the network turns it off,
where IPv6 is off, and once another router answers on the link."""
from __future__ import annotations

import json

import pytest

from .harness import HELPERS, PYTHON, build_pair, wait_for, write_config

pytestmark = pytest.mark.interop

CONFIG = """mode = "full"
[[networks]]
name = "lan"
subnet = "10.77.0.0/16"
ranges = ["10.77.1.0-10.77.1.200"]
{extra}
"""


def enable_ipv6(lab, ns: str, iface: str) -> str:
    """IPv6 on for one interface (the lab turns it off), DAD off so the
    link-local address is usable at once, no solicitations of the kernel's
    own (an answer to one would reach rs_client too); returns that address."""
    for key, val in (("accept_dad", "0"), ("router_solicitations", "0"),
                     ("disable_ipv6", "0")):
        lab.ns_exec(ns, "sysctl", "-qw", f"net.ipv6.conf.{iface}.{key}={val}")
    out = wait_for(lambda: lab.ns_exec(ns, "ip", "-6", "-o", "addr", "show", "dev", iface,
                                       "scope", "link").stdout, 5, what="a link-local address")
    return out.split()[3].split("/")[0]


def solicit(lab, ns: str, iface: str, tries: int = 8, wait: float = 0.5) -> dict:
    r = lab.ns_exec(ns, PYTHON, str(HELPERS / "rs_client.py"), "--iface", iface,
                    "--tries", str(tries), "--wait", str(wait), check=False, timeout=30)
    return json.loads(r.stdout.strip().splitlines()[-1])


def start(lab, netbootd_factory, tmp_path, extra="", ipv6_server=True):
    lan = build_pair(lab)
    srv_ll = enable_ipv6(lab, lan.ns["srv"], lan.ifs["srv"]) if ipv6_server else None
    enable_ipv6(lab, lan.ns["cli"], lan.ifs["cli"])
    cfg = write_config(tmp_path / "nb.toml", CONFIG.format(extra=extra))
    nb = netbootd_factory(lan.ns["srv"], ["--config", str(cfg), "--interface",
                                          lan.ifs["srv"]]).start()
    return lan, nb, srv_ll


def test_solicitation_gets_the_quench_from_the_link_local_address(lab, netbootd_factory,
                                                                   tmp_path):
    lan, nb, srv_ll = start(lab, netbootd_factory, tmp_path)
    got = solicit(lab, lan.ns["cli"], lan.ifs["cli"])
    assert got["src"] == srv_ll, (got, nb.log_tail())
    assert (got["lifetime"], got["flags"], got["prefixes"], got["hops"]) == (0, 0, 0, 255), got
    assert "answering router solicitations on " + lan.ifs["srv"] in nb.log_tail()


def test_off_for_the_network_and_without_ipv6_nothing_is_sent(lab, netbootd_factory, tmp_path):
    lan, nb, _ = start(lab, netbootd_factory, tmp_path, extra="ipv6_ra_quench = false")
    assert solicit(lab, lan.ns["cli"], lan.ifs["cli"], tries=3)["src"] is None
    nb.stop()
    lab.ns_exec(lan.ns["srv"], "sysctl", "-qw", f"net.ipv6.conf.{lan.ifs['srv']}.disable_ipv6=1")
    (tmp_path / "nb.toml").write_text(CONFIG.format(extra=""))
    nb.start()
    assert "has no IPv6 link-local address: no RA quench there" in nb.log_tail()
    assert solicit(lab, lan.ns["cli"], lan.ifs["cli"], tries=3)["src"] is None


def test_solicitation_with_a_wrong_hop_limit_is_dropped(lab, netbootd_factory, tmp_path):
    lan, nb, _ = start(lab, netbootd_factory, tmp_path)
    r = lab.ns_exec(lan.ns["cli"], PYTHON, str(HELPERS / "rs_client.py"), "--iface",
                    lan.ifs["cli"], "--tries", "3", "--hops", "64", check=False, timeout=30)
    assert json.loads(r.stdout.strip().splitlines()[-1])["src"] is None


SEND_RA = """
import socket, sys
sys.path.insert(0, {root!r})
from netbootd.codec import icmp6
idx = socket.if_nametoindex({iface!r})
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
ra = icmp6.RouterAdvertisement(64, 0, 1800, prefixes=(icmp6.Prefix("2001:db8:77::", 64),))
s.sendto(icmp6.encode_ra(ra), ("ff02::1", 0, 0, idx))
"""


def test_a_real_router_on_the_link_stops_the_quench(lab, netbootd_factory, tmp_path):
    from pathlib import Path
    lan, nb, srv_ll = start(lab, netbootd_factory, tmp_path)
    assert solicit(lab, lan.ns["cli"], lan.ifs["cli"])["src"] == srv_ll
    root = str(Path(__file__).resolve().parents[2])
    lab.ns_exec(lan.ns["cli"], PYTHON, "-c", SEND_RA.format(root=root, iface=lan.ifs["cli"]))
    wait_for(lambda: "answers on this link: no quench here" in nb.log_tail(), 10,
             what="the responder to see the router")
    assert solicit(lab, lan.ns["cli"], lan.ifs["cli"], tries=3)["src"] is None


def test_an_ra_from_a_global_address_is_not_a_router_and_the_quench_stays(
        lab, netbootd_factory, tmp_path):
    """Routers advertise from their link-local address (RFC 4861 §6.1.2): an
    RA from any other source is dropped, so it cannot switch the quench off."""
    from pathlib import Path
    lan, nb, srv_ll = start(lab, netbootd_factory, tmp_path)
    cli, ifc = lan.ns["cli"], lan.ifs["cli"]
    lab.ns_exec(cli, "ip", "-6", "addr", "add", "2001:db8:77::5/64", "dev", ifc, "nodad")
    root = str(Path(__file__).resolve().parents[2])
    code = SEND_RA.format(root=root, iface=ifc).replace(
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)",
        "s.bind(('2001:db8:77::5', 0))\n"
        "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)")
    lab.ns_exec(cli, PYTHON, "-c", code)
    import re

    def dropped():
        text = lab.ns_exec(lan.ns["srv"], "curl", "-s", "http://127.0.0.1:8080/metrics",
                           check=False).stdout
        return re.search(r'netbootd_dropped\w*\{[^}]*"ra"[^}]*"source"', text)
    wait_for(dropped, 10, what="the RA from a global address counted as dropped")
    got = solicit(lab, cli, ifc)
    assert got["src"] == srv_ll, (got, nb.log_tail())
    assert "answers on this link" not in nb.log_tail()
