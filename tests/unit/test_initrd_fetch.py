"""Who may fetch busybox-static: the install step and `netbootd initrd build`
(fetch=True), never the daemon (fetch=False, its call in net/): without a
static busybox installed, fetch=False is a clear error and starts no process."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import iso_builder.initrd as initrd
from netbootd.__main__ import main


@pytest.fixture
def no_busybox(tmp_path, monkeypatch):
    """No static busybox anywhere initrd looks, and no process may start."""
    monkeypatch.delenv("NETBOOTD_BUSYBOX", raising=False)
    monkeypatch.setenv("NETBOOTD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(initrd, "SYSTEM_BUSYBOX", (tmp_path / "bin" / "busybox",))
    monkeypatch.setattr(initrd, "default_kernel_version", lambda: "6.1.0-test")
    started = []

    def refuse(*a, **kw):
        started.append(a)
        raise AssertionError(f"a process was started: {a}")
    for name in ("run", "Popen", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)
    return started


def test_without_busybox_fetch_false_raises_a_clear_error_and_runs_nothing(no_busybox, tmp_path):
    for build in (lambda: initrd.find_busybox(fetch=False),
                  lambda: initrd.ensure_discover_initrd(tmp_path / "d.img", fetch=False),
                  lambda: initrd.ensure_discover_initrd(tmp_path / "d.img"),   # the default
                  lambda: initrd.build_discover_initrd(tmp_path / "d.img",
                                                       kernel_version="6.1.0-test")):
        with pytest.raises(initrd.InitrdError, match="busybox-static"):
            build()
    assert no_busybox == [] and not (tmp_path / "d.img").exists()


def test_fetch_true_is_what_tries_apt_get(no_busybox, monkeypatch):
    monkeypatch.setattr(initrd.shutil, "which", lambda tool: None)
    with pytest.raises(initrd.InitrdError, match="no apt-get to fetch busybox-static"):
        initrd.find_busybox(fetch=True)


def test_cli_initrd_build_no_fetch_says_what_is_missing(no_busybox, tmp_path, capsys):
    assert main(["initrd", "build", "--no-fetch", "--state-dir", str(tmp_path / "st")]) == 1
    err = capsys.readouterr().err
    assert "cannot build the discover initrd" in err and "busybox-static" in err


def test_cli_initrd_build_builds_into_the_state_dir(tmp_path, monkeypatch, capsys):
    """The default output is <state-dir>/discover.img, where serve finds it;
    the CLI asks for fetching (it is the first-use path)."""
    seen = {}

    def fake_ensure(out, *, fetch, **kw):
        seen.update(out=out, fetch=fetch)
        Path(out).write_bytes(b"x")
        return {"path": str(out), "size": 1, "kernel_version": "k", "modules": ["virtio_net"],
                "reused": False}
    monkeypatch.setattr(initrd, "ensure_discover_initrd", fake_ensure)
    assert main(["initrd", "build", "--state-dir", str(tmp_path / "st")]) == 0
    assert seen == {"out": str(tmp_path / "st" / "discover.img"), "fetch": True}
    assert "built, 1 bytes" in capsys.readouterr().out
