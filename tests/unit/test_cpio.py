"""iso_builder.cpio: the newc writer checked against GNU cpio (Debian package cpio) and bsdtar.

The writer's output is extracted with the real `cpio -i` and compared file by file;
archives made by `cpio -o -H newc` are parsed by our reader.  Tests needing a tool
skip naming it when it is missing.
"""
from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess

import pytest

from iso_builder.cpio import (HEADER_LEN, Archive, CpioError, Entry, encode_entry, gzip_bytes,
                              normalize_name, read_archive)


def _tool(name: str) -> str:
    p = shutil.which(name)
    if p is None:
        pytest.skip(f"{name!r} is not installed (Debian: "
                    f"{'cpio' if name == 'cpio' else 'libarchive-tools'})")
    return p


def _sample() -> Archive:
    a = Archive()
    a.add_dir("etc")
    a.add_file("etc/hello.txt", b"hello\n", 0o644)
    a.add_file("bin/tool", b"#!/bin/sh\necho hi\n", 0o755)   # parent 'bin' implicit
    a.add_symlink("bin/sh", "/bin/busybox")
    a.add_symlink("lib/relative", "../etc/hello.txt")
    a.add_file("empty", b"", 0o600)
    a.add_dir("tmp", 0o1777)
    a.add_chardev("dev/console", 5, 1, 0o600)
    a.add_chardev("dev/null", 1, 3, 0o666)
    return a


def _extract(cpio: str, data: bytes, dest) -> subprocess.CompletedProcess:
    dest.mkdir(parents=True, exist_ok=True)
    return subprocess.run([cpio, "-i", "-d", "-m", "--no-absolute-filenames", "--quiet"],
                          input=data, cwd=dest, capture_output=True, timeout=60)


def _padding_archive() -> Archive:
    a = Archive()
    for n in range(1, 9):              # names of 1..8 bytes: header+name+NUL hits every mod 4
        for k in range(0, 9):          # contents of 0..8 bytes: data padding 0..3
            a.add_file(f"d{n}/{'x' * n}{k}", bytes(range(65, 65 + k)), 0o644)
    a.add_file("y" * 200, b"z" * 13)   # a long name
    return a


# -- exact format ---------------------------------------------------------------------
def test_single_file_encodes_to_the_exact_newc_bytes():
    """One file 'a' containing 'hi': 110-byte header, 'a\\0' (112 = aligned), data padded to 4."""
    a = Archive()
    a.add_file("a", b"hi", 0o644)
    data = a.to_bytes()
    expected_head = (b"070701" + b"00000001" + b"000081A4" + b"00000000" * 2 + b"00000001" +
                     b"00000000" + b"00000002" + b"00000000" * 4 + b"00000002" + b"00000000")
    assert len(expected_head) == HEADER_LEN
    first = expected_head + b"a\0" + b"hi\0\0"
    assert data.startswith(first)
    trailer = data[len(first):]
    assert trailer.startswith(b"070701" + b"00000000" * 4 + b"00000001")  # ino 0 ... nlink 1
    assert trailer[HEADER_LEN:HEADER_LEN + 11] == b"TRAILER!!!\0"
    assert len(data) % 4 == 0


def test_trailer_is_the_last_entry_and_ends_on_a_4_byte_boundary():
    """The archive ends with TRAILER!!! padded so its total length is a multiple of 4."""
    data = _sample().to_bytes()
    assert len(data) % 4 == 0
    # 110-byte header + "TRAILER!!!\0" (11) = 121, padded with 3 zeros to 124
    assert data.endswith(b"070701" + b"00000000" * 4 + b"00000001" + b"00000000" * 6 +
                         b"0000000B" + b"00000000" + b"TRAILER!!!\0\0\0\0")


