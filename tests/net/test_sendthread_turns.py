"""The sender thread's turns (netbootd/net/http/sendthread.py): one wake-up
gives a connection at most BUDGET bytes even when its socket has room for
more, so at many connections every one is served in turn.  Real sockets
(a Unix stream pair: sendfile(2) writes to it as to TCP) and a real file;
`_send` is called the way the thread calls it for one ready socket."""
from __future__ import annotations

import collections
import os
import select
import socket
import types

import pytest

from netbootd.net.http import sendthread


class _Reactor:
    def __init__(self):
        self.calls = []

    def callFromThread(self, f, *a):
        self.calls.append((f, a))


def _sender() -> sendthread.Sender:
    s = sendthread.Sender.__new__(sendthread.Sender)   # no thread: _send called here
    s.ep = select.epoll()
    s.jobs = {}
    return s


@pytest.fixture
def pair(tmp_path, monkeypatch):
    if sendthread.BUDGET > 512 << 10:      # the default at 4 MiB: a turn that fits the socket
        monkeypatch.setattr(sendthread, "BUDGET", 256 << 10)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    a.setblocking(False)
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20))
    yield a, b, path
    a.close()
    b.close()


def _job(a, path, reactor, ends):
    f = open(path, "rb", buffering=0)
    return sendthread.Job(os.dup(a.fileno()), f, 0, path.stat().st_size,
                          types.SimpleNamespace(sentLength=0), reactor, ends.append)


def test_a_turn_stops_at_the_budget_though_the_socket_has_room(pair):
    a, b, path = pair
    room = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert room > 2 * sendthread.BUDGET, "the test needs more send room than one turn's budget"
    s, reactor, ends = _sender(), _Reactor(), []
    job = _job(a, path, reactor, ends)
    s.jobs[job.sock] = job
    s.ep.register(job.sock, select.EPOLLOUT)
    s._send(job)
    assert job.pos == sendthread.BUDGET and job.request.sentLength == sendthread.BUDGET
    assert job.sock in s.jobs and not reactor.calls        # not done: its next turn comes
    got = b""
    while len(got) < sendthread.BUDGET:
        got += b.recv(1 << 20)
    assert got == path.read_bytes()[:sendthread.BUDGET]
    s._end(job, None, tell=False)


def test_turns_add_up_to_the_whole_body_and_the_end_is_told_once(pair):
    a, b, path = pair
    size = path.stat().st_size
    s, reactor, ends = _sender(), _Reactor(), []
    job = _job(a, path, reactor, ends)
    s.jobs[job.sock] = job
    s.ep.register(job.sock, select.EPOLLOUT)
    got, turns = bytearray(), 0
    while job.sock >= 0 and turns < 1000:
        s._send(job)
        turns += 1
        b.setblocking(False)
        try:
            while True:
                chunk = b.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
        except BlockingIOError:
            pass
    assert bytes(got) == path.read_bytes()
    assert turns >= size // sendthread.BUDGET
    assert [c[1] for c in reactor.calls] == [(None,)]


def test_cork_at_counts_the_bodies_under_way(monkeypatch, tmp_path):
    """sendfile.CORK_AT: the count it compares with is the sender thread's
    bodies under way (a body submitted and not ended); the thread's inbox is
    run here by hand."""
    s = _sender()
    s.inbox = collections.deque()
    s.wake_r, s.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    monkeypatch.setattr(sendthread, "_sender", s)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)                             # as the reactor's sockets are
    try:
        path = tmp_path / "blob"
        path.write_bytes(b"x" * 4096)
        reactor, ends = _Reactor(), []
        assert sendthread.active() == 0
        job = _job(a, path, reactor, ends)
        s.submit(job)
        assert sendthread.active() == 0              # not the thread's before its inbox runs
        s._inbox()
        assert sendthread.active() == 1
        s.cancel(job)
        s._inbox()
        assert sendthread.active() == 0 and not reactor.calls and job.sock == -1
    finally:
        a.close()
        b.close()
        os.close(s.wake_r)
        os.close(s.wake_w)
