"""The status page at / in a real browser.

A real twisted.web site (build_site, real SQLite store, group commit) on
127.0.0.1; Debian's headless Chromium driven by chromedriver over W3C
WebDriver with plain urllib (no client library).  The page talks to the real
/api/v1 routes when api.py has them (GET /api/v1/status answers in the
contract's shape); otherwise to FakeApi below, a small stand-in serving the
same JSON (docs/CONTRACT-api.md).  NETBOOTD_FAKE_API=1 forces the fake.

Browser tests skip when chromium or chromedriver is missing (scripts/setup.sh
test installs both); the HTTP-level tests (escaping in the served HTML, CSP,
static path policy) always run.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import os
import time
import urllib.error
import urllib.request

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.threads import blockingCallFromThread
from twisted.web import resource

from netbootd.model import Host, HostState
from netbootd.net.commit import GroupCommitter
from netbootd.net.http.app import HttpApp
from netbootd.net.http.common import authorized, error, json_body, send_json
from netbootd.net.http.site import build_site
from netbootd.net.http.status import Static
from netbootd.net.http.views import lease_lookup
from netbootd.model import ip2int
from netbootd.policy.leases import LeaseTable, whole_subnet
from netbootd.policy.boot import Renderer
from netbootd.registry.hosts import Registry
from netbootd.store.sqlite import Store
from netbootd.policy import inventory as inventory_policy
from netbootd.writes import HostDelete, HostWrite, InventoryWrite, event

from .webdriver import CHROMEDRIVER, CHROMIUM, OPENER, Browser, chromium_session, png_size

TOKEN = "s3cret-" * 6
XSS = "<img src=x onerror=alert(1)>"
XSS_VENDOR = '"><script>alert(2)</script>'
GOOD, EVIL, IDLE = "52:54:00:5a:00:01", "52:54:00:5a:00:02", "52:54:00:5a:00:03"
LATE = "52:54:00:5a:00:04"
PEND, RACK = "52:54:00:5a:00:05", "52:54:00:5a:00:06"
# An inventory whose strings are hostile (the agent's host controls all of them).
HOSTILE_INVENTORY = {
    "schema": 1,
    "cpu": {"model": "Xeon " + XSS, "sockets": 2, "cores": 8, "threads": 16},
    "memory": {"bytes": 32 * 1024 ** 3},
    "disks": [{"name": "sda", "bytes": 480 * 1024 ** 3, "model": XSS, "serial": XSS_VENDOR,
               "rotational": False, "transport": "sata"},
              {"name": "sdb", "bytes": 4 * 1024 ** 4, "model": "HGST HUS726T4TAL",
               "serial": "K4J1", "rotational": True, "transport": "sas"}],
    "nics": [{"name": "eno1", "mac": PEND, "driver": XSS_VENDOR, "link": True, "speed": 10000}],
    "dmi": {"system": {"vendor": XSS, "product": "PowerEdge R640", "serial": "7XJ2"}},
    "firmware": "uefi", "secure_boot": True,
}
POOL = {"name": "lab", "subnet": "10.9.0.0/24", "ranges": ["10.9.0.100-10.9.0.199"],
        "router": "10.9.0.1", "dns": ["10.9.0.1"], "domain": "lab.test", "lease_time": 3600,
        "interface": "lab0", "size": 100, "used": 37}

needs_browser = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                   reason="chromium/chromedriver not installed "
                                          "(scripts/setup.sh test)")


# -- the served world ------------------------------------------------------------
class World:
    """The site, its store and what the test puts in it."""

    def __init__(self, tmp_path):
        self.store = Store(str(tmp_path / "state"))
        self.committer = GroupCommitter(reactor, self.store.apply, 0.001)
        self.registry = Registry()
        self.pools = [dict(POOL)]
        self.transfers = [{"proto": "tftp", "client": "10.9.0.12", "file": "ipxe.efi",
                           "bytes": 393216, "size": 1048576, "started": reactor.seconds() - 3}]
        # DHCP leases: the host views show a lease's address and name when
        # the host record has none (views.lease_lookup, as the daemon wires it).
        self.leases = LeaseTable([whole_subnet("lab", "10.9.0.1", 24)])
        extra = {"store": self.store, "version": "9.9-test", "mode": "full",
                 "started": reactor.seconds() - 7200, "pools": lambda: self.pools,
                 "transfers": lambda: self.transfers,
                 "leases": lease_lookup(lambda: self.leases, reactor)}
        fields = {f.name for f in dataclasses.fields(HttpApp)}
        self.app = HttpApp(registry=self.registry, submit=self.committer.submit,
                           renderer=Renderer(), clock=reactor, token=TOKEN,
                           **{k: v for k, v in extra.items() if k in fields})
        self.site = build_site(self.app)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.fake = False

    def use_fake_api(self) -> None:
        self.fake = True
        self.site.resource.putChild(b"api", FakeApi(self))

    # reactor-thread helpers (tests call them through on_reactor)
    def add_host(self, mac, state, hostname=None, arch=7, ip=None, vendor_class=None,
                 uuid=None, steps=(), t0=None) -> None:
        now = reactor.seconds()
        t0 = now - 60 if t0 is None else t0
        h = Host(mac, state, arch, vendor_class, uuid, hostname, "lab0", t0, now, ip)
        self.registry.hosts[mac] = h
        writes = [HostWrite(h)]
        for dt, kind, detail in steps:
            writes.append(event(t0 + dt, mac, kind, **detail))
        self.committer.submit(writes)

    def add_account(self, name: str, approval: str = "auto"):
        a, writes = self.app.accounts.create(name, approval, None, {}, reactor.seconds())
        self.committer.submit(writes)
        return a

    def put_in_account(self, mac: str, account) -> None:
        h = self.registry.hosts[mac]
        h.account = account.id
        self.committer.submit([HostWrite(h)])

    def add_inventory(self, mac: str, doc: dict) -> None:
        """What the agent API stores for a posted inventory: the document with
        history, its summary on the host (registry/agent.py)."""
        clean = inventory_policy.validate(doc)
        h = self.registry.hosts[mac]
        h.hw = dict(inventory_policy.summary(clean), digest="test")
        self.committer.submit([InventoryWrite(reactor.seconds(), mac, json.dumps(clean)),
                               HostWrite(h)])

    def add_event(self, mac, kind, **detail) -> None:
        self.committer.submit([event(reactor.seconds(), mac, kind, **detail)])

    def close(self):
        self.port.stopListening()
        self.committer.stop()


def on_reactor(fn, *args, **kw):
    """Run fn on the reactor thread from a test's worker thread; wait for it."""
    return blockingCallFromThread(reactor, fn, *args, **kw)


