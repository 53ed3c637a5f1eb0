"""The agent's TLS client in an initrd (iso_builder/tlsclient.py): Debian's curl is
packed with its interpreter and libraries next to kexec's (a library both need is
packed once); the discover initrd carries none; NETBOOTD_CURL picks or disables it;
the agent's lib.sh looks for the libraries where they are packed."""
from __future__ import annotations

from pathlib import Path

import pytest

import iso_builder.initrd as initrd
from iso_builder import kexec, tlsclient
from iso_builder.cpio import read_archive

from .test_initrd_kexec import fake_kernel

DYNAMIC = Path("/bin/ls")


@pytest.fixture
def kw(tmp_path):
    return fake_kernel(tmp_path)


def test_curl_is_packed_beside_kexec_with_shared_libraries_once(kw):
    curl, why = tlsclient.pick(initrd.cache_dir())
    if curl is None:
        pytest.skip(f"no curl: {why}")
    archive, info = initrd.build_archive(kexec=DYNAMIC, tls_client=curl, **kw)
    entries = {e.name: e for e in read_archive(archive.to_bytes())}
    assert entries["usr/bin/curl"].perm == 0o755
    for lib in ("libcurl.so.4", "libssl.so.3", "libcrypto.so.3", "libc.so.6"):
        assert entries[f"usr/lib/netbootd/{lib}"].is_file, lib
    assert info["tls_client"] == str(curl) and info["tls_client_bytes"] > 1 << 20
    _, plain = initrd.build_archive(kexec=DYNAMIC, **kw)
    assert plain["tls_client"] is None and plain["tls_client_bytes"] == 0
    lib_sh = (Path(initrd.INITRD_SRC) / "lib.sh").read_text()
    assert f"NB_LIBS=${{NB_LIBS:-/{kexec.LIB_DIR}}}" in lib_sh


def test_the_discover_initrd_has_no_tls_client_and_media_inputs_name_it(kw):
    import inspect
    assert "tls_client" not in inspect.signature(initrd.build_discover_initrd).parameters
    assert "tls_client" not in inspect.signature(initrd.ensure_discover_initrd).parameters
    try:
        kver = initrd.default_kernel_version()
    except initrd.InitrdError as e:
        pytest.skip(str(e))
    bb = kw["busybox"]
    assert "tls_client" not in initrd._inputs(kver, bb, (), None, None)
    with_curl = initrd._inputs(kver, bb, (), None, None, DYNAMIC)
    assert with_curl["tls_client"][0] == str(DYNAMIC), "a new curl rebuilds cached media parts"


def test_netbootd_curl_none_or_a_bad_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NETBOOTD_CURL", "none")
    assert tlsclient.pick(tmp_path) == (None, None)
    monkeypatch.setenv("NETBOOTD_CURL", str(tmp_path / "nope"))
    path, why = tlsclient.pick(tmp_path)
    assert path is None and "NETBOOTD_CURL=" in why and "is not a file" in why
    monkeypatch.setenv("NETBOOTD_CURL", str(DYNAMIC))
    assert tlsclient.pick(tmp_path) == (DYNAMIC, None)
