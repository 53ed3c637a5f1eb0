"""Typed writes (netbootd/writes.py) and the event catalog (netbootd/events.py):
every write type is stored by the store and followed or deliberately ignored by
each observer; every event kind the code emits is in the catalog."""
from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

import pytest
from twisted.internet import task

import netbootd
from netbootd import config, events
from netbootd.model import Account, Host, Lease, LeaseState, Token
from netbootd.net.hooks import Hooks
from netbootd.net.metrics import Metrics
from netbootd.policy.zone import Zone
from netbootd.store.sqlite import BadWrite, Store
from netbootd.writes import (
    WRITE_TYPES, AccountDelete, AccountWrite, EventWrite, ExportDelete, ExportWrite, HostDelete,
    HostWrite, InventoryWrite, LeaseWrite, NetworkDelete, NetworkWrite, TokenWrite, TrimEvents,
    event,
)

MAC = "52:54:00:77:00:10"
LEASE = Lease(0x0A4D0010, "lab", b"\x01k", MAC, LeaseState.ACTIVE, 0.0, 1e12, "fromdhcp")

# One sample of each write type: a new type must add its sample here, and so
# meets every check below.
SAMPLES = {
    HostWrite: HostWrite(Host(MAC, hostname="registered")),
    HostDelete: HostDelete(MAC),
    LeaseWrite: LeaseWrite(LEASE),
    EventWrite: event(1.0, MAC, "tftp.failed", file="pxelinux.0"),
    TrimEvents: TrimEvents(),
    AccountWrite: AccountWrite(Account("acc-1", "lab", "manual", "localboot", {}, 1.0)),
    AccountDelete: AccountDelete("acc-1"),
    TokenWrite: TokenWrite(Token("tok-1", "acc-1", "ab" * 32, "bag", 1.0, None, 3, 1, None)),
    InventoryWrite: InventoryWrite(2.0, MAC, '{"schema": 1}'),
    ExportWrite: ExportWrite("web01", "default", MAC, "iqn.2026-01.lan.netboot:host.525400770010",
                             "iqn.2026-01.lan.netboot:vol.web01", "host-525400770010",
                             "s3cretS3cret-_AB", created=3.0),
    ExportDelete: ExportDelete("web01"),
    NetworkWrite: NetworkWrite("lab", "api", '{"name": "lab", "subnet": "10.0.0.0/24"}', 4.0),
    NetworkDelete: NetworkDelete("lab"),
}


def test_every_write_type_has_a_sample_and_is_frozen():
    assert set(SAMPLES) == set(WRITE_TYPES)
    for w in SAMPLES.values():
        for f in dataclasses.fields(w):
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(w, f.name, None)


@pytest.mark.parametrize("wtype", WRITE_TYPES, ids=lambda t: t.__name__)
def test_the_store_handles_every_write_type(tmp_path, wtype):
    s = Store(str(tmp_path))
    s.apply([SAMPLES[HostWrite], SAMPLES[wtype]])
    stored = {"hosts": s.load_hosts(), "leases": s.load_leases(),
              "events": s.events(None, 10)}
    if wtype is HostWrite:
        assert [h.hostname for h in stored["hosts"]] == ["registered"]
    elif wtype is HostDelete:
        assert stored["hosts"] == []
    elif wtype is LeaseWrite:
        assert stored["leases"] == [LEASE]
    elif wtype is EventWrite:
        assert [e["kind"] for e in stored["events"]] == ["tftp.failed"]
    elif wtype is AccountWrite:
        assert s.load_accounts() == [SAMPLES[AccountWrite].account]
    elif wtype is TokenWrite:
        assert s.load_tokens() == [SAMPLES[TokenWrite].token]
    elif wtype is InventoryWrite:
        assert s.inventory(MAC) == [{"ts": 2.0, "doc": {"schema": 1}}]
    elif wtype is ExportWrite:
        assert s.load_exports() == [SAMPLES[ExportWrite]]
        assert "s3cret" not in repr(SAMPLES[ExportWrite])      # a secret never in a log line
    elif wtype is ExportDelete:
        s.apply([SAMPLES[ExportWrite]])
        s.apply([SAMPLES[ExportDelete]])
        assert s.load_exports() == []
    elif wtype is AccountDelete:
        s.apply([SAMPLES[AccountWrite], SAMPLES[TokenWrite]])
        s.apply([SAMPLES[AccountDelete]])
        assert (s.load_accounts(), s.load_tokens()) == ([], [])
    # TrimEvents: stored without error (trimming is tested in test_store.py)
    s.close()


