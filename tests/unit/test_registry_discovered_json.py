"""host.discovered's detail, built by format on the new-client hot path
(registry.hosts._discovered_json), is byte for byte what writes.event()
encodes, for every value DHCP can put there; other types fall back."""
from __future__ import annotations

import random

from netbootd.model import Host, HostState
from netbootd.registry.hosts import Registry, _discovered_json
from netbootd.writes import HostWrite, event

ODD = ["", "v0", 'q"uote', "back\\slash", "ctl\x00\x1f\x7f", "caf\u00e9", "\U0001f600", "\ud800",
       "PXEClient:Arch:00007:UNDI:003016", "<script>"]


def _host(arch, iface, vc, uuid) -> Host:
    return Host("52:54:00:00:00:01", HostState.DISCOVERED, arch, vc, uuid, None, iface, 1.0, 1.0)


def test_the_format_equals_the_event_encoder():
    rnd = random.Random(7)
    values = [None] + ODD
    for _ in range(2000):
        arch = rnd.choice([None, 0, 7, 65535, -1, 2 ** 70])
        iface, vc, uuid = (rnd.choice(values) for _ in range(3))
        got = _discovered_json(_host(arch, iface, vc, uuid))
        want = event(1.0, "m", "host.discovered", arch=arch, interface=iface,
                     vendor_class=vc, uuid=uuid).detail
        assert got == want, (arch, iface, vc, uuid)


def test_other_types_fall_back_to_the_encoder():
    for odd in (True, 7.5, b"x", ["a"]):
        assert _discovered_json(_host(odd, "v0", None, None)) is None
        assert _discovered_json(_host(None, "v0", odd, None)) is None
    reg = Registry()
    reg.observe("52:54:00:00:00:02", 1.0, "v0", True, None, None, [])
    writes: list = []
    reg.promote("52:54:00:00:00:02", 2.0, writes)
    ev = [w for w in writes if getattr(w, "kind", None) == "host.discovered"]
    assert ev and ev[0].detail == event(2.0, "m", "x", arch=True, interface="v0",
                                        vendor_class=None, uuid=None).detail
    assert any(type(w) is HostWrite for w in writes)


def test_promote_writes_the_same_events_as_before():
    reg = Registry()
    reg.observe("52:54:00:00:00:03", 1.0, "eth1", 7, "PXEClient", "u-1", [])
    writes: list = []
    h = reg.promote("52:54:00:00:00:03", 2.0, writes)
    ev = [w for w in writes if getattr(w, "kind", None) == "host.discovered"][0]
    assert ev.ts == 2.0 and ev.mac == h.mac
    assert ev.detail == ('{"arch":7,"interface":"eth1","uuid":"u-1",'
                         '"vendor_class":"PXEClient"}')
