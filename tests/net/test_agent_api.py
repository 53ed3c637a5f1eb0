"""Accounts, enrollment tokens and the agent's calls (issue 11) on the real
API: twisted.web + SQLite on 127.0.0.1, curl as the client; a second source
address (127.0.0.2) plays the attacker on the same segment."""
from __future__ import annotations

import json
import time

import pytest_twisted
from twisted.internet import reactor, task

from .test_api import TOKEN, api, auth, curl  # noqa: F401 - `api` is the fixture

M1, M2, M3 = "52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:aa:00:03"
UUID = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a00"


def post(base, path, body, *extra):
    return curl(*extra, "-H", "Content-Type: application/json", "--data", json.dumps(body),
                base + path)


def admin_post(base, path, body):
    return curl(*auth("-H", "Content-Type: application/json", "--data", json.dumps(body),
                      base + path))


def agent(secret):
    return ("-H", f"Authorization: Agent {secret}")


@pytest_twisted.inlineCallbacks
def make_token(base, account, approval="auto", **kw):
    code, _ = yield admin_post(base, "/api/v1/accounts", {"name": account, "approval": approval})
    assert code in (200, 409)
    code, tok = yield admin_post(base, "/api/v1/tokens", {"account": account, **kw})
    assert code == 200 and tok["token"].startswith("nbt1.") and tok["uses"] == 0
    return tok


@pytest_twisted.inlineCallbacks
def stored_events(store, committer):
    yield committer.drain()
    return store.events(None, 1000)


@pytest_twisted.inlineCallbacks
def test_a_token_enrolls_a_host_and_bad_tokens_are_refused_with_a_reason(api):
    app, base, store, committer = api
    tok = yield make_token(base, "rack-a", label="bag 1")
    code, reg = yield post(base, "/api/v1/agent/register",
                           {"mac": M1, "token": tok["token"], "ids": {"macs": [M1], "uuid": UUID}})
    assert code == 200 and reg["account"] == "rack-a" and reg["state"] == "idle"
    assert reg["secret"].startswith("nba1.")
    code, listed = yield curl(*auth(base + "/api/v1/tokens"))
    assert [t["uses"] for t in listed] == [1] and "token" not in listed[0]
    code, _ = yield curl(base + "/api/v1/tokens")
    assert code == 401, "the token list is for admins"

    text = tok["token"]
    tampered = text[:-3] + ("AAA" if text[-3:] != "AAA" else "BBB")
    forged_payload = text.split(".")
    forged_payload[1] = forged_payload[1][:-2] + ("xy" if forged_payload[1][-2:] != "xy" else "zz")
    refusals = {}
    for name, bad in (("tampered", tampered), ("forged", ".".join(forged_payload)),
                      ("garbage", "nbt1.<script>"), ("empty", "")):
        code, body = yield post(base, "/api/v1/agent/register", {"mac": M2, "token": bad})
        refusals[name] = (code, body["error"])
    assert all(code == 403 for code, _ in refusals.values()), refusals
    assert "signature" in refusals["tampered"][1] or "malformed" in refusals["tampered"][1]
    code, _ = yield admin_post(base, f"/api/v1/tokens/{tok['id']}/revoke", {})
    assert code == 200
    code, body = yield post(base, "/api/v1/agent/register", {"mac": M2, "token": text})
    assert code == 403 and body["error"] == "token revoked", "revocation is immediate"
    assert M2 not in app.registry.hosts, "a refused registration stores no host"

    events = yield stored_events(store, committer)
    dump = json.dumps(events)
    assert text not in dump and tampered not in dump, "a token's text never lands in events"
    kinds = [e["kind"] for e in events]
    assert "agent.refused" in kinds and "token.revoked" in kinds and "token.created" in kinds
    assert any(e["detail"].get("token") == tok["id"] for e in events)


