"""Real TFTP clients against TftpServer on 127.0.0.1 (loopback only).

The server runs in this process on the real reactor (pytest-twisted); each
client runs in a worker thread (a subprocess, or tftpy's blocking client) so
the reactor keeps serving.  A missing client binary skips its test by name.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet import defer, task, threads

from netbootd.net.tftp import TftpServer

LOOPBACK = "127.0.0.1"


@pytest.fixture
def served(tmp_path):
    from twisted.internet import reactor
    root = tmp_path / "tftproot"
    root.mkdir()
    events: list[dict] = []
    server = TftpServer(reactor, [str(root)], on_event=events.append)
    port = server.listen(0, ip=LOOPBACK).port
    yield server, root, port, events
    server.stop()


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package: {binary})")
    return path


def run(argv: list[str], timeout: float):
    return threads.deferToThread(subprocess.run, argv, capture_output=True, timeout=timeout)


@defer.inlineCallbacks
def transfer_ended(events: list, n: int = 1, timeout: float = 5.0):
    """Wait (bounded) until n transfers have ended: a client may exit right
    after sending its final ACK, before the reactor has read that ACK."""
    from twisted.internet import reactor
    for _ in range(int(timeout / 0.01)):
        if len(events) >= n:
            return events[n - 1]
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"{n} transfer(s) did not end within {timeout}s: {events}")


def sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest_twisted.inlineCallbacks
def test_curl_downloads_byte_exact_at_blksize_1468(served, tmp_path):
    server, root, port, events = served
    data = os.urandom(3 * 1024 * 1024 + 123)
    (root / "ipxe.efi").write_bytes(data)
    out = tmp_path / "curl.out"
    r = yield run([need("curl"), "-sS", "--tftp-blksize", "1468", "-o", str(out),
                   f"tftp://{LOOPBACK}:{port}/ipxe.efi"], 30)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    ev = yield transfer_ended(events)
    assert ev["outcome"] == "finished" and ev["blksize"] == 1468


@pytest_twisted.inlineCallbacks
def test_curl_sees_file_not_found_and_a_refused_upload(served, tmp_path):
    server, root, port, events = served
    curl = need("curl")
    r = yield run([curl, "-sS", "-o", str(tmp_path / "x"),
                   f"tftp://{LOOPBACK}:{port}/missing.bin"], 20)
    assert r.returncode == 68, r.stderr                 # CURLE_TFTP_NOTFOUND
    up = tmp_path / "up.bin"
    up.write_bytes(b"payload")
    r = yield run([curl, "-sS", "-T", str(up), f"tftp://{LOOPBACK}:{port}/up.bin"], 20)
    assert r.returncode == 69, r.stderr                 # CURLE_TFTP_PERM: error 2
    assert not (root / "up.bin").exists()


@pytest_twisted.inlineCallbacks
def test_tftpy_client_negotiates_blksize_and_receives_tsize(served, tmp_path):
    tftpy = pytest.importorskip("tftpy")
    server, root, port, events = served
    data = os.urandom(700_001)
    (root / "initrd.img").write_bytes(data)
    out = tmp_path / "tftpy.out"
    client = tftpy.TftpClient(LOOPBACK, port, options={"blksize": 1024, "tsize": 0})
    yield threads.deferToThread(client.download, "initrd.img", str(out), timeout=5, retries=3)
    assert out.read_bytes() == data
    assert str(client.context.options["tsize"]) == "700001"
    assert int(client.context.options["blksize"]) == 1024
    ev = yield transfer_ended(events)
    assert ev["blksize"] == 1024 and ev["bytes"] == len(data)


@pytest_twisted.inlineCallbacks
def test_atftp_client_with_windowsize_16(served, tmp_path):
    server, root, port, events = served
    data = os.urandom(5 * 1024 * 1024 + 7)
    (root / "vmlinuz").write_bytes(data)
    out = tmp_path / "atftp.out"
    r = yield run([need("atftp"), "--option", "windowsize 16", "--option", "blksize 1468",
                   "-g", "-r", "vmlinuz", "-l", str(out), LOOPBACK, str(port)], 30)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    ev = yield transfer_ended(events)
    assert (ev["outcome"], ev["windowsize"], ev["blksize"]) == ("finished", 16, 1468)


@pytest_twisted.inlineCallbacks
def test_a_40_mib_file_at_blksize_512_wraps_the_block_number_and_arrives_intact(
        served, tmp_path):
    """41943040 bytes / 512 = 81920 full blocks (past 65535) plus an empty final block;
    larger than the cache limit, so it is read from the file at offsets."""
    server, root, port, events = served
    src = root / "big.img"
    with open(src, "wb") as f:
        for _ in range(40):
            f.write(os.urandom(1 << 20))
    out = tmp_path / "big.out"
    r = yield run([need("curl"), "-sS", "--tftp-blksize", "512", "-o", str(out),
                   f"tftp://{LOOPBACK}:{port}/big.img"], 45)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == 40 << 20 and sha(out) == sha(src)
    ev = yield transfer_ended(events)
    assert (ev["outcome"], ev["bytes"], ev["blksize"]) == ("finished", 40 << 20, 512)
    assert server.counters["file.direct"] == 1
