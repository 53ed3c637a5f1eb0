"""Disk capture over the real twisted.web site (issue 13 item 4): a real SQLite store,
a real file pool in tmp, chunks POSTed over real loopback sockets with the host's
agent secret.  The volume ends equal to the source, sparse where the source was
zeros; wrong offsets, bad hashes, other hosts' secrets and oversized bodies are
refused with their reasons; a daemon restart mid-way (its capture state gone)
resumes from the committed offset stored at the last 10% step, the committed
chunks read back and hashed again."""
from __future__ import annotations

import hashlib
import http.client
import json
import os

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from netbootd.policy import capture as cp
from tests.net.test_api_storage import TOKEN, make_api, sleep

MIB = 1 << 20
MAC = "52:54:00:13:00:c1"
OTHER = "52:54:00:13:00:c2"
SIZE = 5 * MIB + 512 * 1024          # five whole chunks of 1 MiB and a half one


def source(tmp_path, size=SIZE):
    """A disk image: random data with a zero MiB in the middle (sparse on the server)."""
    p = tmp_path / "disk.img"
    data = bytearray(os.urandom(size))
    data[2 * MIB:3 * MIB] = bytes(MIB)
    p.write_bytes(data)
    return p


def enroll(app, mac, disk_bytes=SIZE, disk="vdz"):
    """Register the host's agent (its secret) and give it an inventory of one disk."""
    now = reactor.seconds()
    reply, writes = app.agents.register(mac, "127.0.0.1", None, None, None, "127.0.0.1", now)
    app.submit(writes)
    h = app.registry.hosts[mac]
    h.hw = {"disk_list": [{"name": disk, "bytes": disk_bytes, "serial": None}]}
    return reply["secret"]


def call(base, method, path, body=b"", headers=None):
    """One request over a fresh connection (in a thread): (status, JSON reply)."""
    def run():
        host, port = base.rsplit("/", 1)[-1].split(":")
        c = http.client.HTTPConnection(host, int(port), timeout=30)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        raw = r.read()
        c.close()
        return r.status, json.loads(raw) if raw.strip() else None
    return threads.deferToThread(run)


def admin(base, path, body):
    return call(base, "POST", path, json.dumps(body).encode(),
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})


def agent(base, secret, method, path, body=b"", extra=None):
    return call(base, method, path, body, {"Authorization": f"Agent {secret}", **(extra or {})})


@pytest.fixture
def capi(tmp_path):
    parts = make_api(tmp_path)
    app = parts[0]
    app.admit_body.__self__.captures.chunk_size = MIB
    yield parts
    parts[4].stopListening()
    parts[3].stop()


def captures_of(app):
    return app.admit_body.__self__.captures


def hold_writes(cap):
    """The capture's chunk writes wait (in the worker thread) until ``gate`` is set;
    ``entered`` is set when the first one is waiting."""
    import threading
    gate, entered = threading.Event(), threading.Event()
    real = cap.target.write

    def held(*a):
        entered.set()
        gate.wait(10)
        return real(*a)
    cap.target.write = held
    return gate, entered


@pytest_twisted.inlineCallbacks
def send(base, secret, job, data, start=0, stop=None):
    """POST the chunks of ``data`` from ``start`` (to ``stop``); their sha256s."""
    shas = []
    for off, n in cp.plan(len(data), MIB):
        if off < start or (stop is not None and off >= stop):
            continue
        chunk = data[off:off + n]
        sha = hashlib.sha256(chunk).hexdigest()
        code, body = yield agent(base, secret, "POST", f"/api/v1/agent/capture/{job}/{off}",
                                 chunk, {"X-Sha256": sha})
        assert code == 200, body
        assert body["committed"] == off + n
        shas.append(sha)
    return shas


