"""The admin API on real twisted.web + real SQLite, driven by real clients
(curl, schemathesis) on 127.0.0.1.  The OpenAPI document is the map: every
operation in it is exercised, and every mutating one must refuse a missing
or wrong token."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from netbootd.auth.enroll import KeyRing
from netbootd.net.commit import GroupCommitter
from netbootd.net.http.app import HttpApp
from netbootd.net.http.api import ROUTES, SPEC
from netbootd.net.http.site import build_site
from netbootd.policy.boot import Renderer
from netbootd.registry.hosts import Registry
from netbootd.store.sqlite import Store
from netbootd.writes import event

TOKEN = "a" * 64
MAC = "52:54:00:77:00:10"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


@pytest.fixture
def api(tmp_path):
    store = Store(str(tmp_path / "state"))
    committer = GroupCommitter(reactor, store.apply, 0.001)
    pools = [{"name": "lab", "subnet": "10.77.0.0/24", "ranges": ["10.77.0.10-10.77.0.20"],
              "router": None, "dns": [], "domain": None, "lease_time": 600,
              "interface": "eth1", "size": 11, "used": 3}]
    app = HttpApp(registry=Registry(), submit=committer.submit, renderer=Renderer(),
                  clock=reactor, token=TOKEN, store=store, mode="full", pools=lambda: pools,
                  state_dir=str(tmp_path / "state"),
                  ring=KeyRing.load_or_create(str(tmp_path / "state")))
    # [storage]: a real file pool, exports off (tests/net/test_api_storage.py has tgt)
    from .test_api_storage import storage_for
    app.storage = storage_for(tmp_path, app.registry, committer.submit, exports=False)
    from .vnet_core import NetCore
    app.networks = NetCore(reactor, store, committer, registry=app.registry).networks
    port = reactor.listenTCP(0, build_site(app), interface="127.0.0.1")
    yield app, f"http://127.0.0.1:{port.getHost().port}", store, committer
    port.stopListening()
    committer.stop()


def curl(*args, timeout=15):
    def run():
        r = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "--max-time", "10", *args],
                           capture_output=True, timeout=timeout)
        body, _, code = r.stdout.rpartition(b"\n")
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            data = body
        return int(code or 0), data
    return threads.deferToThread(run)


def auth(*args):
    return ("-H", f"Authorization: Bearer {TOKEN}") + args


def concrete(path: str) -> str:
    return path.replace("{mac}", MAC).replace("{name}", "lab").replace("{token_id}", "tok-1")


MUTATING = [(p, m) for p, ops in SPEC["paths"].items() for m in ops
            if m in ("post", "patch", "delete", "put") and not p.startswith("/api/v1/agent/")]


def test_the_document_lists_every_mutating_admin_route():
    assert {(p, m) for p, m in MUTATING} == {
        ("/api/v1/hosts/{mac}", "patch"), ("/api/v1/hosts/{mac}", "delete"),
        ("/api/v1/hosts/{mac}/assign", "post"), ("/api/v1/hosts/{mac}/approve", "post"),
        ("/api/v1/hosts/{mac}/retire", "post"), ("/api/v1/hosts/{mac}/actions", "post"),
        ("/api/v1/hosts/{mac}/reset", "post"), ("/api/v1/accounts", "post"),
        ("/api/v1/accounts/{name}", "patch"), ("/api/v1/accounts/{name}", "delete"),
        ("/api/v1/tokens", "post"), ("/api/v1/tokens/{token_id}/revoke", "post"),
        ("/api/v1/tokens/rotate-key", "post"), ("/api/v1/volumes", "post"),
        ("/api/v1/volumes/{name}", "delete"), ("/api/v1/volumes/{name}/resize", "post"),
        ("/api/v1/volumes/{name}/snapshot", "post"), ("/api/v1/volumes/{name}/clone", "post"),
        ("/api/v1/exports/{name}", "delete"), ("/api/v1/hosts/{mac}/sanboot", "post"),
        ("/api/v1/hosts/{mac}/chap", "post"), ("/api/v1/hosts/{mac}/capture", "post"),
        ("/api/v1/deploy", "post"), ("/api/v1/networks", "post"),
        ("/api/v1/networks/{name}", "put"), ("/api/v1/networks/{name}", "delete"),
        ("/api/v1/networks/{name}/leases", "post"),
        ("/api/v1/networks/{name}/leases/remove", "post")}
    assert all(SPEC["paths"][p][m].get("security") for p, m in MUTATING)


@pytest.mark.parametrize("path, method", MUTATING)
@pytest_twisted.inlineCallbacks
def test_every_mutating_route_refuses_a_missing_or_bad_token(api, path, method):
    app, base, *_ = api
    app.registry.agent_register(MAC, "10.77.0.5", None, 1.0)
    for hdr in ((), ("-H", "Authorization: Bearer nope"), ("-H", f"Authorization: {TOKEN}"),
                ("-H", "Authorization: Bearer " + TOKEN[:-1])):
        code, body = yield curl(*hdr, "-X", method.upper(), "--data", '{"profile":"shell"}',
                                base + concrete(path))
        assert code == 401 and body["error"] == "missing or bad bearer token"
    assert app.registry.get(MAC).state.value == "registered", "state changed without a token"


@pytest.mark.parametrize("method", ["PUT", "POST", "DELETE", "PATCH"])
@pytest_twisted.inlineCallbacks
def test_read_only_routes_refuse_writes_with_405(api, method):
    app, base, *_ = api
    for path in ("/api/v1/leases", "/api/v1/networks", "/api/v1/events", "/api/v1/status"):
        if (path, method) == ("/api/v1/networks", "POST"):
            continue                      # creates a network (api_networks.py)
        code, body = yield curl(*auth("-X", method, base + path))
        assert code == 405 and "not allowed" in body["error"]


@pytest_twisted.inlineCallbacks
def test_host_lifecycle_through_the_api(api):
    app, base, store, committer = api
    yield curl("--data", json.dumps({"mac": MAC, "ip": "10.77.0.5"}),
               base + "/api/v1/agent/register")
    code, page = yield curl(base + "/api/v1/hosts?state=registered")
    hosts = page["hosts"]
    assert code == 200 and [h["mac"] for h in hosts] == [MAC]
    assert hosts[0]["last_event"]["kind"] in ("agent.register", "host.state")
    code, body = yield curl(*auth("-X", "POST", base + f"/api/v1/hosts/{MAC}/approve"))
    assert code == 409 and "registered" in body["error"]
    code, body = yield curl(*auth("-X", "PATCH", "--data", '{"hostname": "node-5"}',
                                  base + f"/api/v1/hosts/{MAC}"))
    assert code == 200 and body["hostname"] == "node-5"
    code, body = yield curl(*auth("-X", "PATCH", "--data", '{"hostname": "bad name!"}',
                                  base + f"/api/v1/hosts/{MAC}"))
    assert code == 400 and body["error"].startswith("hostname:")
    code, body = yield curl(*auth("-X", "PATCH", "--data", '{"state": "active"}',
                                  base + f"/api/v1/hosts/{MAC}"))
    assert code == 400 and body["error"].startswith("state:")
    code, body = yield curl(*auth("-X", "POST", base + f"/api/v1/hosts/{MAC}/retire"))
    assert code == 200 and body["state"] == "retired"
    code, host = yield curl(base + f"/api/v1/hosts/{MAC}")
    kinds = [e["kind"] for e in host["timeline"]]
    assert code == 200 and "agent.register" in kinds and "host.hostname" in kinds
    code, body = yield curl(*auth("-X", "DELETE", base + f"/api/v1/hosts/{MAC}"))
    assert code == 200 and body == {"deleted": MAC}
    code, body = yield curl(base + f"/api/v1/hosts/{MAC}")
    assert code == 404
    yield committer.drain()
    assert MAC not in {h.mac for h in store.load_hosts()}


def _macs(n, base=0):
    return [f"52:54:01:{(base + i) >> 16 & 255:02x}:{(base + i) >> 8 & 255:02x}:"
            f"{(base + i) & 255:02x}" for i in range(n)]


@pytest_twisted.inlineCallbacks
def test_host_list_comes_a_page_at_a_time_with_a_stable_cursor_and_counts(api):
    """250 hosts: pages of 100 in (first_seen, mac) order, each host once even
    when hosts are added meanwhile; counts of all and per state; MACs only seen
    on DHCP are counted, not listed."""
    app, base, store, committer = api
    reg = app.registry
    for i, mac in enumerate(_macs(250)):
        committer.submit(reg.agent_register(mac, None, None, 100.0 + i)[1])
    for mac in _macs(7, 1000):
        reg.observe(mac, 50.0, "eth1", 0, "PXEClient", None, [])
    yield committer.drain()
    seen_macs, url, pages = [], base + "/api/v1/hosts?limit=100", 0
    while url:
        code, body = yield curl(url)
        assert code == 200, body
        pages += 1
        assert len(body["hosts"]) <= 100
        seen_macs += [h["mac"] for h in body["hosts"]]
        assert body["counts"]["seen"] == 7
        if pages == 1:
            assert body["total"] == 250 and body["counts"]["states"] == {"registered": 250}
            assert body["hosts"][0]["last_event"]["kind"] == "agent.register"
            reg.agent_register("52:54:01:ff:ff:ff", None, None, 1.0)   # sorts first
        url = base + "/api/v1/hosts?limit=100&cursor=" + body["next"] if body["next"] else None
    assert pages == 3 and seen_macs == _macs(250)
    code, body = yield curl(base + "/api/v1/hosts?q=52:54:01:00:00:0&limit=3")
    assert code == 200 and body["total"] == 16 and len(body["hosts"]) == 3 and body["next"]
    code, body = yield curl(base + "/api/v1/hosts")
    assert len(body["hosts"]) == 100 and body["counts"]["hosts"] == 251


@pytest.mark.parametrize("query, reason", [
    ("limit=0", "limit: must be 1..1000"), ("limit=1001", "limit: must be 0..1000"),
    ("limit=x", "limit: not an integer"), ("cursor=bm9wZQ", "cursor: not a cursor"), ("cursor=1.5~zz", "cursor: not a cursor"),
    ("cursor=%%%", "cursor: not a cursor"), ("state=lost", "state: not one of")])
@pytest_twisted.inlineCallbacks
def test_a_bad_limit_or_cursor_is_a_400_with_the_reason(api, query, reason):
    app, base, *_ = api
    code, body = yield curl(base + "/api/v1/hosts?" + query)
    assert code == 400 and body["error"].startswith(reason), body


@pytest_twisted.inlineCallbacks
def test_boot_scripts_for_random_macs_get_429_past_the_new_host_budget(api):
    """GET /boot/<random-mac>.ipxe made a host per URL with no limit; now one
    source gets its burst (10) and then 429 with a reason, counted, no host
    made, while a known host's script is still served."""
    app, base, store, committer = api
    known = "52:54:00:77:00:99"
    committer.submit(app.registry.agent_register(known, None, None, 1.0)[1])
    # the budget's refill (1/s) made the counts depend on how fast curl runs
    # on a loaded machine: one token per 1,000 s here, the burst is what counts
    app.registry._new_by_source.rate = 0.001
    codes = []
    t0 = reactor.seconds()
    for mac in _macs(40, 5000):
        code, body = yield curl(base + f"/boot/{mac}.ipxe")
        codes.append(code)
    # the burst (10), plus what the bucket refilled while curl ran
    refill = int((reactor.seconds() - t0) * 0.001) + 1
    ok = codes.count(200)
    assert 10 <= ok <= 10 + refill and codes.count(429) == 40 - ok, codes
    assert b"too many new hosts" in body
    assert app.counters["http.script_new_host_refused"] == 40 - ok
    assert len(app.registry.hosts) == ok + 1
    code, body = yield curl(base + f"/boot/{known}.ipxe")
    assert code == 200 and body.startswith(b"#!ipxe")
    code, body = yield curl("--data", json.dumps({"mac": "52:54:00:77:01:01"}),
                            base + "/api/v1/agent/register")
    assert code == 429 and "too many new hosts" in body["error"]
    yield committer.drain()
    assert len(store.load_hosts()) == ok + 1


