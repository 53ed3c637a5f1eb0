"""Controls: the same harness against Kea, so a failure against netbootd can
be told apart from a broken harness or environment."""
from __future__ import annotations

import pytest

from .harness import (Capture, acks_in, build_pair, kea_config, require_bin, run_perfdhcp,
                      start_kea)


@pytest.mark.interop
def test_control_perfdhcp_against_kea_is_acked_and_captured(lab, tmp_path):
    """Harness check: perfdhcp against Kea in the same topology gets >=95%
    ACKs and the tcpdump capture decodes every ACK as unicast to giaddr:67."""
    require_bin("perfdhcp", "kea-dhcp4")
    lan = build_pair(lab)
    srv, cli = lan.ns["srv"], lan.ns["cli"]
    start_kea(lab, srv, tmp_path, kea_config(lan.ifs["srv"], "10.77.0.0/16",
                                             "10.77.1.0-10.77.255.254",
                                             tmp_path / "kea-leases.csv"))
    cap = Capture(lab, srv, lan.ifs["srv"], tmp_path / "kea.pcap").start()
    try:
        res = run_perfdhcp(lab, cli, ["-4", "-l", lan.ifs["cli"], "-r", "200", "-n", "300",
                                      "-R", "100", "10.77.0.1"], timeout=30,
                           log_path=tmp_path / "perfdhcp.log")
    finally:
        cap.stop()
    assert res.rc in (0, 3), res.output
    assert res.acks >= 285, res.output
    acks = acks_in(cap.packets())
    assert len(acks) >= res.acks
    assert {(a.ip_dst, a.dport) for a in acks} == {(lan.ip("cli"), 67)}
    assert len({a.chaddr for a in acks}) == 100
