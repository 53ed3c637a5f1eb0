"""The storage API (issue 13 item 3) on the real twisted.web site, a real SQLite
store and a real file pool in tmp; exports through a real tgtd (its own control
number, portal on 127.0.0.1: loopback only) checked with libiscsi's
iscsi-readcapacity16 using the IQN and CHAP secret of the host's own boot script.
Refusals: bad names and sizes (400 naming the field), in use (409 naming the
host), no space (409 with the numbers), nothing half-done."""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from netbootd import config
from netbootd.auth.enroll import KeyRing
from netbootd.net.commit import GroupCommitter
from netbootd.net.http import api_storage
from netbootd.net.http.app import HttpApp
from netbootd.net.http.site import build_site
from netbootd.net.services.storage import metric_families
from netbootd.net.storage import Storage
from netbootd.policy.boot import Renderer
from netbootd.registry.hosts import Registry
from netbootd.storage import open_pool
from netbootd.store.sqlite import Store

TOKEN = "b" * 64
A, B = "52:54:00:13:00:0a", "52:54:00:13:00:0b"
MIB = 1 << 20
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
HAVE_TGT = all(shutil.which(b) for b in ("tgtd", "tgtadm", "iscsi-readcapacity16"))


def storage_for(tmp_path, registry, submit, exports: bool, extra: str = ""):
    """A Storage over one real file pool (and a real tgtd on 127.0.0.1 when asked)."""
    cfg = config.parse(f"""
[[storage.pools]]
name = "default"
root = "{tmp_path / 'pool'}"
reflink = false
overcommit = 1.0
{extra}
[storage.iscsi]
iqn_base = "iqn.2026-01.lan.netboot"
backend = "{'tgt' if exports else 'none'}"
""").storage
    st = Storage(cfg, registry, submit, reactor, "127.0.0.1")
    p = cfg.pools[0]
    st.pools["default"] = open_pool("file", "default", p.thresholds(), root=p.root,
                                    reflink=False)
    st.supervisor = None
    st.export_problem = "exports are off ([storage.iscsi] backend = \"none\")"
    if exports:
        from netbootd.storage.tgt import TgtBackend
        from netbootd.storage.tgtd import TgtdSupervisor, answers
        control = random.randrange(20000, 32768)
        while answers("tgtadm", control):
            control = random.randrange(20000, 32768)
        st.port = random.randrange(30000, 40000)
        portal = f"127.0.0.1:{st.port}"
        st.supervisor = TgtdSupervisor(control, portal)
        st.supervisor.start()
        st.exporter, st.export_problem = TgtBackend(control, portal, cfg.iscsi.iqn_base), None
    st.ready = True
    return st


def make_api(tmp_path, exports=False, configured=True, extra=""):
    store = Store(str(tmp_path / "state"))
    committer = GroupCommitter(reactor, store.apply, 0.001)
    registry = Registry()
    app = HttpApp(registry=registry, submit=committer.submit, renderer=Renderer(),
                  clock=reactor, token=TOKEN, store=store, mode="full",
                  state_dir=str(tmp_path / "state"),
                  ring=KeyRing.load_or_create(str(tmp_path / "state")))
    if configured:
        app.storage = storage_for(tmp_path, registry, committer.submit, exports, extra)
    port = reactor.listenTCP(0, build_site(app), interface="127.0.0.1")
    return app, f"http://127.0.0.1:{port.getHost().port}", store, committer, port


@pytest.fixture
def api(tmp_path):
    parts = make_api(tmp_path)
    yield parts
    parts[4].stopListening()
    parts[3].stop()


@pytest.fixture
def tgt_api(tmp_path):
    if not HAVE_TGT:
        pytest.skip("tgtd, tgtadm or iscsi-readcapacity16 is not installed")
    parts = make_api(tmp_path, exports=True)
    yield parts
    parts[4].stopListening()
    parts[3].stop()
    parts[0].storage.supervisor.stop()


def curl(*args, timeout=30):
    def run():
        r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "--max-time", "20", *args],
                           capture_output=True, timeout=timeout)
        body, _, code = r.stdout.rpartition(b"\n")
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            data = body.decode()
        return int(code or 0), data
    return threads.deferToThread(run)


