"""Forged RRQs on real loopback sockets while a real client downloads (issue
"hostile input on the wire", point 3).

Forgers: 60 source addresses in 127.0.0.0/8 (127.0.1.1 .. 127.0.1.60), 5
sockets each, 300 RRQs per wave sent within ~0.3 s, that never ACK but keep
their ports open (so no ICMP ends their transfers early: a spoofed source
on a real segment is silent too).  Meanwhile curl downloads a file from
127.0.0.1.  Before the fix the first wave filled the 256-transfer cap and
curl got "server busy"; each forged RRQ drew 6 datagrams (DATA 1 and five
resends).  Every loop here is bounded in count and time.
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import threads

from netbootd.codec import tftp as t
from netbootd.net.tftp import TftpServer
from tests.interop.test_tftp_clients import LOOPBACK, need, transfer_ended

SOURCES, PER_SOURCE, BAITS = 60, 5, 10
MAX_WAVES = 12


@pytest.fixture
def served(tmp_path):
    from twisted.internet import reactor
    root = tmp_path / "tftproot"
    root.mkdir()
    events: list[dict] = []
    server = TftpServer(reactor, [str(root)], on_event=events.append)   # the daemon's caps
    port = server.listen(0, ip=LOOPBACK).port
    yield server, root, port, events
    server.stop()


class Forgers:
    """300 never-ACKing 'clients'; counts what each sent and got back."""

    def __init__(self, port: int):
        self.port = port
        self.socks = []
        for i in range(SOURCES):
            for _ in range(PER_SOURCE):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((f"127.0.1.{i + 1}", 0))
                s.setblocking(False)
                self.socks.append(s)
        self.sent = {s: 0 for s in self.socks}          # RRQs
        self.sent_bytes = 0
        self.got = {s: 0 for s in self.socks}           # datagrams back
        self.got_bytes = 0

    def wave(self, n: int) -> None:
        """One RRQ from every socket within ~0.3 s, for bait<n % BAITS>
        (another name each wave: not the duplicate of a request under way)."""
        rrq = t.encode_rrq(f"bait{n % BAITS}.bin", "octet", [])
        for k, s in enumerate(self.socks):
            s.sendto(rrq, (LOOPBACK, self.port))
            self.sent[s] += 1
            self.sent_bytes += len(rrq)
            if k % 10 == 9:
                time.sleep(0.01)                         # 300 in ~0.3 s
        self.drain()

    def drain(self) -> None:
        for s in self.socks:
            for _ in range(1000):                        # bounded: ~2 per RRQ expected
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    break
                self.got[s] += 1
                self.got_bytes += len(data)

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest_twisted.inlineCallbacks
def test_a_real_client_downloads_during_a_flood_of_forged_rrqs_that_get_two_datagrams_each(
        served, tmp_path):
    server, root, port, events = served
    curl = need("curl")
    for i in range(BAITS):
        (root / f"bait{i}.bin").write_bytes(os.urandom(5000))
    data = os.urandom(8 << 20)
    (root / "real.bin").write_bytes(data)
    out = tmp_path / "real.out"
    forgers = Forgers(port)
    done = threading.Event()
    result = {}

    def flood():
        forgers.wave(0)                                  # the cap was full after this
        started.set()
        waves = 1
        deadline = time.monotonic() + 10
        while not done.is_set() and waves < MAX_WAVES and time.monotonic() < deadline:
            forgers.wave(waves)
            waves += 1
        result["waves"] = waves
        # Long enough for every unconfirmed transfer to give up (~2 s), then count.
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            select.select([], [], [], 0.1)
            forgers.drain()

    def download():
        started.wait(10)
        t0 = time.monotonic()
        r = subprocess.run([curl, "-sS", "--max-time", "30", "--tftp-blksize", "1468",
                            "-o", str(out), f"tftp://{LOOPBACK}:{port}/real.bin"],
                           capture_output=True, timeout=40)
        result["curl_s"] = time.monotonic() - t0
        done.set()
        return r

    started = threading.Event()
    try:
        flooding = threads.deferToThread(flood)
        r = yield threads.deferToThread(download)
        yield flooding
    finally:
        forgers.close()
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    ev = yield transfer_ended([e for e in events if e["file"] == "real.bin"] or events)
    per_rrq = max(forgers.got[s] / forgers.sent[s] for s in forgers.socks)
    rrqs = sum(forgers.sent.values())
    c = server.counters
    print(f"\nflood: {rrqs} forged RRQs in {result['waves']} waves; curl 8 MiB in "
          f"{result['curl_s']:.2f}s; datagrams per forged RRQ: max {per_rrq:.2f}, mean "
          f"{sum(forgers.got.values()) / rrqs:.2f}; bytes out/in "
          f"{forgers.got_bytes / forgers.sent_bytes:.1f}x; evicted {c['transfer.evicted']}, "
          f"unanswered {c['transfer.unanswered']}, busy {c['refused.cap_total']}")
    assert per_rrq <= 2, "a forged RRQ drew more than two datagrams"
    assert c["refused.cap_total"] == 0 and c["refused.cap_client"] == 0
    assert c["transfer.evicted"] + c["transfer.unanswered"] > 0
    assert [e["outcome"] for e in events if e["file"] == "real.bin"] == ["finished"]
    assert not [e for e in events if e["file"].startswith("bait")], \
        "forged requests left events"
    assert ev["outcome"] == "finished"