def settle(world: World) -> None:
    on_reactor(world.committer.drain)


def seed(world: World) -> None:
    world.add_host(GOOD, HostState.ACTIVE, "web-01", 7, "10.9.0.11", "PXEClient:Arch:00007",
                   "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0001", steps=[
                       (0.0, "dhcp.offer", {"ip": "10.9.0.11", "file": "ipxe.efi"}),
                       (0.2, "dhcp.ack", {"ip": "10.9.0.11", "file": "ipxe.efi"}),
                       (1.1, "tftp.finished", {"file": "ipxe.efi", "bytes": 1048576}),
                       (3.0, "dhcp.offer", {"ip": "10.9.0.11"}),
                       (3.1, "dhcp.ack", {"ip": "10.9.0.11"}),
                       (3.3, "http.script", {"profile": "discover", "bytes": 412}),
                       (4.0, "http.file", {"path": "netbootd/vmlinuz", "status": 200,
                                           "bytes": 8000000}),
                       (6.5, "http.file", {"path": "netbootd/discover.img", "status": 200,
                                           "bytes": 3000000}),
                       (12.0, "agent.register", {"ip": "10.9.0.11"})])
    world.add_host(EVIL, HostState.DISCOVERED, XSS, 0, "10.9.0.12", XSS_VENDOR,
                   "8a7c3f5e-1b2d-4c3e-9f10-77aa00bb0002", steps=[
                       (0.0, "dhcp.offer", {"ip": "10.9.0.12", "file": "undionly.kpxe",
                                            "hostname": XSS}),
                       (0.1, "dhcp.ack", {"ip": "10.9.0.12", "file": "undionly.kpxe"}),
                       (0.4, "tftp.refused", {"file": XSS, "bytes": 0,
                                              "error": "file not found"})])
    world.add_host(IDLE, HostState.IDLE, None, 7, "10.9.0.13", steps=[
        (0.0, "dhcp.offer", {"ip": "10.9.0.13"}),
        (0.1, "dhcp.ack", {"ip": "10.9.0.13"}),
        (0.5, "http.script", {"profile": "discover", "bytes": 412}),
        (0.9, "http.file", {"path": "netbootd/vmlinuz", "status": 404, "bytes": 0})])


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    seed(w)
    yield w
    w.close()


def api_mode(world: World) -> str:
    """'real' when api.py serves /api/v1/status in the contract's shape,
    else switch the site to FakeApi ('fake').  Runs in a worker thread."""
    if os.environ.get("NETBOOTD_FAKE_API") != "1":
        try:
            code, body, _ = fetch(world.base + "/api/v1/status")
            doc = json.loads(body)
            if code == 200 and {"version", "mode", "hosts", "pools", "transfers",
                                "events"} <= set(doc):
                return "real"
        except (OSError, ValueError):
            pass
    on_reactor(world.use_fake_api)
    return "fake"


# -- the stand-in API (docs/CONTRACT-api.md shapes) -----------------------------------
def _host(h, last):
    d = dataclasses.asdict(h)
    d["state"] = h.state.value
    d["arch_name"] = {0: "x86-bios", 7: "x64-uefi"}.get(h.arch)
    d["last_event"] = last
    return d


def _events(world, where="", args=(), limit=50):
    rows = world.store.query(f"SELECT id, ts, mac, kind, detail FROM events {where} "
                             f"ORDER BY id DESC LIMIT ?", tuple(args) + (limit,))
    return [{"id": r["id"], "ts": r["ts"], "mac": r["mac"], "kind": r["kind"],
             "detail": json.loads(r["detail"])} for r in reversed(rows)]