@pytest_twisted.inlineCallbacks
def test_expired_and_used_up_tokens_are_refused(api):
    app, base, *_ = api
    once = yield make_token(base, "lab", uses=1)
    short = yield make_token(base, "lab", expires_in=1)
    code, _ = yield post(base, "/api/v1/agent/register", {"mac": M1, "token": once["token"]})
    assert code == 200
    code, body = yield post(base, "/api/v1/agent/register", {"mac": M2, "token": once["token"]})
    assert (code, body["error"]) == (403, "token used up")
    yield task.deferLater(reactor, 1.2, lambda: None)
    code, body = yield post(base, "/api/v1/agent/register", {"mac": M3, "token": short["token"]})
    assert (code, body["error"]) == (403, "expired")


@pytest_twisted.inlineCallbacks
def test_another_accounts_token_never_takes_a_host_and_an_admin_can_move_it(api):
    app, base, store, committer = api
    a = yield make_token(base, "tenant-a")
    b = yield make_token(base, "tenant-b")
    code, reg = yield post(base, "/api/v1/agent/register", {"mac": M1, "token": a["token"]})
    assert code == 200
    code, body = yield post(base, "/api/v1/agent/register", {"mac": M1, "token": b["token"]})
    assert code == 409 and "another account" in body["error"]
    assert app.accounts.name_of(app.registry.hosts[M1].account) == "tenant-a"
    events = yield stored_events(store, committer)
    assert "host.conflict" in [e["kind"] for e in events]
    code, host = yield curl(*auth("-X", "PATCH", "--data", '{"account": "tenant-b"}',
                                  base + f"/api/v1/hosts/{M1}"))
    assert code == 200 and host["account"] == "tenant-b"
    code, page = yield curl(base + "/api/v1/hosts?account=tenant-b")
    assert [h["mac"] for h in page["hosts"]] == [M1]
    code, page = yield curl(base + "/api/v1/hosts?account=tenant-a")
    assert page["hosts"] == []
    code, body = yield curl(*auth("-X", "DELETE", base + "/api/v1/accounts/tenant-b"))
    assert code == 409 and "still has 1 host" in body["error"]


@pytest_twisted.inlineCallbacks
def test_a_host_acts_only_for_itself_and_a_replay_from_elsewhere_cannot_steal_it(api):
    app, base, *_ = api
    body1 = {"mac": M1, "ip": "127.0.0.1", "ids": {"uuid": UUID}}
    code, r1 = yield post(base, "/api/v1/agent/register", body1)
    code, r2 = yield post(base, "/api/v1/agent/register", {"mac": M2, "uuid": None,
                                                           "ip": None, "token": None})
    assert code == 200, r2
    s1, s2 = r1["secret"], r2["secret"]
    code, body = yield curl(*agent(s1), base + "/api/v1/agent/next")
    assert code == 200 and body["action"] == "wait"
    # host 2's MAC with host 1's random part: refused, as is no credential at all
    forged = "nba1." + M2.replace(":", "") + "." + s1.split(".")[2]
    for hdr in (agent(forged), agent("nba1.zz"), ("-H", f"Authorization: Bearer {s1}"), ()):
        code, body = yield curl(*hdr, base + "/api/v1/agent/next")
        assert code == 401, hdr
    code, _ = yield post(base, "/api/v1/agent/inventory", {"schema": 1, "cpu": {"threads": 4}},
                         *agent(s2))
    assert code == 200
    assert app.registry.hosts[M2].hw["threads"] == 4 and app.registry.hosts[M1].hw is None
    # the same registration replayed from another address on the segment
    code, body = yield post(base, "/api/v1/agent/register", body1, "--interface", "127.0.0.2")
    assert code == 409 and "enrolled" in body["error"]
    code, _ = yield curl(*agent(s1), base + "/api/v1/agent/next")
    assert code == 200, "the host's own secret still works"
    # from its own address the host re-registers (a reboot) and the old secret dies
    code, again = yield post(base, "/api/v1/agent/register", body1)
    assert code == 200 and again["secret"] != s1
    code, _ = yield curl(*agent(s1), base + "/api/v1/agent/next")
    assert code == 401
    # an admin reset lets it register from anywhere (moved to another network)
    code, _ = yield curl(*auth("-X", "POST", base + f"/api/v1/hosts/{M1}/reset"))
    code, body = yield post(base, "/api/v1/agent/register", body1, "--interface", "127.0.0.2")
    assert code == 200


