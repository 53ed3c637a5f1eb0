"""A capture the daemon's stop cut short: from the moment storage is up, its
volume is held (no delete, export or recreate) until the agent calls back and
the capture resumes, or the host's action is replaced, or the agent stays
silent for capture.IDLE (security review M3).  A real file pool and Storage;
the service's two steps driven on a fake clock."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet import task

from netbootd.model import Host
from netbootd.net.capture import IDLE
from netbootd.net.services.storage import StorageService
from netbootd.net.storage import Refused
from netbootd.registry.hosts import Registry
from tests.net.test_api_storage import storage_for

MAC = "52:54:00:77:00:61"


def test_a_restarted_captures_volume_is_held_until_it_resumes_or_is_given_up(tmp_path):
    clock = task.Clock()
    clock.advance(1000)
    reg = Registry([Host(MAC, action={"id": 7, "action": "capture", "job": "j1",
                                      "volume": "disk1", "disk": "/dev/vda"})])
    st = storage_for(tmp_path, reg, lambda writes, reply=None: None, exports=False)
    st.pools["default"].create("disk1", 1 << 20)
    svc = StorageService(SimpleNamespace(registry=reg, reactor=clock))
    svc.storage = st
    svc._hold_restarted_captures()
    with pytest.raises(Refused, match="capture resumes into it"):
        st.refuse_in_use("disk1", "deleted")
    svc._release_holds()                              # nothing changed: still held
    assert "disk1" in st.busy
    reg.hosts[MAC].action = {"id": 8, "action": "wait"}   # an admin replaced the action
    svc._release_holds()
    st.refuse_in_use("disk1", "deleted")              # free again
    # a host that never calls back: released after IDLE
    reg.hosts[MAC].action = {"id": 9, "action": "capture", "job": "j2", "volume": "disk1"}
    svc._hold_restarted_captures()
    clock.advance(IDLE - 1)
    svc._release_holds()
    assert "disk1" in st.busy
    clock.advance(2)
    svc._release_holds()
    assert "disk1" not in st.busy
