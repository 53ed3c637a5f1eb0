"""The [dns] config section: defaults, and bad values named with where they are."""
from __future__ import annotations

import pytest

from netbootd import config


def test_dns_defaults():
    c = config.load(None).dns
    assert (c.enabled, c.port, c.domain, c.forwarders, c.ttl, c.rate_limit_qps, c.listen) == \
        (True, 53, "netboot.lan", (), 60, 200.0, "interfaces")


def test_dns_section_parses():
    c = config.parse('[dns]\nenabled = false\nport = 5353\ndomain = "lab.example"\n'
                     'forwarders = ["10.0.0.53"]\nttl = 0\nrate_limit_qps = 50\n'
                     'listen = "127.0.0.1"\n').dns
    assert (c.enabled, c.port, c.domain, c.forwarders, c.ttl, c.rate_limit_qps, c.listen) == \
        (False, 5353, "lab.example", ("10.0.0.53",), 0, 50.0, "127.0.0.1")


@pytest.mark.parametrize("text, where, what", [
    ('[dns]\ndomain = "Net_Boot"', "f.toml:2: dns.domain", "lower-case domain"),
    ('[dns]\ndomain = "x.in-addr.arpa"', "f.toml:2: dns.domain", "arpa"),
    ('[dns]\ndomain = ""', "dns.domain", "domain"),
    ('[dns]\nforwarders = ["8.8.8"]', "f.toml:2: dns.forwarders", "not an IPv4"),
    ('[dns]\nport = 0', "f.toml:2: dns.port", "port"),
    ('[dns]\nttl = 100000', "f.toml:2: dns.ttl", "0..86400"),
    ('[dns]\nrate_limit_qps = 0', "f.toml:2: dns.rate_limit_qps", "> 0"),
    ('[dns]\nlisten = "eth0"', "f.toml:2: dns.listen", "interfaces"),
    ('[dns]\nforwarder = ["10.0.0.1"]', "f.toml:2: dns.forwarder", "did you mean 'forwarders'"),
])
def test_bad_dns_values_are_named(text, where, what):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "f.toml")
    assert where in str(e.value) and what in str(e.value)
