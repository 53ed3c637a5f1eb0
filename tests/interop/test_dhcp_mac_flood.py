"""A random-MAC DISCOVER flood on the wire (issue "Hostile input on the wire",
point 4): 20,000 fresh MACs used to leave 20,003 host rows and 20,101 events,
and /api/v1/hosts grew to 10.8 MB.  Now MACs that only sent a DISCOVER live in
the bounded seen set; rows, events and every response stay small, and a real
client that takes a lease during the flood becomes a host with its timeline."""
from __future__ import annotations

import json

import pytest

from .harness import (DISCOVER, build_pair, db_query, dhcp_frame, flood_template, opt,
                      relay_config, require_bin, run_perfdhcp, start_flood)

SERVER = "10.77.0.1"
RELAY = "10.77.0.2"
RATE = 2000
SECONDS = 10
SEEN_MAX = 5000


def _get(lab, ns, path) -> tuple[int, bytes]:
    r = lab.ns_exec(ns, "curl", "-s", "-m", "10", "-o", "-", "-w", "\n%{http_code}",
                    f"http://{SERVER}:8080{path}", check=False, timeout=20)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body.encode()


@pytest.mark.interop
def test_20000_random_mac_discovers_leave_a_bounded_registry_and_small_answers(
        lab, netbootd_factory, tmp_path):
    require_bin("perfdhcp", "curl")
    lan = build_pair(lab, f"{SERVER}/16", f"{RELAY}/16")
    srv, cli = lan.ns["srv"], lan.ns["cli"]
    nb = netbootd_factory(srv, ["--mode", "full", "--interface", lan.ifs["srv"],
                                *relay_config(tmp_path / "c.toml", (RELAY,),
                                              extra=f"[hosts]\nseen_max = {SEEN_MAX}\n")]).start()
    flood = start_flood(lab, cli, lan.ifs["cli"], [flood_template(dhcp_frame(
        chaddr="02:00:00:00:00:01", xid=1, msg_type=DISCOVER, options=opt(55, [1, 3, 6])))],
        RATE, SECONDS, tmp_path / "flood.log")
    try:
        # A real client (perfdhcp, the configured relay) takes leases meanwhile.
        res = run_perfdhcp(lab, cli, ["-4", "-l", lan.ifs["cli"], "-r", "5", "-R", "20",
                                      "-p", str(SECONDS), "-d", "4", "-W", "3000000", SERVER],
                           timeout=60, log_path=tmp_path / "perfdhcp.log")
        flood.wait(timeout=SECONDS * 3 + 10)
        sent = json.loads(flood.stdout.read().strip().splitlines()[-1])
    finally:
        if flood.poll() is None:
            lab.stop(flood)
    assert nb.alive(), nb.log_tail()
    assert sent["sent"] >= RATE * SECONDS * 0.95, sent
    code, hosts_body = _get(lab, srv, "/api/v1/hosts")
    assert code == 200, hosts_body
    page = json.loads(hosts_body)
    code, page_body = _get(lab, srv, "/")
    assert code == 200
    rows = db_query(nb.state_dir, "SELECT COUNT(*) AS n FROM hosts")[0]["n"]
    events = db_query(nb.state_dir, "SELECT COUNT(*) AS n FROM events")[0]["n"]
    takers = {r["mac"] for r in db_query(nb.state_dir, "SELECT mac FROM leases "
                                                        "WHERE state = 'active'")}
    print(f"\n{sent['sent']} random-MAC DISCOVERs in {sent['seconds']} s; perfdhcp "
          f"{res.acks}/{res.sent.get('DO', 0)} DORAs; host rows {rows}, events {events}, "
          f"seen {page['counts']['seen']}; /api/v1/hosts {len(hosts_body)} bytes, "
          f"status page {len(page_body)} bytes")
    assert res.acks == res.sent.get("DO", 0) > 0, res.output
    # Hosts: exactly the clients that took a lease, never the flood.
    assert rows == len(takers) and 0 < rows <= res.acks, (rows, len(takers), res.acks)
    assert page["total"] == rows and page["counts"]["seen"] <= SEEN_MAX
    # Events: the takers' timelines (offer, discovered, ack) and a few server events.
    assert events <= 2 * res.acks + rows + 50, events
    assert len(hosts_body) < 64 * 1024 and len(page_body) < 64 * 1024
    kinds = [r["kind"] for r in db_query(
        nb.state_dir, "SELECT kind FROM events WHERE mac = ? ORDER BY id", (sorted(takers)[0],))]
    assert kinds[:3] == ["dhcp.offer", "host.discovered", "dhcp.ack"], kinds