def test_every_header_starts_aligned_and_all_padding_is_zero_for_lengths_0_to_8():
    """Names and contents of every length mod 4 pad to 4-byte boundaries with zeros only."""
    a = _padding_archive()
    data = a.to_bytes()
    off = 0
    count = 0
    while True:
        assert off % 4 == 0
        assert data[off:off + 6] == b"070701"
        namesize = int(data[off + 94:off + 102], 16)
        filesize = int(data[off + 54:off + 62], 16)
        name_end = off + HEADER_LEN + namesize
        data_off = (name_end + 3) & ~3
        assert data[name_end:data_off] == b"\0" * (data_off - name_end)
        end = data_off + filesize
        nxt = (end + 3) & ~3
        assert data[end:nxt] == b"\0" * (nxt - end)
        name = data[off + HEADER_LEN:name_end - 1]
        off = nxt
        if name == b"TRAILER!!!":
            break
        count += 1
    assert off == len(data)
    assert count == len(a)
    # and the strict reader (which checks padding bytes) agrees
    back = {e.name: e.data for e in read_archive(data)}
    for e in a:
        assert back[e.name] == e.data


# -- determinism -------------------------------------------------------------------------
def test_same_inputs_give_identical_bytes_plain_and_gzip():
    """Two archives built by the same calls serialise (and gzip) to identical bytes."""
    assert _sample().to_bytes() == _sample().to_bytes()
    g1, g2 = _sample().to_gzip(), _sample().to_gzip()
    assert g1 == g2
    assert g1[4:8] == b"\0\0\0\0"          # gzip MTIME field is zero
    assert g1[3] & 0x08 == 0                # no FNAME: no file name stored
    assert gzip.decompress(g1) == _sample().to_bytes()


def test_entries_carry_fixed_mtime_uid_gid_and_sequential_inodes():
    """Every entry has the archive's mtime/uid/gid; inode numbers are 1..n in order."""
    a = Archive(mtime=1234567890, uid=0, gid=0)
    a.add_file("f", b"x")
    a.add_dir("d")
    entries = read_archive(a.to_bytes())
    assert [e.ino for e in entries] == [1, 2]
    assert {(e.mtime, e.uid, e.gid) for e in entries} == {(1234567890, 0, 0)}
    assert entries[1].nlink == 2 and entries[0].nlink == 1


def test_write_to_file_object_matches_to_bytes(tmp_path):
    """Archive.write streams exactly the bytes to_bytes returns."""
    p = tmp_path / "a.cpio"
    with open(p, "wb") as f:
        n = _sample().write(f)
    assert p.read_bytes() == _sample().to_bytes()
    assert n == p.stat().st_size


# -- building rules -----------------------------------------------------------------------
def test_parent_directories_are_added_before_their_contents():
    """Adding a/b/c creates a, a/b (0755) first; names are stored without a leading '/'."""
    a = Archive()
    a.add_file("/a/b/c", b"1")
    names = [e.name for e in a]
    assert names == ["a", "a/b", "a/b/c"]
    assert all(stat.S_IMODE(e.mode) == 0o755 for e in list(a)[:2])


def test_re_adding_an_implicit_directory_sets_its_mode_in_place():
    a = Archive()
    a.add_file("tmp/x", b"")
    a.add_dir("tmp", 0o1777)
    assert [e.name for e in a] == ["tmp", "tmp/x"]
    assert a.get("tmp").perm == 0o1777


@pytest.mark.parametrize("bad", ["", "/", ".", "a/../b", "..", "x\0y", "TRAILER!!!"])
def test_unsafe_or_reserved_names_are_refused(bad):
    with pytest.raises(CpioError):
        normalize_name(bad)


def test_duplicates_and_files_used_as_directories_are_refused():
    a = Archive()
    a.add_file("f", b"")
    with pytest.raises(CpioError):
        a.add_file("f", b"again")
    with pytest.raises(CpioError):
        a.add_file("f/child", b"")
    with pytest.raises(CpioError):
        a.add_dir("f")
    with pytest.raises(CpioError):
        a.add_file("g", b"", 0o100644)     # permission bits only, the type is implied


def test_reader_reports_bad_magic_and_truncation_with_offsets():
    data = _sample().to_bytes()
    with pytest.raises(CpioError) as exc:
        read_archive(b"070707" + data[6:])
    assert exc.value.offset == 0
    with pytest.raises(CpioError, match="TRAILER"):
        read_archive(data[:-(HEADER_LEN + 12)])   # trailer cut off
    with pytest.raises(CpioError) as exc:
        read_archive(data[:HEADER_LEN + 5])
    assert exc.value.offset is not None


