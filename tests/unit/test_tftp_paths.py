"""Which file a TFTP name means: the pure policy (normalize, within) and the I/O side
on real files: the look-up over the roots (net.fileroots.open_in_roots, generated names
first) and its containment check (open_in_root)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from netbootd.codec import tftp as t
from netbootd.net.fileroots import open_in_root, open_in_roots
from netbootd.net.http.files import open_file
from netbootd.net.tftp_files import error_code
from netbootd.policy.paths import PathRefused as Refused
from netbootd.policy.paths import normalize, within


def refused(name):
    with pytest.raises(Refused) as ei:
        normalize(name)
    return ei.value


def read(opened) -> bytes:
    fd, _, _ = opened
    try:
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


def refused_in(roots, rel):
    with pytest.raises(Refused) as ei:
        open_in_roots([str(r) for r in roots], rel)
    return ei.value


# -- pure policy ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", "../etc/passwd", "a/../../b", "a/..", "a/../b",
                                  "/../x", "x/./../y"])
def test_any_dotdot_component_is_refused_as_access_violation(name):
    r = refused(name)
    assert (r.reason, error_code(r)) == ("dotdot", t.ERR_ACCESS)


def test_dots_inside_a_name_are_not_dotdot_components():
    assert normalize("ipxe..efi") == "ipxe..efi"
    assert normalize("...") == "..."


def test_a_leading_slash_is_root_relative_like_tftp_hpa_secure(tmp_path):
    (tmp_path / "undionly.kpxe").write_bytes(b"pxe")
    assert normalize("/undionly.kpxe") == "undionly.kpxe"
    assert read(open_in_roots([str(tmp_path)], normalize("/undionly.kpxe"))) == b"pxe"


def test_an_absolute_host_path_never_leaves_the_roots(tmp_path):
    """'/etc/passwd' means <root>/etc/passwd, not the host's file."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_bytes(b"the root's own")
    assert read(open_in_roots([str(tmp_path)], normalize("/etc/passwd"))) == b"the root's own"
    r = refused_in([tmp_path / "etc"], normalize("/etc/passwd"))   # a root without etc/
    assert (r.reason, error_code(r)) == ("not_found", t.ERR_NOT_FOUND)


@pytest.mark.parametrize("name, reason", [
    ("boot\\x64\\wdsnbp.com", "backslash"),
    ("a\0b", "nul_in_name"),
    ("", "empty_name"),
    ("/", "empty_name"),
    ("./", "empty_name"),
    ("a" * 300, "name_too_long"),
    ("a\nb", "control_char"),
    ("a\x7fb", "control_char"),
])
def test_unsafe_names_are_refused(name, reason):
    r = refused(name)
    assert r.reason == reason and error_code(r) == t.ERR_ACCESS


def test_a_255_byte_name_is_allowed_and_256_is_not():
    assert normalize("a" * 255) == "a" * 255
    assert refused("a" * 256).reason == "name_too_long"


def test_redundant_slashes_and_dot_components_are_dropped():
    assert normalize("//efi/./x64//ipxe.efi") == "efi/x64/ipxe.efi"


def test_roots_are_searched_in_order_and_the_first_that_has_the_file_wins(tmp_path):
    roots = [tmp_path / n for n in "abc"]
    for r in roots:
        r.mkdir()
    (roots[1] / "f").write_bytes(b"B")
    (roots[2] / "f").write_bytes(b"C")
    assert read(open_in_roots([str(r) for r in roots], "f")) == b"B"
    r = refused_in(roots, "nope.efi")                                # found nowhere
    assert (r.reason, error_code(r)) == ("not_found", t.ERR_NOT_FOUND)