@pytest_twisted.inlineCallbacks
def test_capture_streams_a_disk_into_a_new_sparse_volume(tmp_path, capi):
    app, base = capi[0], capi[1]
    data = source(tmp_path).read_bytes()
    secret = enroll(app, MAC)
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                            {"disk": "/dev/vdz", "volume": "cap1"})
    assert code == 200, job
    assert (job["op"], job["target"], job["state"], job["total"]) == \
        ("capture", "cap1", "running", SIZE)
    code, nxt = yield agent(base, secret, "GET", "/api/v1/agent/next")
    assert (nxt["action"], nxt["job"], nxt["disk"], nxt["bytes"], nxt["chunk"]) == \
        ("capture", job["id"], "vdz", SIZE, MIB)
    # the volume cannot be deleted while it is captured into
    code, body = yield call(base, "DELETE", "/api/v1/volumes/cap1",
                            headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 409 and "capturing" in body["error"]
    code, st = yield agent(base, secret, "GET", f"/api/v1/agent/capture/{job['id']}")
    assert (code, st["committed"], st["bytes"]) == (200, 0, SIZE)
    code, listing = yield call(base, "GET", "/api/v1/volumes")
    v = [v for v in listing["volumes"] if v["name"] == "cap1"][0]
    assert v["job"] == {"id": job["id"], "op": "capture", "done": 0, "total": SIZE}
    assert v["in_use"] == [f"host {MAC} is capturing into it"]
    report = {"id": nxt["id"], "action": "capture", "status": "started"}
    code, _ = yield agent(base, secret, "POST", "/api/v1/agent/report",
                          json.dumps(report).encode())
    assert code == 200
    shas = yield send(base, secret, job["id"], data)
    digest = cp.list_digest(shas)
    code, rep = yield agent(base, secret, "POST", "/api/v1/agent/report", json.dumps(
        dict(report, status="done", detail={"sha256": digest, "bytes": SIZE})).encode())
    assert (code, rep["status"]) == (200, "done")
    code, view = yield call(base, "GET", f"/api/v1/jobs/{job['id']}")
    assert view["state"] == "done", view
    assert (view["result"]["sha256"], view["result"]["bytes"], view["done"]) == \
        (digest, SIZE, SIZE)
    assert view["result"]["sparse_skipped"] == MIB
    vol = tmp_path / "pool" / "volumes" / "cap1"
    assert vol.read_bytes() == data
    assert os.stat(vol).st_blocks * 512 <= SIZE - MIB      # the zero MiB is a hole
    assert app.registry.hosts[MAC].action is None
    yield sleep(0.1)
    code, tl = yield call(base, "GET", f"/api/v1/hosts/{MAC}/timeline")
    caps = [json.loads(e["detail"]) if isinstance(e["detail"], str) else e["detail"]
            for e in tl if e["kind"] == "storage.capture"]
    statuses = [c["status"] for c in caps]
    assert statuses[0] == "queued" and statuses[-1] == "done" and "progress" in statuses
    assert caps[-1]["sha256"] == digest and caps[-1]["mb_s"] is not None


@pytest_twisted.inlineCallbacks
def test_capture_refusals_say_why(tmp_path, capi):
    app, base = capi[0], capi[1]
    data = source(tmp_path).read_bytes()
    secret = enroll(app, MAC)
    other = enroll(app, OTHER)
    cases = [({"disk": "sdq", "volume": "v1"}, 409, "not in the host's inventory"),
             ({"disk": "../x", "volume": "v1"}, 400, "disk:"),
             ({"disk": "vdz", "volume": "a/b"}, 400, "volume"),
             ({"disk": "vdz"}, 400, "volume: required"),
             ({"disk": "vdz", "volume": "v1", "size": 3}, 400, "size: not a field")]
    for body, status, words in cases:
        code, r = yield admin(base, f"/api/v1/hosts/{MAC}/capture", body)
        assert (code, words in r["error"]) == (status, True), (body, r)
    # an existing volume with data is not captured into
    vol = tmp_path / "pool" / "volumes"
    code, _ = yield admin(base, "/api/v1/volumes", {"name": "full", "size": SIZE})
    yield sleep(0.2)
    with open(vol / "full", "r+b") as f:
        f.write(b"x" * 4096)
        os.fsync(f.fileno())
    code, r = yield admin(base, f"/api/v1/hosts/{MAC}/capture", {"disk": "vdz",
                                                                 "volume": "full"})
    assert code == 409 and "holds data" in r["error"], r
    assert app.registry.hosts[MAC].action is None
    # an existing empty one is
    code, _ = yield admin(base, "/api/v1/volumes", {"name": "empty", "size": SIZE})
    yield sleep(0.2)
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture", {"disk": "vdz",
                                                                   "volume": "empty"})
    assert code == 200, job
    j = job["id"]
    code, r = yield admin(base, f"/api/v1/hosts/{MAC}/capture", {"disk": "vdz",
                                                                 "volume": "v2"})
    assert code == 409 and "pending capture" in r["error"]
    chunk = data[:MIB]
    sha = hashlib.sha256(chunk).hexdigest()
    path = f"/api/v1/agent/capture/{j}"
    checks = [
        (secret, f"{path}/{MIB}", chunk, sha, 409, "not the committed offset 0"),
        (secret, f"{path}/0", chunk, "0" * 64, 422, "do not match"),
        (secret, f"{path}/0", chunk, "zz", 400, "sha256: the chunk"),
        (secret, f"{path}/0", chunk[:1000], sha, 400, "the chunk at 0 is 1048576 bytes"),
        (secret, f"{path}/0", chunk + chunk, sha, 413, "larger than"),
        (other, f"{path}/0", chunk, sha, 404, "no capture"),
        ("nba1.525400130099.nope", f"{path}/0", chunk, sha, 401, "credential"),
        (secret, f"{path}/{SIZE + MIB}", chunk, sha, 400, "past the end"),
    ]
    for who, p, body, h, status, words in checks:
        code, r = yield agent(base, who, "POST", p, body, {"X-Sha256": h})
        assert (code, words in (r or {}).get("error", "")) == (status, True), (p, status, r)
    code, st = yield agent(base, secret, "GET", path)
    assert st["committed"] == 0            # nothing refused was written
    assert (vol / "empty").read_bytes() == bytes(SIZE)
    # a digest that does not match fails the job with the reason
    shas = yield send(base, secret, j, data)
    nxt = app.registry.hosts[MAC].action
    code, rep = yield agent(base, secret, "POST", "/api/v1/agent/report", json.dumps(
        {"id": nxt["id"], "action": "capture", "status": "done",
         "detail": {"sha256": "f" * 64, "bytes": SIZE}}).encode())
    assert (code, rep["status"]) == (200, "failed")
    code, view = yield call(base, "GET", f"/api/v1/jobs/{j}")
    assert view["state"] == "failed" and "sha256 mismatch" in view["error"]["error"]
    yield sleep(0.3)
    assert (vol / "empty").exists()            # adopted, not made by the capture: kept
    assert cp.list_digest(shas) != "f" * 64


