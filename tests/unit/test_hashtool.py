"""The agent tool pack (iso_builder/hashtool.py): what it holds, that it runs where it is
unpacked (busybox cpio, an empty environment), that it is deterministic, and how the
daemon names it in a capture action (net/capture.py tool_pack)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from iso_builder import cpio, hashtool
from iso_builder.initrd import cache_dir
from netbootd.net.capture import TOOLS_NAME, tool_pack

ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    try:
        binary = hashtool.find_openssl(cache_dir())
    except hashtool.HashToolError as e:
        pytest.skip(f"openssl cannot be packed: {e}")
    if binary is None:
        pytest.skip("no openssl binary (installed, cached or $NETBOOTD_OPENSSL) to pack")
    out = tmp_path_factory.mktemp("pack") / hashtool.PACK_NAME
    return hashtool.build_pack(out, cache_dir())


def test_the_pack_holds_openssl_its_libraries_its_interpreter_and_the_wrapper(pack):
    entries = {e.name: e for e in cpio.read_archive(open(pack["path"], "rb").read())}
    assert entries["usr/bin/openssl"].data[:4] == b"\x7fELF"
    libs = {n.rsplit("/", 1)[1] for n in entries if n.startswith("usr/lib/netbootd/")}
    assert {"libcrypto.so.3", "libc.so.6"} <= libs, libs
    interp = [n for n in entries if n.rsplit("/", 1)[-1].startswith("ld-linux")]
    assert len(interp) == 1 and entries[interp[0]].data[:4] == b"\x7fELF"
    wrapper = entries["bin/openssl"].data.decode()
    assert wrapper.startswith("#!/bin/sh\n") and f'"$d/{interp[0]}" --library-path' in wrapper
    assert entries["bin/openssl"].perm == 0o755
    assert sorted(pack["files"]) == sorted(n for n, e in entries.items() if e.is_file)
    side = open(pack["path"] + ".sha256").read()
    assert side == f"{pack['sha256']}  {hashtool.PACK_NAME}\n"
    assert hashlib.sha256(open(pack["path"], "rb").read()).hexdigest() == pack["sha256"]


def test_the_unpacked_wrapper_hashes_with_an_empty_environment(pack, tmp_path):
    bb = shutil.which("busybox")
    if bb is None:
        pytest.skip("no busybox to unpack with")
    subprocess.run(f"gzip -dc {pack['path']} | {bb} cpio -id", shell=True, cwd=tmp_path,
                   check=True, capture_output=True)
    r = subprocess.run([str(tmp_path / "bin" / "openssl"), "dgst", "-sha256", "-r"],
                       input=b"abc", env={}, capture_output=True, timeout=30)
    assert r.stdout.decode().split()[0] == ABC, r


def test_a_rebuild_is_byte_identical_and_not_rewritten(pack):
    again = hashtool.build_pack(pack["path"], cache_dir())
    assert again["reused"] and again["sha256"] == pack["sha256"]


def test_no_openssl_no_pack_and_an_old_one_is_removed(tmp_path, monkeypatch):
    out = tmp_path / hashtool.PACK_NAME
    out.write_bytes(b"old")
    (tmp_path / (hashtool.PACK_NAME + ".sha256")).write_text("0" * 64 + "\n")
    monkeypatch.setenv("NETBOOTD_OPENSSL", "none")
    assert hashtool.build_pack(out, tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_named_openssl_that_is_not_a_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NETBOOTD_OPENSSL", str(tmp_path / "nope"))
    with pytest.raises(hashtool.HashToolError, match="NETBOOTD_OPENSSL="):
        hashtool.build_pack(tmp_path / hashtool.PACK_NAME, tmp_path)


def test_the_action_names_the_pack_only_with_a_well_formed_sidecar(tmp_path):
    path = tmp_path / hashtool.PACK_NAME
    path.write_bytes(b"pack")
    assert hashtool.HTTP_NAME == TOOLS_NAME and hashtool.URL_PATH == f"/files/{TOOLS_NAME}"
    assert tool_pack({TOOLS_NAME: str(path)}) == {}                   # no sidecar
    side = tmp_path / (hashtool.PACK_NAME + ".sha256")
    for bad in ("", "xyz  agent-tools.cpio.gz\n", "A" * 64 + "\n", "0" * 63 + "\n"):
        side.write_text(bad)
        assert tool_pack({TOOLS_NAME: str(path)}) == {}, bad
    side.write_text("ab" * 32 + "  agent-tools.cpio.gz\n")
    assert tool_pack({TOOLS_NAME: str(path)}) == {
        "tools": "/files/netbootd/agent-tools.cpio.gz", "tools_sha256": "ab" * 32}
    assert tool_pack({}) == {} and tool_pack(None) == {}


def test_boot_media_carry_openssl_beside_curl_and_the_discover_initrd_does_not(tmp_path):
    """A few hundred KB more on media (curl's libraries are packed already); nothing more on
    the PXE discover initrd, which fetches the pack only when it captures."""
    from iso_builder import initrd, tlsclient
    from tests.unit.test_initrd_kexec import fake_kernel
    curl, why = tlsclient.pick(cache_dir())
    if curl is None or hashtool.for_media(cache_dir()) is None:
        pytest.skip(f"no curl or no openssl to pack: {why}")
    kw = fake_kernel(tmp_path)
    archive, info = initrd.build_archive(tls_client=curl, **kw)
    names = {e.name for e in cpio.read_archive(archive.to_bytes())}
    assert "usr/bin/openssl" in names and info["openssl"] is not None
    assert 0 < info["openssl_bytes"] < 2 << 20, info["openssl_bytes"]   # the binary only
    _, plain = initrd.build_archive(**kw)
    assert plain["openssl"] is None and plain["openssl_bytes"] == 0
