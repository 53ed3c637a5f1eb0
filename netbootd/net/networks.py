"""Networks at run time (issue 14): the admin's create / update / delete /
add-leases / remove-leases, each checked whole before anything changes, stored,
then applied live through Core.replan (the DHCP engine and lease table swap
in the new set on the reactor; no lease is dropped).

One change at a time (a DeferredLock): each is validated against the set that
is current when its turn comes, so two concurrent creates of overlapping
networks cannot both pass.  A refused change (VnetError: 400, VnetConflict /
InUse: 409) leaves the running service and the store as they were.
"""
from __future__ import annotations

import json
import logging

from twisted.internet import defer, threads

from ..model import int2ip, ip2int
from ..policy.plan import make_plan
from ..policy.vnet import (Vnet, VnetConflict, VnetError, VnetLease, profile_for, recheck,
                           with_leases)
from ..writes import NetworkDelete, NetworkWrite, event

log = logging.getLogger("netbootd")


# The event of each change (literal kinds: tests/unit/test_writes.py walks them).
_EVENTS = {
    "network.created": lambda now, name: event(now, None, "network.created", network=name),
    "network.changed": lambda now, name: event(now, None, "network.changed", network=name),
    "network.deleted": lambda now, name: event(now, None, "network.deleted", network=name),
}


class InUse(VnetError):
    """Leases of the network (or of the leases named) are held: --force to go on."""


class Unknown(VnetError):
    """No network of that name."""


