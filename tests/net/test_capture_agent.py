"""The agent's capture (iso_builder/agent/capture.sh) run by the initrd's static busybox,
PATH holding only its applets, against the real netbootd site (real store, real file
pool) through a TCP proxy on loopback that drops connections mid-way: once in the
middle of a request (a stream's, or a chunk's: nothing more committed), once after the
server answered (committed, the agent never hears it).  The agent asks for the
committed offset, resumes, and the volume ends byte-identical to the disk with the
digests agreeing.  Both transports: one stream per attempt (http's default) and one
POST per chunk (https's, here with NB_CAPTURE_STREAM=0)."""
from __future__ import annotations

import json
import socket
import threading

import pytest_twisted
from twisted.internet import defer, threads

from tests.net.test_api_storage import make_api, sleep
from tests.net.test_capture_api import MAC, MIB, SIZE, admin, call, enroll, source
from tests.unit.test_agent_shell import AGENT, bbpath  # noqa: F401  (fixture)


class DroppingProxy:
    """127.0.0.1:port -> upstream.  Connections are counted by their first bytes; the
    ``cut_request``-th capture POST is closed after ``cut_bytes`` of its request, the
    ``cut_reply``-th one after its whole request went up, before any reply comes back."""

    def __init__(self, upstream: int, cut_request: int, cut_reply: int,
                 cut_bytes: int = 600_000):
        self.upstream, self.cut_request, self.cut_reply = upstream, cut_request, cut_reply
        self.cut_bytes = cut_bytes
        self.paths: list[str] = []
        self.chunks = 0
        self.cuts: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        u = socket.create_connection(("127.0.0.1", self.upstream))
        first = c.recv(65536)
        n = None
        if first.startswith(b"POST /api/v1/agent/capture/"):
            self.chunks += 1
            n = self.chunks
            self.paths.append(first.split(b" ", 2)[1].decode())
        sent = 0
        u.sendall(first)
        sent += len(first)
        if n == self.cut_request:
            while sent < self.cut_bytes:
                b = c.recv(65536)
                if not b:
                    break
                u.sendall(b)
                sent += len(b)
            self.cuts.append("request")
            _close(c, u)
            return
        reply_cut = n == self.cut_reply

        def up():
            try:
                while True:
                    b = c.recv(1 << 20)
                    if not b:
                        break
                    u.sendall(b)
            except OSError:
                pass
        t = threading.Thread(target=up, daemon=True)
        t.start()
        try:
            while True:
                b = u.recv(1 << 20)
                if not b:
                    break
                if reply_cut:           # the server answered: the agent never hears it
                    self.cuts.append("reply")
                    break
                c.sendall(b)
        except OSError:
            pass
        _close(c, u)

    def close(self):
        self.stop = True
        self.sock.close()