def test_generated_files_are_found_first_under_their_normalized_name(tmp_path):
    """A generated name (the daemon's own file, by path) wins over the same name in a
    root (net/http/files.open_file; net/tftp.py looks it up the same way)."""
    root, own = tmp_path / "root", tmp_path / "state" / "autoexec.ipxe"
    root.mkdir()
    own.parent.mkdir()
    (root / "autoexec.ipxe").write_bytes(b"on disk")
    own.write_bytes(b"#!ipxe generated")
    app = SimpleNamespace(roots=[str(root)], generated={"autoexec.ipxe": str(own)})
    real, fd, st = open_file(app, "//./autoexec.ipxe")
    assert real == str(own) and read((fd, st, real)) == b"#!ipxe generated"
    app.generated = {}
    real, fd, st = open_file(app, "/autoexec.ipxe")
    assert real == str(root / "autoexec.ipxe") and read((fd, st, real)) == b"on disk"


@pytest.mark.parametrize("root, target, ok", [
    ("/srv/tftp", "/srv/tftp/a", True),
    ("/srv/tftp", "/srv/tftp", True),
    ("/srv/tftp", "/srv/tftp-evil/a", False),
    ("/srv/tftp", "/srv", False),
    ("/srv/tftp/", "/srv/tftp/x/y", True),
    ("/", "/anything", True),
])
def test_within_compares_whole_path_components(root, target, ok):
    assert within(root, target) is ok


# -- I/O-side containment (real files, symlinks) ------------------------------------------
@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real.bin").write_bytes(b"inside")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET")
    (root / "escape").symlink_to(secret)
    (root / "escape_dir").symlink_to(tmp_path)
    (root / "alias.bin").symlink_to("sub/real.bin")
    return root, secret


@pytest.fixture
def opened(monkeypatch):
    """Every path os.open is called with during the test."""
    paths: list[str] = []
    real_open = os.open

    def spy(path, *a, **kw):
        paths.append(os.fspath(path))
        return real_open(path, *a, **kw)
    monkeypatch.setattr(os, "open", spy)
    return paths


@pytest.mark.parametrize("rel", ["escape", "escape_dir/secret.txt"])
def test_a_symlink_out_of_the_root_is_refused_and_its_target_never_opened(tree, opened, rel):
    root, secret = tree
    with pytest.raises(Refused) as ei:
        open_in_root(str(root), rel)
    assert (ei.value.reason, error_code(ei.value)) == ("outside_root", t.ERR_ACCESS)
    assert opened == [], "nothing outside the root may be opened"


def test_a_symlink_inside_the_root_is_served(tree):
    root, _ = tree
    fd, st, real = open_in_root(str(root), "alias.bin")
    try:
        assert os.pread(fd, 100, 0) == b"inside"
        assert real == str(root / "sub" / "real.bin") and st.st_size == 6
    finally:
        os.close(fd)


def test_a_symlink_swapped_in_after_the_check_is_caught_on_the_open_descriptor(tree):
    """realpath is a parameter: here it does not follow links, as if 'escape'
    became a symlink just after the check ran.  The open follows it, and the
    check on /proc/self/fd refuses the file actually opened (and closes it)."""
    root, _ = tree
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(Refused) as ei:
        open_in_root(str(root), "escape", realpath=os.path.normpath)
    assert ei.value.reason == "outside_root"
    assert len(os.listdir("/proc/self/fd")) == before, "descriptor leaked"


def test_a_directory_is_not_served(tree):
    root, _ = tree
    with pytest.raises(Refused) as ei:
        open_in_root(str(root), "sub")
    assert ei.value.reason == "not_regular"


def test_a_missing_file_is_file_not_found(tree):
    root, _ = tree
    with pytest.raises(Refused) as ei:
        open_in_root(str(root), "sub/none.bin")
    assert (ei.value.reason, error_code(ei.value)) == ("not_found", t.ERR_NOT_FOUND)


def test_ephemeral_transfer_sockets_never_share_a_port():
    """SO_REUSEADDR with port 0 lets Linux hand out a port already held
    (bench/tftp saw two transfers on one port); transfer sockets must not."""
    from netbootd.net.interfaces import udp_socket
    socks = [udp_socket(None, 0, "127.0.0.1") for _ in range(2000)]
    try:
        ports = [s.getsockname()[1] for s in socks]
        assert len(set(ports)) == len(ports)
    finally:
        for s in socks:
            s.close()