class Networks:
    def __init__(self, core):
        self.core = core
        self.meta: dict[str, dict] = {}      # name -> id, created, updated (stored rows)
        self._lock = defer.DeferredLock()

    # -- reads (reactor) ---------------------------------------------------
    def vnets(self) -> dict[str, Vnet]:
        plan = self.core.plan
        return {v.name: v for v in plan.vnets} if plan is not None else {}

    def profile_for(self, ip: str) -> str | None:
        """The default boot profile of the network ip is on (boot scripts)."""
        plan = self.core.plan
        return profile_for(plan.vnets, ip) if plan is not None else None

    def must(self, name: str) -> Vnet:
        v = self.vnets().get(name)
        if v is None:
            raise Unknown(f"no network named {name!r}")
        return v

    def rows(self) -> list[dict]:
        """Every network: ID, NAME, TYPE, BRIDGE (interface), subnet, leases
        used/total; what `vnet list` shows."""
        core = self.core
        now = core.reactor.seconds()
        usage = core.leases.usage_all(now) if core.leases is not None else {}
        out = []
        for v in self.vnets().values():
            used, total = usage.get(v.name, (0, 0))
            m = self.meta.get(v.name, {})
            out.append({"id": m.get("id"), "name": v.name, "type": v.type, "subnet": v.subnet,
                        "interface": v.interface, "relays": list(v.relays), "vlan": v.vlan,
                        "policy": v.policy, "origin": v.origin, "used": used, "total": total,
                        "attached": sorted(i for i, n in core.plan.attached.items()
                                           if n == v.name)})
        return out

    def show(self, name: str) -> dict:
        """One network: its definition and each lease (declared or held): IP,
        MAC, USED, the host."""
        v = self.must(name)
        core = self.core
        now = core.reactor.seconds()
        table = core.leases
        sub = ip2int(v.subnet.split("/")[0])
        size = 1 << (32 - int(v.subnet.split("/")[1]))
        rows: dict[int, dict] = {}
        for x in v.leases:
            rows[ip2int(x.ip)] = {"ip": x.ip, "mac": v.lease_mac(x), "declared": True,
                                  "used": False, "state": None, "ends": None,
                                  "hostname": x.hostname}
        if table is not None:
            for addr, lease in list(table.by_addr.items()):
                if sub <= addr < sub + size and table.held(lease, now):
                    r = rows.setdefault(addr, {"ip": int2ip(addr), "mac": lease.mac,
                                               "declared": False, "hostname": None})
                    r.update(used=True, state=lease.state.value, ends=lease.ends,
                             holder=lease.mac, hostname=r.get("hostname") or lease.hostname)
        for r in rows.values():
            h = core.registry.hosts.get(r.get("holder") or r["mac"]) if core.registry else None
            r["host"] = (h.hostname or h.mac) if h is not None else None
        out = next((r for r in self.rows() if r["name"] == name), {})
        return {**out, "definition": v.to_doc(),
                "leases": [rows[a] for a in sorted(rows)]}

    # -- changes ------------------------------------------------------------
    def create(self, v: Vnet) -> defer.Deferred:
        def step(cur):
            if v.name in cur:
                raise VnetConflict(f"a network named {v.name!r} exists already", "NAME")
            return [*cur.values(), v], [v], "network.created"
        return self._change(step, v.name)

    def update(self, name: str, v: Vnet) -> defer.Deferred:
        def step(cur):
            self._own(cur, name)
            if v.name != name:
                raise VnetError(f"a network keeps its name ({name!r})", "NAME")
            return [v if x.name == name else x for x in cur.values()], [v], "network.changed"
        return self._change(step, name)

    def add_leases(self, name: str, leases: list[VnetLease]) -> defer.Deferred:
        def step(cur):
            new = recheck(with_leases(self._own(cur, name), add=leases))
            return [new if x.name == name else x for x in cur.values()], [new], \
                "network.changed"
        return self._change(step, name)

    def remove_leases(self, name: str, ips: list[str], force: bool) -> defer.Deferred:
        def step(cur):
            old = self._own(cur, name)
            have = {x.ip for x in old.leases}
            missing = [ip for ip in ips if ip not in have]
            if missing:
                raise Unknown(f"{name} has no lease {missing[0]}", "LEASES")
            held = [ip for ip in ips if self._held(ip2int(ip))]
            if held and not force:
                raise InUse(f"{held[0]} is in use (force to remove it anyway; the client "
                            "keeps it until its lease ends, then it is not renewed)", "LEASES")
            new = recheck(with_leases(old, remove=ips))
            return [new if x.name == name else x for x in cur.values()], [new], \
                "network.changed"
        return self._change(step, name)

    def delete(self, name: str, force: bool) -> defer.Deferred:
        def step(cur):
            self._own(cur, name)
            used = self.core.leases.usage(name, self.core.reactor.seconds())[0] \
                if self.core.leases is not None and name in self.core.leases.nets else 0
            if used and not force:
                raise InUse(f"{name} has {used} lease(s) in use (force to delete it anyway: "
                            "they stay held until they end, and are not renewed)")
            return [x for x in cur.values() if x.name != name], [], "network.deleted"
        return self._change(step, name, delete=True)

    def _own(self, cur: dict[str, Vnet], name: str) -> Vnet:
        v = cur.get(name)
        if v is None:
            raise Unknown(f"no network named {name!r}")
        if v.origin == "config":
            raise InUse(f"{name} comes from the config file's [[networks]]: change it there "
                        "(it is reconciled at start)")
        return v

    def _held(self, addr: int) -> bool:
        t = self.core.leases
        return t is not None and t.holder(addr, self.core.reactor.seconds()) is not None

    def _change(self, step, name: str, delete: bool = False) -> defer.Deferred:
        return self._lock.run(self._apply, step, name, delete)

    def _apply(self, step, name: str, delete: bool) -> defer.Deferred:
        """Check the whole new set (the plan it makes), store it, then apply it."""
        core = self.core
        new_set, changed, kind = step(self.vnets())
        make_plan(core.cfg, core.ifaces, new_set)          # raises: nothing changed
        now = core.reactor.seconds()
        writes: list = [NetworkWrite(v.name, v.origin, json.dumps(v.to_doc(), sort_keys=True),
                                     now) for v in changed]
        if delete:
            writes.append(NetworkDelete(name))
        writes.append(_EVENTS[kind](now, name))
        d = defer.Deferred()
        core.committer.submit(writes, lambda: d.callback(None))

        def stored(_):
            core.replan(networks=new_set)
            log.info("networks: %s %s; serving %d network(s)", kind.split(".")[1], name,
                     len(new_set))
            return self.reload_meta()
        d.addCallback(stored)
        d.addCallback(lambda _: None if delete else self.show(name))
        return d

    def reload_meta(self) -> defer.Deferred:
        """The stored rows' ids and times (read off the reactor)."""
        d = threads.deferToThread(self.core.store.load_networks)

        def got(rows):
            self.meta = {r["name"]: {k: r[k] for k in ("id", "created", "updated")}
                         for r in rows}
        return d.addCallback(got)
