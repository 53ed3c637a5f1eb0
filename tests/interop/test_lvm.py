"""The lvm backend (netbootd/storage/lvm.py) against lvm2's real output.

* Always: the report parsers and the error classifier on lvm2's captured JSON and
  messages (tests/fixtures/lvm/, README there), the argv builders, the pool's flow on a
  runner that replays those captures.
* Where lvm2 is installed and we are root: a live VG on a loop device (never a real
  disk): lvs/vgs output of the same layout parses the same as the fixtures, and every
  command the backend builds gets past lvm2's argument parser.
* Where device-mapper exists: the real backend end to end on a thin pool; skipped here
  with the reason the backend gives.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netbootd.storage import lvm, open_pool
from netbootd.storage.volumes import (Exists, InUse, NoSpace, NotFound, Thresholds,
                                      Unsupported, VolumeError)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "lvm"
GiB = 1 << 30


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def stderr_of(name: str) -> tuple[int, str]:
    first, _, rest = fixture(name).partition("\n")
    return int(first.split()[2].rstrip(":")), rest


def _capture_module():
    spec = importlib.util.spec_from_file_location("_lvm_capture", FIX / "capture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- parsing (always)

def test_lvs_report_gives_the_pools_thin_volumes_and_skips_hidden_ones():
    vols = {v.name: v for v in lvm.parse_lvs(fixture("lvs.json"), "pool")}
    assert sorted(vols) == ["golden", "golden-s1", "host1", "scratch"]
    assert vols["golden"].size == GiB and vols["scratch"].size == 256 << 20
    assert vols["golden"].origin is None and vols["golden"].kind == "volume"
    assert vols["golden-s1"].origin == "golden" and vols["golden-s1"].kind == "snapshot"
    assert vols["host1"].origin == "golden" and vols["host1"].kind == "volume"
    assert vols["golden"].created == 1796403610.0          # 2026-12-04 17:00:10 +0000
    assert all(v.used is None for v in vols.values())      # inactive: no data_percent


def test_another_pools_name_finds_no_volumes():
    assert lvm.parse_lvs(fixture("lvs.json"), "otherpool") == []
    assert lvm.parse_lvs(fixture("lvs-empty.json"), "pool") == []


def test_an_active_pools_report_gives_usage_from_data_percent():
    text = fixture("lvs-active-edited.json")
    u = lvm.pool_usage(text, "pool")
    assert u.total == 128 << 20 and u.used == 16 << 20 and u.free == 112 << 20
    assert u.provisioned == 3 * GiB + (256 << 20) and u.volumes == 4
    vols = {v.name: v for v in lvm.parse_lvs(text, "pool")}
    assert vols["golden"].used == round(GiB * 0.0938) and vols["scratch"].used == 0


def test_an_inactive_pool_has_no_usage_and_says_so():
    with pytest.raises(VolumeError, match="reports no data usage"):
        lvm.pool_usage(fixture("lvs.json"), "pool")


def test_the_pool_must_exist_and_be_a_thin_pool():
    with pytest.raises(NotFound) as e:
        lvm.find_pool(fixture("lvs.json"), "nope")
    assert e.value.field == "thin_pool"
    with pytest.raises(VolumeError, match="not a thin pool"):
        lvm.find_pool(fixture("lvs.json"), "golden")
    assert lvm.find_pool(fixture("lvs.json"), "pool")["lv_attr"].startswith("t")


def test_vgs_report():
    vg = lvm.parse_vg(fixture("vgs.json"), "nbtestvg")
    assert vg == {"name": "nbtestvg", "size": 252 << 20, "free": 116 << 20,
                  "extent_size": 4 << 20, "lv_count": 5}
    with pytest.raises(NotFound):
        lvm.parse_vg(fixture("vgs.json"), "other")


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"report": 5}',
                                  '{"report": [{"lv": [5]}]}', '{"x": []}'])
def test_junk_is_not_a_report(text):
    with pytest.raises(VolumeError, match="report"):
        lvm.parse_report(text, "lv")


def test_sizes_with_units_are_refused_not_misread():
    text = fixture("lvs.json").replace('"lv_size":"1073741824"', '"lv_size":"1.00g"', 1)
    with pytest.raises(VolumeError, match="--units b --nosuffix"):
        lvm.parse_lvs(text, "pool")


# ---------------------------------------------------------------- messages (always)

def test_no_device_mapper_is_unsupported_in_one_line():
    rc, err = stderr_of("lvcreate-thin-nodm.stderr")
    e = lvm.classify_error(["lvcreate"], rc, err, "newvol")
    assert isinstance(e, Unsupported)
    assert str(e.reason).startswith("this kernel has no device-mapper") or \
        "no device-mapper" in e.reason
    assert "\n" not in str(e)
    rc, err = stderr_of("lvcreate-snapshot-nodm.stderr")
    assert isinstance(lvm.classify_error(["lvcreate"], rc, err, "c"), Unsupported)


def test_missing_lv_and_vg_are_not_found():
    rc, err = stderr_of("lvremove-notfound.stderr")
    e = lvm.classify_error(["lvremove"], rc, err, "nosuch")
    assert isinstance(e, NotFound) and 'Failed to find logical volume "nbtestvg/nosuch"' in str(e)
    rc, err = stderr_of("lvs-novg.stderr")
    e = lvm.classify_error(["lvs"], rc, err, "nosuchvg", "vg")
    assert isinstance(e, NotFound) and e.field == "vg"


@pytest.mark.parametrize("msg,kind", [
    ('  Logical Volume "golden" already exists in volume group "vg0"', Exists),
    ("  Insufficient free space: 256 extents needed, but only 10 available", NoSpace),
    ("  Cannot create new thin volume, free space in thin pool vg0/pool reached threshold.",
     NoSpace),
    ("  Logical volume vg0/host1 in use.", InUse),
    ("  Logical volume vg0/host1 contains a filesystem in use.", InUse),
    ("  something else entirely", VolumeError),
])
def test_lvm2_messages_map_to_typed_errors(msg, kind):
    e = lvm.classify_error(["lvcreate"], 5, msg, "golden")
    assert type(e) is kind and msg.strip() in str(e)


def test_device_mapper_verdicts():
    assert "/dev/mapper/control is missing" in lvm.device_mapper_problem(False, None)
    rc, err = stderr_of("dmsetup-version.stderr")
    why = lvm.device_mapper_problem(True, rc, err)
    assert why.startswith("this kernel has no device-mapper") and "\n" not in why
    assert lvm.device_mapper_problem(True, None).startswith("lvm2's dmsetup")
    assert lvm.device_mapper_problem(True, 0) is None


# ---------------------------------------------------------------- commands (always)

def test_commands():
    d = ["/dev/loop7"]
    assert lvm.cmd_create("vg0", "pool", "h1", GiB, d) == [
        "lvcreate", "--devices", "/dev/loop7", "--type", "thin", "--virtualsize",
        "1073741824B", "--name", "h1", "--thinpool", "pool", "vg0"]
    assert lvm.cmd_snapshot("vg0", "golden", "s1", True) == [
        "lvcreate", "--snapshot", "--setactivationskip", "n", "--permission", "r",
        "--name", "s1", "vg0/golden"]
    assert "rw" in lvm.cmd_snapshot("vg0", "golden", "c1", False)
    assert lvm.cmd_resize("vg0", "h1", 2 * GiB, False) == [
        "lvresize", "--size", "2147483648B", "vg0/h1"]
    assert "--force" in lvm.cmd_resize("vg0", "h1", GiB, True)
    assert lvm.cmd_remove("vg0", "h1") == ["lvremove", "--yes", "vg0/h1"]
    assert lvm.cmd_lvs("vg0")[:6] == ["lvs", "--reportformat", "json", "--units", "b",
                                      "--nosuffix"]
    assert lvm.lvm_env({})["LVM_SUPPRESS_FD_WARNINGS"] == "1"


class Replay:
    """A runner answering lvs/vgs from lvm2's captured reports, recording every argv;
    an lvcreate adds a row (a copy of golden's, renamed), an lvremove drops one."""

    def __init__(self, lvs="lvs-active-edited.json"):
        self.rows = lvm.parse_report(fixture(lvs), "lv")
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "dmsetup":
            return 0, "Library version: 1.02.185\nDriver version: 4.47.0\n", ""
        if argv[0] == "lvs":
            return 0, json.dumps({"report": [{"lv": self.rows}]}), ""
        if argv[0] == "vgs":
            return 0, fixture("vgs.json"), ""
        if argv[0] == "lvcreate":
            row = dict(next(r for r in self.rows if r["lv_name"] == "golden"))
            row["lv_name"] = argv[argv.index("--name") + 1]
            self.rows.append(row)
        if argv[0] == "lvremove":
            gone = argv[-1].split("/")[1]
            self.rows = [r for r in self.rows if r["lv_name"] != gone]
        return 0, "", ""


@pytest.fixture
def replay_pool(monkeypatch):
    monkeypatch.setattr(lvm.os.path, "exists",
                        lambda p, _e=os.path.exists: True if p == "/dev/mapper/control"
                        else _e(p))
    monkeypatch.setattr(lvm.shutil, "which", lambda name: f"/sbin/{name}")
    run = Replay()
    return lvm.LvmPool.open("nbtestvg", "pool", name="thin", run=run,
                            thresholds=Thresholds(min_free_bytes=100 << 20)), run


def test_pool_flow_builds_the_commands(replay_pool):
    pool, run = replay_pool
    pool.create("newvol", GiB)
    assert ["lvcreate", "--type", "thin", "--virtualsize", "1073741824B", "--name", "newvol",
            "--thinpool", "pool", "nbtestvg"] in run.calls
    pool.snapshot("golden", "golden-s2")
    assert run.calls[-2][:2] == ["lvcreate", "--snapshot"] and "r" in run.calls[-2]
    pool.delete("scratch")
    assert ["lvremove", "--yes", "nbtestvg/scratch"] in run.calls
    assert pool.path("host1") == "/dev/nbtestvg/host1"
    assert pool.capabilities.cow_clones and "thin snapshot" in pool.describe()


def test_pool_refuses_before_running_lvm2(replay_pool):
    pool, run = replay_pool
    n = len(run.calls)
    with pytest.raises(Exists):
        pool.create("golden", GiB)
    with pytest.raises(Exists):
        pool.clone("golden", "pool")                        # the thin pool's own name
    with pytest.raises(NotFound) as e:
        pool.clone("nosuch", "x1")
    assert e.value.field == "source"
    with pytest.raises(VolumeError, match="snapshot"):
        pool.resize("golden-s1", 2 * GiB)
    with pytest.raises(VolumeError, match="force"):
        pool.resize("golden", 512 << 20)
    assert all(c[0] in ("lvs", "vgs") for c in run.calls[n:])


def test_a_full_thin_pool_refuses_with_the_numbers(monkeypatch, replay_pool):
    pool, run = replay_pool
    pool.thresholds = Thresholds(min_free_bytes=120 << 20)  # 112 MiB free < 120 MiB floor
    with pytest.raises(NoSpace) as e:
        pool.clone("golden", "c9")
    assert (e.value.free, e.value.floor, e.value.total) == (112 << 20, 120 << 20, 128 << 20)
    assert not any(c[0] == "lvcreate" for c in run.calls)


def test_open_here_says_why_in_one_line_or_opens():
    why = lvm.probe_device_mapper()
    if why is None:
        pytest.skip("this machine has device-mapper (the real backend test covers it)")
    with pytest.raises(Unsupported) as e:
        open_pool("lvm", "thin", vg="nbtestvg", thin_pool="pool")
    assert str(e.value.reason) == why and "\n" not in why
    assert "device-mapper" in why


# ---------------------------------------------------------------- live lvm2 (root)

def _need_lvm2():
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, lvm2)")
    for tool in ("lvs", "vgcreate", "losetup", "vgcfgrestore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/setup.sh test installs lvm2)")


