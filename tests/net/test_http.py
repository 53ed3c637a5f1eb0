"""HTTP boot scripts, files and agent/admin API: real twisted.web on
127.0.0.1, real SQLite, real curl as the client."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from netbootd.model import HostState
from netbootd.net.commit import GroupCommitter
from netbootd.net.http.app import HttpApp
from netbootd.net.http.site import build_site
from netbootd.policy.boot import Renderer
from netbootd.registry.hosts import Registry
from netbootd.store.sqlite import Store

MAC = "52:54:00:77:00:10"
DASHED = MAC.replace(":", "-")
TOKEN = "t0ken" * 8
SITES: dict = {}      # base URL -> the twisted.web Site behind it

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture
def server(tmp_path):
    files = tmp_path / "files"
    (files / "debian").mkdir(parents=True)
    (files / "debian" / "vmlinuz").write_bytes(bytes(range(256)) * 40)   # 10240 bytes
    (tmp_path / "secret").write_text("top secret")
    os.symlink(tmp_path / "secret", files / "leak")
    os.symlink(files / "debian" / "vmlinuz", files / "alias")
    kernel = tmp_path / "k"
    kernel.write_bytes(b"KERNEL")
    store = Store(str(tmp_path / "state"))
    committer = GroupCommitter(reactor, store.apply, 0.001)
    app = HttpApp(registry=Registry(), submit=committer.submit,
                  renderer=Renderer(discover_cmdline="console=ttyS0"), clock=reactor, token=TOKEN,
                  roots=[str(files)], generated={"netbootd/vmlinuz": str(kernel)})
    site = build_site(app)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    SITES[base] = site
    yield app, base, store, committer
    SITES.pop(base)
    port.stopListening()
    committer.stop()


def curl(*args) -> tuple[int, bytes, dict]:
    """Run curl in a thread; returns (status, body, headers)."""
    def run():
        r = subprocess.run(["curl", "-sS", "--path-as-is", "-D", "-", "--max-time", "10", *args],
                           capture_output=True, timeout=20)
        raw = r.stdout
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and lines[0] else 0
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        return status, body, headers
    return threads.deferToThread(run)


@pytest_twisted.inlineCallbacks
def test_unknown_host_gets_the_discover_script_and_the_step_is_stored(server):
    app, base, store, committer = server
    status, body, headers = yield curl(f"{base}/boot/{DASHED}.ipxe")
    assert status == 200 and body.startswith(b"#!ipxe\n")
    assert int(headers["content-length"]) == len(body)
    assert f"kernel {base}/files/netbootd/vmlinuz initrd=discover.img netbootd.server={base} " \
        "console=ttyS0".encode() in body
    yield committer.drain()
    rows = store.query("SELECT kind, detail FROM events WHERE mac = ?", (MAC,))
    kinds = [r["kind"] for r in rows]
    assert "http.script" in kinds
    assert json.loads(rows[kinds.index("http.script")]["detail"])["bytes"] == len(body)


def raw_http(base: str, request: bytes):
    """Send bytes on a plain socket and read until the server closes."""
    import socket

    def run():
        host, port = base.rsplit("/", 1)[-1].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(request)
            chunks = []
            while (c := s.recv(65536)):
                chunks.append(c)
        return b"".join(chunks)
    return threads.deferToThread(run)


@pytest_twisted.inlineCallbacks
def test_head_gives_the_length_without_a_body(server):
    app, base, *_ = server
    for path in (f"/boot/{DASHED}.ipxe", "/files/debian/vmlinuz"):
        raw = yield raw_http(base, f"HEAD {path} HTTP/1.0\r\n\r\n".encode())
        head, _, body = raw.partition(b"\r\n\r\n")
        _, full, _ = yield curl(base + path)
        assert head.startswith(b"HTTP/1.0 200") and body == b""
        assert f"content-length: {len(full)}".encode() in head.lower()


@pytest.mark.parametrize("path", ["/boot/zz.ipxe", "/boot/x", "/boot/../files/alias",
                                  f"/boot/{DASHED}.ipxe/more"])
@pytest_twisted.inlineCallbacks
def test_bad_boot_script_names_are_404(server, path):
    app, base, *_ = server
    status, body, _ = yield curl(base + path)
    assert status == 404


@pytest_twisted.inlineCallbacks
def test_files_support_ranges_with_exact_bytes(server):
    app, base, *_ = server
    data = bytes(range(256)) * 40
    status, body, headers = yield curl("-r", "100-1123", f"{base}/files/debian/vmlinuz")
    assert status == 206 and body == data[100:1124]
    assert headers["content-range"] == "bytes 100-1123/10240"
    status, body, headers = yield curl(f"{base}/files/alias")      # symlink inside the root
    assert status == 200 and body == data and headers["content-length"] == "10240"
    status, body, _ = yield curl(f"{base}/files/netbootd/vmlinuz")  # generated name
    assert status == 200 and body == b"KERNEL"


@pytest.mark.parametrize("path, code", [
    ("/files/leak", 403),                       # symlink out of the root: nothing read
    ("/files/../secret", 400),
    ("/files/debian/../../secret", 400),
    ("/files/%2e%2e/secret", 400),
    ("/files/debian%5cvmlinuz", 400),
    ("/files/debian%00/vmlinuz", 400),
    ("/files/nothere", 404),
    ("/files/" + "a" * 300, 400),
])
@pytest_twisted.inlineCallbacks
def test_no_path_leaves_its_root(server, path, code):
    app, base, *_ = server
    status, body, _ = yield curl(base + path)
    assert status == code and b"top secret" not in body


@pytest_twisted.inlineCallbacks
def test_agent_lifecycle_and_assignment(server):
    app, base, store, committer = server
    status, body, _ = yield curl("-X", "POST", "-H", "Content-Type: application/json",
                                 "--data", json.dumps({"mac": MAC, "ip": "10.77.0.50",
                                                       "uuid": "8A7C3F5E-1B2D-4C3E-9F10-77AA00BB0010"}),
                                 f"{base}/api/v1/agent/register")
    assert status == 200 and json.loads(body)["state"] == "registered"
    secret = json.loads(body)["secret"]
    agent = ("-H", f"Authorization: Agent {secret}")
    h = app.registry.get(MAC)
    assert h.uuid == "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0010" and h.ip == "10.77.0.50"
    status, body, _ = yield curl(f"{base}/api/v1/agent/next")
    assert status == 401 and h.state == HostState.REGISTERED, "no credential, no answer"
    status, body, _ = yield curl(*agent, f"{base}/api/v1/agent/next")
    assert json.loads(body) == {"action": "wait", "id": None, "poll": 10}
    assert h.state == HostState.IDLE

    assign = ["-X", "POST", "--data", json.dumps({"profile": "linux", "args": {
        "kernel": "debian/vmlinuz", "cmdline": "console=ttyS0"}}),
              f"{base}/api/v1/hosts/{MAC}/assign"]
    status, body, headers = yield curl(*assign)
    assert status == 401 and "bearer" in headers.get("www-authenticate", "").lower()
    status, body, _ = yield curl("-H", "Authorization: Bearer wrong", *assign)
    assert status == 401 and h.state == HostState.IDLE
    status, body, _ = yield curl("-H", f"Authorization: Bearer {TOKEN}", *assign)
    assert status == 200 and json.loads(body)["state"] == "assigned"
    status, body, _ = yield curl(*agent, f"{base}/api/v1/agent/next")
    nxt = json.loads(body)
    assert nxt["action"] == "boot" and nxt["kernel"] == f"{base}/files/debian/vmlinuz"
    assert nxt["cmdline"] == "console=ttyS0" and nxt["initrd"] == []

    status, body, _ = yield curl(f"{base}/boot/{DASHED}.ipxe")
    assert f"kernel {base}/files/debian/vmlinuz  console=ttyS0".encode() in body
    assert h.state == HostState.BOOTING
    yield curl("--data", json.dumps({"mac": MAC}), f"{base}/api/v1/agent/register")
    assert h.state == HostState.ACTIVE
    yield committer.drain()
    stored = {x.mac: x for x in store.load_hosts()}[MAC]
    assert stored.state == HostState.ACTIVE and stored.profile == "linux"
    states = [json.loads(r["detail"])["new"] for r in store.query(
        "SELECT detail FROM events WHERE mac = ? AND kind = 'host.state' ORDER BY id", (MAC,))]
    assert states == ["registered", "idle", "assigned", "booting", "active"]


@pytest.mark.parametrize("data, code, reason", [
    ("{not json", 400, "not JSON"),
    ("[1,2]", 400, "object"),
    (json.dumps({"profile": "linux", "args": {"kernel": "a\nshell"}}), 400, "kernel"),
    (json.dumps({"profile": "nope"}), 400, "profile"),
    (json.dumps({"profile": "linux", "args": {"kernel": "k", "x": "y" * 70000}}), 413, "larger"),
])
@pytest_twisted.inlineCallbacks
def test_bad_api_requests_get_a_4xx_with_a_reason(server, data, code, reason):
    app, base, *_ = server
    status, body, _ = yield curl("-H", f"Authorization: Bearer {TOKEN}", "-X", "POST",
                                 "--data-binary", data, f"{base}/api/v1/hosts/{MAC}/assign")
    assert status == code and reason in json.loads(body)["error"]


@pytest.mark.parametrize("fields, reason", [({"mac": "zz"}, "mac"),
                                            ({"mac": MAC, "uuid": "nope"}, "uuid"),
                                            ({"mac": MAC, "ip": "1.2.3"}, "ip"),
                                            ({"mac": "01:00:5e:00:00:01"}, "mac"),
                                            ({"mac": "00:00:00:00:00:00"}, "mac")])
@pytest_twisted.inlineCallbacks
def test_agent_register_validates_host_data(server, fields, reason):
    app, base, *_ = server
    status, body, _ = yield curl("--data", json.dumps(fields), f"{base}/api/v1/agent/register")
    # a placeholder MAC is well-formed (the schema's pattern) but names no NIC: 403
    assert status in (400, 403) and json.loads(body)["error"].startswith(reason)
    status, body, _ = yield curl(f"{base}/api/v1/agent/register?mac={MAC}")
    assert status == 405, "no state change behind a GET"


@pytest_twisted.inlineCallbacks
def test_json_nested_1000_deep_gets_a_json_400_and_one_log_line(server, caplog):
    """json.loads recursed per level: 1,000 '[' raised RecursionError, a 500
    HTML page and a traceback per request.  Now a JSON 400 naming the reason,
    one log line, counted."""
    app, base, *_ = server
    caplog.set_level("INFO")
    for body in ("[" * 1000 + "]" * 1000, '{"mac": ' + "[" * 1000):
        status, raw, headers = yield curl("-X", "POST", "-H", "Content-Type: application/json",
                                          "--data-binary", body, f"{base}/api/v1/agent/register")
        assert status == 400 and headers["content-type"] == "application/json"
        assert "nested deeper" in json.loads(raw)["error"]
    assert app.counters["http.bad_json"] == 2
    lines = [r for r in caplog.records if "nested deeper" in r.getMessage()]
    assert len(lines) == 2 and not any(r.exc_info for r in caplog.records)
    # Brackets inside strings are data, not nesting.
    status, raw, _ = yield curl("-X", "POST", "--data-binary",
                                json.dumps({"mac": MAC, "hostname": "[" * 100}),
                                f"{base}/api/v1/agent/register")
    assert "nested" not in raw.decode()


@pytest_twisted.inlineCallbacks
def test_a_token_in_the_query_string_is_refused_and_not_written_to_the_access_log(server):
    import io
    app, base, *_ = server
    log = io.StringIO()
    SITES[base].logFile = log          # the access log (twisted's combined format)
    url = f"{base}/api/v1/hosts/{MAC}/assign?access_token={TOKEN}&token={TOKEN}&x=1"
    status, body, _ = yield curl("-X", "POST", "--data", '{"profile": "localboot"}', url)
    assert status == 401
    line = log.getvalue()
    assert "/assign?access_token=REDACTED&token=REDACTED&x=1" in line and TOKEN not in line


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
@pytest_twisted.inlineCallbacks
def test_the_bearer_scheme_name_is_case_insensitive(server, scheme):
    """RFC 7235 §2.1: the auth-scheme is a case-insensitive token."""
    app, base, *_ = server
    app.registry.agent_register(MAC, "10.77.0.5", None, 1.0)
    status, body, _ = yield curl("-H", f"Authorization: {scheme} {TOKEN}", "-X", "POST",
                                 "--data", '{"profile": "localboot"}',
                                 f"{base}/api/v1/hosts/{MAC}/assign")
    assert status == 200, body
    status, _, _ = yield curl("-H", f"Authorization: {scheme}x {TOKEN}", "-X", "POST",
                              "--data", '{"profile": "localboot"}',
                              f"{base}/api/v1/hosts/{MAC}/assign")
    assert status == 401


@pytest_twisted.inlineCallbacks
def test_an_enrollment_token_or_agent_secret_in_a_path_never_reaches_the_access_log(server):
    import io
    app, base, *_ = server
    log = io.StringIO()
    SITES[base].logFile = log
    tok, sec = "nbt1.QUJDREVG.c2lnbmF0dXJl", "nba1.525400aa0001.c2VjcmV0c2VjcmV0"
    yield curl(f"{base}/files/{tok}/x?{sec}")
    line = log.getvalue()
    assert "nbt1.REDACTED" in line and "nba1.REDACTED" in line
    assert tok not in line and sec not in line and "c2lnbmF0dXJl" not in line


@pytest_twisted.inlineCallbacks
def test_answered_agent_polls_are_counted_not_logged_and_refusals_are_logged(server):
    import io
    app, base, *_ = server
    log = io.StringIO()
    SITES[base].logFile = log
    status, body, _ = yield curl("--data", json.dumps({"mac": MAC}), f"{base}/api/v1/agent/register")
    secret = json.loads(body)["secret"]
    for _ in range(3):
        status, _, _ = yield curl("-H", f"Authorization: Agent {secret}", f"{base}/api/v1/agent/next")
        assert status == 200
    status, _, _ = yield curl(f"{base}/api/v1/agent/next")
    assert status == 401
    lines = [l for l in log.getvalue().splitlines() if "/api/v1/agent/next" in l]
    assert len(lines) == 1 and '" 401 ' in lines[0], lines
    assert app.counters["api.agent_next"] == 3


@pytest_twisted.inlineCallbacks
def test_a_networks_boot_profile_is_the_default_of_its_unassigned_hosts(server):
    """BOOT_PROFILE on the network a host's request comes from replaces
    [boot] default_profile for hosts with no assignment; another network's
    setting does not apply, and an assignment still wins."""
    from netbootd.policy.vnet import from_template
    from tests.net.vnet_core import NetCore
    app, base, store, committer = server
    core = NetCore(reactor, store, committer)
    app.networks = core.networks
    core.replan(networks=[from_template("NAME = other\nSUBNET = 10.9.0.0/24\n"
                                        "BOOT_PROFILE = shell\n")])
    status, body, _ = yield curl(f"{base}/boot/{DASHED}.ipxe")
    assert status == 200 and b"netbootd/vmlinuz" in body          # discover: not that network
    core.replan(networks=[from_template("NAME = lo\nSUBNET = 127.0.0.0/8\n"
                                        "BOOT_PROFILE = localboot\n")])
    status, body, _ = yield curl(f"{base}/boot/{DASHED}.ipxe")
    assert status == 200 and b"netbootd/vmlinuz" not in body and b"exit" in body, body
    yield committer.drain()
    kinds = [r["detail"] for r in store.query(
        "SELECT detail FROM events WHERE mac = ? AND kind = 'http.script'", (MAC,))]
    assert json.loads(kinds[-1])["profile"] == "localboot"
