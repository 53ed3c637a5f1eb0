"""The agent's side of the registry: enrollment, credentials, inventory,
actions (docs/agent-protocol.md).  In memory, returning writes; no I/O.

* register: a token (if any) is checked for its signature first (pure,
  auth/enroll.verify_token), then against memory (known, not revoked,
  not used up); the host is found by any identifier it reports
  (registry.match); a host of another account is never taken over
  (`host.conflict`); a host that already holds a credential is re-registered
  only from an address it is known at (its lease, its last address, the
  address that registered it), so a replayed registration from elsewhere
  cannot take it.  Every success issues a new per-host secret (only its
  hash is kept); the old one stops working at once.
* every later call authenticates with that secret (`authenticate`): a host
  can act only for itself.
* actions: an admin queues one (`queue`), the agent fetches it (`next`) and
  reports on it (`report`); each step lands in the host's timeline.  A wipe
  is recorded as done only when every disk's report says verified.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Callable

from ..auth.enroll import (KeyRing, TokenError, new_agent_secret, secret_hash, secret_mac,
                           secret_matches, verify_token)
from ..model import Host, HostState
from ..policy import inventory as inv
from ..policy.identity import identifiers
from ..policy.ratelimit import Buckets
from ..writes import HostDelete, HostWrite, InventoryWrite, event
from .accounts import Accounts
from .hosts import Registry

POLL = 10                   # seconds the agent waits between polls (a hint)
POLL_MAX = 60               # the agent's backoff cap
MAX_IDS = 64                # identifiers kept per host
QUEUED_ACTIONS = ("wait", "poweroff", "reboot", "wipe")
STATUSES = ("started", "booting", "done", "failed")
DETAIL_MAX = 16 * 1024      # bytes of a report's detail, as JSON
BLOCK = 30.0                # seconds a source that kept being refused is answered 429
LAST_SEEN_EVERY = 300.0     # a polling agent refreshes last_seen in the store this often
_DISK = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class Refused(Exception):
    """An agent call refused: HTTP `status`, the reason, and the writes (an
    event, rate-limited per source) to store before answering."""

    def __init__(self, status: int, reason: str, writes: list | None = None):
        super().__init__(reason)
        self.status, self.reason, self.writes = status, reason, writes or []


class Agents:
    def __init__(self, registry: Registry, accounts: Accounts, ring: KeyRing, *,
                 refusal_events_pps: float = 0.5,
                 network_account: Callable[[str], str | None] = lambda ip: None):
        """`network_account(source address)`: the account name the config
        gives the network of that address ([[networks]] account), or None."""
        self.registry, self.accounts, self.ring = registry, accounts, ring
        self.network_account = network_account
        # Refusals are answered always, but stored as events only this often
        # per source: a flood of bad tokens must not cost a row per request.
        self._refusal_events = Buckets(refusal_events_pps, 5.0, max_keys=4096)
        # Refused registrations per source (guessing tokens, replaying): past
        # the burst a source is answered 429 without a check for BLOCK seconds.
        self._refusals = Buckets(1.0, 10.0, max_keys=4096)
        self._blocked: dict[str, float] = {}
        self._registered_from: dict[str, str] = {}     # host MAC -> source of its secret
        self.counters: Counter = Counter()

    # -- registration ---------------------------------------------------------
    def _refuse_event(self, status: int, reason: str, source: str | None, mac: str | None,
                      now: float, kind: str, **detail) -> Refused:
        self.counters[f"refused.{reason}"] += 1
        if source is not None and not self._refusals.allow(source, now):
            if len(self._blocked) >= 4096:
                self._blocked.pop(next(iter(self._blocked)))
            self._blocked[source] = now + BLOCK
        writes = []
        if self._refusal_events.allow(source, now):
            writes.append(event(now, mac, kind, reason=reason, source=source, **detail))
        return Refused(status, reason, writes)

    def register(self, mac: str, ip: str | None, uuid: str | None, token: str | None,
                 ids: dict | None, source: str | None, now: float,
                 leased: Callable[[str], str | None] = lambda mac: None) -> tuple[dict, list]:
        """Returns (the reply, writes) or raises Refused.  `leased(mac)`: the
        address of the MAC's active lease from this daemon, if any."""
        until = self._blocked.get(source) if source is not None else None
        if until is not None:
            if now < until:
                self.counters["refused.blocked_source"] += 1
                raise Refused(429, "too many refused registrations from this address; try "
                                   "again later")
            del self._blocked[source]
        account, claims = None, None
        if token is not None:
            try:
                claims = verify_token(self.ring, token, now)
            except TokenError as e:
                raise self._refuse_event(403, str(e), source, mac, now,
                                         "agent.refused") from None
            account, why, _ = self.accounts.redeem(claims, token, now)
            if account is None:
                raise self._refuse_event(403, why, source, mac, now, "agent.refused",
                                         token=claims.token_id)
        lease_ip = leased(mac)
        if lease_ip is not None and source is not None and source != lease_ip:
            # Full mode: the MAC holds a lease from us, so its agent calls from
            # that address; anyone else claiming the MAC (to squat on it with
            # a token of their own) is refused.
            raise self._refuse_event(409, "this MAC's lease is at another address", source,
                                     mac, now, "agent.refused", lease=lease_ip)
        found = identifiers(mac, ids)
        if uuid and not any(k == "uuid" for k, _ in found):
            found += [i for i in identifiers(mac, {"uuid": uuid}) if i[0] == "uuid"]
        matches = self.registry.match(found)
        enrolled = [h for h in matches if h.account or h.secret_hash]
        h = (enrolled or matches or [None])[0]
        if h is not None and account is not None and h.account not in (None, account.id):
            raise self._refuse_event(409, "host belongs to another account", source, h.mac, now,
                               "host.conflict", account=self.accounts.name_of(h.account),
                               token_account=account.name, token=claims.token_id)
        if h is not None and h.secret_hash and not self._known_at(h, source, leased):
            raise self._refuse_event(409, "host is registered at another address; an admin "
                                          "can reset it (netbootd hosts reset MAC)", source,
                                     h.mac, now, "agent.refused")
        if h is None:
            refused = self.registry.admit_http(mac, source, now)
            if refused:
                self.counters["refused.new_host_rate"] += 1
                raise Refused(429, refused)
        writes: list = []
        if claims is not None:
            writes += self.accounts.use(claims.token_id)
        if h is not None and h.mac != mac:
            writes += self._merge(h, mac, now)
        before = h.state if h is not None else HostState.DISCOVERED
        host, reg = self.registry.agent_register(h.mac if h else mac, ip, uuid, now)
        writes += reg
        via = "token"
        if account is None and host.account is None and source:
            account, via = self.accounts.get(self.network_account(source)), "network"
        joined = account if account is not None else self.accounts.by_id.get(host.account)
        if account is not None and host.account != account.id:
            host.account = account.id
            writes.append(event(now, host.mac, "host.account", old=None, new=account.name,
                                via=via, token=claims.token_id if claims else None))
        if joined is not None:
            self._enrolled_state(host, joined, before, now, writes)
        self._add_ids(host, found)
        secret = new_agent_secret(host.mac)
        host.secret_hash = secret_hash(secret)
        if source:
            self._registered_from[host.mac] = source
        writes.append(HostWrite(host))
        return {"mac": host.mac, "state": host.state.value,
                "account": self.accounts.name_of(host.account), "secret": secret,
                "poll": {"interval": POLL, "max": POLL_MAX}}, writes

    def _known_at(self, h: Host, source: str | None, leased) -> bool:
        if source is None:
            return False
        macs = [h.mac] + [v for k, v in h.ids if k == "mac"]
        return source in {h.ip, self._registered_from.get(h.mac)} | {leased(m) for m in macs}

    def _merge(self, h: Host, other: str, now: float) -> list:
        """`other` (the NIC this call came from) is another MAC of host h: a
        bare host DHCP made of it (no account, no credential) folds into h."""
        bare = self.registry.hosts.get(other)
        if bare is None or bare.account or bare.secret_hash:
            return []
        del self.registry.hosts[other]
        self.registry.unindex(other)
        return [HostDelete(other), event(now, h.mac, "host.merged", nic=other)]

    def _enrolled_state(self, h: Host, account, before: HostState, now: float,
                        writes: list) -> None:
        """A host of an account: idle (auto approval) or pending (manual)
        until approved (an approved host is registered or idle before this
        call); an account's default profile is its assignment."""
        if h.state in (HostState.DISCOVERED, HostState.REGISTERED, HostState.ERROR,
                       HostState.PENDING):
            if account.approval == "manual" and before not in (HostState.REGISTERED,
                                                               HostState.IDLE):
                self.registry._set_state(h, HostState.PENDING, now, writes,
                                         f"enrolled in {account.name}: awaiting approval")
                return
            self.registry._set_state(h, HostState.IDLE, now, writes, f"enrolled in "
                                     f"{account.name}")
        if h.state == HostState.IDLE and account.profile and h.profile is None:
            h.profile, h.profile_args = account.profile, dict(account.profile_args)
            self.registry._set_state(h, HostState.ASSIGNED, now, writes,
                                     f"account {account.name}'s default profile")
            writes.append(event(now, h.mac, "host.assign", profile=h.profile,
                                args=h.profile_args, via="account"))

    def _add_ids(self, h: Host, found) -> None:
        have = [tuple(i) for i in h.ids]
        for i in found:
            if tuple(i) not in have:
                have.append(tuple(i))
        h.ids = [list(i) for i in have[-MAX_IDS:]]
        self.registry.index(h)

    # -- authenticated calls ----------------------------------------------------
    def authenticate(self, secret: str | None) -> Host:
        if not secret:
            raise Refused(401, "agent credential required (Authorization: Agent <secret>)")
        try:
            mac = secret_mac(secret)
        except TokenError:
            raise Refused(401, "agent credential not valid") from None
        h = self.registry.hosts.get(mac)
        if h is None or not secret_matches(secret, h.secret_hash):
            raise Refused(401, "agent credential not valid")
        return h

    def inventory(self, h: Host, doc, now: float) -> tuple[dict, list]:
        try:
            clean = inv.validate(doc)
        except inv.InventoryError as e:
            raise Refused(400, str(e)) from None
        text = json.dumps(clean, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        changed = h.hw is None or h.hw.get("digest") != digest
        writes: list = []
        if changed:
            h.hw = dict(inv.summary(clean), digest=digest)
            self._add_ids(h, identifiers(h.mac, None, clean))
            writes += [InventoryWrite(now, h.mac, text), HostWrite(h)]
        writes.append(event(now, h.mac, "agent.inventory", changed=changed,
                            **{k: v for k, v in (h.hw or {}).items() if k != "digest"}))
        return {"stored": True, "changed": changed}, writes

    def next(self, h: Host, now: float, files_base: str) -> tuple[dict, list]:
        writes: list = []
        if now - h.last_seen > LAST_SEEN_EVERY:
            writes.append(HostWrite(h))
        h.last_seen = now
        if h.action is None and h.state == HostState.REGISTERED:
            self.registry._set_state(h, HostState.IDLE, now, writes,
                                     "agent waiting for assignment")
            writes.append(HostWrite(h))
        if h.action is None and h.state == HostState.ASSIGNED:
            h.action = self._boot_action(h, now, files_base)
            writes += [HostWrite(h), event(now, h.mac, "agent.action", id=h.action["id"],
                                           action=h.action["action"], status="sent")]
        if h.action is not None:
            return dict(h.action, poll=POLL), writes
        return {"action": "wait", "id": None, "poll": POLL}, writes

    @staticmethod
    def _boot_action(h: Host, now: float, files_base: str) -> dict:
        """The assigned profile as the agent runs it: kexec a `linux`
        profile; any other profile needs the firmware: reboot into PXE."""
        aid = int(now * 1000)
        if h.profile != "linux":
            return {"id": aid, "action": "reboot", "why": f"profile {h.profile}"}

        def url(loc: str) -> str:
            return loc if "://" in loc else f"{files_base.rstrip('/')}/files/{loc}"
        args = h.profile_args
        return {"id": aid, "action": "boot", "kernel": url(args["kernel"]),
                "initrd": [url(i) for i in args.get("initrds", [])],
                "cmdline": args.get("cmdline", "")}

    def report(self, h: Host, body, now: float) -> tuple[dict, list]:
        if not isinstance(body, dict):
            raise Refused(400, "body: must be a JSON object")
        unknown = sorted(set(body) - {"id", "action", "status", "detail"})
        if unknown:
            raise Refused(400, f"{unknown[0]}: not a field of a report")
        aid, action, status = body.get("id"), body.get("action"), body.get("status")
        if aid is not None and (type(aid) is not int or aid < 0):
            raise Refused(400, "id: a non-negative integer or null")
        if action not in QUEUED_ACTIONS + ("boot",):
            raise Refused(400, f"action: one of {', '.join(QUEUED_ACTIONS + ('boot',))}")
        if status not in STATUSES:
            raise Refused(400, f"status: one of {', '.join(STATUSES)}")
        detail = body.get("detail", {})
        if not isinstance(detail, dict) or len(json.dumps(detail)) > DETAIL_MAX:
            raise Refused(400, f"detail: an object of at most {DETAIL_MAX} bytes as JSON")
        current = h.action or {}
        if aid is None or aid != current.get("id") or action != current.get("action"):
            raise Refused(409, "no such action pending for this host")
        if action == "wipe" and status == "done" and not _all_verified(detail):
            status = "failed"       # never recorded as done unless every disk verified
            detail = dict(detail, server="not every disk verified")
        writes: list = []
        if status == "booting":
            self.registry._set_state(h, HostState.BOOTING, now, writes, "agent is booting "
                                     "the assignment")
        ends = status in ("booting", "done", "failed") or (
            status == "started" and action in ("poweroff", "reboot"))
        if ends:
            h.action = None
            writes.append(HostWrite(h))
        if status == "failed":
            writes.append(event(now, h.mac, "agent.action_failed", id=aid, action=action,
                                status=status, detail=detail))
        else:
            writes.append(event(now, h.mac, "agent.action", id=aid, action=action,
                                status=status, detail=detail))
        return {"ok": True, "status": status}, writes

    # -- admin ----------------------------------------------------------------------
    def queue(self, h: Host, body, now: float) -> list:
        """An admin's action for the host's agent (replaces a pending one)."""
        if not isinstance(body, dict):
            raise Refused(400, "body: must be a JSON object")
        unknown = sorted(set(body) - {"action", "disks", "confirm"})
        if unknown:
            raise Refused(400, f"{unknown[0]}: not a field of an action")
        action = body.get("action")
        if action not in QUEUED_ACTIONS:
            raise Refused(400, f"action: one of {', '.join(QUEUED_ACTIONS)} (boot: assign a "
                               "profile)")
        new = {"id": int(now * 1000), "action": action}
        if action == "wipe":
            disks = body.get("disks")
            if not (isinstance(disks, list) and 1 <= len(disks) <= 64 and all(
                    isinstance(d, str) and _DISK.match(d) for d in disks)):
                raise Refused(400, "disks: a list of 1-64 disk names (as in the inventory: "
                                   "vdb, sda, nvme0n1)")
            if not isinstance(body.get("confirm"), str):
                raise Refused(400, "confirm: required for a wipe (the host's MAC)")
            if body["confirm"].lower() != h.mac:
                raise Refused(409, f"confirm: must be the host's MAC ({h.mac}): a wipe "
                                   "destroys the data on those disks")
            new.update(disks=list(dict.fromkeys(disks)), confirm=h.mac)
        elif "disks" in body or "confirm" in body:
            raise Refused(400, f"disks/confirm: only for wipe, not {action}")
        h.action = None if action == "wait" else new
        return [HostWrite(h), event(now, h.mac, "agent.queued", **new)]


def _all_verified(detail: dict) -> bool:
    disks = detail.get("disks")
    return bool(disks) and isinstance(disks, list) and all(
        isinstance(d, dict) and d.get("verified") is True and d.get("result") == "ok"
        for d in disks)
