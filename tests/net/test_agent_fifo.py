"""The agent's HTTP client (lib.sh api / api_stream: nc fed through a FIFO) under
signals, run by the initrd's static busybox against servers on 127.0.0.1.

The fault (e2e, once under load): "FAILED next ... cannot open /run/netbootd/http.fifo".
The old code opened the FIFO's write end with a blocking `exec 3> FIFO` while nc's
side opened it; a SIGCHLD meanwhile failed that open with EINTR (busybox ash catches
SIGCHLD without SA_RESTART; in the initrd the agent is PID 1 and reaps every orphan,
e.g. each earlier call's `timeout` watcher), and the retry loop then returned the
status of its last `[`, 1, although the second open had succeeded.  Here the shell
gets a SIGCHLD every few hundred microseconds from the test (the same signal a
child's exit sends): the old code failed 59 of 300 calls that way.

Also kept: nc never half-closes before the answer (its stdin never ends), and a
connection the server drops while a body larger than a pipe is being written ends the
call instead of leaving the writer blocked (the shell holds no read end of the FIFO).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading

import pytest

from tests.unit.test_agent_shell import AGENT, bbpath  # noqa: F401  (fixture)

CALLS = 300


def run_agent(bbpath, tmp_path, script: str, *, storm: bool = False,  # noqa: F811
              timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """`script` after lib.sh under busybox sh; with storm, SIGCHLD to the shell every
    ~0.2 ms until it exits.  Returns the result and the number of signals sent."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": bbpath, "NB_LIB": str(AGENT), "NB_RUN": str(run)}
    p = subprocess.Popen([f"{bbpath}/sh", "-c", f". {AGENT}/lib.sh\n{script}"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = 0
    done = threading.Event()

    def pelt():
        nonlocal sent
        while not done.wait(0.0002):
            try:
                os.kill(p.pid, signal.SIGCHLD)
            except ProcessLookupError:
                return
            sent += 1

    t = threading.Thread(target=pelt, daemon=True)
    if storm:
        t.start()
    try:
        out, err = p.communicate(timeout=timeout)
    finally:
        done.set()
        if p.poll() is None:
            p.kill()
            p.communicate()
        if storm:
            t.join()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), sent


class Server:
    """HTTP/1.0 on 127.0.0.1, one thread per connection.  `mode`:
    answer - read the request (headers + Content-Length), answer {"ok":1}, close;
    wait_eof - read the request, then wait up to 1 s for the client to half-close
        (recorded in `half_closed`), answer, close;
    drop - read the headers, then close with a reset, the body unread."""

    def __init__(self, mode: str):
        self.mode = mode
        self.requests = 0
        self.half_closed = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _more(c: socket.socket, buf: bytes, enough) -> bytes | None:
        """buf plus what c sends until enough(buf); None if the client closes first."""
        while not enough(buf):
            d = c.recv(65536)
            if not d:
                return None
            buf += d
        return buf

    def _serve(self, c: socket.socket):
        with c:
            c.settimeout(30)
            buf = self._more(c, b"", lambda b: b"\r\n\r\n" in b)
            if buf is None:
                return
            head, body = buf.split(b"\r\n\r\n", 1)
            self.requests += 1
            if self.mode == "drop":
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                return
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":", 1)[1])
            if self._more(c, body, lambda b: len(b) >= n) is None:
                return
            if self.mode == "wait_eof":
                # a half-close shows at once: nc shuts its side down as soon as its
                # stdin ends, and the agent's write end is closed before it waits
                c.settimeout(1.0)
                try:
                    if c.recv(1) == b"":
                        self.half_closed += 1
                except TimeoutError:
                    pass
                c.settimeout(30)
            c.sendall(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n'
                      b'Content-Length: 8\r\n\r\n{"ok":1}')

    def close(self):
        self.sock.close()


