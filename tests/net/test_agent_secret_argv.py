"""Review finding L7 (issue 12): with netbootd.insecure=1 and no curl in the initrd,
the agent's https calls went through busybox wget, and the agent secret rode on its
command line (--header "Authorization: Agent nba1...": readable by any process in
/proc/PID/cmdline while the call runs).  lib.sh now writes the request to a 0600
file and sends it through busybox's own TLS (nc -e ssl_client).

The agent runs chrooted in the initrd's userland (static busybox, the agent's files;
curl taken away), against a TLS server on 127.0.0.1 that holds each request until
the test has read every process's command line.  Busybox 1.35's TLS handshakes only
with a server at OpenSSL security level 0 (netbootd's own listener answers alert 40:
docs/agent-protocol.md, "HTTPS"), so this server lowers it."""
from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from pathlib import Path

import pytest

from netbootd.auth import tls

from .test_agent_https import agent_sh, root  # noqa: F401 - the fixture

SECRET = "nba1.argv-test." + "s" * 32


@pytest.fixture(scope="module")
def nocurl(root):  # noqa: F811
    """The initrd's userland without its TLS client: the insecure path of lib.sh."""
    curl = root / "usr/bin/curl"
    if curl.exists():
        curl.rename(root / "usr/bin/curl.off")
    return root


class HoldingServer:
    """TLS on 127.0.0.1: reads one request, sets `held`, answers once `release` is set."""

    def __init__(self, tmp: Path, answers: list[tuple[int, dict]]):
        pair = tls.make_selfsigned(str(tmp / "c.pem"), str(tmp / "k.pem"), cn="argv.test",
                                   sans=["127.0.0.1"])
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.set_ciphers("ALL:@SECLEVEL=0")
        self.ctx.load_cert_chain(pair["cert"], pair["key"])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(60)
        self.port = self.sock.getsockname()[1]
        self.answers, self.requests, self.errors = answers, [], []
        self.held, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for code, body in self.answers:
                conn, _ = self.sock.accept()
                with self.ctx.wrap_socket(conn, server_side=True) as c:
                    c.settimeout(30)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.requests.append(data)
                    self.held.set()
                    self.release.wait(30)
                    self.release.clear()
                    payload = json.dumps(body).encode()
                    c.sendall(b"HTTP/1.0 %d X\r\nContent-Type: application/json\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (code, len(payload), payload))
        except Exception as e:   # shown by the test's assertion
            self.errors.append(repr(e))
            self.held.set()
        finally:
            self.sock.close()


def command_lines() -> dict[int, bytes]:
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out[int(pid)] = f.read()
            except OSError:
                pass
    return out


def test_the_secret_is_on_no_command_line_without_curl(nocurl, tmp_path):
    srv = HoldingServer(tmp_path, [(200, {"action": "wait"}), (403, {"error": "not yours"})])
    # the secret reaches the agent as on a booted host: from a file, never in argv
    (nocurl / "tmp/secret").write_text(SECRET + "\n")
    script = f'''server='https://127.0.0.1:{srv.port}'; tls_insecure=1
        secret=$(cat /tmp/secret)
        api GET /api/v1/agent/next
        echo "NEXT $http_status [$http_error] $(jget "$NB_RUN/http.flat" action)"
        api GET /api/v1/agent/next
        echo "REFUSED $http_status [$http_error]"
        ls -a "$NB_RUN"'''
    result = {}
    t = threading.Thread(target=lambda: result.update(r=agent_sh(nocurl, script)))
    t.start()
    seen = []
    try:
        for _ in srv.answers:
            assert srv.held.wait(60), "the agent's request never arrived"
            srv.held.clear()
            seen += [(pid, cmd) for pid, cmd in command_lines().items()
                     if SECRET.encode() in cmd]
            srv.release.set()
    finally:
        srv.release.set()
        t.join(120)
    r = result["r"]
    assert not srv.errors, srv.errors
    assert seen == [], f"the secret is on a command line: {seen}"
    assert len(srv.requests) == 2
    for req in srv.requests:   # the secret did travel, in the header
        assert f"\r\nAuthorization: Agent {SECRET}\r\n".encode() in req, req
        assert req.startswith(b"GET /api/v1/agent/next HTTP/1.0\r\n"), req
    out = r.stdout.splitlines()
    assert out[0] == "NEXT 200 [] wait", r.stdout + r.stderr
    assert out[1] == "REFUSED 403 [not yours]", r.stdout + r.stderr   # the body is kept
    assert "http.req" not in out[2:], "the request file carrying the secret was kept"