def _close(*socks):
    """shutdown first: a close() does not wake another thread's recv() on the same
    socket, and the peer would see no FIN while it blocks."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


def fake_sys(tmp_path, disk: str, size: int) -> tuple[str, str]:
    sys_, proc = tmp_path / "sys", tmp_path / "proc"
    (sys_ / "block" / disk).mkdir(parents=True)
    (sys_ / "block" / disk / "size").write_text(f"{size // 512}\n")
    proc.mkdir()
    (proc / "uptime").write_text("12.34 5.6\n")
    return str(sys_), str(proc)


def run_agent(bbpath, tmp_path, server, secret, dev, sysdir, procdir, **extra):
    """GET next and act on it, as init does; the console lines."""
    import subprocess
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    script = (f". {AGENT}/lib.sh; . {AGENT}/inventory.sh; . {AGENT}/actions.sh\n"
              f"server={server} secret='{secret}' host_mac={MAC}\n"
              "finish() { echo \"finish $1\"; }\n"
              "api GET /api/v1/agent/next\n"
              "cp \"$NB_RUN/http.flat\" \"$NB_RUN/next.flat\"\n"
              "act \"$(jget \"$NB_RUN/next.flat\" action)\" \"$(jget \"$NB_RUN/next.flat\" id)\""
              " \"$NB_RUN/next.flat\"\n")
    env = {"PATH": bbpath, "NB_LIB": str(AGENT), "NB_RUN": str(run), "NB_SYS": sysdir,
           "NB_PROC": procdir, "NB_CAPTURE_DEV": dev, "NB_CAPTURE_PAUSE": "1", **extra}
    return threads.deferToThread(subprocess.run, [f"{bbpath}/sh", "-c", script], env=env,
                                 capture_output=True, text=True, timeout=120)


@pytest_twisted.inlineCallbacks
def ended(tmp_path, base, job, disk, secret, out):
    """The job is done, the volume is the disk, the digests agree, no secret printed,
    no chunk file left."""
    yield sleep(0.1)
    code, view = yield call(base, "GET", f"/api/v1/jobs/{job}")
    assert view["state"] == "done", (view, out)
    assert (tmp_path / "pool" / "volumes" / "cap").read_bytes() == disk.read_bytes()
    digest = [line for line in out.splitlines() if "sha256=" in line][0]
    assert view["result"]["sha256"] in digest
    assert secret not in out
    left = [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith("cap.")]
    assert not left, f"chunk files left behind: {left}"


@defer.inlineCallbacks
def queue_capture(app, base, tmp_path):
    """1 MiB chunks, a source disk, the host enrolled, a capture of vdz queued:
    (disk, secret, job)."""
    app.admit_body.__self__.captures.chunk_size = MIB
    disk = source(tmp_path)
    secret = enroll(app, MAC)
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                            {"disk": "vdz", "volume": "cap"})
    assert code == 200, job
    return disk, secret, job


@pytest_twisted.inlineCallbacks
def capture_through(tmp_path, bbpath, check, env=None, **cuts):  # noqa: F811
    """capture.sh through a DroppingProxy(**cuts); ``check(out, proxy, job)`` on its
    console, then the capture must have ended done (``ended``)."""
    app, base, _, committer, port = make_api(tmp_path)
    proxy = DroppingProxy(int(base.rsplit(":", 1)[1]), **cuts)
    try:
        disk, secret, job = yield queue_capture(app, base, tmp_path)
        sysdir, procdir = fake_sys(tmp_path, "vdz", SIZE)
        r = yield run_agent(bbpath, tmp_path, f"http://127.0.0.1:{proxy.port}", secret,
                            str(disk), sysdir, procdir, **(env or {}))
        out = r.stdout + r.stderr
        assert proxy.cuts == ["request", "reply"], out
        check(out, proxy, job["id"])
        yield ended(tmp_path, base, job["id"], disk, secret, out)
    finally:
        proxy.close()
        port.stopListening()
        committer.stop()


@pytest_twisted.inlineCallbacks
def test_agent_streams_through_dropped_connections(tmp_path, bbpath):  # noqa: F811
    """The first stream is cut after 2.5 chunks (two committed), the second after the
    server's answer (all committed): three requests in all, one per attempt."""
    def check(out, proxy, j):
        # one request per attempt, each from the committed offset (2 MiB after the cut
        # unless the server was still busy when the agent asked: then one more try)
        offs = [int(p.rsplit("/", 1)[1]) for p in proxy.paths]
        assert all(p.startswith(f"/api/v1/agent/capture/{j}/stream/") for p in proxy.paths)
        assert offs[0] == 0 and offs == sorted(offs) and 2 * MIB in offs, out
        assert "capture stream from 0: status=0" in out, out
        assert "the server stopped the stream: the connection was lost" in out, out
        assert "action=capture status=done" in out, out
    yield capture_through(tmp_path, bbpath, check, cut_request=1, cut_reply=2,
                          cut_bytes=2 * (MIB + 65) + MIB // 2)


@pytest_twisted.inlineCallbacks
def test_agent_captures_chunk_by_chunk_through_dropped_connections(tmp_path, bbpath):  # noqa: F811,E501
    """One POST per chunk (https's transport): the third chunk's request is cut, the
    fifth chunk's answer."""
    def check(out, proxy, j):
        assert "report id=" in out and "action=capture status=done" in out, out
        assert "capture chunk at 2097152: status=0" in out, out     # the cut request
    yield capture_through(tmp_path, bbpath, check, {"NB_CAPTURE_STREAM": "0"},
                          cut_request=3, cut_reply=5)


@pytest_twisted.inlineCallbacks
def test_agent_refuses_a_disk_that_is_not_the_inventorys(tmp_path, bbpath):  # noqa: F811
    app, base, _, committer, port = make_api(tmp_path)
    try:
        disk = source(tmp_path)
        secret = enroll(app, MAC)
        code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                                {"disk": "vdz", "volume": "cap"})
        sysdir, procdir = fake_sys(tmp_path, "vdz", SIZE + 512)     # a different disk now
        r = yield run_agent(bbpath, tmp_path, base, secret, str(disk), sysdir, procdir)
        out = r.stdout + r.stderr
        assert "FAILED capture" in out and "not the disk the admin chose" in out, out
        yield sleep(0.1)
        code, view = yield call(base, "GET", f"/api/v1/jobs/{job['id']}")
        assert view["state"] == "failed" and "not the disk" in view["error"]["error"], view
        assert json.dumps(view).count(secret) == 0
    finally:
        port.stopListening()
        committer.stop()
