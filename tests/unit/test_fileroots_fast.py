"""net/fileroots.py: the openat2(RESOLVE_BENEATH) fast path gives the same
answers as the realpath checks it replaces, on real files and symlinks; the
lookup over several roots keeps the roots' order; the access-log line
and the http.file event detail, built by hand, equal what twisted's formatter
and writes.event make."""
from __future__ import annotations

import json
import os

import pytest

from netbootd.net import fileroots
from netbootd.net.fileroots import open_in_root, open_in_roots
from netbootd.policy.paths import PathRefused

pytestmark = pytest.mark.skipif(not fileroots.FAST, reason="no openat2 on this kernel")


@pytest.fixture
def tree(tmp_path):
    """root/sub/real.bin, a secret beside the root, and symlinks in the root."""
    root, secret = tmp_path / "root", tmp_path / "secret.txt"
    (root / "sub").mkdir(parents=True)
    for path, data in ((root / "sub" / "real.bin", b"inside"), (secret, b"TOP SECRET")):
        path.write_bytes(data)
    links = {"escape": secret, "escape_rel": "../secret.txt", "escape_dir": tmp_path,   # out
             "alias.bin": "sub/real.bin", "abs_alias.bin": root / "sub" / "real.bin",   # in
             "dangling": "sub/none.bin"}
    for name, target in links.items():
        (root / name).symlink_to(target)
    return root, secret


@pytest.fixture
def paths_used(monkeypatch):
    """Which way each open went: 'fast' (openat2) or 'checked' (realpath)."""
    used = []
    fast, checked = fileroots._open_beneath, fileroots._open_checked

    def spy_fast(root, rel):
        fd = fast(root, rel)
        if fd is not None and fd >= 0:
            used.append(("fast", os.readlink(f"/proc/self/fd/{fd}")))
        else:
            used.append(("fast-refused", rel))
        return fd

    def spy_checked(root, rel, realpath):
        used.append(("checked", rel))
        return checked(root, rel, realpath)
    monkeypatch.setattr(fileroots, "_open_beneath", spy_fast)
    monkeypatch.setattr(fileroots, "_open_checked", spy_checked)
    return used


def _read(fd) -> bytes:
    try:
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("rel", ["sub/real.bin", "alias.bin", "/sub//./real.bin"[1:]])
def test_files_and_relative_symlinks_inside_open_on_the_fast_path(tree, paths_used, rel):
    root, _ = tree
    fd, st, real = open_in_root(str(root), rel)
    assert _read(fd) == b"inside" and st.st_size == 6
    assert real == os.path.realpath(root / "sub" / "real.bin")
    assert [w for w, _ in paths_used] == ["fast"]


def test_an_absolute_symlink_inside_the_root_is_served_by_the_checked_path(tree, paths_used):
    root, _ = tree
    fd, _, real = open_in_root(str(root), "abs_alias.bin")
    assert _read(fd) == b"inside" and real == os.path.realpath(root / "sub" / "real.bin")
    assert [w for w, _ in paths_used] == ["fast-refused", "checked"]


@pytest.mark.parametrize("rel", ["escape", "escape_rel", "escape_dir/secret.txt"])
def test_symlinks_out_of_the_root_are_refused_and_the_secret_never_opened(tree, paths_used, rel):
    root, secret = tree
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(PathRefused) as ei:
        open_in_root(str(root), rel)
    assert ei.value.reason == "outside_root"
    assert not any(p == str(secret) for w, p in paths_used if w == "fast")
    assert len(os.listdir("/proc/self/fd")) == before, "descriptor leaked"


def test_directories_missing_files_and_dangling_links(tree):
    root, _ = tree
    for rel, reason in [("sub", "not_regular"), ("sub/none.bin", "not_found"),
                        ("dangling", "not_found"), ("sub/real.bin/x", "not_found")]:
        with pytest.raises(PathRefused) as ei:
            open_in_root(str(root), rel)
        assert ei.value.reason == reason, rel


def test_a_symlink_swapped_to_point_out_is_refused_at_the_next_open(tree):
    """Nothing is cached: the name is resolved afresh on every open."""
    root, secret = tree
    fd, _, _ = open_in_root(str(root), "alias.bin")
    assert _read(fd) == b"inside"
    os.unlink(root / "alias.bin")
    os.symlink("../secret.txt", root / "alias.bin")
    with pytest.raises(PathRefused) as ei:
        open_in_root(str(root), "alias.bin")
    assert ei.value.reason == "outside_root"


