"""Real TFTP clients against TftpServer on 127.0.0.1 (loopback only).

The server runs in this process on the real reactor (pytest-twisted); each
client runs in a worker thread (a subprocess, or tftpy's blocking client) so
the reactor keeps serving.  A missing client binary skips its test by name.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
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


def _raw_client(port: int, name: str, options=()):
    """A blocking UDP socket that has sent an RRQ; returns (socket, first reply, its source)."""
    from netbootd.codec import tftp as t
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOPBACK, 0))
    s.settimeout(5)
    s.sendto(t.encode_rrq(name, "octet", list(options)), (LOOPBACK, port))
    data, src = s.recvfrom(2048)
    return s, data, src


@pytest_twisted.inlineCallbacks
def test_a_strangers_datagrams_never_reach_the_transfer(served):
    """The transfer socket is connected to its client: an ACK from another
    port is dropped by the kernel, not answered and not counted, and the
    real client's transfer goes on."""
    from netbootd.codec import tftp as t
    server, root, port, events = served
    data = os.urandom(1200)
    (root / "f.bin").write_bytes(data)

    def scenario():
        c, first, tid = _raw_client(port, "f.bin")
        assert t.decode(first) == t.Data(1, data[:512])
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind((LOOPBACK, 0))
        stranger.settimeout(0.5)
        stranger.sendto(t.encode_ack(1), tid)          # would move the transfer on
        with pytest.raises(socket.timeout):
            stranger.recvfrom(2048)
        got = bytearray(t.decode(first).data)
        c.sendto(t.encode_ack(1), tid)
        while True:
            pkt = t.decode(c.recvfrom(2048)[0])
            # After the stranger's ACK 1, DATA 2 must come only now, once.
            assert pkt.block == len(got) // 512 + 1
            got += pkt.data
            c.sendto(t.encode_ack(pkt.block), tid)
            if len(pkt.data) < 512:
                break
        stranger.close()
        c.close()
        return bytes(got)

    got = yield threads.deferToThread(scenario)
    assert got == data
    ev = yield transfer_ended(events)
    assert ev["outcome"] == "finished" and ev["bytes"] == len(data)


@pytest_twisted.inlineCallbacks
def test_a_client_that_went_away_ends_its_transfer_at_the_first_retransmission(served):
    """Its port is closed: our retransmission draws an ICMP port unreachable,
    which ends the transfer after one timeout instead of after all retries.
    (It ACKed the OACK first: one that never ACKs is test_tftp_flood.py's.)"""
    from netbootd.codec import tftp as t
    server, root, port, events = served
    (root / "f.bin").write_bytes(os.urandom(5000))

    def scenario():
        c, first, tid = _raw_client(port, "f.bin", [("timeout", "1")])
        c.sendto(t.encode_ack(0), tid)                 # confirmed
        assert t.decode(c.recvfrom(2048)[0]).block == 1
        c.close()                                      # then gone, port closed

    yield threads.deferToThread(scenario)
    ev = yield transfer_ended(events, timeout=4.0)
    assert (ev["outcome"], ev["error"]) == ("failed", "client port unreachable")
    assert ev["duration"] < 3.0 and server.counters["rx.unreachable"] == 1


# -- the transfer thread (net/tftp_loop.py TransferLoop) ----------------------------------------------
@pytest_twisted.inlineCallbacks
def test_transfers_go_on_while_the_reactor_is_busy(served):
    """Transfers run on their own thread: while the reactor is blocked
    (a long callback, a GC pass, a burst of DHCP) blocks keep flowing; the
    end of the transfer is reported on the reactor thread afterwards."""
    import threading
    import time

    from twisted.internet import reactor

    from netbootd.codec import tftp as t
    server, root, port, events = served
    data = os.urandom(512 * 1500)
    (root / "f.bin").write_bytes(data)
    busy: list[float] = []
    blocked: list[bool] = []                            # once, even if DATA 10 comes twice
    threads_seen: list[str] = []
    server.on_event = lambda ev: (threads_seen.append(threading.current_thread().name),
                                  events.append(ev))

    def block_the_reactor():
        busy.append(time.monotonic())
        time.sleep(0.6)
        busy.append(time.monotonic())

    def scenario():
        c, first, tid = _raw_client(port, "f.bin")
        got, arrivals = bytearray(t.decode(first).data), []
        c.sendto(t.encode_ack(1), tid)
        for _ in range(2000):                            # bounded; 1,501 blocks
            pkt = t.decode(c.recvfrom(2048)[0])
            arrivals.append(time.monotonic())
            if pkt.block == len(got) // 512 + 1:
                got += pkt.data
            if pkt.block == 10 and not blocked:
                blocked.append(True)
                reactor.callFromThread(block_the_reactor)
            time.sleep(0.0005)                          # a slow client: the transfer lasts > 0.6 s
            c.sendto(t.encode_ack(pkt.block), tid)
            if len(pkt.data) < 512:
                break
        c.close()
        return bytes(got), arrivals

    got, arrivals = yield threads.deferToThread(scenario)
    assert got == data
    assert len(busy) == 2, "the reactor was never blocked"
    during = [a for a in arrivals if busy[0] < a < busy[1]]
    assert len(during) >= 100, f"only {len(during)} blocks while the reactor was busy"
    ev = yield transfer_ended(events)
    assert ev["outcome"] == "finished" and threads_seen == [threading.main_thread().name]
    assert server.loop.thread.name == "tftp-transfers"


