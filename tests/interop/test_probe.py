"""ICMP probe before a first offer (RFC 2131 §2.2 SHOULD), with a real host
squatting on a pool address in its own namespace."""
from __future__ import annotations

import time

import pytest

from .harness import (build_lan, client_agent, discover, lease_rows_for, wait_for,
                      write_config)

SERVER = "10.77.0.1"
SQUAT = "10.77.1.10"          # the first address of the range: what a naive pool offers first

CONFIG = """
[dhcp]
probe = true
probe_timeout_ms = 400

[[networks]]
name = "lab"
subnet = "10.77.0.0/16"
ranges = ["10.77.1.10-10.77.1.20"]
"""


@pytest.mark.interop
def test_probe_skips_an_address_that_answers_ping_and_puts_it_on_probation(
        lab, netbootd_factory, tmp_path):
    lan = build_lan(lab, {"srv": f"{SERVER}/16", "cli": "10.77.0.2/16", "squat": f"{SQUAT}/16"})
    cfg = write_config(tmp_path / "netbootd.toml", CONFIG)
    nb = netbootd_factory(lan.ns["srv"], ["--config", str(cfg), "--mode", "full",
                                          "--interface", lan.ifs["srv"]]).start()
    with client_agent(lab, lan, tmp_path) as agent:
        t0 = time.monotonic()
        offer, got = discover(agent, "02:77:00:00:0b:01", timeout=6)
        elapsed = time.monotonic() - t0
    assert offer is not None, f"no OFFER; log:\n{nb.log_tail()}"
    assert offer.yiaddr != SQUAT, "offered an address that answers ping"
    assert offer.yiaddr.startswith("10.77.1.")
    # one probe answered (fast), then one timed out (400 ms) before the offer
    assert elapsed >= 0.4, f"offer came after {elapsed:.2f}s: the free address was not probed"
    rows = wait_for(lambda: lease_rows_for(nb.state_dir, address=SQUAT), 3, what="conflict row")
    assert rows[0]["state"] == "declined" and rows[0]["mac"] == ""
