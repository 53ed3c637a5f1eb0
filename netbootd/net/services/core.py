"""Core: what every protocol service shares - store, registry, group commit,
committed-write observers, the serving plan - and the registry of what the
services expose to readers (status rows, transfers, metric families).

Services register providers at start instead of being reached into: the
status page, the API and /metrics iterate the providers and know no service.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service
from twisted.internet import defer, task

from ...config import Config
from ...policy.leases import LeaseTable, ip2int
from ...policy.plan import Plan, make_plan
from ...policy.vnet import Vnet, VnetError, from_doc
from ...policy.vnet import from_config as vnet_from_config
from ...auth.enroll import KeyRing
from ...registry.accounts import Accounts
from ...registry.agent import Agents
from ...registry.hosts import Registry
from ...store import Store
from ...writes import NetworkDelete, NetworkWrite, TrimEvents
from .. import interfaces
from ..commit import GroupCommitter, dropped_events, restore_memory
from ..networks import Networks

log = logging.getLogger("netbootd")


class Core(service.Service):
    """Started first and stopped last, so pending writes are committed after
    every listener has closed."""
    name = "core"

    def __init__(self, cfg: Config, reactor, store: Store):
        self.cfg = cfg
        self.reactor = reactor
        self.store = store
        self.registry: Registry | None = None
        self.accounts: Accounts | None = None
        self.agents: Agents | None = None
        self.ring: KeyRing | None = None
        self.committer: GroupCommitter | None = None
        self.leases: LeaseTable | None = None     # set by the DHCP service
        self.ifaces: list[interfaces.IfAddr] = []
        self.plan: Plan | None = None
        self.networks = Networks(self)            # admin changes (net/networks.py)
        self._plan_followers: list[Callable[[Plan], None]] = []
        self.started = 0.0
        self._observers: list = []
        self._trim = None
        # What services expose (expose()); the core's own families first.
        self._pools: list[Callable[[], list[dict]]] = []
        self._transfers: list[Callable[[], list[dict]]] = []
        self._metrics: list[Callable[[], Iterable]] = [lambda: core_families(self)]

    def observe(self, fn) -> None:
        """fn(writes) runs on the reactor thread after each committed batch
        (DNS zone, metrics, event hooks)."""
        self._observers.append(fn)

    def expose(self, *, pools=None, transfers=None, metrics=None) -> None:
        """A service registers what readers may see of it: pools() -> status
        rows, transfers() -> transfers under way, metrics() -> metric families."""
        for providers, fn in ((self._pools, pools), (self._transfers, transfers),
                              (self._metrics, metrics)):
            if fn is not None:
                providers.append(fn)

    def pools(self) -> list[dict]:
        """Every served network with its pool usage (API / status page)."""
        return [row for fn in self._pools for row in fn()]

    def transfers(self) -> list[dict]:
        """Transfers under way (TFTP and HTTP files), for the status page."""
        return [row for fn in self._transfers for row in fn()]

    def metric_families(self):
        for fn in self._metrics:
            yield from fn()

    def follow_plan(self, fn: Callable[[Plan], None]) -> None:
        """fn(plan) runs on the reactor after each replan (the DHCP service
        swaps its engine's networks and the lease table's)."""
        self._plan_followers.append(fn)

    def replan(self, networks=None, ifaces=None) -> Plan:
        """Recompute the plan - networks x interfaces -> the networks served
        and the network each interface is attached to - and push it into the
        services that follow it, at once (call on the reactor thread).

        networks: every policy.vnet.Vnet to serve (None: the current ones);
        ifaces: interface facts with name, ip, prefix (None: the current ones;
        the netlink follower passes the new facts when an interface or an
        address appears, changes or goes away).  Raises VnetError (a
        VnetConflict for overlapping networks) and changes nothing when the
        set does not hold together.  Leases are never dropped: the lease table
        keeps every lease (policy/leases.py LeaseTable.set_networks)."""
        vnets = self.plan.vnets if networks is None else tuple(networks)
        facts = self.ifaces if ifaces is None else list(ifaces)
        plan = make_plan(self.cfg, facts, vnets)
        self.ifaces, self.plan = facts, plan
        for fn in self._plan_followers:
            fn(plan)
        return plan

    def _dropped(self, dropped: list) -> None:
        """Writes the store could not take (net/commit.py): memory is set back
        to the store, and each drop is an event in a later batch."""
        restore_memory(dropped, self.registry, self.leases)
        self.committer.submit(dropped_events(dropped, self.reactor.seconds()))

    def _committed(self, writes: list) -> None:
        for fn in self._observers:
            try:
                fn(writes)
            except Exception:
                log.exception("observer %r failed", fn)

    def startService(self) -> None:
        self.ifaces = interfaces.resolve(self.cfg.interfaces)
        self.plan = make_plan(self.cfg, self.ifaces, reconcile_networks(self.cfg, self.store))
        self.networks.meta = {r["name"]: {k: r[k] for k in ("id", "created", "updated")}
                              for r in self.store.load_networks()}
        hc = self.cfg.hosts
        self.registry = Registry(self.store.load_hosts(), seen_max=hc.seen_max,
                                 seen_ttl=hc.seen_ttl, new_per_source_pps=hc.new_per_source_pps,
                                 new_total_pps=hc.new_total_pps)
        self.ring = KeyRing.load_or_create(self.cfg.state_dir)
        self.accounts = Accounts(self.store.load_accounts(), self.store.load_tokens())
        self.agents = Agents(self.registry, self.accounts, self.ring,
                             network_account=network_accounts(lambda: self.plan.vnets),
                             refresh_keys=lambda: self.ring.refresh(self.cfg.state_dir))
        self.started = self.reactor.seconds()
        self.committer = GroupCommitter(self.reactor, self.store.apply,
                                        self.cfg.dhcp.commit_window_ms / 1000.0,
                                        on_committed=self._committed,
                                        is_write_fault=self.store.is_write_fault,
                                        reread=self.store.stored,
                                        on_dropped=self._dropped)
        self._trim = task.LoopingCall(self.committer.submit, [TrimEvents()])
        self._trim.clock = self.reactor
        self._trim.start(600, now=False)
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._trim is not None and self._trim.running:
            self._trim.stop()
        if self.committer is not None:
            yield self.committer.drain()
            self.committer.stop()
        self.store.close()

    def ip_to_mac(self, ip: str) -> str | None:
        if self.leases is not None:
            lease = self.leases.holder(ip2int(ip), self.reactor.seconds())
            if lease is not None and lease.mac:
                return lease.mac
        for h in self.registry.hosts.values():
            if h.ip == ip:
                return h.mac
        return None


def network_accounts(vnets: Callable[[], Iterable]):
    """source address -> the account of the network holding it, if any (the
    networks as they are now: vnets() is read per call; a Config: its [[networks]])."""
    import ipaddress
    if isinstance(vnets, Config):
        fixed = [vnet_from_config(nc) for nc in vnets.networks]
        vnets = lambda: fixed                                   # noqa: E731

    def lookup(ip: str) -> str | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        return next((v.account for v in vnets()
                     if v.account and addr in ipaddress.ip_network(v.subnet)), None)
    return lookup


def reconcile_networks(cfg: Config, store) -> list:
    """The networks to serve at start: the stored ones, with the config's
    [[networks]] seeded (first start) and reconciled (a config network is
    rewritten from the config when it changed, deleted when the config no
    longer has it; networks an admin created stay).  A stored row that no
    longer reads is skipped with a warning.  Writes go straight to the store
    (before anything is served)."""
    import json
    stored: dict[str, Vnet] = {}
    for row in store.load_networks():
        try:
            stored[row["name"]] = from_doc(json.loads(row["doc"]), row["origin"])
        except (ValueError, VnetError) as e:
            log.warning("networks: stored network %r is unreadable, not served: %s",
                        row["name"], e)
    wanted = {nc.name: vnet_from_config(nc) for nc in cfg.networks}
    writes: list = []
    for name, v in wanted.items():
        old = stored.get(name)
        if old is not None and old.origin == "api":
            log.warning("networks: [[networks]] %r of the config replaces the network of that "
                        "name an admin created", name)
        if old != v:
            writes.append(NetworkWrite(name, "config", json.dumps(v.to_doc(), sort_keys=True),
                                       time.time()))
            stored[name] = v
    for name, v in list(stored.items()):
        if v.origin == "config" and name not in wanted:
            writes.append(NetworkDelete(name))
            del stored[name]
    if writes:
        store.apply(writes)
        log.info("networks: %d change(s) from the config's [[networks]]", len(writes))
    return list(stored.values())


def core_families(core):
    """The group committer's totals, hosts by state and the seen-MAC set, the
    start time; each left out until the core has started."""
    committer = core.committer
    if committer is not None:
        yield CounterMetricFamily("netbootd_commit_batches",
                                  "Group commits (transactions) that succeeded",
                                  value=committer.commits)
        yield CounterMetricFamily("netbootd_commit_writes",
                                  "Writes stored by successful group commits",
                                  value=committer.committed_writes)
        yield CounterMetricFamily("netbootd_commit_failures",
                                  "Group commits that failed (their replies withheld)",
                                  value=committer.failures)
        yield CounterMetricFamily("netbootd_commit_writes_dropped",
                                  "Writes the store could not hold, isolated from their "
                                  "batch and dropped (the rest committed)",
                                  value=getattr(committer, "dropped_writes", 0))
        yield CounterMetricFamily("netbootd_commit_replies_withheld",
                                  "Replies withheld because a write of theirs was dropped",
                                  value=getattr(committer, "withheld", 0))
        yield GaugeMetricFamily("netbootd_commit_pending", "Writes waiting for a commit",
                                value=committer.pending)
    registry = core.registry
    if registry is not None:
        states = Counter(h.state.value for h in registry.hosts.values())
        fam = GaugeMetricFamily("netbootd_hosts", "Known hosts by state", labels=["state"])
        for state, n in sorted(states.items()):
            fam.add_metric([state], n)
        yield fam
        # MACs only seen on DHCP (not stored; bounded, expiring) and what
        # became of them: a random-MAC flood shows as evictions here.
        yield GaugeMetricFamily("netbootd_hosts_seen", "MACs seen on DHCP only, "
                                "held in memory", value=len(registry.seen))
        fam = CounterMetricFamily("netbootd_registry_events", "Seen-set and host "
                                  "creation counters", labels=["event"])
        for name, n in sorted(registry.counters.items()):
            fam.add_metric([name], n)
        yield fam
    if core.started:
        yield GaugeMetricFamily("netbootd_start_time_seconds",
                                "When the daemon started (Unix time)", value=core.started)
