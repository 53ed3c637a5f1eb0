"""The ``file`` volume backend (netbootd/storage/filepool.py) on real filesystems.

Two pools: one on the test's tmp dir (the host's ext4 here: no reflink, so the
sparse-aware copy path) and one on an xfs made with reflink=1 in a loop-mounted image
the test creates (copy-on-write clones); both are torn down on every exit path.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from netbootd.storage import open_pool
from netbootd.storage.filepool import FilePool
from netbootd.storage.filesystem import data_segments, fs_type, holders
from netbootd.storage.volumes import (Exists, InUse, NoSpace, NotFound, Thresholds,
                                      Unsupported, VolumeBackend, VolumeError)

MiB, GiB = 1 << 20, 1 << 30
REPO = Path(__file__).resolve().parents[2]


def write_at(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_at(path: str, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def leftovers(pool: FilePool) -> list[str]:
    return sorted(os.listdir(os.path.join(pool.root, ".tmp")))


def golden(pool: FilePool, name: str = "golden", size: int = GiB,
           chunks=((0, 4 * MiB), (512 * MiB, 4 * MiB))) -> dict[int, bytes]:
    """A sparse volume with random data at a few offsets; returns what was written."""
    pool.create(name, size)
    wrote = {}
    for off, n in chunks:
        wrote[off] = os.urandom(n)
        write_at(pool.path(name), off, wrote[off])
    return wrote


# ---------------------------------------------------------------- pools

@pytest.fixture
def copy_pool(tmp_path):
    return FilePool(str(tmp_path / "pool"), "copy")


def _need_root_and(*tools):
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mount)")
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} not installed (scripts/setup.sh test installs xfsprogs)")


@pytest.fixture(scope="module")
def xfs_dir():
    """A directory on a fresh xfs with reflink=1 (a 2 GiB sparse image, loop-mounted)."""
    _need_root_and("mkfs.xfs", "losetup", "mount", "umount")
    work = tempfile.mkdtemp(prefix="nbt-xfs-")
    img, mnt = os.path.join(work, "xfs.img"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    dev = None
    mounted = False
    try:
        with open(img, "wb") as f:
            f.truncate(2 * GiB)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", img], check=True,
                       capture_output=True, timeout=120)
        dev = subprocess.run(["losetup", "--find", "--show", img], check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()
        subprocess.run(["mount", dev, mnt], check=True, capture_output=True, timeout=60)
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", mnt], capture_output=True, timeout=60)
        if dev:
            subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def xfs_pool(xfs_dir, request):
    root = os.path.join(xfs_dir, request.node.name[:40])
    pool = FilePool(root, "fast")
    yield pool
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- what the pool says

def test_a_pool_on_ext4_says_it_copies(copy_pool):
    if copy_pool.fstype != "ext4":
        pytest.skip(f"the tmp dir is on {copy_pool.fstype}, not ext4")
    assert not copy_pool.capabilities.cow_clones
    assert copy_pool.describe().endswith("sparse copy clones: reflink not supported on ext4 "
                                         "(ENOTSUP)") or \
        "sparse copy clones: reflink not supported on ext4" in copy_pool.describe()
    assert isinstance(copy_pool, VolumeBackend)


def test_a_pool_on_xfs_with_reflink_says_so(xfs_pool):
    assert fs_type(xfs_pool.root) == "xfs"
    assert xfs_pool.capabilities.cow_clones
    assert xfs_pool.describe().endswith("reflink clones on xfs")


def test_a_pool_that_demands_reflink_refuses_to_open_without_it(copy_pool, tmp_path):
    if copy_pool.capabilities.cow_clones:
        pytest.skip("the tmp dir's filesystem has reflink")
    with pytest.raises(Unsupported, match="reflink not supported"):
        FilePool(str(tmp_path / "other"), "x", reflink=True)


def test_open_pool_builds_a_file_pool(tmp_path):
    pool = open_pool("file", "p", root=str(tmp_path / "p"))
    assert pool.kind == "file" and pool.list() == []
    with pytest.raises(Unsupported, match="unknown volume backend 'zfs'"):
        open_pool("zfs", "p")


# ---------------------------------------------------------------- clones

def test_reflink_clones_share_blocks_and_are_copy_on_write(xfs_pool):
    wrote = golden(xfs_pool, chunks=((0, 64 * MiB), (512 * MiB, 16 * MiB)))
    before = xfs_pool.usage().used
    t = time.monotonic()
    clone = xfs_pool.clone("golden", "host1")
    took = time.monotonic() - t
    grew = xfs_pool.usage().used - before
    assert grew < 2 * MiB, f"a reflink clone used {grew} bytes"
    assert took < 2.0
    assert clone.origin == "golden" and clone.size == GiB
    frag = subprocess.run(["filefrag", "-v", xfs_pool.path("host1")], capture_output=True,
                          text=True).stdout
    assert "shared" in frag, frag
    # a write in the clone does not change the golden image
    write_at(xfs_pool.path("host1"), 0, b"written in the clone")
    assert read_at(xfs_pool.path("golden"), 0, 64 * MiB) == wrote[0]
    assert read_at(xfs_pool.path("host1"), 0, 20) == b"written in the clone"
    assert read_at(xfs_pool.path("host1"), 512 * MiB, 16 * MiB) == wrote[512 * MiB]


def test_a_copy_clone_of_a_sparse_gigabyte_keeps_its_holes(copy_pool):
    wrote = golden(copy_pool)
    seen = []
    clone = copy_pool.clone("golden", "host1", progress=lambda d, t: seen.append((d, t)))
    path = copy_pool.path("host1")
    assert clone.size == GiB and os.stat(path).st_size == GiB
    assert allocated(path) <= 8 * MiB + 256 * 1024, allocated(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sum(e - s for s, e in data_segments(fd, GiB)) <= 8 * MiB + 256 * 1024
    finally:
        os.close(fd)
    for off, data in wrote.items():
        assert read_at(path, off, len(data)) == data
    assert read_at(path, 100 * MiB, 4096) == bytes(4096)
    assert seen[0] == (0, 8 * MiB) and seen[-1] == (8 * MiB, 8 * MiB)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    write_at(path, 0, b"clone")
    assert read_at(copy_pool.path("golden"), 0, 4 * MiB) == wrote[0]


def test_a_pool_can_be_told_to_copy_even_on_xfs(xfs_dir, tmp_path):
    pool = FilePool(os.path.join(xfs_dir, "forced-copy"), "slow", reflink=False)
    try:
        assert not pool.capabilities.cow_clones
        assert "reflink turned off" in pool.describe()
        golden(pool, chunks=((0, 4 * MiB),))
        pool.clone("golden", "c")
        assert "shared" not in subprocess.run(["filefrag", "-v", pool.path("c")],
                                              capture_output=True, text=True).stdout
    finally:
        shutil.rmtree(pool.root, ignore_errors=True)


def test_snapshots_are_read_only_and_can_be_cloned(copy_pool):
    wrote = golden(copy_pool, size=64 * MiB, chunks=((0, MiB),))
    snap = copy_pool.snapshot("golden", "golden-s1")
    path = copy_pool.path("golden-s1")
    assert snap.kind == "snapshot" and snap.origin == "golden"
    assert os.stat(path).st_mode & 0o777 == 0o400
    assert "/snapshots/" in path
    with pytest.raises(VolumeError, match="snapshot"):
        copy_pool.resize("golden-s1", 128 * MiB)
    clone = copy_pool.clone("golden-s1", "host1")
    assert clone.kind == "volume" and clone.origin == "golden-s1"
    assert read_at(copy_pool.path("host1"), 0, MiB) == wrote[0]
    assert [(v.name, v.kind) for v in copy_pool.list()] == [
        ("golden", "volume"), ("golden-s1", "snapshot"), ("host1", "volume")]


# ---------------------------------------------------------------- refusals

def test_thresholds_refuse_a_clone_with_the_numbers(xfs_dir):
    pool = FilePool(os.path.join(xfs_dir, "thresh"), "small", reflink=False)
    try:
        golden(pool, size=256 * MiB, chunks=((0, 32 * MiB),))
        free = pool.usage().free
        pool.thresholds = Thresholds(min_free_bytes=free - 16 * MiB)
        with pytest.raises(NoSpace) as e:
            pool.clone("golden", "host1")
        err = e.value
        assert err.need == 32 * MiB and err.floor == free - 16 * MiB
        assert abs(err.free - free) < MiB and err.total == pool.usage().total
        for text in ("clone 'host1'", str(32 * MiB), "pool 'small'", "keeps at least",
                     str(free - 16 * MiB)):
            assert text in str(err)
        assert [v.name for v in pool.list()] == ["golden"] and leftovers(pool) == []
        pool.thresholds = Thresholds(min_free_bytes=free - 64 * MiB)
        pool.clone("golden", "host1")                 # 32 MiB fits above that floor
    finally:
        shutil.rmtree(pool.root, ignore_errors=True)


def test_running_out_of_space_mid_copy_keeps_nothing(xfs_dir):
    """The threshold check passed, then something else filled the disk: NoSpace with the
    numbers, no partial clone left behind."""
    pool = FilePool(os.path.join(xfs_dir, "enospc"), "tight", reflink=False)
    filler = os.path.join(xfs_dir, "filler")
    try:
        golden(pool, size=512 * MiB, chunks=((0, 160 * MiB), (256 * MiB, 160 * MiB)))

        def fill_the_disk(done, total):
            if done == 0:
                fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.posix_fallocate(fd, 0, pool.usage().free - 64 * MiB)
                finally:
                    os.close(fd)
        with pytest.raises(NoSpace) as e:
            pool.clone("golden", "host1", progress=fill_the_disk)
        assert e.value.need == 320 * MiB and e.value.free < 64 * MiB
        assert "ran out of space" in str(e.value) and "nothing was kept" in str(e.value)
        assert [v.name for v in pool.list()] == ["golden"] and leftovers(pool) == []
    finally:
        if os.path.exists(filler):
            os.unlink(filler)
        shutil.rmtree(pool.root, ignore_errors=True)


def test_a_percent_threshold_refuses_even_a_sparse_create(tmp_path):
    pool = FilePool(str(tmp_path / "p"), "full", Thresholds(min_free_percent=99.9))
    with pytest.raises(NoSpace) as e:
        pool.create("v", GiB)
    assert "99.9%" in str(e.value) and str(e.value.total) in str(e.value)
    assert pool.list() == []


def test_overcommit_caps_virtual_sizes(xfs_pool):
    total = xfs_pool.usage().total
    xfs_pool.thresholds = Thresholds(overcommit=1.0)
    xfs_pool.create("a", (total // 2) // 512 * 512)
    with pytest.raises(NoSpace, match="provisioned"):
        xfs_pool.create("b", (total // 2 + 64 * MiB) // 512 * 512)


@pytest.mark.parametrize("name", ["a/b", "../escape", "/abs", "..", ".", "x.img", ".tmp",
                                  "UPPER", "sp ace", "", "x" * 64])
def test_bad_names_are_refused_and_nothing_is_made(copy_pool, tmp_path, name):
    golden(copy_pool, size=16 * MiB, chunks=())
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for call in (lambda: copy_pool.create(name, GiB), lambda: copy_pool.path(name),
                 lambda: copy_pool.delete(name), lambda: copy_pool.snapshot(name, "s")):
        with pytest.raises(VolumeError) as e:
            call()
        assert e.value.field == "name" and type(e.value) is VolumeError
    with pytest.raises(VolumeError) as e:
        copy_pool.clone("golden", name)
    assert e.value.field == "new_name"
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_a_symlink_planted_in_the_pool_is_refused(copy_pool, tmp_path):
    secret = tmp_path / "outside"
    secret.write_bytes(b"not a volume")
    os.symlink(secret, os.path.join(copy_pool.root, "volumes", "evil"))
    for call in (lambda: copy_pool.path("evil"), lambda: copy_pool.delete("evil"),
                 lambda: copy_pool.clone("evil", "x")):
        with pytest.raises(VolumeError, match="not a regular file"):
            call()
    assert secret.read_bytes() == b"not a volume"
    assert [v.name for v in copy_pool.list()] == []


def test_names_are_unique_across_volumes_and_snapshots(copy_pool):
    golden(copy_pool, size=16 * MiB, chunks=())
    with pytest.raises(Exists):
        copy_pool.create("golden", 16 * MiB)
    copy_pool.snapshot("golden", "s1")
    with pytest.raises(Exists) as e:
        copy_pool.clone("golden", "s1")
    assert e.value.field == "new_name"
    with pytest.raises(Exists):
        copy_pool.create("s1", 16 * MiB)
    with pytest.raises(NotFound) as e:
        copy_pool.clone("nosuch", "x")
    assert e.value.field == "source"


def test_concurrent_creates_of_one_name_make_one_volume(copy_pool):
    results = []

    def make():
        try:
            copy_pool.create("race", 16 * MiB)
            results.append("ok")
        except Exists:
            results.append("exists")
    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["exists"] * 7 + ["ok"]
    assert leftovers(copy_pool) == []


def test_resize_grows_and_refuses_an_unforced_shrink(copy_pool):
    golden(copy_pool, size=64 * MiB, chunks=((0, MiB),))
    assert copy_pool.resize("golden", 128 * MiB).size == 128 * MiB
    with pytest.raises(VolumeError, match="force") as e:
        copy_pool.resize("golden", 32 * MiB)
    assert e.value.field == "size" and copy_pool.get("golden").size == 128 * MiB
    assert copy_pool.resize("golden", 32 * MiB, force=True).size == 32 * MiB


def test_a_size_larger_than_the_filesystem_allows_is_refused(copy_pool):
    if copy_pool.fstype != "ext4":
        pytest.skip("ext4's file size limit")
    with pytest.raises(VolumeError) as e:
        copy_pool.create("huge", 1 << 44)
    assert e.value.field == "size" and "larger than a file" in str(e.value)
    assert copy_pool.list() == [] and leftovers(copy_pool) == []


def test_a_volume_held_open_is_in_use(copy_pool):
    golden(copy_pool, size=16 * MiB, chunks=())
    path = copy_pool.path("golden")
    with open(path, "rb") as f:
        holder = subprocess.Popen(["sleep", "60"], stdin=f)
    try:
        deadline = time.monotonic() + 5
        while not holders(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(InUse) as e:
            copy_pool.delete("golden")
        assert f"sleep (pid {holder.pid})" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    copy_pool.delete("golden")
    assert copy_pool.list() == []


# ---------------------------------------------------------------- interrupted work

class Stop(Exception):
    pass


@pytest.mark.parametrize("exc", [Stop, KeyboardInterrupt])
def test_an_interrupted_clone_leaves_nothing(copy_pool, exc):
    golden(copy_pool, size=256 * MiB, chunks=((0, 24 * MiB), (128 * MiB, 24 * MiB)))

    def progress(done, total):
        if done > 8 * MiB:
            raise exc()
    with pytest.raises(exc):
        copy_pool.clone("golden", "host1", progress=progress)
    assert [v.name for v in copy_pool.list()] == ["golden"]
    assert leftovers(copy_pool) == []
    with pytest.raises(NotFound):
        copy_pool.path("host1")


def test_a_clone_killed_mid_copy_leaves_no_volume_and_the_next_open_cleans_up(copy_pool):
    golden(copy_pool, size=256 * MiB, chunks=((0, 32 * MiB),))
    child = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from netbootd.storage.filepool import FilePool
        pool = FilePool({copy_pool.root!r}, "copy", reflink=False)
        def progress(done, total):
            if done:
                print("copying", flush=True)
                time.sleep(60)
        pool.clone("golden", "host1", progress=progress)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "copying"
        assert len(leftovers(copy_pool)) == 1            # the half-made copy, unnamed
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [v.name for v in copy_pool.list()] == ["golden"]
    again = FilePool(copy_pool.root, "copy")
    assert again.cleaned == 1 and leftovers(again) == []
    assert [v.name for v in again.list()] == ["golden"]
