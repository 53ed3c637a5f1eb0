"""Hostile DHCP on the wire: a legitimate client keeps being served while a
flood of poisoned and spoofed packets runs (issue "Hostile input on the
wire", points 1 and 2), against `netbootd serve --mode full` in namespaces.

The flood (helpers/dhcp_flood.py, 2,000 frames/s for 10 s, fresh random
MACs) mixes, in equal parts:
* DISCOVERs whose vendor class reads "PXEClient:Arch:99999999999999999999"
  (once an arch SQLite could not store: the whole group commit failed and
  other clients' ACKs in the batch were withheld);
* INIT-REBOOT REQUESTs with the same vendor class for addresses of the pool,
  which are ACKed, so their writes share batches with the legitimate ones;
* DISCOVERs with a spoofed giaddr (any address of the subnet but the relay).
The legitimate client is perfdhcp acting as the configured relay.
"""
from __future__ import annotations

import json

import pytest

from .harness import (DISCOVER, REQUEST, build_pair, db_query, dhcp_frame, flood_template,
                      logged_counters, opt, relay_config, require_bin, run_perfdhcp,
                      start_flood)

SERVER = "10.77.0.1"
RELAY = "10.77.0.2"
RATE = 2000
SECONDS = 10
POISON_VC = opt(60, "PXEClient:Arch:99999999999999999999:UNDI:003000")


@pytest.mark.interop
def test_legitimate_dora_all_complete_during_poisoned_and_spoofed_flood(
        lab, netbootd_factory, tmp_path):
    """perfdhcp (the configured relay) runs 20 DORA/s for 10 s while 2,000
    hostile frames/s arrive: every one of its DORAs completes (100%), the
    daemon stays up, no stored host has an arch past 16 bits, nothing is
    dropped at commit, and the poisoned values and spoofed relays are
    counted."""
    require_bin("perfdhcp")
    lan = build_pair(lab, f"{SERVER}/16", f"{RELAY}/16")
    srv, cli = lan.ns["srv"], lan.ns["cli"]
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", lan.ifs["srv"],
                                *relay_config(tmp_path / "relay.toml", (RELAY,))]).start()
    templates = [
        flood_template(dhcp_frame(chaddr="02:00:00:00:00:01", xid=1, msg_type=DISCOVER,
                                  options=POISON_VC + opt(55, [1, 3, 6]))),
        flood_template(dhcp_frame(chaddr="02:00:00:00:00:02", xid=2, msg_type=REQUEST,
                                  options=opt(50, bytes(4)) + POISON_VC),
                       ip_span=("10.77.64.1", 16000)),
        flood_template(dhcp_frame(chaddr="02:00:00:00:00:03", xid=3, msg_type=DISCOVER,
                                  options=opt(55, [1, 3]), giaddr="10.77.9.9"),
                       ip_span=("10.77.100.1", 5000)),
    ]
    flood = start_flood(lab, cli, lan.ifs["cli"], templates, RATE, SECONDS,
                        tmp_path / "flood.log")
    try:
        res = run_perfdhcp(lab, cli, ["-4", "-l", lan.ifs["cli"], "-r", "20", "-R", "100",
                                      "-p", str(SECONDS), "-d", "4", "-W", "3000000", SERVER],
                           timeout=60, log_path=tmp_path / "perfdhcp.log")
        flood.wait(timeout=SECONDS * 3 + 10)
        out = flood.stdout.read()
    finally:
        if flood.poll() is None:
            lab.stop(flood)
    sent = json.loads(out.strip().splitlines()[-1])
    assert nb.alive(), f"netbootd died under the flood:\n{nb.log_tail()}"
    dora = res.sent.get("DO", 0)
    acks = res.acks
    print(f"\nflood: {sent['sent']} hostile frames in {sent['seconds']} s "
          f"({sent['sent'] / sent['seconds']:.0f}/s); legitimate perfdhcp: {dora} DISCOVERs, "
          f"{res.received.get('DO', 0)} OFFERs, {res.requests} REQUESTs, {acks} ACKs "
          f"({100.0 * acks / max(dora, 1):.1f}%)")
    assert sent["sent"] >= RATE * SECONDS * 0.95 and sent["seconds"] <= SECONDS * 1.5, sent
    assert dora >= 150, res.output
    assert acks == dora, f"legitimate DORAs lost during the flood:\n{res.output}"
    arches = db_query(nb.state_dir, "SELECT mac, arch FROM hosts WHERE arch > 65535")
    assert not arches, arches
    nb.stop()
    c = logged_counters(nb)
    print("netbootd counters: " + ", ".join(f"{k}={c.get(k, 0)}" for k in (
        "rx.DISCOVER", "rx.REQUEST", "tx.OFFER", "tx.ACK", "bad_value.arch",
        "drop.untrusted_relay", "drop.rate_new_clients", "drop.pool_exhausted")))
    assert c.get("drop.untrusted_relay", 0) >= RATE * SECONDS / 3 * 0.9
    assert c.get("bad_value.arch", 0) > 0
    log = nb.log_path.read_text(errors="replace")
    assert "could not be stored" not in log and "commit of" not in log, "commit faults logged"
