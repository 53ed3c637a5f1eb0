"""The JSON shapes of hosts and of the status summary, once, for the API
(api.py) and the status page's first paint (status.py): the page is
rendered from the same dicts /api/v1/hosts and /api/v1/status return.

A host's address and name: the host record's own (the agent's report, an
admin's PATCH) first, else those of its active DHCP lease.  Hosts that only
ever took leases have no address or name of their own, yet the DNS zone
answers for them from the lease; the views showed "-" for both."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping

from ...model import Lease, LeaseState, arch_name, int2ip
from ...registry.hosts import state_counts


def _same(x):
    return x


def host_json(h, last_event=None, lease: Lease | None = None, names=_same) -> dict:
    """`names`: account id -> name.  The agent secret's hash never leaves."""
    d = dataclasses.asdict(h)
    del d["secret_hash"], d["agent_addr"]      # credential and its binding stay inside
    d["credential"] = h.secret_hash is not None
    d["account"] = names(h.account) if h.account else None
    d["state"] = h.state.value
    d["arch_name"] = arch_name(h.arch) if h.arch is not None else None
    if lease is not None:
        if not d["ip"]:
            d["ip"] = int2ip(lease.address)
        if not d["hostname"] and lease.hostname:
            d["hostname"] = lease.hostname
    d["last_event"] = last_event
    return d


def active_leases(table, now: float, macs: Iterable[str] | None = None) -> dict[str, Lease]:
    """MAC -> its active lease (the newest, if it holds several) in a
    policy.leases.LeaseTable, for the MACs asked (all when None).  One pass
    over the table per request (no MAC index there; the DHCP hot path does
    not pay for one): ~20k leases in a few ms."""
    if table is None:
        return {}
    want = None if macs is None else set(macs)
    if want is not None and not want:
        return {}
    out: dict[str, Lease] = {}
    for lease in list(table.by_addr.values()):
        if lease.state != LeaseState.ACTIVE or lease.ends <= now or not lease.mac:
            continue
        if want is not None and lease.mac not in want:
            continue
        cur = out.get(lease.mac)
        if cur is None or lease.starts > cur.starts:
            out[lease.mac] = lease
    return out


def lease_lookup(table_of: Callable[[], object], clock) -> Callable[..., dict[str, Lease]]:
    """`active_leases` bound to where the lease table lives (the DHCP service
    sets it after the HTTP site may be built) and the clock."""
    return lambda macs=None: active_leases(table_of(), clock.seconds(), macs)


def last_events_of(events: Callable[..., list], macs: list[str]) -> dict:
    """The newest event of each host on a page (its MAC's chain head,
    store/eventlog.py): one page costs `limit` look-ups, not a scan of every
    host's events.
    Blocking (SQLite): run off the reactor thread."""
    out = {}
    for mac in macs:
        ev = events(None, 1, mac, None, True)
        if ev:
            out[mac] = ev[-1]
    return out


def hosts_json(hosts: list, last: Mapping[str, dict], leases: Mapping[str, Lease],
               names=_same) -> list:
    return [host_json(h, last.get(h.mac), leases.get(h.mac), names) for h in hosts]


def status_json(info, hosts, events: list) -> dict:
    """/api/v1/status and the page's summary.  `info` is a StatusInfo."""
    return {"version": info.version, "mode": info.mode, "started": info.started,
            "now": info.clock.seconds(), "hosts": state_counts(hosts),
            "pools": _safe(info.pools, []), "transfers": _safe(info.transfers, []),
            "events": events}


def _safe(fn, default):
    """A summary part that fails (a service mid-restart) is shown empty and
    logged, not a failed page."""
    try:
        return fn()
    except Exception:
        import logging
        logging.getLogger("netbootd.http").exception("status: %r failed", fn)
        return default
