"""A core for net/networks.Networks without the daemon: a real store, group
committer, registry and lease table, interface facts given (no kernel), and
the same replan as net/services/core.Core (plan -> lease table + engine)."""
from __future__ import annotations

from netbootd.config import Config, parse
from netbootd.net.interfaces import IfAddr
from netbootd.net.networks import Networks
from netbootd.policy.leases import LeaseTable
from netbootd.policy.plan import make_plan
from netbootd.registry.hosts import Registry


class NetCore:
    def __init__(self, reactor, store, committer, cfg: Config | None = None,
                 ifaces=(IfAddr("eth1", "10.77.0.1", 24),), registry=None, engine=None):
        self.cfg = cfg or parse('mode = "full"\n')
        self.reactor, self.store, self.committer = reactor, store, committer
        self.registry = registry or Registry()
        self.ifaces = list(ifaces)
        self.plan = make_plan(self.cfg, self.ifaces, [])
        self.leases = LeaseTable(list(self.plan.networks))
        self.engine = engine
        self.networks = Networks(self)
        self.applied = 0

    def replan(self, networks=None, ifaces=None):
        vnets = self.plan.vnets if networks is None else tuple(networks)
        facts = self.ifaces if ifaces is None else list(ifaces)
        plan = make_plan(self.cfg, facts, vnets)
        self.ifaces, self.plan = facts, plan
        self.leases.set_networks(list(plan.networks))
        if self.engine is not None:
            self.engine.set_networks(list(plan.networks), dict(plan.attached))
        self.applied += 1
        return plan