@pytest_twisted.inlineCallbacks
def test_a_host_booting_from_another_nic_is_the_same_host(api):
    app, base, store, committer = api
    tok = yield make_token(base, "rack-a")
    code, r = yield post(base, "/api/v1/agent/register", {
        "mac": M1, "token": tok["token"],
        "ids": {"macs": [M1], "uuid": UUID, "serial": "To be filled by O.E.M."}})
    assert code == 200
    assert ["serial", "To be filled by O.E.M."] not in app.registry.hosts[M1].ids
    # the second NIC took a lease (DHCP made a bare host of it), then its agent registers
    app.registry.agent_register(M2, None, None, time.time())
    assert M2 in app.registry.hosts
    code, r2 = yield post(base, "/api/v1/agent/register", {"mac": M2, "ids": {"uuid": UUID}})
    assert code == 200 and r2["mac"] == M1 and r2["account"] == "rack-a"
    assert M2 not in app.registry.hosts and app.registry.get(M2).mac == M1
    events = yield stored_events(store, committer)
    assert "host.merged" in [e["kind"] for e in events]
    # from now on DHCP and boot scripts of that NIC land on the host
    assert app.registry.promote(M2, time.time(), []) is app.registry.hosts[M1]


@pytest_twisted.inlineCallbacks
def test_manual_approval_then_default_profile_then_boot_action(api):
    app, base, *_ = api
    code, _ = yield admin_post(base, "/api/v1/accounts", {
        "name": "strict", "approval": "manual",
        "boot": {"profile": "linux", "args": {"kernel": "debian/vmlinuz",
                                              "initrds": ["http://10.0.0.1/i.img"],
                                              "cmdline": "console=ttyS0"}}})
    assert code == 200
    code, tok = yield admin_post(base, "/api/v1/tokens", {"account": "strict"})
    code, r = yield post(base, "/api/v1/agent/register", {"mac": M1, "token": tok["token"]})
    assert code == 200 and r["state"] == "pending"
    code, body = yield curl(*agent(r["secret"]), base + "/api/v1/agent/next")
    assert body["action"] == "wait"
    code, host = yield curl(*auth("-X", "POST", base + f"/api/v1/hosts/{M1}/approve"))
    # approved: the account's default profile at once
    assert code == 200 and host["state"] == "assigned" and host["profile"] == "linux"
    code, body = yield curl(*agent(r["secret"]), base + "/api/v1/agent/next")
    assert body["action"] == "boot" and body["kernel"].endswith("/files/debian/vmlinuz")
    assert body["initrd"] == ["http://10.0.0.1/i.img"] and body["cmdline"] == "console=ttyS0"
    code, rep = yield post(base, "/api/v1/agent/report", {"id": body["id"], "action": "boot",
                                                          "status": "booting"}, *agent(r["secret"]))
    assert code == 200 and app.registry.hosts[M1].state.value == "booting"