@pytest.fixture
def live_vg(tmp_path):
    _need_lvm2()
    cap = _capture_module()
    with cap.loop_vg(str(tmp_path)) as (dev, vg):
        yield cap, dev, vg, tmp_path


def test_live_lvm2_reports_parse_like_the_fixtures(live_vg):
    cap, dev, vg, work = live_vg
    run = lvm.run_command
    rc, out, err = run(lvm.cmd_lvs(vg, [dev]))
    assert rc == 0 and lvm.parse_lvs(out, "pool") == []
    cap.restore_layout(dev, vg, str(work))
    rc, out, err = run(lvm.cmd_lvs(vg, [dev]))
    assert rc == 0, err
    strip = lambda vols: [(v.name, v.size, v.origin, v.kind, v.created) for v in vols]
    assert strip(lvm.parse_lvs(out, "pool")) == strip(lvm.parse_lvs(fixture("lvs.json"), "pool"))
    rc, out, err = run(lvm.cmd_vgs(vg, [dev]))
    assert rc == 0 and lvm.parse_vg(out, vg)["lv_count"] == 5


def test_live_lvm2_accepts_every_command_the_backend_builds(live_vg):
    """Each argv gets past lvm2's argument parser: it fails (if at all) for the kernel's
    reason, never for a usage error."""
    cap, dev, vg, work = live_vg
    cap.restore_layout(dev, vg, str(work))
    has_dm = lvm.probe_device_mapper() is None
    for argv in (lvm.cmd_create(vg, "pool", "newvol", GiB, [dev]),
                 lvm.cmd_snapshot(vg, "golden", "snap9", True, [dev]),
                 lvm.cmd_snapshot(vg, "golden", "clone9", False, [dev])):
        rc, out, err = lvm.run_command(argv)
        if has_dm:
            continue                                # the layout is fake: skip the result
        e = lvm.classify_error(argv, rc, err, "x")
        assert rc != 0 and isinstance(e, Unsupported), (argv, rc, err)
    rc, out, err = lvm.run_command(lvm.cmd_remove(vg, "nosuch", [dev]))
    assert isinstance(lvm.classify_error(["lvremove"], rc, err, "nosuch"), NotFound)


