"""policy/capture.py: the chunk plan, where a resumed capture may write, the digest
the agent and the server both compute, progress steps and the verdict."""
from __future__ import annotations

import hashlib
import subprocess

import pytest

from netbootd.policy import capture as cp

MiB = cp.MiB


def test_plan_covers_the_disk_once_in_order_with_a_short_last_chunk():
    total = 5 * MiB + 512
    p = cp.plan(total, 2 * MiB)
    assert p == [(0, 2 * MiB), (2 * MiB, 2 * MiB), (4 * MiB, MiB + 512)]
    assert sum(n for _, n in p) == total
    assert cp.plan(4 * MiB, 2 * MiB) == [(0, 2 * MiB), (2 * MiB, 2 * MiB)]


@pytest.mark.parametrize("offset,length,status,words", [
    (MiB, MiB, 409, "not the committed offset 0"),        # ahead: resume from committed
    (-1, MiB, 400, "non-negative"),
    ("0", MiB, 400, "non-negative"),
    (3 * MiB, 512, 400, "at or past the end"),
    (512, MiB, 400, "not a multiple of the chunk size"),
    (0, MiB - 1, 400, "the chunk at 0 is 1048576 bytes"),
])
def test_check_offset_refuses_with_the_reason(offset, length, status, words):
    with pytest.raises(cp.CaptureError) as e:
        cp.check_offset(3 * MiB, MiB, 0, offset, length)
    assert e.value.status == status and words in e.value.reason


def test_check_offset_takes_the_committed_chunk_and_a_short_last_one():
    assert cp.check_offset(3 * MiB, MiB, MiB, MiB, MiB) == MiB
    assert cp.check_offset(2 * MiB + 512, MiB, 2 * MiB, 2 * MiB, 512) == 512
    with pytest.raises(cp.CaptureError):        # behind the committed offset: 409 too
        cp.check_offset(3 * MiB, MiB, 2 * MiB, MiB, MiB)


@pytest.mark.parametrize("disk,name", [("/dev/vda", "vda"), ("nvme0n1", "nvme0n1"),
                                       ("sda", "sda")])
def test_disk_names(disk, name):
    assert cp.disk_name(disk) == name


@pytest.mark.parametrize("disk", ["/dev/../sda", "vda/x", "", None, "a" * 33, "/etc/vda",
                                  "vda;reboot"])
def test_bad_disk_names(disk):
    with pytest.raises(cp.CaptureError, match="disk:"):
        cp.disk_name(disk)


@pytest.mark.parametrize("chunk", [0, MiB - 1, MiB + 1, 65 * MiB, "16", 1.5 * MiB, True])
def test_chunk_sizes_are_whole_mib_within_bounds(chunk):
    with pytest.raises(cp.CaptureError, match="chunk:"):
        cp.check_chunk_size(chunk)


@pytest.mark.parametrize("total", [0, -512, 1000, "512", None, True])
def test_totals_are_whole_sectors(total):
    with pytest.raises(cp.CaptureError, match="bytes:"):
        cp.check_total(total)


def test_list_digest_is_sha256sum_of_the_agents_list_file(tmp_path):
    chunks = [b"a" * 100, b"", b"\0" * 512]
    hexes = [hashlib.sha256(c).hexdigest() for c in chunks]
    f = tmp_path / "hashes"
    f.write_text("".join(h + "\n" for h in hexes))
    out = subprocess.run(["sha256sum", str(f)], capture_output=True, text=True).stdout
    assert cp.list_digest(hexes) == out.split()[0]


def test_progress_steps_are_reported_once_each():
    total = 100 * MiB
    assert cp.steps_crossed(0, 9 * MiB, total) == []
    assert cp.steps_crossed(9 * MiB, 10 * MiB, total) == [10]
    assert cp.steps_crossed(10 * MiB, 35 * MiB, total) == [20, 30]
    assert cp.steps_crossed(95 * MiB, total, total) == []            # 100 is "done"
    seen = []
    for off in range(0, total, 3 * MiB):
        seen += cp.steps_crossed(off, min(off + 3 * MiB, total), total)
    assert seen == list(range(10, 100, 10))


def test_check_sha():
    assert cp.check_sha("AB" * 32) == "ab" * 32
    for bad in ("ab" * 31, "zz" * 32, None, ""):
        with pytest.raises(cp.CaptureError, match="sha256"):
            cp.check_sha(bad)


def test_verdict():
    d = cp.list_digest(["0" * 64])
    assert cp.verdict(10, 10, d, d, 10) is None
    assert "only 5 of 10" in cp.verdict(10, 5, d, d, 10)
    assert "read 9 bytes" in cp.verdict(10, 10, d, d, 9)
    assert "no sha256" in cp.verdict(10, 10, d, None, 10)
    assert "mismatch" in cp.verdict(10, 10, d, "f" * 64, 10)
    assert cp.rate_mb_s(10_000_000, 2.0) == 5.0 and cp.rate_mb_s(1, 0) is None


def test_a_streams_length_is_the_rest_of_the_disk_and_a_line_per_chunk():
    total = 5 * MiB + 512
    assert cp.stream_length(total, 2 * MiB, 0) == total + 3 * cp.FRAME
    assert cp.stream_length(total, 2 * MiB, 4 * MiB) == MiB + 512 + cp.FRAME
    assert cp.stream_length(4 * MiB, 2 * MiB, 2 * MiB) == 2 * MiB + cp.FRAME
    # the same as framing every chunk of the plan from there
    assert cp.stream_length(total, 2 * MiB, 2 * MiB) == sum(
        n + cp.FRAME for off, n in cp.plan(total, 2 * MiB) if off >= 2 * MiB)


@pytest.mark.parametrize("offset,length,status,words", [
    (0, 5 * MiB + 512 + 3 * 65 + 1, 400, "Content-Length: 5243588 bytes"),
    (0, 5 * MiB + 512, 400, "the framed chunks from 0 are 5243587 bytes"),
    (2 * MiB, 3 * MiB + 512 + 130, 409, "not the committed offset 0"),
    (MiB, 1, 400, "not a multiple of the chunk size"),
    (6 * MiB, 1, 400, "at or past the end"),
])
def test_a_stream_starts_only_at_the_committed_offset_with_its_exact_length(
        offset, length, status, words):
    total = 5 * MiB + 512
    with pytest.raises(cp.CaptureError) as e:
        cp.check_stream(total, 2 * MiB, 0, offset, length)
    assert e.value.status == status and words in e.value.reason
    assert cp.check_stream(total, 2 * MiB, 0, 0, total + 3 * 65) == total + 3 * 65


def test_a_frame_is_a_sha256_line():
    sha = hashlib.sha256(b"x").hexdigest()
    assert cp.frame_sha(sha.encode() + b"\n", 0) == sha
    for bad in (sha.upper().encode() + b"\n", sha.encode() + b" ", sha.encode()[:-1] + b"\n\n",
                b"g" * 64 + b"\n", sha.encode()):
        with pytest.raises(cp.CaptureError) as e:
            cp.frame_sha(bad, 4 * MiB)
        assert "frame at 4194304: not a sha256 line" in e.value.reason