def test_the_store_refuses_what_is_not_a_write(tmp_path):
    s = Store(str(tmp_path))
    with pytest.raises(BadWrite):
        s.apply([("host", Host(MAC))])       # the old tuple shape is not a write


def _zone():
    return Zone("netboot.lan", ["10.77.0.0/16"], "10.77.0.1", reservations=())


def _metrics():
    return Metrics(lambda: ())        # no service registered: observe() alone


def _hooks():
    return Hooks(task.Clock(), config.HooksConfig(webhooks=("http://127.0.0.1:9/",)))


def _changed_zone(z, w):
    if type(w) is not LeaseWrite:
        z.apply([SAMPLES[LeaseWrite]])    # a named address the write may change
    if type(w) is HostDelete:
        z.apply([SAMPLES[HostWrite]])     # something to delete
    return z.apply([w])


def _changed_metrics(m, w):
    before = dict(m.events)
    m.observe([w])
    return dict(m.events) != before


def _changed_hooks(h, w):
    return bool(h._pick([w]))


OBSERVERS = {"zone": (_zone, _changed_zone), "metrics": (_metrics, _changed_metrics),
             "hooks": (_hooks, _changed_hooks)}


@pytest.mark.parametrize("name", sorted(OBSERVERS))
@pytest.mark.parametrize("wtype", WRITE_TYPES, ids=lambda t: t.__name__)
def test_each_observer_follows_or_deliberately_ignores_every_write_type(name, wtype):
    """A type an observer does not list in IGNORED_WRITES must change what it
    shows; a listed one must not (so the list says the truth)."""
    make, changed = OBSERVERS[name]
    obj = make()
    ignored = type(obj).IGNORED_WRITES
    assert set(ignored) <= set(WRITE_TYPES)
    assert changed(obj, SAMPLES[wtype]) == (wtype not in ignored)


# -- the event catalog ----------------------------------------------------------------
_KIND = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_]+")


def _emit_sites():
    """(file:line, literal kind or dynamic prefix) for every call of an event
    builder in the package: event(), event_json(), EventWrite(), and the
    helpers named *_event that pass a kind on."""
    root = pathlib.Path(netbootd.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) \
                else ""
            if not (name in ("event", "event_json", "EventWrite") or name.endswith("_event")):
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            for arg in list(node.args) + [k.value for k in node.keywords if k.arg == "kind"]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and _KIND.fullmatch(arg.value):
                    yield where, arg.value, False
                elif isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Add) and \
                        isinstance(arg.left, ast.Constant) and isinstance(arg.left.value, str):
                    yield where, arg.left.value, True


def test_every_emitted_kind_is_in_the_catalog():
    sites = list(_emit_sites())
    assert len(sites) >= 15, sites             # the walk does find the emit sites
    for where, kind, prefix in sites:
        if prefix:
            assert any(k.startswith(kind) for k in events.KINDS), (where, kind)
        else:
            assert kind in events.KINDS, f"{where}: {kind!r} is not in netbootd/events.py"


def test_every_catalog_kind_is_emitted_somewhere():
    """No dead kinds (like "agent.refused" was): each is emitted literally or
    under a dynamic prefix ("tftp." + outcome, "proxy." + message type)."""
    literal = {k for _, k, p in _emit_sites() if not p}
    prefixes = {k for _, k, p in _emit_sites() if p}
    for kind in events.KINDS:
        assert kind in literal or any(kind.startswith(p) for p in prefixes), kind


def test_dynamic_kinds_are_all_in_the_catalog():
    from netbootd.codec import dhcp_options as o
    from netbootd.policy import tftp_session as ts
    # "stopped": transfers still running when the daemon stops (TransferLoop.stop)
    for outcome in (ts.FINISHED, ts.FAILED, ts.ABORTED, "refused", "stopped"):
        assert "tftp." + outcome in events.KINDS
    for rtype in (o.OFFER, o.ACK):                  # the proxy's replies (dhcp_engine._proxy)
        assert "proxy." + o.MSG_NAMES[rtype].lower() in events.KINDS


def test_hooks_default_to_the_reportable_kinds_and_failures_are_flagged():
    assert config.HooksConfig().kinds == events.REPORTABLE_KINDS
    assert events.FAILURE_KINDS == {"tftp.failed", "tftp.refused", "dhcp.nak",
                                    "boot.unsupported", "pool.exhausted", "agent.refused",
                                    "host.conflict", "agent.action_failed",
                                    "host.identity_conflict", "storage.failed",
                                    "dhcp.no_network"}
    served = events.catalog_json()
    assert [k["kind"] for k in served] == list(events.CATALOG)
    assert all(set(k) == {"kind", "doc", "failure", "reportable", "shown"} for k in served)