def post(base, path, body=None, method="POST"):
    args = ["-X", method, "-H", f"Authorization: Bearer {TOKEN}", base + path]
    if body is not None:
        args += ["--data", json.dumps(body)]
    return curl(*args)


@pytest_twisted.inlineCallbacks
def done(base, path, body=None, method="POST"):
    """A mutating call, followed to its job's end: (status, job view or error)."""
    code, view = yield post(base, path, body, method)
    for _ in range(600):
        if code != 200 or view["state"] != "running":
            break
        yield sleep(0.05)
        code, view = yield curl(f"{base}/api/v1/jobs/{view['id']}")
    return code, view


def sleep(s):
    from twisted.internet import task
    return task.deferLater(reactor, s, lambda: None)


# -- not configured ------------------------------------------------------------------
@pytest_twisted.inlineCallbacks
def test_without_storage_every_volume_route_answers_503(tmp_path):
    app, base, _, committer, port = make_api(tmp_path, configured=False)
    try:
        for args in ((base + "/api/v1/volumes",), (base + "/api/v1/exports",)):
            code, body = yield curl(*args)
            assert (code, body["error"]) == (503, "storage is not configured "
                                                  "(no [[storage.pools]])")
        code, body = yield post(base, "/api/v1/volumes", {"name": "a", "size": MIB})
        assert code == 503
    finally:
        port.stopListening()
        committer.stop()


# -- volumes ---------------------------------------------------------------------------
@pytest_twisted.inlineCallbacks
def test_create_list_show_resize_snapshot_clone_delete(api):
    app, base, *_ = api
    code, job = yield done(base, "/api/v1/volumes", {"name": "golden", "size": 8 * MIB})
    assert code == 200 and job["state"] == "done", job
    assert job["result"]["name"] == "golden" and job["result"]["size"] == 8 * MIB
    assert job["result"]["pool"] == "default" and job["result"]["exported_to"] is None
    code, listing = yield curl(base + "/api/v1/volumes")
    assert [v["name"] for v in listing["volumes"]] == ["golden"]
    pool = listing["pools"][0]
    assert pool["name"] == "default" and pool["total"] > 0 and pool["provisioned"] == 8 * MIB
    code, one = yield curl(base + "/api/v1/volumes/golden")
    assert code == 200 and one["kind"] == "volume"
    code, job = yield done(base, "/api/v1/volumes/golden/resize", {"size": 16 * MIB})
    assert code == 200 and job["result"]["size"] == 16 * MIB
    code, err = yield done(base, "/api/v1/volumes/golden/resize", {"size": 4 * MIB})
    assert code == 409 and "shrinking" in err["error"] and "force" in err["error"]
    code, job = yield done(base, "/api/v1/volumes/golden/resize", {"size": 4 * MIB,
                                                                   "force": True})
    assert code == 200 and job["result"]["size"] == 4 * MIB
    code, job = yield done(base, "/api/v1/volumes/golden/snapshot", {"name": "golden-s1"})
    assert code == 200 and job["result"]["kind"] == "snapshot"
    assert job["result"]["origin"] == "golden"
    code, job = yield done(base, "/api/v1/volumes/golden/clone", {"name": "web01"})
    assert code == 200 and job["result"]["kind"] == "volume", job
    code, job = yield done(base, "/api/v1/volumes/web01", method="DELETE")
    assert code == 200 and job["result"] == {"deleted": "web01"}
    code, err = yield curl(base + "/api/v1/volumes/web01")
    assert code == 404 and "web01" in err["error"]


