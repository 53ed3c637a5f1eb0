"""TftpServer on fake sockets and a task.Clock.

Twisted's MemoryReactor has no UDP, so (as in test_dhcp_protocol.py) a small
fake of our own stands in: the socket factory hands out FakeSockets that
record what would have been sent and where; tests deliver requests by
calling the listener's datagramReceived, and datagrams to a transfer by
queueing them on its socket and calling readable() as the transfer loop
does (so the lock-step fast path is what runs); the loop's code runs on
this thread (TransferLoop threaded=False) with the fake clock.
"""
from __future__ import annotations

import os

import pytest


from netbootd.codec import tftp as t
from netbootd.net.tftp import TftpServer
from netbootd.net.tftp_loop import TransferLoop
from tests.fakes import FakeEpoll, FakeReactor, FakeUdpSocket

CLIENT = ("10.77.0.50", 2070)
SERVER_IP = "10.77.0.1"


FakeSocket = FakeUdpSocket


class Harness:
    def __init__(self, tmp_path, **kw):
        self.reactor = FakeReactor()
        self.reactor.advance(1_700_000_000)
        self.sockets: list[FakeSocket] = []
        self.events: list[dict] = []
        self.root = tmp_path / "root"
        self.root.mkdir(exist_ok=True)
        kw.setdefault("on_event", self.events.append)
        self.epoll = FakeEpoll()
        # The transfer thread's code, run on this thread with the fake clock.
        loop = lambda on_ended: TransferLoop(self.reactor, on_ended, now=self.reactor.seconds,  # noqa: E731
                                             threaded=False, epoll=lambda: self.epoll)
        self.server = TftpServer(self.reactor, [str(self.root)], kw.pop("generated", None),
                                 socket_factory=self.socket, loop=loop, **kw)
        self.loop = self.server.loop
        self.listener = self.server.listen(69, ip=SERVER_IP)
        self.lsock = self.sockets[0]

    def advance(self, seconds):
        """Time passes: the loop's due wake-ups run (its thread would)."""
        self.reactor.advance(seconds)
        self.loop.fire_due()

    def socket(self, interface, port, ip):
        s = FakeSocket(ip, port or 40000 + len(self.sockets))
        self.sockets.append(s)
        return s

    def file(self, name, data: bytes):
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def rrq(self, name, options=(), addr=CLIENT, mode="octet"):
        self.listener.datagramReceived(t.encode_rrq(name, mode, options), addr)

    def transfer(self, addr=CLIENT):
        (x,) = [x for x in self.server.transfers.values() if x.addr == addr]
        return x

    def to_transfer(self, xfer, data):
        """The client sends ``data``; the loop finds the socket readable."""
        xfer.sock.inbox.append(data)
        xfer.readable(self.reactor.seconds())


def decoded(sock):
    return [(t.decode(d), dest) for d, dest in sock.sent]


def download(h, xfer, limit=10_000):
    """ACK each next DATA block until the transfer ends; returns the bytes."""
    sock = xfer.sock
    out, seen, expect = bytearray(), 0, 1
    for _ in range(limit):
        new = decoded(sock)[seen:]
        seen += len(new)
        for pkt, dest in new:
            if dest != xfer.addr:
                assert isinstance(pkt, t.Error), "only ERRORs go to anyone but the client"
                continue
            if isinstance(pkt, t.OAck):
                h.to_transfer(xfer, t.encode_ack(0))
            elif isinstance(pkt, t.Data) and pkt.block == expect & 0xFFFF:
                out += pkt.data                     # a lock-step client: in order only
                expect += 1
                h.to_transfer(xfer, t.encode_ack(pkt.block))
        if xfer.closed:
            return bytes(out)
    raise AssertionError("transfer did not end")


# -- basics ---------------------------------------------------------------------------
def test_each_transfer_gets_its_own_socket_and_the_listener_sends_no_data(tmp_path):
    h = Harness(tmp_path)
    h.file("a.bin", b"A" * 700)
    h.rrq("a.bin")
    h.rrq("a.bin", addr=("10.77.0.51", 2070))
    socks = [x.sock for x in h.server.transfers.values()]
    assert len(socks) == 2 and socks[0] is not socks[1]
    assert all(s.addr[0] == SERVER_IP and s.addr[1] != 69 for s in socks)
    assert h.lsock.sent == []
    assert decoded(socks[0]) == [(t.Data(1, b"A" * 512), CLIENT)]