@pytest.fixture
def server():
    made = []

    def make(mode: str = "answer") -> Server:
        s = Server(mode)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def test_every_call_succeeds_while_sigchld_keeps_arriving(bbpath, tmp_path, server):  # noqa: F811
    srv = server()
    r, sent = run_agent(bbpath, tmp_path, f'''server={srv.url}
        ok=0 i=0
        while [ $i -lt {CALLS} ]; do
          i=$((i + 1))
          api GET /api/v1/agent/next
          if [ "$http_status" = 200 ] && [ "$(jget "$NB_RUN/http.flat" ok)" = 1 ]; then
            ok=$((ok + 1))
          else
            echo "call $i: $http_status $http_error"
          fi
        done
        echo "ok=$ok"
        ls "$NB_RUN"''', storm=True)
    lines = r.stdout.splitlines()
    assert f"ok={CALLS}" in lines, r.stdout[-2000:] + r.stderr[-2000:]
    assert sent > CALLS, "the storm did not run alongside the calls"
    assert srv.requests == CALLS
    assert "http.fifo" not in lines and "http.req" not in lines


def test_every_call_succeeds_with_the_shell_as_pid_1(bbpath, tmp_path, server):  # noqa: F811
    """The initrd's situation: the agent is PID 1 of its PID namespace, so every orphan
    (each call's `timeout` watcher, exiting up to 1 s after its nc) becomes its child
    and its exit a SIGCHLD to the agent.  The old code failed 10 of 1,000 calls here, and
    this test in 2 of 3 runs (1-3 calls of 500); the storm above fails it every time."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("a PID namespace needs root and unshare")
    srv = server()
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    script = f'''. {AGENT}/lib.sh
        server={srv.url}
        ok=0 i=0
        while [ $i -lt 500 ]; do
          i=$((i + 1))
          api GET /api/v1/agent/next
          if [ "$http_status" = 200 ]; then ok=$((ok + 1)); else echo "call $i: $http_error"; fi
        done
        echo "pid=$$ ok=$ok"'''
    r = subprocess.run([unshare, "--pid", "--fork", f"{bbpath}/sh", "-c", script],
                       env={"PATH": bbpath, "NB_LIB": str(AGENT), "NB_RUN": str(run)},
                       capture_output=True, text=True, timeout=300)
    assert "pid=1 ok=500" in r.stdout.splitlines(), r.stdout[-2000:] + r.stderr[-2000:]


def test_a_streamed_body_under_sigchld(bbpath, tmp_path, server):  # noqa: F811
    srv = server()
    r, sent = run_agent(bbpath, tmp_path, f'''server={srv.url}
        ok=0 i=0
        while [ $i -lt 100 ]; do
          i=$((i + 1))
          api_stream POST /x 5 printf hello
          [ "$http_status:$api_rc" = 200:0 ] && ok=$((ok + 1))
        done
        echo "ok=$ok"''', storm=True)
    assert "ok=100" in r.stdout.splitlines(), r.stdout[-2000:] + r.stderr[-2000:]
    assert sent > 100


def test_nc_does_not_half_close_before_the_answer(bbpath, tmp_path, server):  # noqa: F811
    srv = server("wait_eof")
    r, _ = run_agent(bbpath, tmp_path, f'''server={srv.url}
        head -c 100000 /dev/zero | tr '\\0' a > "$NB_RUN/big.json"
        api POST /a "$NB_RUN/big.json"; echo "1 $http_status"
        api_stream POST /b 5 printf hello; echo "2 $http_status $api_rc"''')
    assert r.stdout.splitlines() == ["1 200", "2 200 0"], r.stdout + r.stderr
    assert srv.requests == 2 and srv.half_closed == 0


def test_a_dropped_connection_ends_a_large_body_instead_of_blocking(bbpath, tmp_path,
                                                                    server):  # noqa: F811
    """More than a pipe's and a socket's buffers (64 MiB, unread): if the shell kept a
    read end of the FIFO, the writer would wait forever once nc is gone."""
    srv = server("drop")
    r, _ = run_agent(bbpath, tmp_path, f'''server={srv.url}
        head -c 400000 /dev/zero > "$NB_RUN/big.json"
        api POST /a "$NB_RUN/big.json"; echo "1 $http_status [$http_error]"
        api_stream POST /b 67108864 head -c 67108864 /dev/zero
        echo "2 $http_status $api_rc [$http_error]"
        server=http://127.0.0.1:1
        api POST /c "$NB_RUN/big.json"; echo "3 $http_status [$http_error]"''')
    lines = r.stdout.splitlines()
    assert lines[0] == f"1 0 [no HTTP answer from {srv.url[7:]}]", r.stdout + r.stderr
    assert lines[1].startswith("2 0 ") and not lines[1].startswith("2 0 0 "), lines
    assert lines[2] == "3 0 [no HTTP answer from 127.0.0.1:1]"