@pytest_twisted.inlineCallbacks
def test_wipe_needs_confirmation_and_is_done_only_when_verified(api):
    app, base, store, committer = api
    code, r = yield post(base, "/api/v1/agent/register", {"mac": M1})
    me = agent(r["secret"])
    path = f"/api/v1/hosts/{M1}/actions"
    code, body = yield admin_post(base, path, {"action": "wipe", "disks": ["vdb"]})
    assert code == 400 and body["error"].startswith("confirm:")
    code, body = yield admin_post(base, path, {"action": "wipe", "disks": ["vdb"],
                                               "confirm": M2})
    assert code == 409
    code, body = yield admin_post(base, path, {"action": "wipe", "disks": ["vdb", "../x"],
                                               "confirm": M1})
    assert code == 400 and body["error"].startswith("disks:")
    code, body = yield admin_post(base, path, {"action": "wipe", "disks": ["vdb"],
                                               "confirm": M1})
    assert code == 409 and "no inventory" in body["error"]
    code, _ = yield post(base, "/api/v1/agent/inventory", {"schema": 1, "disks": [
        {"name": "vda", "bytes": 1 << 30, "serial": "D1"},
        {"name": "vdb", "bytes": 2 << 20, "serial": "D2"}]}, *me)
    code, body = yield admin_post(base, path, {"action": "wipe", "disks": ["vdc"],
                                               "confirm": M1})
    assert code == 409 and "not in the host's inventory" in body["error"]
    code, host = yield admin_post(base, path, {"action": "wipe", "disks": ["vdb"],
                                               "confirm": M1})
    assert code == 200 and host["action"]["action"] == "wipe"
    assert host["action"]["expect"] == [{"name": "vdb", "bytes": 2 << 20, "serial": "D2"}]
    code, nxt = yield curl(*me, base + "/api/v1/agent/next")
    assert nxt["action"] == "wipe" and nxt["disks"] == ["vdb"] and nxt["confirm"] == M1
    code, body = yield post(base, "/api/v1/agent/report",
                            {"id": nxt["id"] + 1, "action": "wipe", "status": "done"}, *me)
    assert code == 409, "a report for an action that is not pending"
    code, body = yield post(base, "/api/v1/agent/report",
                            {"id": nxt["id"], "action": "wipe", "status": "booting"}, *me)
    assert code == 400, "a wipe is never 'booting'"
    code, body = yield post(base, "/api/v1/agent/report", {
        "id": nxt["id"], "action": "wipe", "status": "done",
        "detail": {"disks": []}}, *me)
    assert body["status"] == "failed", "done without the disk asked for is not done"
    code, host = yield admin_post(base, path, {"action": "wipe", "disks": ["vdb"],
                                               "confirm": M1})
    code, nxt = yield curl(*me, base + "/api/v1/agent/next")
    code, body = yield post(base, "/api/v1/agent/report", {
        "id": nxt["id"], "action": "wipe", "status": "done",
        "detail": {"disks": [{"name": "vdb", "method": "zero", "bytes": 2097152,
                              "verified": False, "result": "failed"}]}}, *me)
    assert code == 200 and body["status"] == "failed", "not verified is never done"
    assert app.registry.hosts[M1].action is None
    events = yield stored_events(store, committer)
    failed = [e for e in events if e["kind"] == "agent.action_failed"]
    assert len(failed) == 2 and all(f["detail"]["detail"]["server"] == "not every disk verified"
                                    for f in failed)


@pytest_twisted.inlineCallbacks
def test_inventory_is_validated_stored_with_history_and_shown(api, tmp_path):
    app, base, store, committer = api
    code, r = yield post(base, "/api/v1/agent/register", {"mac": M1})
    me = agent(r["secret"])
    code, body = yield post(base, "/api/v1/agent/inventory",
                            {"schema": 1, "disks": [{"name": "vda", "bytes": -1}]}, *me)
    assert code == 400 and body["error"].startswith("disks[0].bytes")
    doc = {"schema": 1, "cpu": {"model": "<b>Xeon</b>", "sockets": 1, "cores": 2, "threads": 4},
           "memory": {"bytes": 1 << 30},
           "disks": [{"name": "vda", "bytes": 1 << 30, "serial": "D1", "rotational": False}],
           "firmware": "bios", "secure_boot": None, "vendor_field": {"x": 1}}
    code, body = yield post(base, "/api/v1/agent/inventory", doc, *me)
    assert code == 200 and body == {"stored": True, "changed": True}
    code, body = yield post(base, "/api/v1/agent/inventory", doc, *me)
    assert body["changed"] is False
    code, host = yield curl(base + f"/api/v1/hosts/{M1}")
    assert host["hw"]["threads"] == 4 and host["inventory"]["doc"]["cpu"]["model"] == "<b>Xeon</b>"
    assert "secret_hash" not in host and host["credential"] is True
    assert ["serial", "D1"] not in host["ids"]      # a disk serial is not the host's
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"schema": 1, "extra_blob": "x" * (300 * 1024)}))
    code, body = yield curl(*me, "-H", "Content-Type: application/json", "--data-binary",
                            f"@{big}", base + "/api/v1/agent/inventory")
    assert code == 413
