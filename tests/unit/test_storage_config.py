"""[storage] in the config (issue 13): pools and [storage.iscsi], bad keys named
with file:line, storage off without pools."""
from __future__ import annotations

import pytest

from netbootd import config

GOOD = """
[[storage.pools]]
name = "default"
root = "/srv/netbootd/volumes"
reflink = "auto"
min_free_percent = 5

[[storage.pools]]
name = "fast"
backend = "lvm"
vg = "vg0"
thin_pool = "thin"
devices = ["/dev/sdb"]
min_free_bytes = 10737418240
overcommit = 2.0

[storage.iscsi]
backend = "tgt"
portal = "10.0.0.1"
iqn_base = "iqn.2026-12.lan.netboot"
tgtd = "external"
tgtd_control = 9
chap = false
"""


def test_a_full_storage_section_loads():
    st = config.parse(GOOD).storage
    assert st.enabled and [p.name for p in st.pools] == ["default", "fast"]
    assert st.pools[0].thresholds().min_free_percent == 5.0
    assert st.pools[1].thresholds().overcommit == 2.0 and st.pools[1].devices == ("/dev/sdb",)
    ic = st.iscsi
    assert (ic.backend, ic.portal, ic.port, ic.tgtd, ic.tgtd_control, ic.chap) == \
        ("tgt", "10.0.0.1", 3260, "external", 9, False)


def test_without_pools_storage_is_off_with_defaults():
    st = config.parse("").storage
    assert not st.enabled and st.iscsi.backend == "tgt" and st.iscsi.chap is True
    assert st.iscsi.tgtd == "managed" and 1 <= st.iscsi.tgtd_control <= 32767


@pytest.mark.parametrize("text, message", [
    ('[[storage.pools]]\nname = "a"\n', "f.toml: storage.pools[0].root: is required for a file pool"),
    ('[[storage.pools]]\nname = "a"\nbackend = "lvm"\nvg = "v"\n',
     "thin_pool: is required for a lvm pool"),
    ('[[storage.pools]]\nname = "a"\nroot = "/x"\nvg = "v"\n',
     "f.toml:4: storage.pools[0].vg: only for backend 'lvm'"),
    ('[[storage.pools]]\nname = "a"\nbackend = "lvm"\nvg = "v"\nthin_pool = "t"\nreflink = false\n',
     "reflink: only for backend 'file'"),
    ('[[storage.pools]]\nname = "../x"\nroot = "/x"\n', "is not a pool name"),
    ('[[storage.pools]]\nname = "a"\nroot = "/x"\nbackend = "zfs"\n', "must be one of 'file', 'lvm'"),
    ('[[storage.pools]]\nname = "a"\nroot = "/x"\nreflink = "yes"\n', 'must be "auto", true or false'),
    ('[[storage.pools]]\nname = "a"\nroot = "/x"\nmin_free_percent = 100\n', "must be 0..<100"),
    ('[[storage.pools]]\nname = "a"\nroot = "/x"\nmin_free_bytes = -1\n', "must be >= 0"),
    ('[[storage.pools]]\nname = "a"\nroot = "/x"\n[[storage.pools]]\nname = "a"\nroot = "/y"\n',
     "duplicate pool name 'a'"),
    ('[[storage.pools]]\nname = "a"\nroot = "/x"\nsize = 3\n', "storage.pools[0].size: unknown key"),
    ('[storage.iscsi]\nbackend = "iet"\n', "must be one of 'tgt', 'lio', 'none'"),
    ('[storage.iscsi]\nportal = "10.0.0.300"\n', "is not an IPv4 address"),
    ('[storage.iscsi]\niqn_base = "iqn.2026-13.lan.x"\n', "is not of the form iqn.yyyy-mm"),
    ('[storage.iscsi]\ntgtd_control = 0\n', "0 is the system tgtd's"),
    ('[storage.iscsi]\ntgtd_control = 40000\n', "must be 1..32767"),
    ('[storage.iscsi]\ntgtd = "systemd"\n', "must be one of 'managed', 'external'"),
    ('[storage.iscsi]\nchapp = true\n', "unknown key (did you mean 'chap'?)"),
])
def test_bad_storage_keys_are_named(text, message):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "f.toml")
    assert message in str(e.value)
