"""Which interfaces are served (interfaces.served: names, fnmatch patterns,
up with IPv4) and what changed between two served sets (services/netlink.diff)."""
from __future__ import annotations

from netbootd.net.interfaces import IfAddr, Link, served
from netbootd.net.ra import icmp6_filter
from netbootd.net.services.netlink import diff


def link(name, ip=None, up=True, index=1):
    addrs = (IfAddr(name, ip, 24),) if ip else ()
    return Link(index, name, "02:00:00:00:00:01", up, "UP" if up else "DOWN", None, None, None,
                addrs, None)


HAVE = {l.name: l for l in (link("lo", "127.0.0.1"), link("eth0", "192.0.2.2"),
                            link("lab1", "10.0.1.1"), link("lab2", "10.0.2.1", up=False),
                            link("lab3"), link("lab1.10", "10.0.10.1"))}


def test_nothing_requested_serves_every_up_ipv4_interface_but_loopback():
    assert [i.name for i in served((), HAVE)] == ["eth0", "lab1", "lab1.10"]


def test_names_and_patterns():
    assert [i.name for i in served(("lab1",), HAVE)] == ["lab1"]
    assert [i.name for i in served(("lab*",), HAVE)] == ["lab1", "lab1.10"]
    assert [i.name for i in served(("lab?", "eth0"), HAVE)] == ["eth0", "lab1"]
    assert served(("missing", "lab3", "lab2"), HAVE) == []     # absent, no IPv4, down


def test_diff_by_name():
    a, b, c = IfAddr("a", "10.0.0.1", 24), IfAddr("b", "10.0.1.1", 24), IfAddr("c", "1.1.1.1", 8)
    moved = IfAddr("b", "10.0.1.5", 24)
    assert diff([a, b], [a, b]) == ([], [], [])
    assert diff([a, b], [moved, c]) == ([c], [a], [moved])


def test_icmp6_filter_passes_only_the_given_types():
    words = __import__("struct").unpack("=8I", icmp6_filter(133, 134))
    blocked = {t for t in range(256) if words[t >> 5] >> (t & 31) & 1}
    assert set(range(256)) - blocked == {133, 134}
