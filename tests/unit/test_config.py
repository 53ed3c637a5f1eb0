"""Config: every key optional, bad keys and values named with where they are."""
from __future__ import annotations

import subprocess
import sys

import pytest

from netbootd import config


def test_no_file_means_embedded_defaults():
    c = config.load(None)
    assert c.mode == "proxy" and c.state_dir == config.DEFAULT_STATE_DIR
    assert c.dhcp.lease_time == 3600 and c.dhcp.probe is False and c.networks == ()


def test_full_example_parses():
    c = config.parse("""
mode = "full"
interfaces = ["eth1"]
[dhcp]
lease_time = 600
probe = true
[dhcp.rate_limit]
per_mac_pps = 5
[boot]
uefi_x64 = "snponly.efi"
[[networks]]
name = "prov"
subnet = "10.0.0.0/24"
ranges = ["10.0.0.100-10.0.0.200"]
router = "10.0.0.1"
dns = ["10.0.0.1"]
[[networks.reservations]]
mac = "52-54-00-AA-BB-CC"
ip = "10.0.0.5"
hostname = "node5"
""")
    assert c.mode == "full" and c.interfaces == ("eth1",)
    assert c.dhcp.rate_limit.per_mac_pps == 5.0 and c.boot.uefi_x64 == "snponly.efi"
    assert c.networks[0].reservations[0].hostname == "node5"


@pytest.mark.parametrize("text, where, what", [
    ('mdoe = "full"', "f.toml:1: mdoe", "did you mean 'mode'"),
    ('mode = "fast"', "f.toml:1: mode", "must be one of"),
    ('[dhcp]\nleese_time = 5', "f.toml:2: dhcp.leese_time", "did you mean 'lease_time'"),
    ('[dhcp]\nlease_time = "long"', "f.toml:2: dhcp.lease_time", "not of type int"),
    ('[dhcp]\nlease_time = -1', "f.toml:2: dhcp.lease_time", "must be > 0"),
    ('[dhcp.rate_limit]\nunknown_share = 1.5', "dhcp.rate_limit.unknown_share", "fraction"),
    ('[[networks]]\nname = "a"\nsubnet = "10.0.0.1/24"', "f.toml:3: networks[0].subnet",
     "host bits"),
    ('[[networks]]\nname = "a"\nsubnet = "10.0.0.0/24"\nranges = ["10.0.1.1-10.0.1.9"]',
     "networks[0].ranges", "outside"),
    ('[[networks]]\nsubnet = "10.0.0.0/24"', "networks[0].name", "required"),
    ('[[networks]]\nname="a"\nsubnet="10.0.0.0/24"\n[[networks.reservations]]\nmac="zz"\nip="10.0.0.2"',
     "networks[0].reservations[0].mac", "not a MAC"),
    ('mode = ', "f.toml", "not valid TOML"),
    ('[boot]\nhttp_port = 70000', "f.toml:2: boot.http_port", "port"),
])
def test_bad_keys_and_values_are_named(text, where, what):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "f.toml")
    assert where in str(e.value) and what in str(e.value)


def test_config_check_command_reports_and_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[dhcp]\nlease_tme = 5\n')
    good = tmp_path / "good.toml"
    good.write_text('mode = "full"\n')
    r = subprocess.run([sys.executable, "-m", "netbootd", "config", "check", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "bad.toml:2: dhcp.lease_tme: unknown key" in r.stderr
    r = subprocess.run([sys.executable, "-m", "netbootd", "config", "check", str(good)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout
