"""The accounts/tokens/agent commands (issue 11) against a real API on
127.0.0.1 (twisted.web + SQLite), the CLI in a subprocess with the admin
token from the state dir: what an admin types, what they see."""
from __future__ import annotations

import json
import os

import pytest_twisted

from netbootd.auth import admin_token

from .test_agent_api import agent, post
from .test_api import TOKEN, api, curl  # noqa: F401 - `api` is the fixture
from .test_cli import cli

M1, M2, M3 = "52:54:00:c1:00:01", "52:54:00:c1:00:02", "52:54:00:c1:00:03"
HOSTILE = "<img src=x onerror=alert(1)>"
INVENTORY = {
    "schema": 1,
    "cpu": {"model": "QEMU Virtual CPU version 2.5+", "sockets": 1, "cores": 2, "threads": 4},
    "memory": {"bytes": 2 * 1024 ** 3},
    "disks": [{"name": "vda", "bytes": 10 * 1024 ** 3, "model": "QEMU HARDDISK",
               "serial": "DISK-A1", "rotational": False, "transport": "virtio"},
              {"name": "vdb", "bytes": 1024 ** 3, "model": HOSTILE + "\x1b[31mred",
               "serial": "DISK-B2", "rotational": True, "transport": "virtio"}],
    "nics": [{"name": "eth0", "mac": M1, "driver": "virtio_net", "link": True, "speed": 1000}],
    "dmi": {"system": {"vendor": "QEMU", "product": "Standard PC (Q35)", "serial": "SYS-42"},
            "bios": {"vendor": "SeaBIOS", "version": "1.16.2", "date": "04/01/2014"}},
    "firmware": "bios", "secure_boot": None,
}