def test_a_file_replaced_on_disk_is_opened_fresh(tree):
    root, _ = tree
    fd, st1, _ = open_in_root(str(root), "sub/real.bin")
    os.close(fd)
    (root / "sub" / "new.tmp").write_bytes(b"replaced!")
    os.replace(root / "sub" / "new.tmp", root / "sub" / "real.bin")
    fd, st2, _ = open_in_root(str(root), "alias.bin")
    assert _read(fd) == b"replaced!" and st2.st_ino != st1.st_ino


def test_without_openat2_the_checked_path_answers_alone(tree, monkeypatch, paths_used):
    root, _ = tree
    monkeypatch.setattr(fileroots, "FAST", False)
    fd, _, _ = open_in_root(str(root), "alias.bin")
    assert _read(fd) == b"inside"
    with pytest.raises(PathRefused):
        open_in_root(str(root), "escape_rel")
    assert [w for w, _ in paths_used] == ["checked", "checked"]


def test_roots_in_order_and_a_name_present_in_a_root_is_not_skipped(tmp_path):
    """Absent from the first root (no lexists) -> the second; present but
    refused (dangling, escaping) -> refused, not looked up further."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "only_b").write_bytes(b"B")
    (b / "both").write_bytes(b"B")
    (a / "both").write_bytes(b"A")
    (a / "dangling").symlink_to("nothing")
    (b / "dangling").write_bytes(b"B")
    (a / "out").symlink_to(tmp_path / "b" / "only_b")
    (b / "out").write_bytes(b"B")
    fd, _, _ = open_in_roots([str(a), str(b)], "only_b")
    assert _read(fd) == b"B"
    fd, _, _ = open_in_roots([str(a), str(b)], "both")
    assert _read(fd) == b"A"
    for rel, reason in [("dangling", "not_found"), ("out", "outside_root"), ("none", "not_found")]:
        with pytest.raises(PathRefused) as ei:
            open_in_roots([str(a), str(b)], rel)
        assert ei.value.reason == reason, rel


def test_the_http_file_event_detail_is_what_writes_event_makes():
    from netbootd.net.http.files import file_detail
    from netbootd.writes import event
    for name, n, status, ip in [("initrd.img", 41943040, 200, "127.0.0.1"),
                                ('we"ird\\ name\u00e9\u2603', 0, 404, None),
                                ("a/b c", 7, 206, "fe80::1%eth0")]:
        want = event(1.0, None, "http.file", path=name, bytes=n, status=status, ip=ip).detail
        assert file_detail(name, n, status, ip) == want
        assert json.loads(want)["path"] == name


class _Req:
    def __init__(self, uri, ip="127.0.0.1", headers=None, method=b"GET", proto=b"HTTP/1.1",
                 code=200, sent=41943040, v6=False, unix=False):
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
        self.uri, self.method, self.clientproto, self.code = uri, method, proto, code
        self.sentLength, self.h = sent, headers or {}
        self.a = UNIXAddress(None) if unix else (IPv6Address if v6 else IPv4Address)("TCP", ip, 1)

    def getClientAddress(self):
        return self.a

    def getHeader(self, k):
        return self.h.get(k)


@pytest.mark.parametrize("req", [
    _Req(b"/files/initrd.img"), _Req(b"/files/a\"b\\c'd\te\xff"), _Req(b"/x?token=abc&y=1"),
    _Req(b"/files/nbt1.abc/x"), _Req(b"/files/nba1.aa.bb"), _Req(b"/", v6=True, ip="::1"),
    _Req(b"/a", headers={b"referer": b"http://x/\"y", b"user-agent": b"curl/8 \xc3\xa9"}),
    _Req(b"/a", sent=0, code=404), _Req(b"/a'b"), _Req(b"/x", method=b"G\"T", proto=b"HTTP/1.0"),
    _Req(b"/u", unix=True)], ids=lambda r: repr(r.uri))
def test_the_access_log_line_is_twisteds_combined_format_redacted(req):
    from twisted.web import http

    from netbootd.net.http.site import _Redacted, access_log_line
    ts = "[04/Dec/2026:22:00:00 +0000]"
    assert access_log_line(ts, req) == http.combinedLogFormatter(ts, _Redacted(req))