class FakeApi(resource.Resource):
    """/api/v1/{status,hosts,hosts/<mac>[/action]}: just what the page uses."""
    isLeaf = True

    def __init__(self, world: World):
        super().__init__()
        self.w = world

    def _last(self, mac):
        ev = _events(self.w, "WHERE mac = ?", (mac,), 1)
        return ev[-1] if ev else None

    def render_GET(self, request):
        w, path = self.w, [p.decode() for p in request.postpath]
        if path == ["v1", "status"]:
            counts = {}
            for h in w.registry.hosts.values():
                counts[h.state.value] = counts.get(h.state.value, 0) + 1
            return send_json(request, 200, {
                "version": "9.9-test", "mode": "full", "started": reactor.seconds() - 7200,
                "now": reactor.seconds(), "hosts": counts, "pools": w.pools,
                "transfers": w.transfers, "events": _events(w)})
        if path == ["v1", "hosts"]:
            hosts = sorted(w.registry.hosts.values(), key=lambda h: (h.first_seen, h.mac))
            return send_json(request, 200, {
                "hosts": [_host(h, self._last(h.mac)) for h in hosts[:50]], "next": None,
                "total": len(hosts), "counts": {"hosts": len(hosts), "states": {}, "seen": 0}})
        if len(path) == 3 and path[:2] == ["v1", "hosts"]:
            h = w.registry.get(path[2])
            if h is None:
                return error(request, 404, f"no host {path[2]}")
            tl = _events(w, "WHERE mac = ?", (h.mac,), 200)
            return send_json(request, 200, dict(_host(h, tl[-1] if tl else None), timeline=tl))
        return error(request, 404, "no such route")

    def _change(self, request, mac, state, **more):
        h = self.w.registry.get(mac)
        if h is None:
            return error(request, 404, f"no host {mac}")
        now = reactor.seconds()
        writes = [event(now, mac, "host.state", old=h.state.value, new=state.value)]
        h.state = state
        for k, v in more.items():
            setattr(h, k, v)
        writes.append(HostWrite(h))
        self.w.committer.submit(writes)
        return send_json(request, 200, _host(h, None))

    def render_POST(self, request):
        if not authorized(request, self.w.app.token):
            return error(request, 401, "missing or bad bearer token")
        path = [p.decode() for p in request.postpath]
        if len(path) != 4 or path[:2] != ["v1", "hosts"]:
            return error(request, 404, "no such route")
        mac, action = path[2], path[3]
        if action == "retire":
            return self._change(request, mac, HostState.RETIRED)
        if action == "approve":
            return self._change(request, mac, HostState.REGISTERED)
        if action == "assign":
            body, err = json_body(request)
            if err:
                return err
            if body.get("profile") == "linux" and not (body.get("args") or {}).get("kernel"):
                return error(request, 400, "kernel: required for profile 'linux'")
            return self._change(request, mac, HostState.ASSIGNED, profile=body.get("profile"),
                                profile_args=body.get("args") or {})
        return error(request, 404, "unknown action")

    def render_DELETE(self, request):
        if not authorized(request, self.w.app.token):
            return error(request, 401, "missing or bad bearer token")
        mac = request.postpath[-1].decode()
        if self.w.registry.hosts.pop(mac, None) is None:
            return error(request, 404, f"no host {mac}")
        self.w.committer.submit([HostDelete(mac)])
        return send_json(request, 200, {"deleted": mac})


# -- plain HTTP ------------------------------------------------------------------------
def fetch(url: str, method: str = "GET") -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, method=method)
    try:
        with OPENER.open(req, timeout=10) as r:
            return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def raw_get(base: str, path: str) -> int:
    """GET with the path sent exactly as written (no client-side normalizing)."""
    host, port = base.rsplit("/", 1)[-1].split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def in_thread(fn, *args):
    return threads.deferToThread(fn, *args)


