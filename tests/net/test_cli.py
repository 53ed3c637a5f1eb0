"""The CLI against a real API (twisted.web + SQLite on 127.0.0.1) and against
the same state read offline through the store: both paths print the same
columns and the same rows."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest_twisted
from twisted.internet import threads

from .test_api import MAC, api, curl  # noqa: F401 - `api` is the fixture


def cli(*args):
    """`netbootd ARGS` in a subprocess, off the reactor thread (the API it
    calls is served by this test's reactor)."""
    return threads.deferToThread(
        subprocess.run, [sys.executable, "-m", "netbootd", *args],
        capture_output=True, text=True, timeout=60)


@pytest_twisted.inlineCallbacks
def test_offline_and_api_reads_print_the_same_columns_and_rows(api):  # noqa: F811
    app, base, store, committer = api
    yield curl("--data", json.dumps({"mac": MAC, "ip": "10.77.0.5"}),
               base + "/api/v1/agent/register")
    yield committer.drain()
    state_dir = store.state_dir
    for cmd in (("hosts", "list"), ("hosts", "show", MAC), ("leases",), ("events",)):
        online = yield cli(*cmd, "--server", base)
        offline = yield cli(*cmd, "--offline", "--state-dir", state_dir)
        assert online.returncode == 0 and offline.returncode == 0, (online.stderr,
                                                                     offline.stderr)
        on, off = online.stdout.splitlines(), offline.stdout.splitlines()
        assert on[0].split() == off[0].split(), cmd
        if cmd[0] == "hosts":
            # the same host row, field by field (registry in memory vs the store)
            assert on[1] == off[1] and MAC in on[1], cmd
    online = yield cli("hosts", "list", "--server", base)
    assert online.stdout.split()[:8] == ["MAC", "STATE", "ACCOUNT", "HOSTNAME", "ARCH_NAME",
                                         "IP", "PROFILE", "LAST_SEEN"]
    online = yield cli("hosts", "list", "--json", "--server", base)
    offline = yield cli("hosts", "list", "--json", "--offline", "--state-dir", state_dir)
    on, off = json.loads(online.stdout), json.loads(offline.stdout)
    assert [h["mac"] for h in on] == [h["mac"] for h in off] == [MAC]
    assert set(off[0]) <= set(on[0])


@pytest_twisted.inlineCallbacks
def test_a_change_without_a_daemon_says_so_and_changes_nothing(tmp_path):
    r = yield cli("hosts", "retire", MAC, "--server", "http://127.0.0.1:9",
                  "--state-dir", str(tmp_path))
    assert r.returncode != 0 and "token" in r.stderr
