"""The capturing agent fetches the agent tool pack (iso_builder/hashtool.py: openssl) the
daemon names in the capture action: the initrd's static busybox with PATH holding only
its applets runs capture.sh against the real netbootd site (real store, real file pool)
serving the pack from its generated files, as the daemon serves it beside discover.img.
A good pack: the capture hashes with the pack's openssl.  A corrupted one: the agent says
why, hashes with busybox sha256sum, and the capture still ends byte-identical."""
from __future__ import annotations

import hashlib

import pytest
import pytest_twisted

from iso_builder import cpio, hashtool
from iso_builder.initrd import cache_dir
from netbootd.net.capture import TOOLS_NAME
from tests.net.test_api_storage import make_api
from tests.net.test_capture_agent import ended, fake_sys, queue_capture, run_agent
from tests.net.test_capture_api import MAC, SIZE
from tests.unit.test_agent_shell import bbpath  # noqa: F401  (fixture)

URL = f"/files/{TOOLS_NAME}"


@pytest.fixture
def pack(tmp_path):
    try:
        built = hashtool.build_pack(tmp_path / "state" / hashtool.PACK_NAME, cache_dir())
    except hashtool.HashToolError as e:
        pytest.skip(f"openssl cannot be packed: {e}")
    if built is None:
        pytest.skip("no openssl binary (installed, cached or $NETBOOTD_OPENSSL) to pack")
    return built


@pytest_twisted.inlineCallbacks
def capture_with_pack(tmp_path, bbpath, pack):  # noqa: F811
    """A capture with the pack served; the agent's console."""
    app, base, _, committer, port = make_api(tmp_path)
    app.generated[TOOLS_NAME] = pack["path"]
    try:
        disk, secret, job = yield queue_capture(app, base, tmp_path)
        h = app.registry.hosts[MAC]
        assert h.action["tools"] == URL and h.action["tools_sha256"] == pack["sha256"]
        sysdir, procdir = fake_sys(tmp_path, "vdz", SIZE)
        r = yield run_agent(bbpath, tmp_path, base, secret, str(disk), sysdir, procdir)
        out = r.stdout + r.stderr
        yield ended(tmp_path, base, job["id"], disk, secret, out)
        return out
    finally:
        port.stopListening()
        committer.stop()


@pytest_twisted.inlineCallbacks
def test_the_agent_hashes_with_the_packs_openssl(tmp_path, bbpath, pack):  # noqa: F811
    out = yield capture_with_pack(tmp_path, bbpath, pack)
    assert f"hasher=openssl (tool pack {URL})" in out, out
    assert "busybox sha256sum" not in out, out
    assert (tmp_path / "run" / "tools" / "bin" / "openssl").is_file()
    assert not (tmp_path / "run" / "tools.pack").exists()


@pytest_twisted.inlineCallbacks
def test_a_corrupted_pack_is_not_run_and_busybox_hashes(tmp_path, bbpath, pack):  # noqa: F811
    path = tmp_path / "state" / hashtool.PACK_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                     # the sidecar keeps the old digest
    path.write_bytes(bytes(data))
    out = yield capture_with_pack(tmp_path, bbpath, pack)
    assert (f"capture: tool pack not used: {URL} has sha256 " in out and
            f"the action says {pack['sha256']}; hashing with busybox sha256sum" in out), out
    assert "hasher=busybox (tool pack not used:" in out, out
    assert not (tmp_path / "run" / "tools").exists()
    assert not (tmp_path / "run" / "tools.pack").exists()


@pytest_twisted.inlineCallbacks
def test_a_pack_whose_openssl_does_not_hash_falls_back(tmp_path, bbpath, pack):  # noqa: F811
    """A pack with the right digest whose openssl fails (its interpreter missing here)."""
    entries = cpio.read_archive(open(pack["path"], "rb").read())
    a = cpio.Archive()
    for e in entries:
        if e.is_file and "ld-linux" not in e.name:
            a.add_file(e.name, e.data, e.perm)
    data = cpio.gzip_bytes(a.to_bytes())
    path = tmp_path / "state" / hashtool.PACK_NAME
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / "state" / (hashtool.PACK_NAME + ".sha256")).write_text(
        f"{digest}  {hashtool.PACK_NAME}\n")
    out = yield capture_with_pack(tmp_path, bbpath, dict(pack, sha256=digest))
    assert f"tool pack not used: openssl from {URL} does not hash" in out, out
    assert "hasher=busybox" in out, out