def test_a_complete_transfer_reports_an_event_and_releases_its_socket(tmp_path):
    h = Harness(tmp_path)
    data = os.urandom(5000)
    h.file("k.bin", data)
    h.rrq("k.bin", [("blksize", "1468"), ("tsize", "0"), ("windowsize", "4")])
    xfer = h.transfer()
    assert decoded(xfer.sock)[0][0] == t.OAck(
        (("blksize", "1468"), ("tsize", "5000"), ("windowsize", "4")))
    assert download(h, xfer) == data
    assert xfer.sock.closed and h.server.transfers == {}
    (ev,) = h.events
    assert ev["outcome"] == "finished" and ev["bytes"] == 5000 and ev["error"] is None
    assert (ev["client"], ev["port"], ev["file"]) == (CLIENT[0], CLIENT[1], "k.bin")
    assert (ev["blksize"], ev["windowsize"]) == (1468, 4)
    assert h.server.counters["transfer.finished"] == 1


def test_a_file_not_found_is_answered_with_error_1_from_the_listener(tmp_path):
    h = Harness(tmp_path)
    h.rrq("missing.efi")
    assert decoded(h.lsock) == [(t.Error(t.ERR_NOT_FOUND, "file not found"), CLIENT)]
    assert h.events[0]["outcome"] == "refused" and len(h.sockets) == 1


def test_a_flood_of_missing_names_is_answered_but_stores_few_events(tmp_path):
    """1,000 RRQs for missing files from 100 forged sources in one second: each
    gets its ERROR (no amplification: one datagram per request), but only a
    bounded number become stored events (per source, and in total); the rest
    are counted.  A source quiet for a while gets its events again."""
    h = Harness(tmp_path)
    for i in range(1000):
        h.rrq(f"pxelinux.cfg/{i:04x}", addr=(f"10.9.{i % 100}.1", 2000 + i))
    assert len(decoded(h.lsock)) == 1000
    assert len(h.events) <= 200 and h.events[0]["outcome"] == "refused"
    assert h.server.counters["event.refused_suppressed"] == 1000 - len(h.events)
    h.advance(30)
    h.rrq("missing.efi")
    assert h.events[-1]["file"] == "missing.efi"


def test_a_traversal_attempt_is_an_access_violation(tmp_path):
    h = Harness(tmp_path)
    h.rrq("../../etc/passwd")
    assert decoded(h.lsock)[0][0].code == t.ERR_ACCESS
    assert h.server.counters["refused.dotdot"] == 1


