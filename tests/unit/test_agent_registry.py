"""registry/agent.py's rules on their own (the HTTP side is tests/net/test_agent_api.py)."""
from __future__ import annotations

import pytest

from netbootd import config
from netbootd.auth.enroll import KEY_BYTES, KeyRing
from netbootd.net.services.core import network_accounts
from netbootd.registry.accounts import Accounts
from netbootd.registry.agent import Agents, Refused
from netbootd.registry.hosts import Registry

MAC = "52:54:00:aa:00:01"


def agents(**kw):
    acc = Accounts()
    acc.create("lab", "auto", None, {}, 1.0)
    return Agents(Registry(), acc, KeyRing({"00000000": b"k" * KEY_BYTES}, "00000000"), **kw)


def test_a_network_named_in_the_config_gives_its_account_to_hosts_without_a_token():
    cfg = config.parse('[[networks]]\nname = "lab"\nsubnet = "10.9.0.0/24"\n'
                       'ranges = ["10.9.0.10-10.9.0.20"]\naccount = "lab"\n')
    lookup = network_accounts(cfg)
    assert lookup("10.9.0.15") == "lab" and lookup("10.8.0.1") is None
    assert lookup("not-an-ip") is None
    a = agents(network_account=lookup)
    reply, _ = a.register(MAC, None, None, None, None, "10.9.0.15", 2.0)
    assert reply["account"] == "lab" and reply["state"] == "idle"
    reply, _ = a.register("52:54:00:aa:00:02", None, None, None, None, "10.8.0.1", 2.0)
    assert reply["account"] is None and reply["state"] == "registered"


def test_a_refusal_flood_costs_a_bounded_number_of_events():
    a = agents()
    stored = 0
    for i in range(200):
        with pytest.raises(Refused) as e:
            a.register(MAC, None, None, "nbt1.bad.bad", None, "10.0.0.9", 100.0 + i * 0.01)
        stored += len(e.value.writes)
    assert stored <= 6, stored
    # past the burst of refusals the source is answered 429 without a check
    assert a.counters["refused.malformed token"] == 11
    assert e.value.status == 429 and a.counters["refused.blocked_source"] == 189
    reply, _ = a.register(MAC, None, None, None, None, "10.0.0.10", 103.0)
    assert reply["mac"] == MAC, "another address is not blocked"
    reply, _ = a.register("52:54:00:aa:00:02", None, None, None, None, "10.0.0.9", 140.0)
    assert reply["state"] == "registered", "the block ends"


def test_queue_validates_the_action_and_wait_clears_it():
    a = agents()
    a.register(MAC, None, None, None, None, "10.0.0.9", 1.0)
    h = a.registry.hosts[MAC]
    with pytest.raises(Refused) as e:
        a.queue(h, {"action": "format"}, 2.0)
    assert e.value.status == 400 and e.value.reason.startswith("action:")
    a.queue(h, {"action": "poweroff"}, 2.0)
    assert a.next(h, 3.0, "http://x")[0]["action"] == "poweroff"
    a.queue(h, {"action": "wait"}, 4.0)
    assert h.action is None and a.next(h, 5.0, "http://x")[0]["action"] == "wait"


def test_a_mac_with_a_lease_registers_only_from_its_leased_address():
    a = agents()
    leased = {MAC: "10.0.0.50"}.get
    with pytest.raises(Refused) as e:
        a.register(MAC, "10.0.0.50", None, None, None, "10.0.0.66", 1.0, leased)
    assert e.value.status == 409 and "lease" in e.value.reason and MAC not in a.registry.hosts
    reply, _ = a.register(MAC, None, None, None, None, "10.0.0.50", 2.0, leased)
    assert reply["mac"] == MAC