@pytest_twisted.inlineCallbacks
def test_served_html_escapes_host_strings_and_has_no_inline_script(world):
    """The server-rendered page carries the hostile hostname/vendor class only as
    escaped text, under a CSP that allows no inline script or style."""
    def check():
        settle(world)
        code, body, headers = fetch(world.base + "/")
        html = body.decode()
        assert code == 200 and headers["content-type"].startswith("text/html")
        csp = headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "<img" not in html and "<script>alert" not in html
        # One script element, external, and no inline handlers or styles.
        assert html.count("<script") == 1 and '<script src="/static/status.js" defer>' in html
        assert " onerror=" not in html.replace("onerror=alert(1)&gt;", "")
        assert " style=" not in html
        # The first paint is complete: hosts, pool bar, transfer progress.
        for mac in (GOOD, EVIL, IDLE):
            assert f'data-mac="{mac}"' in html
        # (pools, transfers and the store reach the page through HttpApp fields
        # the admin API adds; before those, the script fills them on its first poll)
        fields = {f.name for f in dataclasses.fields(HttpApp)}
        if "pools" in fields:
            assert 'class="pool-bar"' in html and "37/100" in html
        if "transfers" in fields:
            assert "<progress" in html
        if "store" in fields:
            # last steps and recent events come from the store, escaped too
            assert '<td class="last failed">tftp.refused' in html
            assert "file=&lt;img src=x onerror=alert(1)&gt;" in html
    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_static_files_follow_the_path_policy(world, tmp_path):
    """/static serves the page's own script and style with exact types and
    refuses '..', unknown types and symlinks leading out of its root."""
    outside = tmp_path / "outside.js"
    outside.write_text("secret")
    root = tmp_path / "static-root"
    root.mkdir()
    (root / "ok.js").write_text("1;")
    os.symlink(outside, root / "leak.js")
    world.site.resource.putChild(b"static-test", Static(str(root)))

    def check():
        code, body, h = fetch(world.base + "/static/status.js")
        assert code == 200 and h["content-type"].startswith("text/javascript")
        assert b"textContent" in body and h["x-content-type-options"] == "nosniff"
        code, _, h = fetch(world.base + "/static/status.css")
        assert code == 200 and h["content-type"].startswith("text/css")
        assert fetch(world.base + "/static/nope.js")[0] == 404
        assert fetch(world.base + "/static/__init__.py")[0] == 404     # not a static type
        assert raw_get(world.base, "/static/../web/__init__.py") in (400, 404)
        assert raw_get(world.base, "/static/..%2Fstatus.js") in (400, 404)
        assert fetch(world.base + "/static-test/ok.js")[0] == 200
        assert fetch(world.base + "/static-test/leak.js")[0] == 403
        assert fetch(world.base + "/static/status.js", "POST")[0] == 405
    yield in_thread(check)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium/chromedriver not installed (scripts/setup.sh test)")
    with chromium_session() as b:
        yield b


def open_page(b: Browser, world: World) -> str:
    """Load / and wait for the script's first successful poll; returns the API mode."""
    settle(world)
    mode = api_mode(world)
    b.console()                                  # drop what earlier tests logged
    b.get(world.base + "/")
    b.wait("return document.getElementById('live').classList.contains('ok')",
           what="first poll")
    return mode


def console_errors(b: Browser) -> list[str]:
    """SEVERE console entries but the favicon's 404 (the site has none)."""
    return [e["message"] for e in b.console()
            if e.get("level") == "SEVERE" and "favicon.ico" not in e.get("message", "")]


HOST_ROWS = """return Array.from(document.querySelectorAll('#hosts tbody tr.host')).map(tr =>
  Array.from(tr.cells).slice(0, 7).map(td => td.textContent.trim()))"""


