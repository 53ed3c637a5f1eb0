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
    def leased(macs):
        return {m: "10.0.0.50" for m in macs if m == MAC}
    with pytest.raises(Refused) as e:
        a.register(MAC, "10.0.0.50", None, None, None, "10.0.0.66", 1.0, leased)
    assert e.value.status == 409 and "lease" in e.value.reason and MAC not in a.registry.hosts
    reply, _ = a.register(MAC, None, None, None, None, "10.0.0.50", 2.0, leased)
    assert reply["mac"] == MAC


# -- the review's attacks (each failed before its fix) ---------------------------------
VICTIM, ATTACKER = "52:54:00:aa:00:0a", "52:54:00:aa:00:0b"
UUID = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a00"


def enrolled_victim(a, approval="auto"):
    """A host enrolled into account "lab" with a token, registered from 10.0.0.10."""
    from netbootd.auth.enroll import KEY_BYTES  # noqa: F401
    text, _, _ = a.accounts.create_token(a.ring, "lab", 1.0)
    reply, _ = a.register(VICTIM, None, None, text, {"macs": [VICTIM], "uuid": UUID},
                          "10.0.0.10", 2.0)
    return reply["secret"]


def test_a_boot_script_fetched_from_elsewhere_does_not_make_that_address_known():
    a = agents()
    enrolled_victim(a)
    a.registry.script_served(VICTIM, "10.0.0.66", "discover", 100, 3.0)   # h.ip = attacker
    for ids in ({"macs": [VICTIM]}, {"uuid": UUID}):
        with pytest.raises(Refused) as e:
            a.register(ATTACKER, None, None, None, ids, "10.0.0.66", 4.0)
        assert e.value.status == 409
    assert a.registry.hosts[VICTIM].agent_addr == "10.0.0.10"


def test_identifiers_of_another_host_are_never_claimed():
    a = agents()
    enrolled_victim(a)
    a.register(ATTACKER, None, None, None, None, "10.0.0.66", 3.0)
    attacker = a.registry.hosts[ATTACKER]
    # re-registering with the victim's identifiers (as its own, from its own address)
    with pytest.raises(Refused):
        a.register(ATTACKER, None, None, None, {"macs": [ATTACKER, VICTIM], "uuid": UUID},
                   "10.0.0.66", 40.0)
    assert ["uuid", UUID] not in attacker.ids and ["mac", VICTIM] not in attacker.ids
    assert a.registry.ids[("uuid", UUID)] == VICTIM and a.registry.get(VICTIM).mac == VICTIM
    refused = a.registry.claim(attacker, [("mac", VICTIM), ("uuid", UUID)], 64)
    assert refused == [["mac", VICTIM], ["uuid", UUID]]


def test_a_placeholder_key_mac_is_refused_not_matched_around():
    a = agents()
    with pytest.raises(Refused) as e:
        a.register("00:e0:4c:68:00:01", None, None, None, None, "10.0.0.9", 1.0)
    assert e.value.status == 403 and "placeholder" in e.value.reason


def test_joining_a_manual_account_is_pending_however_the_host_registered_before():
    a = agents()
    a.accounts.create("strict", "manual", "localboot", {}, 1.0)
    a.register(VICTIM, None, None, None, None, "10.0.0.10", 2.0)      # tokenless: registered
    text, _, _ = a.accounts.create_token(a.ring, "strict", 3.0)
    reply, _ = a.register(VICTIM, None, None, text, None, "10.0.0.10", 30.0)
    assert reply["state"] == "pending" and a.registry.hosts[VICTIM].profile is None


def test_a_single_use_token_enrolls_one_host_and_the_same_host_boots_it_again():
    a = agents()
    text, tok, _ = a.accounts.create_token(a.ring, "lab", 1.0, max_uses=1)
    a.register(VICTIM, None, None, text, None, "10.0.0.10", 2.0)
    reply, _ = a.register(VICTIM, None, None, text, None, "10.0.0.10", 40.0)
    assert reply["account"] == "lab" and tok.uses == 1
    with pytest.raises(Refused) as e:
        a.register(ATTACKER, None, None, text, None, "10.0.0.11", 41.0)
    assert e.value.reason == "token used up"


def test_a_host_with_an_admin_assignment_is_never_merged_away():
    a = agents()
    enrolled_victim(a)
    a.registry.assign(ATTACKER, "localboot", {}, 3.0)       # an admin's host, no account
    # the victim's second NIC? only a host holding nothing is folded in
    reply, _ = a.register(ATTACKER, None, None, None, {"uuid": UUID}, "10.0.0.10", 40.0)
    assert ATTACKER in a.registry.hosts and a.registry.hosts[ATTACKER].profile == "localboot"
    assert reply["mac"] == VICTIM


def test_a_registration_loop_is_rate_limited_and_the_index_stays_bounded():
    a = agents()
    a.register(VICTIM, None, None, None, None, "10.0.0.10", 1.0)
    codes = []
    for i in range(40):
        macs = [f"52:54:01:{i:02x}:{j:02x}:01" for j in range(60)]
        try:
            a.register(VICTIM, None, None, None, {"macs": macs}, "10.0.0.10", 2.0 + i * 0.01)
            codes.append(200)
        except Refused as e:
            codes.append(e.status)
    assert codes.count(200) <= 6 and 429 in codes
    assert len(a.registry.ids) <= 64 + 1