@pytest_twisted.inlineCallbacks
def test_events_page_by_id_and_filter_by_host(api):
    app, base, store, committer = api
    for i in range(5):
        app.registry.agent_register(f"52:54:00:00:00:0{i}", None, None, float(i))
        committer.submit(app.registry.agent_register(f"52:54:00:00:00:0{i}", None, None,
                                                     float(i))[1])
    yield committer.drain()
    code, first = yield curl(base + "/api/v1/events?limit=3")
    assert code == 200 and len(first) == 3
    code, rest = yield curl(base + f"/api/v1/events?after={first[-1]['id']}&limit=1000")
    ids = [e["id"] for e in first + rest]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    code, mine = yield curl(base + "/api/v1/events?mac=52-54-00-00-00-03")
    assert mine and {e["mac"] for e in mine} == {"52:54:00:00:00:03"}
    code, body = yield curl(base + "/api/v1/events?limit=abc")
    assert code == 400 and body["error"].startswith("limit")


@pytest_twisted.inlineCallbacks
def test_a_hosts_events_without_a_cursor_are_its_newest_as_the_store_reads_them(api):
    """`netbootd events --mac M --limit N` shows the same rows through the API
    as offline (store.events(newest=True)): the newest N, ascending."""
    app, base, store, committer = api
    mac = "52:54:00:00:00:07"
    committer.submit([event(float(i), mac, "dhcp.ack", n=i) for i in range(6)]
                     + [event(9.0, "52:54:00:00:00:08", "dhcp.ack")])
    yield committer.drain()
    code, rows = yield curl(base + f"/api/v1/events?mac={mac}&limit=2")
    assert code == 200 and [e["detail"]["n"] for e in rows] == [4, 5]
    assert [e["id"] for e in rows] == [e["id"] for e in store.events(None, 2, mac, newest=True)]
    code, more = yield curl(base + f"/api/v1/events?mac={mac}&after={rows[0]['id']}")
    assert [e["detail"]["n"] for e in more] == [5]