def run(fn, *args):
    """A browser scenario runs in a worker thread (WebDriver calls block) while
    the reactor serves the page."""
    return in_thread(fn, *args)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_hosts_table_lists_hosts_with_state_account_arch_ip_and_last_step(world, browser):
    def scenario():
        mode = open_page(browser, world)
        rows = {r[0]: r for r in browser.js(HOST_ROWS)}
        assert set(rows) == {GOOD, EVIL, IDLE}, mode
        assert rows[GOOD][1:6] == ["web-01", "active", "-", "x64-uefi", "10.9.0.11"]
        assert rows[GOOD][6].startswith("agent.register")
        assert rows[EVIL][2] == "discovered" and rows[EVIL][4] == "x86-bios"
        assert rows[EVIL][6].startswith("tftp.refused")
        assert rows[IDLE][1] == "-" and rows[IDLE][6].startswith("http.file")
        # the failed last steps are marked as such
        failed = browser.js("return Array.from(document.querySelectorAll("
                            "'#hosts tr.host td.last.failed')).map(td => td.parentNode.dataset.mac)")
        assert sorted(failed) == sorted([EVIL, IDLE])
        assert browser.text("#counts").split() == ["active", "1", "discovered", "1", "idle", "1"]
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_the_page_shows_one_page_of_hosts_with_the_counts_and_pages_through(world, browser):
    """120 more hosts and 30 MACs only seen on DHCP: the page shows 50 rows,
    the total and a 'seen' count; next/prev walk the pages; a filter asks the
    server; the first paint is one page too."""
    def more():
        t0 = reactor.seconds() - 30
        for i in range(120):
            world.add_host(f"52:54:00:6b:00:{i:02x}", HostState.IDLE, t0=t0 + i)
        for i in range(30):
            world.registry.observe(f"52:54:00:6c:00:{i:02x}", reactor.seconds(), "lab0", 7,
                                   None, None, [])

    def scenario():
        on_reactor(more)
        code, html, _ = fetch(world.base + "/")
        assert code == 200 and html.count(b'<tr class="host"') == 50
        assert b'<small id="host-total">123</small>' in html and b"seen 30" in html
        open_page(browser, world)
        rows = lambda: [r[0] for r in browser.js(HOST_ROWS)]      # noqa: E731
        first = rows()
        assert len(first) == 50 and browser.text("#host-total") == "123"
        assert browser.text("#host-range") == "1\u201350 of 123"
        assert "seen 30" in browser.text("#counts")
        browser.click("#host-next")
        browser.wait("return document.getElementById('host-range').textContent"
                     " === '51\u2013100 of 123'", what="page 2")
        second = rows()
        assert len(second) == 50 and not set(first) & set(second)
        browser.click("#host-next")
        browser.wait("return document.getElementById('host-range').textContent"
                     " === '101\u2013123 of 123'", what="page 3")
        assert len(rows()) == 23 and browser.js("return document.getElementById("
                                                "'host-next').disabled") is True
        browser.click("#host-prev")
        browser.wait("return document.getElementById('host-range').textContent"
                     " === '51\u2013100 of 123'", what="back to page 2")
        assert rows() == second
        browser.js("const f = document.getElementById('host-filter'); f.value = 'web-01';"
                   "f.dispatchEvent(new Event('input'))")
        browser.wait("return document.getElementById('host-range').textContent"
                     " === '1\u20131 of 1'", what="the filtered page")
        assert rows() == [GOOD]
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_hostile_hostname_renders_as_text_without_an_img_or_alert(world, browser):
    def scenario():
        open_page(browser, world)
        # Rows rebuilt by the script (data-sig) show the exact string as text.
        got = browser.js("const tr = document.querySelector('#hosts tr.host[data-mac=\"' + "
                         "arguments[0] + '\"]'); return [tr.dataset.sig !== undefined, "
                         "tr.querySelector('.hostname').textContent]", EVIL)
        assert got == [True, XSS]
        browser.click(f'#hosts tr.host[data-mac="{EVIL}"] td.mac')
        browser.wait("return document.querySelectorAll('#timeline li.step').length === 3",
                     what="timeline of the hostile host")
        facts = browser.text("#detail-facts")
        assert XSS in facts and XSS_VENDOR in facts
        assert XSS in browser.text("#timeline") and XSS in browser.text("#events")
        assert browser.js("return document.querySelectorAll('img').length") == 0
        assert browser.js("return document.scripts.length") == 1
        time.sleep(0.5)
        assert not browser.alert_open()
        assert console_errors(browser) == []     # no CSP violation, no script error
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_clicking_a_host_shows_its_boot_timeline_with_the_failure_highlighted(world, browser):
    def scenario():
        open_page(browser, world)
        browser.click(f'#hosts tr.host[data-mac="{IDLE}"] td.mac')
        steps = browser.wait(
            "const s = Array.from(document.querySelectorAll('#timeline li.step'));"
            "return s.length === 4 && s.map(li => [li.dataset.kind, li.className,"
            " li.querySelector('.t').textContent])", what="timeline")
        assert [s[0] for s in steps] == ["dhcp.offer", "dhcp.ack", "http.script", "http.file"]
        assert [s[2] for s in steps] == ["+0.000s", "+0.100s", "+0.500s", "+0.900s"]
        assert "failed" in steps[3][1].split() and "phase-HTTP" in steps[3][1].split()
        assert not any("failed" in s[1].split() for s in steps[:3])
        assert browser.text("#verdict").startswith("failed at http.file: HTTP 404")
        assert "selected" in browser.js(
            f"return document.querySelector('#hosts tr[data-mac=\"{IDLE}\"]').className")
        # A good boot, split into DHCP -> TFTP -> HTTP -> agent, times from its first step.
        browser.click(f'#hosts tr.host[data-mac="{GOOD}"] td.mac')
        steps = browser.wait(
            "const s = Array.from(document.querySelectorAll('#timeline li.step'));"
            "return s.length === 9 && s.map(li => [li.dataset.kind,"
            " li.querySelector('.phase').textContent, li.querySelector('.t').textContent,"
            " li.querySelector('.num').textContent, li.classList.contains('failed')])",
            what="good timeline")
        assert [s[1] for s in steps] == ["DHCP", "DHCP", "TFTP", "DHCP", "DHCP", "HTTP", "HTTP",
                                        "HTTP", "agent"]
        assert steps[2][2:] == ["+1.100s", "1.0 MiB", False] and steps[-1][2] == "+12.0s"
        assert not any(s[4] for s in steps)
        assert browser.text("#verdict") == "booted: the agent called back"
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_pool_usage_bar_and_transfer_progress_are_shown(world, browser):
    def scenario():
        open_page(browser, world)
        pool = browser.js("const m = document.querySelector('#pools tr.pool meter.pool-bar');"
                          "return m && [m.value, m.max, m.closest('tr').textContent]")
        assert pool[:2] == [37, 100] and "10.9.0.0/24" in pool[2] and "37%" in pool[2]
        prog = browser.js("const p = document.querySelector('#transfers progress');"
                          "return p && [p.value, p.max, p.closest('tr').textContent]")
        assert prog[:2] == [393216, 1048576] and "ipxe.efi" in prog[2]
        assert "384.0 KiB / 1.0 MiB" in prog[2]
        # usage changes live
        on_reactor(lambda: world.pools[0].update(used=91))
        browser.wait("return document.querySelector('#pools meter').value === 91",
                     what="pool usage update")
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_new_host_and_event_appear_without_reload(world, browser):
    def scenario():
        open_page(browser, world)
        browser.js("window.__notReloaded = 42")
        t0 = time.monotonic()
        on_reactor(world.add_host, LATE, HostState.DISCOVERED, "late-comer", 7, "10.9.0.14",
                   steps=[(0.0, "dhcp.offer", {"ip": "10.9.0.14"})], t0=reactor.seconds())
        on_reactor(world.add_event, IDLE, "dhcp.nak", ip="10.9.0.99", reason="wrong network")
        browser.wait(f"return !!document.querySelector('#hosts tr.host[data-mac=\"{LATE}\"]')",
                     timeout=6, what="the new host's row")
        browser.wait("return Array.from(document.querySelectorAll('#events tr.event.failed'))"
                     ".some(tr => tr.textContent.includes('dhcp.nak'))",
                     timeout=6, what="the new event")
        assert time.monotonic() - t0 < 6
        assert browser.js("return window.__notReloaded") == 42
        assert browser.text("#host-total") == "4"
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_actions_need_a_token_and_retire_changes_the_state_on_the_page(world, browser):
    def scenario():
        open_page(browser, world)
        assert browser.js("return document.querySelectorAll('button[data-action]').length") == 0
        assert browser.js("return getComputedStyle(document.querySelector("
                          "'#hosts th.admin-only')).display") == "none"
        # A wrong token: the action is offered, the API's JSON error is shown.
        browser.type("#token", "wrong-token")
        browser.click("#token-use")
        browser.wait("return document.querySelectorAll('button[data-action]').length > 0",
                     what="action buttons")
        browser.click(f'#hosts tr[data-mac="{GOOD}"] button[data-action="retire"]')
        err = browser.wait("const e = document.getElementById('error');"
                           "return !e.hidden && e.className === 'error' && e.textContent",
                           what="error banner")
        assert err == f"retire {GOOD}: missing or bad bearer token"
        assert world.registry.get(GOOD).state == HostState.ACTIVE
        # The right token (kept in sessionStorage, sent as Authorization: Bearer).
        browser.click("#token-forget")
        assert browser.js("return document.querySelectorAll('button[data-action]').length") == 0
        browser.type("#token", TOKEN)
        browser.click("#token-use")
        assert browser.js("return sessionStorage.getItem('netbootd.token')") == TOKEN
        browser.wait("return document.querySelectorAll('button[data-action]').length > 0",
                     what="action buttons")
        browser.click(f'#hosts tr[data-mac="{GOOD}"] button[data-action="retire"]')
        browser.wait(f"return document.querySelector('#hosts tr[data-mac=\"{GOOD}\"] "
                     f"td.state').textContent === 'retired'", what="retired state")
        assert world.registry.get(GOOD).state == HostState.RETIRED
        # Assign linux with kernel/initrd/cmdline from the host panel.
        browser.click(f'#hosts tr[data-mac="{IDLE}"] button[data-action="assign"]')
        browser.wait("return !!document.querySelector('#assign-form')", what="assign form")
        browser.js("const s = document.getElementById('assign-profile'); s.value = 'linux';"
                   "s.dispatchEvent(new Event('change'))")
        browser.type('#assign-fields input[data-arg="kernel"]',
                     "http://10.9.0.1:8080/files/debian/vmlinuz")
        browser.type('#assign-fields input[data-arg="initrds"]',
                     "http://10.9.0.1:8080/files/debian/initrd.gz")
        browser.type('#assign-fields input[data-arg="cmdline"]', "console=ttyS0 quiet")
        browser.click("#assign-form button[type=submit]")
        browser.wait(f"return document.querySelector('#hosts tr[data-mac=\"{IDLE}\"] "
                     f"td.state').textContent === 'assigned'", what="assigned state")
        h = world.registry.get(IDLE)
        assert h.profile == "linux" and h.profile_args["kernel"].endswith("/vmlinuz")
        assert h.profile_args["initrds"] == ["http://10.9.0.1:8080/files/debian/initrd.gz"]
        assert h.profile_args["cmdline"] == "console=ttyS0 quiet"
        # Approve the discovered host; delete needs a second click.
        browser.click(f'#hosts tr[data-mac="{EVIL}"] button[data-action="approve"]')
        browser.wait(f"return document.querySelector('#hosts tr[data-mac=\"{EVIL}\"] "
                     f"td.state').textContent === 'registered'", what="registered state")
        browser.click(f'#hosts tr[data-mac="{GOOD}"] button[data-action="delete"]')
        assert GOOD in world.registry.hosts
        browser.click(f'#hosts tr[data-mac="{GOOD}"] button[data-action="delete"].armed')
        browser.wait(f"return !document.querySelector('#hosts tr[data-mac=\"{GOOD}\"]')",
                     what="deleted row")
        assert GOOD not in world.registry.hosts
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_screenshot_of_the_page_with_a_failed_boot_open(world, browser, tmp_path):
    def shoot(name: str) -> None:
        png = browser.screenshot()
        out = tmp_path / name
        out.write_bytes(png)
        print(f"screenshot: {out}")
        w, h = png_size(png)
        assert w >= 800 and h >= 600 and len(png) > 20000

    def scenario():
        on_reactor(enroll, world)
        open_page(browser, world)
        shoot("status-overview.png")             # read-only, no host selected
        browser.type("#token", TOKEN)
        browser.click("#token-use")
        browser.click(f'#hosts tr.host[data-mac="{EVIL}"] td.mac')
        browser.wait("return document.querySelectorAll('#timeline li.step.failed').length === 1",
                     what="failed step")
        shoot("status-page.png")                 # admin, the failed boot open
        browser.click(f'#hosts tr.host[data-mac="{PEND}"] td.mac')
        browser.wait("return document.querySelectorAll('#inventory table.disks').length === 1",
                     what="inventory")
        shoot("status-inventory.png")            # a pending host's hardware
        assert console_errors(browser) == []
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_hosts_that_took_dhcp_leases_show_the_lease_address_and_hostname(world, browser):
    """Hosts made by DHCP have no address or name of their own; DNS answers
    both from their leases, and the page showed "-" for both.  It shows the
    lease's now, on the first paint and after the script's polls."""
    dhcp = [f"52:54:00:5a:01:{i:02x}" for i in range(5)]

    def add():
        now = reactor.seconds()
        for i, mac in enumerate(dhcp):
            world.add_host(mac, HostState.DISCOVERED, arch=7)
            world.leases.bind("lab", ip2int(f"10.9.0.{120 + i}"), b"\x01" + bytes.fromhex(
                mac.replace(":", "")), mac, now, 600, f"pxe-{i}")

    def scenario():
        on_reactor(add)
        open_page(browser, world)
        rows = {r[0]: r for r in browser.js(HOST_ROWS)}
        for i, mac in enumerate(dhcp):
            assert rows[mac][1] == f"pxe-{i}" and rows[mac][5] == f"10.9.0.{120 + i}", rows[mac]
        assert rows[IDLE][1] == "-"                 # no lease, no name: still "-"
        code, body, _ = fetch(world.base + "/")
        assert b"pxe-3" in body and b"10.9.0.123" in body
    yield run(scenario)


