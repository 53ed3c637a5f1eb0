"""kexec in the discover initrd (iso_builder/kexec.py): a dynamically linked binary is
packed with its ELF interpreter and every library ldd resolves; one whose libraries
are missing is left out with the reason (the initrd still builds: `boot` reboots);
only fetch=True may run apt-get, and never installs anything."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import iso_builder.initrd as initrd
from iso_builder import kexec
from iso_builder.cpio import read_archive

DYNAMIC = Path("/bin/ls")     # any dynamically linked binary stands in for kexec


@pytest.fixture
def nothing_installed(tmp_path, monkeypatch):
    """No kexec on the system or in the cache; processes are recorded, not run."""
    monkeypatch.delenv("NETBOOTD_KEXEC", raising=False)
    monkeypatch.setattr(kexec, "SYSTEM_KEXEC", (tmp_path / "sbin" / "kexec",))
    started = []

    def refuse(*a, **kw):
        started.append(a)
        raise AssertionError(f"a process was started: {a}")
    monkeypatch.setattr(subprocess, "run", refuse)
    return started


def _need_ldd():
    if shutil.which("ldd") is None or not DYNAMIC.is_file():
        pytest.skip("no ldd or no dynamically linked /bin/ls here")


def test_a_binary_is_packed_with_its_interpreter_and_libraries():
    _need_ldd()
    interp, libs, missing = kexec.closure(DYNAMIC)
    assert missing == [] and interp is not None and "libc.so.6" in libs
    files = {p: (data, mode) for p, data, mode in kexec.files_for_initrd(DYNAMIC)}
    assert files["usr/sbin/kexec"] == (DYNAMIC.read_bytes(), 0o755)
    assert files[str(interp).lstrip("/")][1] == 0o755
    assert files["usr/lib/netbootd/libc.so.6"][0] == libs["libc.so.6"].resolve().read_bytes()
    # the agent runs it with LD_LIBRARY_PATH=/usr/lib/netbootd (actions.sh: KEXEC_LIBS)
    agent = (Path(initrd.INITRD_SRC) / "actions.sh").read_text()
    assert f"KEXEC_LIBS=/{kexec.LIB_DIR} " in agent


def fake_kernel(tmp_path) -> dict:
    """build_archive's arguments for a kernel 9.9 with one module (a static busybox)."""
    try:
        bb = initrd.find_busybox()
    except initrd.InitrdError as e:
        pytest.skip(str(e))
    (tmp_path / "mods/9.9/kernel").mkdir(parents=True)
    (tmp_path / "mods/9.9/kernel/nic.ko").write_bytes(b"NIC")
    (tmp_path / "mods/9.9/modules.dep").write_text("kernel/nic.ko:\n")
    return dict(kernel_version="9.9", busybox=bb, modules=("nic",), modules_root=tmp_path / "mods")


def test_build_archive_carries_kexec_when_given_one(tmp_path):
    _need_ldd()
    kw = fake_kernel(tmp_path)
    archive, info = initrd.build_archive(kexec=DYNAMIC, **kw)
    entries = {e.name: e for e in read_archive(archive.to_bytes())}
    assert entries["usr/sbin/kexec"].is_file and entries["usr/sbin/kexec"].perm == 0o755
    assert entries["usr/lib/netbootd/libc.so.6"].is_file
    assert info["kexec"] == str(DYNAMIC)
    _, without = initrd.build_archive(**kw)
    assert without["kexec"] is None


def test_a_kexec_whose_libraries_are_missing_is_left_out_with_the_reason(tmp_path,
                                                                        monkeypatch):
    _need_ldd()
    cached = initrd.cache_dir() / "kexec-tools" / "root" / "sbin" / "kexec"
    if not cached.is_file():
        pytest.skip("no cached kexec-tools (`netbootd initrd build` fetches it)")
    lonely = tmp_path / "sbin" / "kexec"          # without the Xen libraries beside it
    lonely.parent.mkdir()
    shutil.copy(cached, lonely)
    monkeypatch.setenv("NETBOOTD_KEXEC", str(lonely))
    path, why = kexec.pick(tmp_path / "cache")
    assert path is None and "libxenctrl" in why
    with pytest.raises(kexec.KexecError, match="libxenctrl"):
        kexec.files_for_initrd(lonely)


def test_netbootd_kexec_none_or_a_bad_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NETBOOTD_KEXEC", "none")
    assert kexec.pick(tmp_path) == (None, None)
    monkeypatch.setenv("NETBOOTD_KEXEC", str(tmp_path / "nope"))
    path, why = kexec.pick(tmp_path)
    assert path is None and "is not a file" in why


def test_fetch_false_finds_nothing_and_runs_nothing(nothing_installed, tmp_path):
    assert kexec.find_kexec(tmp_path / "cache", fetch=False) is None
    assert kexec.pick(tmp_path / "cache", fetch=False) == (None, None)
    assert nothing_installed == []


def test_fetch_true_is_what_tries_apt_get(nothing_installed, monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    with pytest.raises(kexec.KexecError, match="no apt-get to fetch kexec-tools"):
        kexec.find_kexec(tmp_path / "cache", fetch=True)
    path, why = kexec.pick(tmp_path / "cache", fetch=True)
    assert path is None and "no apt-get" in why
