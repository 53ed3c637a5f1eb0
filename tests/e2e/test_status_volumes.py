"""The status page's Volumes section in a real browser (issue 13): with [storage]
(a real file pool in tmp), the pool's usage bar, the volumes and the exports are
shown and kept live by status.js, with no console error; the server-rendered
first paint has them too."""
from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread

from netbootd.writes import ExportWrite

from ..net.test_api_storage import storage_for
from .test_status_page import (World, browser, console_errors, needs_browser,  # noqa: F401
                               open_page, run, seed)

MAC = "52:54:00:13:02:0a"


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    seed(w)
    w.app.storage = storage_for(tmp_path, w.registry, w.committer.submit, exports=False)
    yield w
    w.close()


@needs_browser
@pytest_twisted.inlineCallbacks
def test_the_volumes_section_shows_pool_usage_volumes_and_exports(world, browser):  # noqa: F811
    st = world.app.storage
    pool = st.pools["default"]
    pool.create("golden", 64 << 20)
    pool.clone("golden", "web01")
    base = "iqn.2026-01.lan.netboot"
    row = ExportWrite("web01", "default", MAC, f"{base}:host.52540013020a", f"{base}:vol.web01",
                      "host-52540013020a", "SeCrEtSeCrEt1234", created=1.0)

    def scenario():
        blockingCallFromThread(reactor, st.load, [row])
        open_page(browser, world)
        assert browser.js("return document.getElementById('volumes-section').hidden") is False
        names = browser.js("return Array.from(document.querySelectorAll('#volumes tr.volume'))"
                           ".map(tr => tr.cells[0].textContent)")
        assert names == ["golden", "web01"]
        assert browser.js("return document.querySelectorAll('#volume-pools meter').length") == 1
        exported = browser.js("return Array.from(document.querySelectorAll('#exports tr.export "
                              "td')).map(td => td.textContent)")
        assert exported == ["web01", MAC, f"{base}:vol.web01", "yes"]
        assert "SeCrEt" not in browser.js("return document.body.innerHTML")
        assert console_errors(browser) == []
        pool.create("late", 8 << 20)                     # appears on a later poll
        browser.wait("return Array.from(document.querySelectorAll('#volumes tr.volume'))"
                     ".some(tr => tr.cells[0].textContent === 'late')", what="the new volume")
    yield run(scenario)