def enroll(world: World) -> None:
    """Two accounts: rack-a (manual approval) holds GOOD and a pending host
    with a hostile inventory; rack-b holds RACK; EVIL and IDLE are in none."""
    a = world.add_account("rack-a", "manual")
    b = world.add_account("rack-b")
    world.put_in_account(GOOD, a)
    world.add_host(PEND, HostState.PENDING, "pend-01", 7, "10.9.0.15", steps=[
        (0.0, "agent.register", {"ip": "10.9.0.15"})])
    world.put_in_account(PEND, a)
    world.add_inventory(PEND, HOSTILE_INVENTORY)
    world.add_host(RACK, HostState.IDLE, "rack-b-01", 7, "10.9.0.16")
    world.put_in_account(RACK, b)


def page_macs(b: Browser) -> list[str]:
    return sorted(r[0] for r in b.js(HOST_ROWS))


def filter_hosts(b: Browser, field: str, value: str, shown: str) -> list[str]:
    """Set a host filter (#account-filter, #host-filter) as a user would, wait
    for the page range `shown` ('1-2 of 2'), return the MACs on the page."""
    event = "change" if field == "account-filter" else "input"
    b.js(f"const f = document.getElementById('{field}'); f.value = arguments[0];"
         f"f.dispatchEvent(new Event('{event}'))", value)
    b.wait("return document.getElementById('host-range').textContent === arguments[0]",
           shown.replace("-", "\u2013"), what=f"{field} {value}")
    return page_macs(b)