def test_a_symlink_out_of_the_root_gets_error_2_and_no_data(tmp_path):
    h = Harness(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cret")
    (h.root / "link").symlink_to(secret)
    h.rrq("link")
    assert [p.code for p, _ in decoded(h.lsock)] == [t.ERR_ACCESS]
    assert h.server.transfers == {} and h.server.cache.used == 0


# -- TIDs -----------------------------------------------------------------------------------
def test_the_transfer_socket_is_connected_to_the_client_and_watched_until_the_end(tmp_path):
    # Strangers are then filtered by the kernel: tests/interop/test_tftp_clients.py
    h = Harness(tmp_path)
    h.file("f", b"x" * 700)
    h.rrq("f")
    xfer = h.transfer()
    fd = xfer.sock.fileno()
    assert xfer.sock.dest == CLIENT and h.loop.handlers == {fd: xfer} and fd in h.epoll.watched
    download(h, xfer)
    assert h.loop.handlers == {} and h.epoll.watched == set() and xfer.sock.closed


# -- refusals and caps ------------------------------------------------------------------------
def test_a_write_request_is_refused_with_access_violation(tmp_path):
    h = Harness(tmp_path)
    h.listener.datagramReceived(t.encode_wrq("upload.bin"), CLIENT)
    (pkt, dest), = decoded(h.lsock)
    assert pkt.code == t.ERR_ACCESS and dest == CLIENT
    assert h.server.transfers == {} and not (h.root / "upload.bin").exists()


def confirmed(h, addr):
    """The client at ``addr`` ACKs DATA 1: its transfer counts under the caps."""
    h.to_transfer(h.transfer(addr), t.encode_ack(1))


def test_requests_over_the_per_client_cap_are_dropped_unanswered(tmp_path):
    """Silence, not ERROR: firmware ends its boot on an ERROR but resends
    an RRQ it heard nothing for (net/tftp.py)."""
    h = Harness(tmp_path, per_client=2)
    h.file("f", b"x" * 2000)
    for port in (3001, 3002, 3003):
        h.rrq("f", addr=(CLIENT[0], port))
        if port != 3003:
            confirmed(h, (CLIENT[0], port))
    assert len(h.server.transfers) == 2
    assert h.lsock.sent == [] and h.server.counters["drop.cap_client"] == 1
    assert h.events == []
    h.rrq("f", addr=("10.77.0.60", 3001))                      # another client is served
    assert len(h.server.transfers) == 3


def test_over_the_total_cap_an_rrq_is_dropped_and_its_resend_served_once_a_slot_frees(tmp_path):
    h = Harness(tmp_path, total=2)
    h.file("f", b"x" * 2000)
    for i in range(3):
        h.rrq("f", addr=(f"10.77.0.{60 + i}", 3000))
        if i < 2:
            confirmed(h, (f"10.77.0.{60 + i}", 3000))
    assert len(h.server.transfers) == 2
    assert h.lsock.sent == [] and h.server.counters["drop.cap_total"] == 1
    first = h.transfer(("10.77.0.60", 3000))
    h.to_transfer(first, t.encode_ack(2))                       # 2000 bytes: 4 blocks
    h.to_transfer(first, t.encode_ack(3))
    h.to_transfer(first, t.encode_ack(4))
    assert first.closed and len(h.server.transfers) == 1
    h.rrq("f", addr=("10.77.0.62", 3000))                      # the firmware's resend
    late = h.transfer(("10.77.0.62", 3000))
    assert decoded(late.sock)[0][0] == t.Data(1, b"x" * 512)
    assert h.lsock.sent == []


def test_the_caps_come_from_the_config(tmp_path):
    from netbootd.config import BootConfig
    b = BootConfig()
    assert (b.tftp_max_transfers, b.tftp_max_unconfirmed) == (1024, 512)


def test_a_finished_transfer_frees_its_slot_under_the_cap(tmp_path):
    h = Harness(tmp_path, per_client=1)
    h.file("f", b"y" * 100)
    h.rrq("f", addr=(CLIENT[0], 3001))
    download(h, h.transfer((CLIENT[0], 3001)))
    h.rrq("f", addr=(CLIENT[0], 3002))
    assert len(h.server.transfers) == 1 and h.lsock.sent == []


def test_a_repeated_rrq_before_any_ack_does_not_start_a_second_transfer(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"z" * 100)
    h.rrq("f")
    h.rrq("f")
    assert len(h.server.transfers) == 1 and h.server.counters["rx.rrq_duplicate"] == 1


# -- malformed input -----------------------------------------------------------------------------
def test_malformed_datagrams_are_counted_by_reason_and_the_next_request_is_served(tmp_path):
    h = Harness(tmp_path)
    h.file("ok", b"fine")
    for bad, addr in ((b"", CLIENT), (b"\x00\x01noterm", CLIENT),
                      (b"\x00\x01a\x01\0octet\0", CLIENT), (b"\x00\x09zz", CLIENT),
                      (t.encode_ack(1), CLIENT)):
        h.listener.datagramReceived(bad, addr)
    c = h.server.counters
    assert (c["drop.short"], c["drop.unterminated"], c["drop.bad_filename"],
            c["drop.bad_opcode"], c["drop.not_a_request"]) == (1, 1, 1, 1, 1)
    assert h.lsock.sent == [] and h.server.transfers == {}
    h.rrq("ok")
    assert decoded(h.transfer().sock) == [(t.Data(1, b"fine"), CLIENT)]


def test_malformed_datagrams_on_a_transfer_socket_are_dropped_without_disturbing_it(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"q" * 600)
    h.rrq("f")
    xfer = h.transfer()
    h.to_transfer(xfer, b"\x00")
    h.to_transfer(xfer, t.encode_data(1, b"huh"))
    assert h.server.counters["drop.short"] == 1
    assert h.server.counters["drop.unexpected_opcode"] == 1
    assert download(h, xfer) == b"q" * 600


def test_an_internal_error_never_escapes_datagram_received(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"q" * 600)
    h.rrq("f")
    xfer = h.transfer()

    def boom(*a):
        raise KeyError("bug")
    xfer.session.ack = xfer.session.ack_next = boom
    h.to_transfer(xfer, t.encode_ack(1))
    assert h.server.counters["drop.internal_error"] == 1
    assert xfer.closed and h.events[-1]["outcome"] == "failed"
    h.server._open = boom
    h.rrq("f", addr=("10.77.0.70", 1))
    assert h.server.counters["drop.internal_error"] == 2


def test_an_on_event_callback_that_raises_is_counted_not_propagated(tmp_path):
    def bad(ev):
        raise RuntimeError("timeline down")
    h = Harness(tmp_path, on_event=bad)
    h.rrq("nothing")
    assert h.server.counters["event.error"] == 1


# -- timers -----------------------------------------------------------------------------------
def test_the_clock_drives_retransmission_and_the_retry_limit(tmp_path):
    h = Harness(tmp_path, timeout=2.0, retries=3)
    h.file("f", b"t" * 1100)                        # block 2 is not the final one
    h.rrq("f")
    xfer = h.transfer()
    sock = xfer.sock
    h.to_transfer(xfer, t.encode_ack(1))            # confirmed: the normal ladder
    h.advance(1.9)
    assert len(sock.sent) == 2
    h.advance(0.1)
    assert [p for p, _ in decoded(sock)][1:] == [t.Data(2, b"t" * 512)] * 2
    h.advance(2.0)
    h.advance(2.0)
    assert len(sock.sent) == 5 and not xfer.closed
    h.advance(2.0)
    assert xfer.closed and sock.closed
    ev = h.events[-1]
    assert ev["outcome"] == "failed" and ev["error"] == "timeout" and ev["retransmits"] == 3
    assert h.loop.heap == []


def test_acks_move_the_deadline_without_extra_timers(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"m" * 5000)
    h.rrq("f")
    xfer = h.transfer()
    for blk in range(1, 6):
        h.advance(0.5)
        h.to_transfer(xfer, t.encode_ack(blk))
    assert len(h.loop.heap) == 1
    h.advance(0.99)
    assert h.server.counters["tx.timeout"] == 0, "timed out although ACKs kept coming"


def test_a_client_error_after_the_oack_is_reported_as_aborted(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"x" * 100)
    h.rrq("f", [("tsize", "0")])
    xfer = h.transfer()
    h.to_transfer(xfer, t.encode_error(t.ERR_OPTION_REFUSED, "just the size"))
    assert xfer.closed and h.events[-1]["outcome"] == "aborted"
    assert len(xfer.sock.sent) == 1                 # nothing answers an ERROR


def test_stop_closes_the_listener_and_ends_transfers(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"x" * 5000)
    h.rrq("f")
    h.server.stop()
    assert h.lsock.closed and all(s.closed for s in h.sockets)
    assert h.events[-1]["outcome"] == "stopped" and h.epoll.closed


# -- files ------------------------------------------------------------------------------------
def test_small_files_are_cached_and_a_changed_file_is_read_again(tmp_path):
    h = Harness(tmp_path)
    p = h.file("s.bin", b"one")
    for _ in range(2):
        h.rrq("s.bin", addr=("10.77.0.80", 1000 + _))
        assert download(h, h.transfer(("10.77.0.80", 1000 + _))) == b"one"
    assert (h.server.counters["cache.miss"], h.server.counters["cache.hit"]) == (1, 1)
    p.write_bytes(b"two!")
    h.rrq("s.bin", addr=("10.77.0.81", 1000))
    assert download(h, h.transfer(("10.77.0.81", 1000))) == b"two!"
    assert h.server.counters["cache.miss"] == 2 and len(h.server.cache.entries) == 1


def test_large_files_are_read_from_the_file_at_offsets(tmp_path):
    h = Harness(tmp_path, cache_limit=1000)
    data = os.urandom(3000)
    h.file("big.bin", data)
    h.rrq("big.bin")
    assert download(h, h.transfer()) == data
    assert h.server.counters["file.direct"] == 1 and h.server.cache.used == 0


def test_generated_files_are_served_from_the_dict_given_by_reference(tmp_path):
    gen = {"autoexec.ipxe": b"#!ipxe\nchain x\n"}
    h = Harness(tmp_path, generated=gen)
    h.rrq("/autoexec.ipxe")
    assert download(h, h.transfer()) == b"#!ipxe\nchain x\n"
    gen["autoexec.ipxe"] = b"#!ipxe\nexit\n"
    h.rrq("autoexec.ipxe", addr=("10.77.0.90", 5))
    assert download(h, h.transfer(("10.77.0.90", 5))) == b"#!ipxe\nexit\n"


def test_mail_mode_is_refused_as_illegal_operation(tmp_path):
    h = Harness(tmp_path)
    h.file("f", b"x")
    h.rrq("f", mode="mail")
    assert decoded(h.lsock)[0][0].code == t.ERR_ILLEGAL_OP


@pytest.mark.parametrize("cap", [512, 1468])
def test_the_blksize_cap_applies_to_what_is_sent(tmp_path, cap):
    h = Harness(tmp_path, max_blksize=cap)
    h.file("f", b"b" * 4000)
    h.rrq("f", [("blksize", "8192")])
    xfer = h.transfer()
    h.to_transfer(xfer, t.encode_ack(0))
    pkts = decoded(xfer.sock)
    assert pkts[0][0] == t.OAck((("blksize", str(cap)),))
    assert len(pkts[1][0].data) == cap


def test_file_source_reads_ahead_and_serves_any_offset_exactly(tmp_path):
    from netbootd.net.tftp_files import FileSource
    data = os.urandom(10_000)
    p = tmp_path / "f"
    p.write_bytes(data)
    src = FileSource(os.open(p, os.O_RDONLY), len(data), chunk=4096)
    # forward, a step back into the buffer, back before it, past the end
    for off, n in ((0, 1468), (1468, 1468), (2936, 1468), (1468, 1468), (0, 512),
                   (4000, 1468), (8808, 1468), (9999, 1468), (10_000, 1468)):
        assert bytes(src.read(off, n)) == data[off:off + n], (off, n)
    src.close()
    assert src.fd == -1


@pytest.mark.parametrize("size", [0, 1, 8191, 8192, 8193, 3 * 8192, 30_000])
def test_file_sources_of_one_file_share_its_chunks_and_read_it_exactly(tmp_path, size):
    """Every block at every blksize, across chunk boundaries and at the end,
    from two sources of the same file: each chunk is read once for both."""
    from netbootd.net.tftp_files import ChunkCache, FileSource
    data = os.urandom(size)
    p = tmp_path / "f"
    p.write_bytes(data)
    cache = ChunkCache(total=1 << 20, chunk=8192)
    for blksize in (512, 1468, 4096, 5000):
        a = FileSource(os.open(p, os.O_RDONLY), size, key=("f", blksize), cache=cache)
        b = FileSource(os.open(p, os.O_RDONLY), size, key=("f", blksize), cache=cache)
        before = cache.reads
        for off in range(0, size + 1, blksize):
            want = data[off:off + blksize]
            assert bytes(a.read(off, blksize)) == want, (blksize, off)
            assert bytes(b.read(off, blksize)) == want, (blksize, off)
        assert bytes(a.read(0, blksize)) == data[:blksize]        # a step back
        chunks = size // 8192 + 1
        assert cache.reads - before <= chunks, "the second source read chunks again"
        a.close()
        b.close()


def test_the_chunk_cache_stays_within_its_total_and_evicts_the_oldest(tmp_path):
    from netbootd.net.tftp_files import ChunkCache
    p = tmp_path / "f"
    p.write_bytes(os.urandom(10 * 1024))
    fd = os.open(p, os.O_RDONLY)
    try:
        cache = ChunkCache(total=3 * 1024, chunk=1024)
        for i in range(10):
            cache.get("k", fd, i, 10 * 1024)
        assert cache.used <= 3 * 1024 and [k[1] for k in cache.entries] == [7, 8, 9]
        cache.get("k", fd, 8, 10 * 1024)        # a hit: no read, becomes the newest
        assert cache.reads == 10 and [k[1] for k in cache.entries] == [7, 9, 8]
    finally:
        os.close(fd)


def test_parallel_transfers_of_one_large_file_read_each_chunk_once(tmp_path):
    h = Harness(tmp_path, cache_limit=1000)
    data = os.urandom(600_000)                  # 3 chunks of 256 KiB
    h.file("kernel", data)
    clients = [("10.77.0.%d" % i, 2070) for i in range(60, 65)]
    for c in clients:
        h.rrq("kernel", [("blksize", "1468")], addr=c)
    xfers = [h.transfer(c) for c in clients]
    assert all(download(h, x) == data for x in xfers)
    assert h.server.counters["file.chunk_reads"] == 3
    assert h.server.counters["file.direct"] == 5


def test_a_read_error_at_the_first_block_fails_the_transfer_and_frees_its_slot(tmp_path, monkeypatch):
    """EIO on the very first read (the first DATA is sent when the transfer
    thread starts the transfer): reported as failed, counted, socket closed,
    and the client's slot under the caps is free again."""
    from netbootd.net import tftp as tftp_mod
    h = Harness(tmp_path, cache_limit=1000)
    h.file("big.bin", os.urandom(5000))

    def eio(*a):
        raise OSError(5, "Input/output error")
    monkeypatch.setattr(tftp_mod.os, "pread", eio)
    h.rrq("big.bin")
    (ev,) = h.events
    assert (ev["outcome"], ev["error"]) == ("failed", "internal error")
    assert h.server.counters["drop.internal_error"] == 1
    assert h.server.transfers == {} and h.server.per_ip == {} and h.sockets[-1].closed