@pytest.mark.parametrize("body, field", [
    ({"name": "a/b", "size": MIB}, "name: 'a/b' contains a slash"),
    ({"name": "..", "size": MIB}, "name: '..' starts with a dot"),
    ({"name": "Web", "size": MIB}, "name: 'Web' has the character 'W'"),
    ({"name": "a_tdata", "size": MIB}, "name: 'a_tdata' contains '_tdata'"),
    ({"name": "ok", "size": 99999999999999999999999}, "size: "),
    ({"name": "ok", "size": 1000}, "size: 1000 bytes is below the minimum"),
    ({"name": "ok", "size": MIB + 1}, "sectors"),
    ({"name": "ok", "size": "10G"}, "size: a whole number of bytes"),
    ({"name": "ok"}, "size: required"),
    ({"name": "ok", "size": MIB, "colour": "red"}, "colour: not a field"),
])
@pytest_twisted.inlineCallbacks
def test_bad_names_and_sizes_are_refused_naming_the_field_and_nothing_is_made(api, body, field):
    app, base, *_ = api
    code, err = yield post(base, "/api/v1/volumes", body)
    assert code == 400 and field in err["error"], err
    assert app.storage.pools["default"].list() == []


@pytest_twisted.inlineCallbacks
def test_an_existing_name_in_any_pool_and_no_space_are_409_with_the_numbers(api):
    app, base, *_ = api
    code, _ = yield done(base, "/api/v1/volumes", {"name": "golden", "size": MIB})
    code, err = yield post(base, "/api/v1/volumes", {"name": "golden", "size": MIB})
    assert code == 409 and "already exists" in err["error"]
    code, err = yield post(base, "/api/v1/volumes", {"name": "huge", "size": 1 << 44})
    assert code == 409 and "capped at" in err["error"] and re.search(r"\d{6,}", err["error"])
    code, err = yield post(base, "/api/v1/volumes/golden/clone", {"name": "golden"})
    assert code == 409
    assert [v.name for v in app.storage.pools["default"].list()] == ["golden"]