def reload_at(b: Browser, url: str) -> None:
    b.get(url)
    b.wait("return document.getElementById('live').classList.contains('ok')", what="first poll")


@pytest_twisted.inlineCallbacks
def test_served_html_shows_accounts_filters_by_account_and_the_hardware(world):
    def check():
        on_reactor(enroll, world)
        settle(world)
        code, body, _ = fetch(world.base + "/")
        html = body.decode()
        assert code == 200 and '<td class="account">rack-a</td>' in html
        assert '<option value="rack-b">rack-b</option>' in html
        assert '<span class="chip state-pending">pending</span>' in html
        assert '<td class="hw">8c/16t 32.0 GiB 2 disks 4.5 TiB 1 nic uefi</td>' in html
        assert "<img" not in html
        code, body, _ = fetch(world.base + "/?account=rack-a")
        html = body.decode()
        assert sorted(html.count(f'data-mac="{m}"') for m in (GOOD, PEND, EVIL, RACK)) == \
            [0, 0, 1, 1] and f'data-mac="{EVIL}"' not in html
        assert '<option value="rack-a" selected>rack-a</option>' in html
        code, body, _ = fetch(world.base + "/?account=-")
        assert {m for m in (GOOD, EVIL, IDLE, PEND, RACK)
                if f'data-mac="{m}"'.encode() in body} == {EVIL, IDLE}
        code, body, _ = fetch(world.base + "/?account=%3Cscript%3E")
        assert code == 200 and b'class="host"' not in body and b"<script>" not in body
        assert b"&lt;script&gt; (no such account)" in body
    yield in_thread(check)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_account_column_and_filter_and_the_pending_state(world, browser):
    def scenario():
        on_reactor(enroll, world)
        open_page(browser, world)
        rows = {r[0]: r for r in browser.js(HOST_ROWS)}
        assert {m: rows[m][3] for m in rows} == {GOOD: "rack-a", PEND: "rack-a", RACK: "rack-b",
                                                 EVIL: "-", IDLE: "-"}
        chip = f'#hosts tr[data-mac="{PEND}"] td.state .chip'
        assert browser.js(f"return document.querySelector('{chip}').className") == \
            "chip state-pending"
        assert browser.js(f"return getComputedStyle(document.querySelector('{chip}'))"
                          ".backgroundColor") not in ("rgba(0, 0, 0, 0)", "rgb(229, 231, 235)")
        assert browser.js("return Array.from(document.querySelectorAll('#account-filter option'))"
                          ".map(o => o.value)") == ["", "-", "rack-a", "rack-b"]
        assert filter_hosts(browser, "account-filter", "rack-a", "1-2 of 2") == \
            sorted([GOOD, PEND])
        assert browser.js("return location.search") == "?account=rack-a"
        assert filter_hosts(browser, "account-filter", "-", "1-2 of 2") == sorted([EVIL, IDLE])
        # the filter in the URL holds on a fresh load; a state filter narrows it
        reload_at(browser, world.base + "/?account=rack-b")
        assert page_macs(browser) == [RACK]
        assert browser.js("return document.getElementById('account-filter').value") == "rack-b"
        reload_at(browser, world.base + "/?account=rack-a")
        assert filter_hosts(browser, "host-filter", "pending", "1-1 of 1") == [PEND]
        # an admin approves the pending host from its row
        browser.type("#token", TOKEN)
        browser.click("#token-use")
        browser.click(f'#hosts tr[data-mac="{PEND}"] button[data-action="approve"]')
        browser.wait(f"return !document.querySelector('#hosts tr[data-mac=\"{PEND}\"]') ||"
                     f" document.querySelector('#hosts tr[data-mac=\"{PEND}\"] td.state')"
                     ".textContent !== 'pending'", what="approved")
        assert world.registry.get(PEND).state != HostState.PENDING
        # ... and queues a poweroff for its agent from the host's detail
        reload_at(browser, world.base + "/")
        browser.click(f'#hosts tr.host[data-mac="{PEND}"] td.mac')
        browser.wait("return !!document.querySelector('#agent-actions')", what="agent actions")
        browser.click('#agent-actions button[data-agent="poweroff"]')
        browser.wait("return document.getElementById('detail-facts').textContent"
                     ".includes('poweroff (id ')", what="the pending action")
        assert world.registry.get(PEND).action["action"] == "poweroff"
        assert console_errors(browser) == []
    yield run(scenario)