@pytest_twisted.inlineCallbacks
def test_capture_resumes_after_a_daemon_restart(tmp_path, capi):
    """The capture's memory is lost (a restart): the agent asks for the committed
    offset, gets the one stored at the last 10% step (the chunks before it read
    back and hashed again), sends from there, and the digests still agree."""
    app, base = capi[0], capi[1]
    data = source(tmp_path).read_bytes()
    secret = enroll(app, MAC)
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                            {"disk": "vdz", "volume": "cap2"})
    j = job["id"]
    shas = yield send(base, secret, j, data, stop=4 * MIB)
    caps = captures_of(app)
    stored = app.registry.hosts[MAC].action["committed"]
    assert 0 < stored <= 4 * MIB
    # the restart: no capture state, no job (the stored action remains)
    cap = caps.by_job.pop(j)
    cap.target.close()
    app.storage.jobs.pop(j)
    app.storage.busy.clear()
    code, st = yield agent(base, secret, "POST", f"/api/v1/agent/capture/{j}/{4 * MIB}",
                           data[4 * MIB:5 * MIB],
                           {"X-Sha256": hashlib.sha256(data[4 * MIB:5 * MIB]).hexdigest()})
    assert code == 409 and "GET the capture's committed offset" in st["error"]
    code, st = yield agent(base, secret, "GET", f"/api/v1/agent/capture/{j}")
    assert (code, st["committed"]) == (200, stored)
    more = yield send(base, secret, j, data, start=stored)
    shas = shas[:stored // MIB] + more
    nxt = app.registry.hosts[MAC].action
    code, rep = yield agent(base, secret, "POST", "/api/v1/agent/report", json.dumps(
        {"id": nxt["id"], "action": "capture", "status": "done",
         "detail": {"sha256": cp.list_digest(shas), "bytes": SIZE}}).encode())
    assert rep["status"] == "done", rep
    assert (tmp_path / "pool" / "volumes" / "cap2").read_bytes() == data
    code, view = yield call(base, "GET", f"/api/v1/jobs/{j}")
    assert view["state"] == "done"


@pytest_twisted.inlineCallbacks
def test_cli_capture_follows_the_job_to_its_end(tmp_path, capi):
    """`netbootd volume capture` queues it and follows the job while the agent
    uploads; `volume job ID` shows it after."""
    import subprocess
    import sys

    from netbootd.auth import admin_token
    app, base = capi[0], capi[1]
    state = tmp_path / "state"
    path = admin_token.token_path(str(state))
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(TOKEN)
    data = source(tmp_path).read_bytes()
    secret = enroll(app, MAC)

    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "netbootd", "volume", *argv, "--server",
                               base, "--state-dir", str(state)], capture_output=True,
                              text=True, timeout=60)
    following = threads.deferToThread(cli, "capture", MAC, "--disk", "/dev/vdz", "--volume",
                                      "cli1")
    for _ in range(200):
        act = app.registry.hosts[MAC].action
        if act is not None:
            break
        yield sleep(0.05)
    shas = yield send(base, secret, act["job"], data)
    code, rep = yield agent(base, secret, "POST", "/api/v1/agent/report", json.dumps(
        {"id": act["id"], "action": "capture", "status": "done",
         "detail": {"sha256": cp.list_digest(shas), "bytes": SIZE}}).encode())
    r = yield following
    assert r.returncode == 0, r.stderr
    assert f"captured vdz of host {MAC} into volume cli1" in r.stdout
    assert cp.list_digest(shas) in r.stdout
    r = yield threads.deferToThread(cli, "job", act["job"], "--json")
    assert json.loads(r.stdout)["state"] == "done"
    r = yield threads.deferToThread(cli, "capture", MAC, "--disk", "vdq", "--volume", "x")
    assert r.returncode != 0 and "not in the host's inventory" in r.stderr, r