def test_reader_round_trips_every_entry_kind_and_gzip():
    """read_archive(to_bytes()) gives back names, types, modes, data and device numbers."""
    a = _sample()
    for blob in (a.to_bytes(), a.to_gzip()):
        back = read_archive(blob)
        assert [e.name for e in back] == [e.name for e in a]
        for got, want in zip(back, a):
            assert (got.mode, got.data, got.rdevmajor, got.rdevminor) == \
                   (want.mode, want.data, want.rdevmajor, want.rdevminor)
    console = read_archive(a.to_bytes())[[e.name for e in a].index("dev/console")]
    assert console.is_chardev and (console.rdevmajor, console.rdevminor) == (5, 1)
    assert read_archive(a.to_bytes())[[e.name for e in a].index("bin/sh")].link_target \
        == "/bin/busybox"


def test_field_overflow_is_refused():
    with pytest.raises(CpioError):
        encode_entry(Entry("x", stat.S_IFREG | 0o644, mtime=1 << 32), 1)
    with pytest.raises(CpioError):
        Archive(mtime=-1)


# -- against the real tools -------------------------------------------------------------
def test_gnu_cpio_extracts_our_archive_exactly(tmp_path):
    """`cpio -idm` recreates every directory, file (contents, mode, mtime 0), symlink and
    (as root) device node of the archive."""
    cpio = _tool("cpio")
    a = _sample()
    r = _extract(cpio, a.to_bytes(), tmp_path / "x")
    assert r.returncode == 0, r.stderr.decode()
    root = tmp_path / "x"
    for e in a:
        p = root / e.name
        st = os.lstat(p)
        assert stat.S_IFMT(st.st_mode) == stat.S_IFMT(e.mode), e.name
        if e.is_file:
            assert p.read_bytes() == e.data
            assert stat.S_IMODE(st.st_mode) == e.perm
            assert st.st_mtime == 0
        elif e.is_symlink:
            assert os.readlink(p) == e.link_target
        elif e.is_dir:
            assert stat.S_IMODE(st.st_mode) == e.perm
        elif e.is_chardev:
            assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (e.rdevmajor, e.rdevminor)
    # nothing extra appeared
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert found == sorted(e.name for e in a)


def test_gnu_cpio_lists_our_names_in_order_including_padding_edge_cases(tmp_path):
    """`cpio -t` lists every name (lengths 1..200, contents 0..13 bytes) in archive order,
    and extraction reproduces each file's contents."""
    cpio = _tool("cpio")
    a = _padding_archive()
    data = a.to_bytes()
    r = subprocess.run([cpio, "-t", "--quiet"], input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().splitlines() == [e.name for e in a]
    r = _extract(cpio, data, tmp_path / "x")
    assert r.returncode == 0, r.stderr.decode()
    for e in a:
        if e.is_file:
            assert (tmp_path / "x" / e.name).read_bytes() == e.data


def test_our_reader_parses_what_gnu_cpio_writes(tmp_path):
    """An archive made by `cpio -o -H newc` reads back with the right names and contents."""
    cpio = _tool("cpio")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    files = {"sub/a": b"", "sub/bb": b"1", "ccc": b"12345", "sub/dddd": b"x" * 4097}
    for name, body in files.items():
        (src / name).write_bytes(body)
    os.symlink("ccc", src / "link")
    names = ["sub", *files, "link"]
    r = subprocess.run([cpio, "-o", "-H", "newc", "--quiet"], input="\n".join(names).encode(),
                       cwd=src, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    back = {e.name: e for e in read_archive(r.stdout, check_padding=False)}
    assert set(back) == set(names)
    for name, body in files.items():
        assert back[name].is_file and back[name].data == body
    assert back["link"].link_target == "ccc"
    assert back["sub"].is_dir


def test_bsdtar_reads_our_gzip_archive(tmp_path):
    """libarchive (bsdtar) lists the gzip'ed archive, as a second independent reader."""
    bsdtar = _tool("bsdtar")
    p = tmp_path / "a.cpio.gz"
    p.write_bytes(_sample().to_gzip())
    r = subprocess.run([bsdtar, "-tf", str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [e.name for e in _sample()]


def test_gzip_bytes_is_stable_across_levels_and_calls():
    blob = b"abc" * 1000
    assert gzip_bytes(blob) == gzip_bytes(blob)
    assert gzip.decompress(gzip_bytes(blob, 1)) == blob