@pytest_twisted.inlineCallbacks
def test_a_long_copy_is_a_job_with_progress(api, monkeypatch, tmp_path):
    app, base, *_ = api
    monkeypatch.setattr(api_storage, "WAIT", 0.0)     # answer at once: "running"
    # rebuild the routes with the new wait
    port = reactor.listenTCP(0, build_site(app), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        yield done(base, "/api/v1/volumes", {"name": "golden", "size": 64 * MIB})
        path = app.storage.pools["default"].path("golden")
        with open(path, "r+b") as f:
            for i in range(16):
                f.seek(i * 4 * MIB)
                f.write(b"\x5a" * MIB)
        code, job = yield post(base, "/api/v1/volumes/golden/clone", {"name": "copy"})
        assert code == 200 and job["state"] == "running" and job["op"] == "clone"
        code, job = yield done(base, "/api/v1/volumes/golden/clone", {"name": "copy2"})
        assert job["state"] == "done" and job["done"] == job["total"] == 16 * MIB, job
    finally:
        port.stopListening()


@pytest_twisted.inlineCallbacks
def test_sanboot_without_an_export_backend_is_refused_and_changes_nothing(api):
    app, base, *_ = api
    yield done(base, "/api/v1/volumes", {"name": "web01", "size": MIB})
    code, err = yield post(base, f"/api/v1/hosts/{A}/sanboot", {"volume": "web01"})
    assert code == 409 and "exports are not available" in err["error"]
    assert app.registry.get(A) is None and app.storage.exports == {}


# -- exports through a real tgtd ------------------------------------------------------
def readcap(st, iqn, user, secret, target):
    creds = f"{user}%{secret}@" if user else ""
    return subprocess.run(["iscsi-readcapacity16", "-i", iqn,
                           f"iscsi://{creds}127.0.0.1:{st.port}/{target}/1"],
                          capture_output=True, text=True, timeout=30)


def script_values(text):
    return dict(re.findall(r"^set (\S+) (\S+)$", text, re.M))


@pytest_twisted.inlineCallbacks
def test_sanboot_exports_to_that_host_only_with_chap_from_its_own_script(tgt_api):
    app, base, store, *_ = tgt_api
    st = app.storage
    for name in ("web01", "web02"):
        yield done(base, "/api/v1/volumes", {"name": name, "size": 32 * MIB})
    code, job = yield done(base, f"/api/v1/hosts/{A}/sanboot", {"volume": "web01"})
    assert code == 200 and job["state"] == "done", job
    res = job["result"]
    assert res["host"] == A and res["chap"] is True and "secret" not in json.dumps(res)
    assert res["san_uri"] == f"iscsi:127.0.0.1::{st.port}:1:{res['target_iqn']}"
    code, job = yield done(base, f"/api/v1/hosts/{B}/sanboot", {"volume": "web02"})
    assert code == 200, job
    host = app.registry.get(A)
    assert host.profile == "sanboot" and host.profile_args["san_uri"] == res["san_uri"]
    scripts = {}
    for mac in (A, B):
        code, text = yield curl(f"{base}/boot/{mac.replace(':', '-')}.ipxe")
        scripts[mac] = script_values(text)
        assert "sanboot " + st.san_uri(st.exports["web01" if mac == A else "web02"]
                                       .target_iqn) in text
    secrets = {mac: store.load_exports()[i].chap_secret for i, mac in enumerate((A, B))}
    assert scripts[A]["password"] == secrets[A] and scripts[B]["password"] == secrets[B]
    assert secrets[A] != secrets[B]
    assert secrets[B] not in json.dumps(scripts[A]) and secrets[A] not in json.dumps(scripts[B])
    # the LUN: A's IQN + A's secret read it; another IQN, B's secret, no CHAP do not
    sa = scripts[A]
    r = yield threads.deferToThread(readcap, st, sa["initiator-iqn"], sa["username"],
                                    sa["password"], res["target_iqn"])
    assert r.returncode == 0 and str(32 * MIB) in r.stdout, r.stdout + r.stderr
    for iqn, user, secret in ((scripts[B]["initiator-iqn"], sa["username"], sa["password"]),
                              (sa["initiator-iqn"], sa["username"], secrets[B]),
                              (sa["initiator-iqn"], None, None)):
        r = yield threads.deferToThread(readcap, st, iqn, user, secret, res["target_iqn"])
        assert r.returncode != 0, (iqn, user)
    # a new secret: A's next script has it, the old one is refused, B's is unchanged
    code, job = yield done(base, f"/api/v1/hosts/{A}/chap")
    assert code == 200 and job["result"] == {"host": A, "exports": ["web01"], "chap": True}
    code, text = yield curl(f"{base}/boot/{A.replace(':', '-')}.ipxe")
    new = script_values(text)["password"]
    assert new != sa["password"] and store.load_exports()[0].chap_secret == new
    r = yield threads.deferToThread(readcap, st, sa["initiator-iqn"], sa["username"],
                                    sa["password"], res["target_iqn"])
    assert r.returncode != 0
    r = yield threads.deferToThread(readcap, st, sa["initiator-iqn"], sa["username"], new,
                                    res["target_iqn"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert store.load_exports()[1].chap_secret == secrets[B]
    code, err = yield post(base, "/api/v1/hosts/52:54:00:13:00:0c/chap")
    assert code == 404 and "no export" in err["error"]
    secrets[A + "-old"], secrets[A] = secrets[A], new
    # no secret in any view, event or metric
    seen = []
    for path in ("/api/v1/volumes", "/api/v1/exports", f"/api/v1/hosts/{A}",
                 f"/api/v1/jobs/{job['id']}", "/api/v1/events?limit=500", "/api/v1/status"):
        code, body = yield curl(base + path)
        seen.append(json.dumps(body))
    seen.append(repr(list(metric_families(st))))
    seen.append(repr(store.load_exports()))
    code, page = yield curl(base + "/")
    assert code == 200 and 'id="volumes-section" class="card" data-storage="on">' in page
    assert '<td>web01</td><td>52:54:00:13:00:0a</td>' in page      # the export and its host
    seen.append(str(page))
    for s in secrets.values():
        assert not any(s in text for text in seen)


@pytest_twisted.inlineCallbacks
def test_an_exported_or_booted_volume_is_not_deleted_resized_or_unexported(tgt_api):
    app, base, *_ = tgt_api
    yield done(base, "/api/v1/volumes", {"name": "web01", "size": 8 * MIB})
    yield done(base, f"/api/v1/hosts/{A}/sanboot", {"volume": "web01"})
    code, err = yield post(base, "/api/v1/volumes/web01", method="DELETE")
    assert code == 409 and A in err["error"] and "exported" in err["error"]
    code, err = yield post(base, "/api/v1/volumes/web01/resize", {"size": 16 * MIB})
    assert code == 409 and A in err["error"]
    code, err = yield post(base, "/api/v1/exports/web01", method="DELETE")
    assert code == 409 and A in err["error"] and "boots from it" in err["error"]
    code, err = yield post(base, f"/api/v1/hosts/{B}/sanboot", {"volume": "web01"})
    assert code == 409 and A in err["error"]
    yield post(base, f"/api/v1/hosts/{A}/assign", {"profile": "localboot"})
    code, job = yield done(base, "/api/v1/exports/web01", method="DELETE")
    assert code == 200 and job["result"] == {"unexported": "web01"}
    assert app.storage.exporter.list() == []
    code, job = yield done(base, "/api/v1/volumes/web01", method="DELETE")
    assert code == 200, job


@pytest_twisted.inlineCallbacks
def test_deploy_clones_exports_and_assigns_in_one_step(tgt_api):
    app, base, store, *_ = tgt_api
    yield done(base, "/api/v1/volumes", {"name": "golden", "size": 16 * MIB})
    code, job = yield done(base, "/api/v1/deploy", {"mac": A, "from": "golden"})
    assert code == 200 and job["state"] == "done", job
    name = "golden-52540013000a"
    assert job["result"]["volume"] == name and job["result"]["cloned_from"] == "golden"
    assert [e.volume for e in app.storage.exporter.list()] == [name]
    assert app.registry.get(A).profile == "sanboot"
    assert [r.volume for r in store.load_exports()] == [name]
    code, err = yield post(base, "/api/v1/deploy", {"mac": B, "from": "nope"})
    assert code == 404 and "nope" in err["error"]


@pytest_twisted.inlineCallbacks
def test_a_deploy_whose_export_fails_leaves_nothing(tgt_api):
    from netbootd.storage.exports import BackendFailed
    app, base, store, *_ = tgt_api
    yield done(base, "/api/v1/volumes", {"name": "golden", "size": 8 * MIB})

    def refuse(*a, **kw):
        raise BackendFailed("tgtadm --op new --mode target: refused here (rc 22)")
    app.storage.exporter.export = refuse
    code, err = yield post(base, "/api/v1/deploy", {"mac": A, "from": "golden", "name": "w1"})
    assert code == 502 and "refused here" in err["error"]
    assert [v.name for v in app.storage.pools["default"].list()] == ["golden"]
    assert app.registry.get(A) is None and store.load_exports() == []


@pytest_twisted.inlineCallbacks
def test_a_hosts_timeline_says_which_volume_it_boots_and_failures_are_events(tgt_api):
    app, base, store, committer = tgt_api[:4]
    code, job = yield done(base, "/api/v1/volumes", {"name": "tl", "size": 4 * MIB})
    assert code == 200
    code, job = yield done(base, f"/api/v1/hosts/{A}/sanboot", {"volume": "tl"})
    assert code == 200
    code, job = yield done(base, "/api/v1/deploy", {"mac": B, "from": "nosuchgolden"})
    assert code == 404 or job.get("state") == "failed", job
    yield committer.drain()
    events = store.events(None, 1000)
    mine = [e for e in events if e["mac"] == A and e["kind"] == "storage.exported"]
    assert mine and mine[0]["detail"]["volume"] == "tl" and mine[0]["detail"]["chap"] is True
    assert any(e["kind"] == "storage.volume" and e["detail"] == {"op": "create", "volume": "tl"}
               for e in events)
    failed = [e for e in events if e["kind"] == "storage.failed"]
    assert failed and failed[0]["detail"]["op"] == "deploy" and \
        "nosuchgolden" in failed[0]["detail"]["reason"], "a failed job is an event"
    text = json.dumps(events)
    secret = app.storage.chap_for(A)
    assert secret is None or all(v not in text for v in secret.values() if v and len(v) >= 12)