@pytest_twisted.inlineCallbacks
def test_an_abandoned_capture_ends_and_frees_its_volume(tmp_path, capi):
    """An admin queued another action for the host (or its agent went silent): the
    sweep fails the capture with the reason and the volume is no longer in use."""
    from netbootd.net import capture as capmod
    app, base = capi[0], capi[1]
    enroll(app, MAC)
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                            {"disk": "vdz", "volume": "gone"})
    caps = captures_of(app)
    caps.sweep()
    code, view = yield call(base, "GET", f"/api/v1/jobs/{job['id']}")
    assert view["state"] == "running"                 # nothing wrong yet
    code, _ = yield admin(base, f"/api/v1/hosts/{MAC}/actions", {"action": "wait"})
    assert code == 200
    caps.sweep()
    code, view = yield call(base, "GET", f"/api/v1/jobs/{job['id']}")
    assert view["state"] == "failed" and "replaced" in view["error"]["error"], view
    assert app.storage.users("gone") == []
    yield sleep(0.3)
    # the capture made it: a partial disk is removed, its name free for the next try
    assert not (tmp_path / "pool" / "volumes" / "gone").exists()
    # silence: a second capture whose agent never calls
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                            {"disk": "vdz", "volume": "quiet"})
    caps.by_job[job["id"]].active -= capmod.IDLE + 1
    caps.sweep()
    code, view = yield call(base, "GET", f"/api/v1/jobs/{job['id']}")
    assert view["state"] == "failed" and "no call from the host's agent" in \
        view["error"]["error"], view


@pytest_twisted.inlineCallbacks
def test_a_capture_ended_during_a_write_closes_its_volume_after_the_write(tmp_path, capi):
    """The job ends (its action replaced) while a chunk is in the worker thread: the
    volume's fd is closed only once that write returned, and the chunk is refused."""
    app, base = capi[0], capi[1]
    data = source(tmp_path).read_bytes()
    secret = enroll(app, MAC)
    code, job = yield admin(base, f"/api/v1/hosts/{MAC}/capture",
                            {"disk": "vdz", "volume": "race"})
    cap = captures_of(app).by_job[job["id"]]
    gate, entered = hold_writes(cap)
    target = cap.target
    chunk = data[:MIB]
    pending = agent(base, secret, "POST", f"/api/v1/agent/capture/{job['id']}/0", chunk,
                    {"X-Sha256": hashlib.sha256(chunk).hexdigest()})
    yield threads.deferToThread(entered.wait, 10)
    code, _ = yield admin(base, f"/api/v1/hosts/{MAC}/actions", {"action": "wait"})
    captures_of(app).sweep()
    assert cap.job.state == "failed" and target.fd >= 0      # not closed under the write
    gate.set()
    code, body = yield pending
    assert code == 409 and "has ended" in body["error"], body
    yield sleep(0.2)
    assert target.fd == -1 and cap.target is None
