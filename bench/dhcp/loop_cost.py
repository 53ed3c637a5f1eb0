#!/usr/bin/env python3
"""CPU per datagram of the reactor path itself: an echo server on loopback.

    .venv/bin/python bench/dhcp/loop_cost.py                    # 8,000/s, all modes
    .venv/bin/python bench/dhcp/loop_cost.py --rate 4000 --count 20000 --rounds 3

A child process (CPU 0) sends --count 300-byte datagrams at --rate to a
loopback port; the parent (CPU 1) echoes each one back, and reports its CPU
(user + sys, getrusage) per datagram, for:

* ``twisted``: Twisted's epoll reactor with net/udp.py's UdpEndpoint (what the
  DHCP sockets use);
* ``twisted-lean``: the same with netbootd/runtime/reactor.py's reactor (what
  the daemon runs since 2026-12-05): doPoll calls the reader directly instead
  of through log.callWithLogger (a context push per event);
* ``epoll``: a bare select.epoll loop with the same recvfrom/sendto calls.

The difference is what the reactor costs per wake-up, on top of the socket
calls every server makes (Kea included).  Loopback only, no DHCP.  Each mode
runs in its own fresh process (the reactor is global).
"""
from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODES = ("twisted", "twisted-lean", "epoll")
QUIT = b"quit"


def _sender(port: int, rate: int, count: int) -> None:
    os.sched_setaffinity(0, {0})
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    msg, t0, per = b"x" * 300, time.monotonic(), 1.0 / rate
    for i in range(count):
        while time.monotonic() < t0 + i * per:
            pass
        s.sendto(msg, ("127.0.0.1", port))
    time.sleep(0.3)
    s.sendto(QUIT, ("127.0.0.1", port))


def serve(mode: str, rate: int, count: int) -> str:
    """One measurement (run in a fresh process): the result line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    got = [0]
    if mode != "epoll":
        sys.path.insert(0, str(REPO))
        if mode == "twisted-lean":
            from netbootd.runtime import reactor as lean   # the daemon's reactor
            lean.install()
        else:
            from twisted.internet import epollreactor
            epollreactor.install()
        from twisted.internet import reactor

        from netbootd.net.udp import UdpEndpoint

        class Echo:
            def datagramsReceived(self, batch):
                for data, addr in batch:
                    if data == QUIT:
                        reactor.stop()
                        return
                    got[0] += 1
                    sock.sendto(data, addr)
        UdpEndpoint(reactor, sock, Echo())
        reactor.callLater(120, reactor.stop)          # bounded whatever happens
    pid = os.fork()
    if pid == 0:
        try:
            _sender(sock.getsockname()[1], rate, count)
        finally:
            os._exit(0)
    os.sched_setaffinity(0, {1})
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    if mode == "epoll":
        ep = select.epoll()
        ep.register(sock.fileno(), select.EPOLLIN)
        deadline, running = time.monotonic() + 120, True
        while running and time.monotonic() < deadline:
            for _ in ep.poll(1.0):
                for _ in range(64):
                    try:
                        data, addr = sock.recvfrom(65535)
                    except BlockingIOError:
                        break
                    if data == QUIT:
                        running = False
                        break
                    got[0] += 1
                    sock.sendto(data, addr)
    else:
        reactor.run()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(pid, 0)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    n = max(got[0], 1)
    return (f"{mode:13} {rate}/s echoed {got[0]:6}: {1e6 * (user + sys_) / n:6.1f} us/datagram "
            f"(user {1e6 * user / n:5.1f}, sys {1e6 * sys_ / n:5.1f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=8000)
    ap.add_argument("--count", type=int, default=24000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)   # the child run
    a = ap.parse_args()
    if os.cpu_count() < 2:
        print("loop_cost: needs 2 CPUs (sender and server pinned apart)", file=sys.stderr)
        return 2
    if a.one:
        print(serve(a.one, a.rate, a.count), flush=True)
        return 0
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode {bad[0]} (modes: {', '.join(MODES)})")
    for k in range(a.rounds):
        for m in (modes if k % 2 == 0 else modes[::-1]):
            r = subprocess.run([sys.executable, __file__, "--one", m, "--rate", str(a.rate),
                                "--count", str(a.count)], capture_output=True, text=True,
                               timeout=200)
            print(r.stdout.strip() or f"{m}: failed: {r.stderr.strip()[-500:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