@pytest_twisted.inlineCallbacks
def test_event_stream_delivers_new_events(api):
    app, base, store, committer = api
    d = threads.deferToThread(subprocess.run, ["curl", "-sN", "--max-time", "4",
                                               base + "/api/v1/events/stream"],
                              capture_output=True, timeout=20)
    from twisted.internet import task
    yield task.deferLater(reactor, 1.0, lambda: None)
    committer.submit(app.registry.agent_register(MAC, "10.77.0.9", None, 5.0)[1])
    r = yield d
    frames = [f for f in r.stdout.decode().split("\n\n") if f.startswith("id:")]
    events = [json.loads(f.split("data: ", 1)[1]) for f in frames]
    assert "agent.register" in [e["kind"] for e in events]


@pytest.mark.skipif(shutil.which("st") is None and
                    not shutil.which("st", path=str(__import__("pathlib").Path(
                        sys.executable).parent)), reason="schemathesis (st) is not installed")
@pytest_twisted.inlineCallbacks
def test_schemathesis_finds_no_mismatch_between_document_and_implementation(api, tmp_path):
    """schemathesis generates requests from the OpenAPI document (valid and
    invalid, single and stateful sequences) and runs all its checks: status
    codes, content types, response schemas, Allow headers, deleted resources,
    schema-valid requests accepted and schema-violating ones rejected."""
    app, base, *_ = api
    app.registry.agent_register(MAC, "10.77.0.5", None, 1.0)
    st = str(__import__("pathlib").Path(sys.executable).parent / "st")

    def run(*extra):
        return subprocess.run(
            [st, "run", f"{base}/api/v1/openapi.json", "--url", base,
             "--checks", "all", "--exclude-path", "/api/v1/events/stream",
             "--max-examples", "40", "-H", f"Authorization: Bearer {TOKEN}",
             "--request-timeout", "10", "--seed", "7", *extra],
            capture_output=True, text=True, timeout=240)
    # Networks take a template (free text, TOML or OpenNebula syntax): a
    # schema-valid string is not a valid network; a medium's static address has
    # cross-field rules (dns/gateway need ip, the gateway inside its network)
    # that OpenAPI cannot state.  So that one check is off for those two only.
    cross_field = "^/api/v1/(networks|accounts/[^/]+/media)"
    r = yield threads.deferToThread(run, "--include-path-regex", cross_field,
                                    "--exclude-checks", "positive_data_acceptance")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    r = yield threads.deferToThread(run, "--exclude-path-regex", cross_field)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


