"""bench/dhcp/run.py's own logic (no lab, no root): when a netbootd under test
counts as started, and how --netbootd-src variants are read."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_run():
    spec = importlib.util.spec_from_file_location("bench_dhcp_run", REPO / "bench" / "dhcp" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run = _load_run()
READY = "2026-12-04 19:00:00 INFO netbootd ready: dhcp on v0\n"
BUILT = "2026-12-04 19:00:07 INFO discover initrd: /s/discover.img (3047518 bytes, built)\n"


def test_netbootd_is_not_started_while_it_builds_its_discover_initrd():
    assert not run.netbootd_settled("starting\n")
    assert not run.netbootd_settled(READY), "the build runs on the server's CPU during the trial"
    assert run.netbootd_settled(READY + BUILT)
    failed = "ERROR discover initrd: cannot build it from local files (no busybox)\n"
    assert run.netbootd_settled(READY + failed), "a failed build is done too"
    assert not run.netbootd_settled(BUILT), "built but not serving yet"


def test_a_configured_discover_initrd_means_no_build_to_wait_for():
    assert run.netbootd_settled(READY, builds_initrd=False)
    assert not run.netbootd_settled("starting\n", builds_initrd=False)


def test_netbootd_src_variants_carry_their_own_config(tmp_path):
    (tmp_path / "netbootd").mkdir()
    conf = tmp_path / "w5.toml"
    conf.write_text("[dhcp]\ncommit_window_ms = 5.0\n")
    args = argparse.Namespace(netbootd_config=None)
    plain, variant = run.netbootd_sources([f"old={tmp_path}", f"w5={tmp_path}:{conf}"], args)
    assert (plain.name, plain.conf, plain.src) == ("netbootd-old", None, str(tmp_path))
    assert (variant.name, variant.conf) == ("netbootd-w5", str(conf))
    state = tmp_path / "state"
    cmd = variant.command("v0", state)
    written = Path(cmd[cmd.index("--config") + 1]).read_text()
    assert "commit_window_ms = 5.0" in written and 'relays = ["10.77.0.2"]' in written
    assert variant.env(state)["PYTHONPATH"] == str(tmp_path)


@pytest.mark.parametrize("spec, why", [
    ("nolabel", "LABEL=DIR"),
    ("x=/nonexistent-dir", "LABEL=DIR"),
    ("x={d}:/nonexistent.toml", "no config file /nonexistent.toml"),
])
def test_bad_netbootd_src_specs_name_the_problem(tmp_path, spec, why):
    (tmp_path / "netbootd").mkdir()
    with pytest.raises(ValueError, match=why.replace(".", r"\.")) as e:
        run.netbootd_sources([spec.format(d=tmp_path)], argparse.Namespace(netbootd_config=None))
    assert spec.split("=")[0] in str(e.value)


def test_the_report_holds_returning_clients_to_1_2x_kea_and_new_ones_to_1_0x(capsys):
    def res(server, unique, returning):
        d = {"drop_pct": 1.0, "offered_rate": 1, "lowest_failing_rate": 2,
             "client_limited": False, "confirmed": True, "max_foreign_cpu_pct": 0}
        return {"server": server, "label": server, "cpu_loop_s": 0.2,
                "scenarios": {"unique": dict(d, leases_per_s=unique),
                              "returning": dict(d, leases_per_s=returning)}}
    args = argparse.Namespace(scenarios=["unique", "returning"], drop_limit=2.5,
                              perfdhcp_threads="single", period=5.0, returning_clients=1000,
                              no_pin=False, confirm=True)
    run.print_report([res("kea", 1000, 1000), res("netbootd", 1000, 1190)], args)
    out = capsys.readouterr().out
    assert "goal netbootd >= 1.0x Kea with durable leases, unique: MET" in out
    assert "goal netbootd >= 1.2x Kea with durable leases, returning: NOT MET" in out
    run.print_report([res("kea", 1000, 1000), res("netbootd", 990, 1200)], args)
    out = capsys.readouterr().out
    assert "unique: NOT MET" in out and "returning: MET" in out