# ---------------------------------------------------------------- real backend (dm only)

def test_real_backend_on_a_thin_pool(tmp_path):
    why = lvm.probe_device_mapper()
    if why:
        pytest.skip(why)
    _need_lvm2()
    cap = _capture_module()
    with cap.loop_vg(str(tmp_path), size_mib=512) as (dev, vg):
        try:
            cap.run(["lvcreate", "--devices", dev, "--type", "thin-pool", "--size", "256M",
                     "--name", "pool", vg])
            pool = open_pool("lvm", "thin", vg=vg, thin_pool="pool", devices=[dev],
                             thresholds=Thresholds(min_free_percent=5))
            golden = pool.create("golden", 64 << 20)
            assert golden.size == 64 << 20
            path = pool.path("golden")
            with open(path, "r+b") as f:
                f.write(b"golden!" * 1000)
            snap = pool.snapshot("golden", "golden-s1")
            clone = pool.clone("golden", "host1")
            assert snap.kind == "snapshot" and clone.kind == "volume"
            assert clone.origin == "golden"
            with open(pool.path("host1"), "r+b") as f:
                f.write(b"clone")
            with open(path, "rb") as f:
                assert f.read(7) == b"golden!"
            pool.resize("host1", 128 << 20)
            with pytest.raises(Exists):
                pool.create("golden", 64 << 20)
            for name in ("host1", "golden-s1", "golden"):
                pool.delete(name)
            assert pool.list() == []
        finally:
            subprocess.run(["vgchange", "--devices", dev, "-an", vg], env=lvm.lvm_env(),
                           capture_output=True, timeout=120)