def with_admin_token(state_dir: str) -> None:
    """The admin token file the CLI reads (a daemon writes it at start)."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    with open(os.open(admin_token.token_path(state_dir), os.O_WRONLY | os.O_CREAT, 0o600),
              "w") as f:
        f.write(TOKEN + "\n")


@pytest_twisted.inlineCallbacks
def test_accounts_tokens_and_the_agents_hosts_from_the_command_line(api):  # noqa: F811
    app, base, store, committer = api
    sd = store.state_dir
    with_admin_token(sd)

    def nb(*args):
        return cli(*args, "--server", base, "--state-dir", sd)

    r = yield nb("accounts", "create", "lab", "--approval", "manual")
    assert r.returncode == 0 and "account lab created: approval manual" in r.stdout, r.stderr
    r = yield nb("accounts", "create", "lab")
    assert r.returncode == 1 and "accounts create refused (409)" in r.stderr
    r = yield nb("accounts", "create", "Bad Name")
    assert r.returncode == 1 and "(400): name:" in r.stderr
    r = yield nb("accounts", "create", "web", "--profile", "linux", "--kernel", "k/vmlinuz",
                 "--cmdline", "console=ttyS0", "--json")
    web = json.loads(r.stdout)
    assert web["profile"] == "linux" and web["profile_args"]["kernel"] == "k/vmlinuz"
    r = yield nb("accounts", "create", "x", "--kernel", "k")
    assert r.returncode == 2 and "need --profile" in r.stderr
    r = yield nb("accounts", "list")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "APPROVAL", "PROFILE", "HOSTS", "TOKENS", "CREATED"]
    assert [ln.split()[:2] for ln in lines[1:]] == [["lab", "manual"], ["web", "auto"]]

    # a token: printed once (alone on stdout), never listed
    r = yield nb("tokens", "create", "--account", "lab", "--expires", "30d", "--uses", "5",
                 "--label", "rack 4 bag")
    assert r.returncode == 0, r.stderr
    text = r.stdout.strip()
    assert text.startswith("nbt1.") and "\n" not in text
    assert "only time the token is shown" in r.stderr and "netbootd.token=" in r.stderr
    r = yield nb("tokens", "create", "--account", "lab", "--expires", "soon")
    assert r.returncode == 2 and "--expires" in r.stderr and "30d" in r.stderr
    r = yield nb("tokens", "create", "--account", "nope")
    assert r.returncode == 1 and "(404)" in r.stderr and "nope" in r.stderr
    for fmt in ((), ("--json",)):
        r = yield nb("tokens", "list", "--account", "lab", *fmt)
        assert r.returncode == 0 and text not in r.stdout and text.split(".")[2] not in r.stdout
    (tok,) = json.loads(r.stdout)
    assert tok["label"] == "rack 4 bag" and tok["state"] == "active" and "token" not in tok
    r = yield nb("tokens", "list")
    assert tok["id"] in r.stdout and "rack 4 bag" in r.stdout and "0/5" in r.stdout
    r = yield nb("accounts", "show", "lab")
    assert "approval" in r.stdout and tok["id"] in r.stdout and text not in r.stdout

    # hosts: one enrolled with the token (pending: manual approval), one without
    code, reg = yield post(base, "/api/v1/agent/register",
                           {"mac": M1, "token": text, "ids": {"macs": [M1, M3],
                                                              "serial": "SYS-42"}})
    assert code == 200 and reg["state"] == "pending", reg
    code, _ = yield post(base, "/api/v1/agent/register", {"mac": M2})
    assert code == 200
    r = yield nb("hosts", "list")
    head, rows = r.stdout.splitlines()[0].split(), r.stdout.splitlines()[1:]
    assert head[:3] == ["MAC", "STATE", "ACCOUNT"]
    assert {ln.split()[0]: ln.split()[1:3] for ln in rows} == {
        M1: ["pending", "lab"], M2: ["registered", "-"]}
    r = yield nb("hosts", "list", "--account", "lab", "--json")
    assert [h["mac"] for h in json.loads(r.stdout)] == [M1]
    r = yield nb("hosts", "list", "--account", "-", "--json")
    assert [h["mac"] for h in json.loads(r.stdout)] == [M2]
    r = yield nb("hosts", "list", "--account", "ghost")
    assert r.returncode == 1 and "no account 'ghost'" in r.stderr
    r = yield nb("hosts", "approve", M1)
    assert r.returncode == 0 and r.stdout.startswith(f"{M1}: "), r.stderr
    assert app.registry.get(M1).state.value != "pending"

    # the agent posts its inventory with its own secret; hosts show has it all
    code, body = yield post(base, "/api/v1/agent/inventory", INVENTORY, *agent(reg["secret"]))
    assert code == 200 and body["stored"] is True, body
    yield committer.drain()
    for where in (("--server", base), ("--offline",)):
        r = yield cli("hosts", "show", M1, "--state-dir", sd, *where)
        out = r.stdout
        assert r.returncode == 0, r.stderr
        for want in ("account         lab", "credential      yes", "serial=SYS-42",
                     f"mac={M3}", "2c/4t 2.0 GiB 2 disks 11.0 GiB 1 nic bios",
                     "QEMU Virtual CPU version 2.5+ (1 sockets, 2 cores, 4 threads)",
                     "QEMU Standard PC (Q35) serial SYS-42", "SeaBIOS 1.16.2 (04/01/2014)",
                     "secure boot  unknown", "DISK-B2", "virtio_net", "1000 Mb/s"):
            assert want in out, (where, want, out)
        disk = [ln for ln in out.splitlines() if ln.startswith("vdb ")][0]
        assert disk.split()[:3] == ["vdb", "1.0", "GiB"] and "yes" in disk.split()
        assert HOSTILE in out and "\x1b" not in out, "control characters never reach a terminal"
    r = yield nb("hosts", "show", M1, "--json")
    shown = json.loads(r.stdout)
    assert shown["inventory"]["doc"]["cpu"]["threads"] == 4 and shown["credential"] is True
    assert "secret_hash" not in shown and reg["secret"] not in r.stdout

    # actions for its agent: a wipe needs the flag, and nothing is sent without it
    r = yield nb("hosts", "wipe", M1, "--disk", "vdb")
    assert r.returncode == 2 and "--yes-destroy-data" in r.stderr
    r = yield nb("hosts", "wipe", M1, "--yes-destroy-data")
    assert r.returncode == 2 and "--disk" in r.stderr
    r = yield nb("hosts", "action", M1, "wipe")
    assert r.returncode == 2 and "hosts wipe" in r.stderr
    assert app.registry.get(M1).action is None, "a refused wipe queues nothing"
    r = yield nb("hosts", "wipe", M1, "--disk", "vdb", "--disk", "vda", "--yes-destroy-data")
    assert r.returncode == 0 and "wipe disks=vdb,vda queued" in r.stdout, r.stderr
    assert app.registry.get(M1).action["disks"] == ["vdb", "vda"]
    r = yield nb("hosts", "show", M1)
    assert "pending action  wipe disks=vdb,vda" in r.stdout
    r = yield nb("hosts", "wipe", M1, "--disk", "../sda", "--yes-destroy-data")
    assert r.returncode == 1 and "wipe refused (400): disks:" in r.stderr
    r = yield nb("hosts", "action", M1, "poweroff", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["action"]["action"] == "poweroff"
    r = yield nb("hosts", "action", M1, "wait")
    assert "pending action cleared" in r.stdout and app.registry.get(M1).action is None
    r = yield nb("hosts", "action", M1, "dance")
    assert r.returncode == 2 and "poweroff, reboot, wait" in r.stderr
    code, nxt = yield curl(*agent(reg["secret"]), base + "/api/v1/agent/next")
    assert code == 200 and nxt["action"] == "wait"

    # move, reset, revoke, rotate, delete
    r = yield nb("hosts", "move", M2, "--account", "web")
    assert r.stdout.strip() == f"{M2}: account web", r.stderr
    r = yield nb("hosts", "move", M2, "--account", "ghost")
    assert r.returncode == 1 and "move refused (404)" in r.stderr
    r = yield nb("hosts", "move", M2)
    assert r.returncode == 2 and "--no-account" in r.stderr
    r = yield nb("hosts", "move", M2, "--no-account", "--json")
    assert json.loads(r.stdout)["account"] is None
    r = yield nb("hosts", "reset", M1)
    assert r.returncode == 0 and "credential forgotten" in r.stdout
    code, _ = yield curl(*agent(reg["secret"]), base + "/api/v1/agent/next")
    assert code == 401, "the forgotten credential no longer works"
    r = yield nb("tokens", "revoke", tok["id"])
    assert r.returncode == 0 and f"{tok['id']}: revoked" in r.stdout
    r = yield nb("tokens", "list", "--json")
    assert [t["state"] for t in json.loads(r.stdout) if t["id"] == tok["id"]] == ["revoked"]
    code, body = yield post(base, "/api/v1/agent/register", {"mac": M3, "token": text})
    assert (code, body["error"]) == (403, "token revoked")
    r = yield nb("tokens", "revoke", "tok-nope")
    assert r.returncode == 1 and "(404)" in r.stderr
    r = yield nb("tokens", "rotate-key")
    assert r.returncode == 0 and "signs new tokens" in r.stdout, r.stderr
    r = yield nb("accounts", "set", "lab", "--approval", "auto")
    assert r.stdout.strip() == "account lab: approval auto, default profile none"
    r = yield nb("accounts", "set", "lab")
    assert r.returncode == 2 and "nothing to change" in r.stderr
    r = yield nb("accounts", "delete", "lab")
    assert r.returncode == 1 and "still has 1 host" in r.stderr
    r = yield nb("accounts", "show", "lab", "--json")
    assert json.loads(r.stdout)["hosts"] == 1
    r = yield nb("accounts", "set", "web", "--profile", "sanboot", "--san-uri",
                 "iscsi:10.0.0.1::::iqn.2026-01.lan.netboot:vol1", "--json")
    assert json.loads(r.stdout)["profile_args"]["san_uri"].endswith(":vol1"), r.stderr
    r = yield nb("accounts", "set", "web", "--no-profile")
    assert r.stdout.strip() == "account web: approval auto, default profile none", r.stderr
    r = yield nb("accounts", "set", "web", "--profile", "linux")
    assert r.returncode == 1 and "accounts set refused (400): boot." in r.stderr
    r = yield nb("accounts", "delete", "web")
    assert r.returncode == 0 and "account web deleted" in r.stdout
    yield committer.drain()
    r = yield cli("accounts", "list", "--offline", "--state-dir", sd)
    assert [ln.split()[0] for ln in r.stdout.splitlines()[1:]] == ["lab"]


@pytest_twisted.inlineCallbacks
def test_admin_commands_without_the_admin_token_say_so(api, tmp_path):  # noqa: F811
    app, base, *_ = api
    for cmd in (("accounts", "create", "lab"), ("tokens", "create", "--account", "lab"),
                ("tokens", "list"), ("hosts", "action", M1, "reboot")):
        r = yield cli(*cmd, "--server", base, "--state-dir", str(tmp_path))
        assert r.returncode != 0 and "admin token" in r.stderr, (cmd, r.stderr)
    assert not app.accounts.by_id