@pytest_twisted.inlineCallbacks
def test_the_transfer_thread_retransmits_counts_and_drops_on_its_own(served):
    """Retransmission on timeout, and a malformed datagram from the client
    dropped and counted, both handled on the transfer thread; the counters
    the thread keeps are in server.counters."""
    import time

    from netbootd.codec import tftp as t
    server, root, port, events = served
    data = os.urandom(700)
    (root / "f.bin").write_bytes(data)

    def scenario():
        c, first, tid = _raw_client(port, "f.bin", [("timeout", "1")])
        assert t.decode(first) == t.OAck((("timeout", "1"),))
        c.sendto(t.encode_ack(0), tid)
        d1, _ = c.recvfrom(2048)
        t0 = time.monotonic()
        again, _ = c.recvfrom(2048)                     # no ACK: the same DATA 1 again
        waited = time.monotonic() - t0
        c.sendto(b"\x00\x09junk", tid)                   # opcode 9: dropped, counted
        c.sendto(t.encode_ack(1), tid)
        d2, _ = c.recvfrom(2048)
        c.sendto(t.encode_ack(2), tid)
        c.close()
        return t.decode(d1), t.decode(again), waited, t.decode(d2)

    d1, again, waited, d2 = yield threads.deferToThread(scenario)
    assert d1 == again == t.Data(1, data[:512]) and d2 == t.Data(2, data[512:])
    assert 0.8 < waited < 2.5
    ev = yield transfer_ended(events)
    assert ev["outcome"] == "finished" and ev["retransmits"] == 1
    c = server.counters
    assert (c["drop.bad_opcode"], c["tx.timeout"], c["tx.retransmit"]) == (1, 1, 1)


@pytest_twisted.inlineCallbacks
def test_stop_ends_transfers_in_flight_and_reports_them_before_returning(tmp_path):
    from twisted.internet import reactor

    from netbootd.codec import tftp as t
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.bin").write_bytes(os.urandom(5000))
    events: list[dict] = []
    server = TftpServer(reactor, [str(root)], on_event=events.append)
    port = server.listen(0, ip=LOOPBACK).port
    clients = []

    def start(n):
        for _ in range(n):
            c, first, tid = _raw_client(port, "f.bin")
            assert t.decode(first).block == 1
            clients.append(c)

    try:
        yield threads.deferToThread(start, 3)
        socks = [x.sock for x in server.transfers.values()]
        assert len(socks) == 3
        server.stop()
        assert [e["outcome"] for e in events] == ["stopped"] * 3
        assert server.transfers == {} and all(s.fileno() == -1 for s in socks)
        assert not server.loop.thread.is_alive()
        server.stop()                                    # twice: nothing more
        assert len(events) == 3
    finally:
        server.stop()
        for c in clients:
            c.close()


@pytest_twisted.inlineCallbacks
def test_the_status_page_lists_a_transfer_under_way_with_its_wall_clock_start(served):
    """The TFTP service's rows for Core.transfers() (the status page,
    /api/v1/transfers) show a transfer in flight; its start is wall-clock time, as the page's "ago"
    needs (the transfer thread's own clock is monotonic)."""
    import time

    from netbootd.net.services.tftp import transfer_rows
    server, root, port, events = served
    (root / "f.bin").write_bytes(os.urandom(5000))
    c, first, tid = yield threads.deferToThread(_raw_client, port, "f.bin")
    try:
        (row,) = transfer_rows(server)
        assert (row["proto"], row["file"], row["client"], row["size"]) == (
            "tftp", "f.bin", LOOPBACK, 5000)
        assert abs(row["started"] - time.time()) < 5
    finally:
        c.close()