# -- the route table, the document and the validators agree ------------------------
def test_the_document_lists_exactly_the_route_table_with_its_auth():
    """The OpenAPI paths are the route table: same paths, same methods, a
    bearer requirement exactly on the admin routes, nothing else."""
    table = {(r.pattern, r.method.lower()): r.auth for r in ROUTES}
    doc = {(p, m): op for p, ops in SPEC["paths"].items() for m, op in ops.items()
           if m != "parameters"}
    assert set(doc) == set(table)
    for key, auth in table.items():
        sec = doc[key].get("security") or []
        # admin: the bearer token; agent calls after registration: the host's secret
        assert (sec == [{"bearer": []}]) == (auth == "admin"), key
        assert not sec or sec == [{"bearer": []}] or (auth == "agent" and sec == [{"agent": []}])


@pytest.mark.parametrize("ip", ["999.1.1.1", "256.0.0.1", "1.2.3.04", "1.2.3", "١.2.3.4"])
@pytest_twisted.inlineCallbacks
def test_agent_register_refuses_an_address_that_is_not_ipv4(api, ip):
    """The old check (\\d{1,3} four times) took 999.1.1.1 as an address."""
    app, base, *_ = api
    code, body = yield curl("--data", json.dumps({"mac": MAC, "ip": ip}),
                            base + "/api/v1/agent/register")
    assert code == 400 and body["error"] == "ip: not an IPv4 address", (ip, body)
    assert app.registry.get(MAC) is None