@needs_browser
@pytest_twisted.inlineCallbacks
def test_hardware_at_a_glance_and_a_hostile_inventory_shown_as_text(world, browser):
    def scenario():
        on_reactor(enroll, world)
        open_page(browser, world)
        hw = browser.js(f"return document.querySelector('#hosts tr[data-mac=\"{PEND}\"] "
                        "td.hw').textContent")
        assert hw == "8c/16t 32.0 GiB 2 disks 4.5 TiB 1 nic uefi"
        browser.click(f'#hosts tr.host[data-mac="{PEND}"] td.mac')
        disks = browser.wait(
            "const t = document.querySelectorAll('#inventory table.disks tbody tr');"
            "return t.length === 2 && Array.from(t).map(tr => Array.from(tr.cells)"
            ".map(td => td.textContent))", what="the inventory's disks")
        assert disks[0] == ["sda", "480.0 GiB", XSS, XSS_VENDOR, "no", "sata"]
        assert disks[1][:2] == ["sdb", "4.0 TiB"] and disks[1][4] == "yes"
        nics = browser.js("return Array.from(document.querySelectorAll("
                          "'#inventory table.nics tbody td')).map(td => td.textContent)")
        assert nics == ["eno1", PEND, XSS_VENDOR, "yes", "10000 Mb/s"]
        inv = browser.text("#inventory-facts")
        assert "Xeon " + XSS + " (2 sockets, 8 cores, 16 threads)" in inv
        assert XSS + " PowerEdge R640 serial 7XJ2" in inv and "32.0 GiB" in inv
        assert "uefi" in inv and "secure boot\non" in inv
        facts = browser.text("#detail-facts")
        assert "rack-a" in facts and "pending" in facts and "serial=7XJ2" not in facts
        assert "8c/16t 32.0 GiB" in facts
        assert browser.js("return document.querySelectorAll('img, script:not([src])').length") == 0
        assert browser.js("return document.scripts.length") == 1
        time.sleep(0.5)
        assert not browser.alert_open()
        assert console_errors(browser) == []
    yield run(scenario)
