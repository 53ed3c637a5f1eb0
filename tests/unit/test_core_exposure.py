"""Core's registry of what services expose: readers iterate providers and
never reach into a service (net/services/core.py)."""
from __future__ import annotations

from twisted.internet.task import Clock

from netbootd.config import Config
from netbootd.net.services.core import Core
from netbootd.net.services.dhcp import pool_rows
from netbootd.policy.leases import LeaseTable, ip2int, whole_subnet


def test_transfers_and_pools_are_the_providers_rows_in_registration_order():
    core = Core(Config(), Clock(), store=None)
    assert core.transfers() == [] and core.pools() == []
    core.expose(transfers=lambda: [{"proto": "tftp", "file": "a"}])
    core.expose(transfers=lambda: [{"proto": "http", "file": "b"}, {"proto": "http", "file": "c"}],
                pools=lambda: [{"name": "lab"}])
    assert [t["file"] for t in core.transfers()] == ["a", "b", "c"]
    assert core.pools() == [{"name": "lab"}]


def test_providers_are_read_at_each_call_not_copied_at_registration():
    core = Core(Config(), Clock(), store=None)
    live = []
    core.expose(transfers=lambda: list(live))
    live.append({"proto": "tftp"})
    assert core.transfers() == [{"proto": "tftp"}]


def test_pool_rows_show_ranges_and_usage_of_each_network():
    leases = LeaseTable([whole_subnet("lab", "10.0.0.1", 29)])
    leases.bind("lab", ip2int("10.0.0.2"), b"\x01\x01a", "00:00:00:00:00:02", 100.0, 600)
    (row,) = pool_rows(leases, 200.0)
    assert (row["name"], row["subnet"], row["ranges"], row["size"], row["used"]) == (
        "lab", "10.0.0.0/29", ["10.0.0.1-10.0.0.6"], 5, 1)