@pytest_twisted.inlineCallbacks
def test_a_kernel_in_a_subdirectory_is_accepted_as_the_document_says(api):
    """The document forbade '/' in a kernel name the code accepts; the
    code's rule (a path under the files root, never '..') is in both now."""
    import re
    app, base, *_ = api
    app.registry.agent_register(MAC, "10.77.0.5", None, 1.0)
    kernel = SPEC["components"]["schemas"]["Assign"]["oneOf"][1]["properties"]["args"][
        "properties"]["kernel"]
    names = [s["pattern"] for s in kernel["anyOf"]]
    for good in ("debian/12/vmlinuz", "tftp://10.0.0.1/vmlinuz", "a//b"):
        assert any(re.search(p, good) for p in names), good
        code, body = yield curl(*auth("--data", json.dumps(
            {"profile": "linux", "args": {"kernel": good}}),
            base + f"/api/v1/hosts/{MAC}/assign"))
        assert code == 200 and body["profile_args"]["kernel"] == good, body
    for bad in ("../etc/passwd", "a/../b", "/abs"):
        assert not any(re.search(p, bad) for p in names), bad
        code, body = yield curl(*auth("--data", json.dumps(
            {"profile": "linux", "args": {"kernel": bad}}),
            base + f"/api/v1/hosts/{MAC}/assign"))
        assert code == 400 and body["error"].startswith("kernel:"), body


@pytest_twisted.inlineCallbacks
def test_hosts_that_took_leases_show_the_lease_address_and_name(tmp_path):
    """A host made by DHCP has no address or name of its own; DNS answers
    both from its lease, and the host views (list, item, status page) now
    show them too instead of "-" (null).  A name of the host's own wins."""
    from netbootd.net.http.views import lease_lookup
    from netbootd.policy.leases import LeaseTable, whole_subnet
    from netbootd.model import ip2int
    store = Store(str(tmp_path / "state"))
    committer = GroupCommitter(reactor, store.apply, 0.001)
    table = LeaseTable([whole_subnet("lab", "10.77.0.1", 24)])
    reg = Registry()
    macs = [f"52:54:00:88:00:{i:02x}" for i in range(5)]
    now = reactor.seconds()
    for i, mac in enumerate(macs):
        reg.observe(mac, now, "eth1", 0, "PXEClient", None, [])
        reg.promote(mac, now, [])
        table.bind("lab", ip2int(f"10.77.0.{50 + i}"), b"\x01" + bytes.fromhex(
            mac.replace(":", "")), mac, now, 600, f"node-{i}")
    reg.set_hostname(macs[4], "own-name", now)
    app = HttpApp(registry=reg, submit=committer.submit, renderer=Renderer(), clock=reactor,
                  token=TOKEN, store=store, leases=lease_lookup(lambda: table, reactor))
    port = reactor.listenTCP(0, build_site(app), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        code, body = yield curl(base + "/api/v1/hosts")
        shown = {h["mac"]: (h["ip"], h["hostname"]) for h in body["hosts"]}
        assert code == 200 and shown == {
            **{m: (f"10.77.0.{50 + i}", f"node-{i}") for i, m in enumerate(macs[:4])},
            macs[4]: ("10.77.0.54", "own-name")}
        code, host = yield curl(base + f"/api/v1/hosts/{macs[1]}")
        assert (host["ip"], host["hostname"]) == ("10.77.0.51", "node-1")
        code, body = yield curl(base + "/api/v1/hosts?q=node-2")
        assert [h["mac"] for h in body["hosts"]] == [macs[2]]
        code, html = yield curl(base + "/")
        assert b"10.77.0.53" in html and b"node-3" in html
    finally:
        port.stopListening()
        committer.stop()
