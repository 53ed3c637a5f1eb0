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
from ..policy.identity import identifiers, is_placeholder
from ..policy.ratelimit import Buckets
from ..writes import HostDelete, HostWrite, InventoryWrite, event
from .accounts import Accounts
from .hosts import Registry

POLL = 10                   # seconds the agent waits between polls (a hint)
POLL_MAX = 60               # the agent's backoff cap
MAX_IDS = 64                # identifiers kept per host
QUEUED_ACTIONS = ("wait", "poweroff", "reboot", "wipe")
STATUSES = ("started", "booting", "done", "failed")
# What the agent may report for each action: a wipe is never "booting", a
# boot never "done" (it ends when the kernel is handed over).
ACTION_STATUSES = {"wipe": ("started", "done", "failed"), "boot": ("started", "booting",
                                                                     "failed"),
                   "poweroff": ("started", "failed"), "reboot": ("started", "failed"),
                   "capture": ("started", "done", "failed"), "wait": ()}
# Actions the server queues itself (not through POST hosts/{mac}/actions): a
# capture is started by POST hosts/{mac}/capture (net/capture.py).
SERVER_ACTIONS = ("capture",)
MAX_DISKS = 64              # disks of a host's inventory kept in memory (for wipes)
DETAIL_MAX = 16 * 1024      # bytes of a report's detail, as JSON
BLOCK = 30.0                # seconds a source that kept being refused is answered 429
ANY = "any"                 # Host.agent_addr after an admin's reset


def _enrolled(h: Host) -> bool:
    """A host with something to steal: an account or an agent credential."""
    return bool(h.account or h.secret_hash)
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
                 network_account: Callable[[str], str | None] = lambda ip: None,
                 refresh_keys: Callable[[], bool] = lambda: False):
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
        # Successful registrations and inventory posts per host (a host that
        # re-registers in a loop must not grow the store or the index).
        self._per_host = Buckets(0.1, 5.0, max_keys=65536)
        self._inventory = Buckets(0.1, 5.0, max_keys=65536)
        self.refresh_keys = refresh_keys
        self.counters: Counter = Counter()
        # action -> check(host, action, status, detail, now) -> (status, detail,
        # writes): the owner of a server-queued action decides what a report of
        # it means (net/capture.py: a capture is done only when the digests agree)
        self.report_checks: dict[str, Callable] = {}

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
            # under no host's MAC: a flood of refusals naming a victim's MAC
            # must not push the victim's own history out of its timeline
            writes.append(event(now, None, kind, reason=reason, source=source, claimed=mac,
                                **detail))
        return Refused(status, reason, writes)

    def _check_blocked(self, source: str | None, now: float) -> None:
        until = self._blocked.get(source) if source is not None else None
        if until is not None:
            if now < until:
                self.counters["refused.blocked_source"] += 1
                raise Refused(429, "too many refused registrations from this address; try "
                                   "again later")
            del self._blocked[source]

    def _token(self, token: str | None, source, mac, now):
        """(account, claims, token row) of a token that checks (signature
        first, then memory), or (None, None, None) without one."""
        if token is None:
            return None, None, None
        try:
            claims = verify_token(self.ring, token, now)
        except TokenError as e:
            if str(e) != "unknown signing key" or not self.refresh_keys():
                raise self._refuse_event(403, str(e), source, mac, now,
                                         "agent.refused") from None
            try:       # a key rotated by another process: the ring was re-read
                claims = verify_token(self.ring, token, now)
            except TokenError as e2:
                raise self._refuse_event(403, str(e2), source, mac, now,
                                         "agent.refused") from None
        account, why, _ = self.accounts.redeem(claims, token, now)
        if account is None:
            raise self._refuse_event(403, why, source, mac, now, "agent.refused",
                                     token=claims.token_id)
        return account, claims, self.accounts.tokens[claims.token_id]

    def register(self, mac: str, ip: str | None, uuid: str | None, token: str | None,
                 ids: dict | None, source: str | None, now: float,
                 leased: Callable[[list], dict] = lambda macs: {}) -> tuple[dict, list]:
        """Returns (the reply, writes) or raises Refused.  `leased(macs)`:
        {mac: address} of the active leases this daemon gave those MACs."""
        self._check_blocked(source, now)
        if is_placeholder("mac", mac):
            raise Refused(403, "mac: a placeholder or multicast address names no NIC")
        account, claims, tok = self._token(token, source, mac, now)
        own = leased([mac]).get(mac)
        if own is not None and source is not None and source != own:
            # Full mode: the MAC holds a lease from us, so its agent calls from
            # that address; anyone else claiming the MAC is refused.
            raise self._refuse_event(409, "this MAC's lease is at another address", source,
                                     mac, now, "agent.refused", lease=own)
        found = identifiers(mac, ids)
        if uuid and not any(k == "uuid" for k, _ in found):
            found += [i for i in identifiers(mac, {"uuid": uuid}) if i[0] == "uuid"]
        matches = self.registry.match(found)
        keyed = self.registry.hosts.get(mac) or self.registry.aliased(mac)
        if keyed is not None and keyed not in matches:
            matches.insert(0, keyed)
        enrolled = [h for h in matches if _enrolled(h)]
        if len(enrolled) > 1:
            raise self._refuse_event(409, "these identifiers match several enrolled hosts; "
                                          "an admin decides", source, mac, now,
                                     "host.conflict", hosts=[h.mac for h in enrolled])
        h = (enrolled or matches or [None])[0]
        if h is not None and _enrolled(h):
            if account is not None and h.account not in (None, account.id):
                raise self._refuse_event(
                    409, "host belongs to another account", source, mac, now, "host.conflict",
                    host=h.mac, account=self.accounts.name_of(h.account),
                    token_account=account.name, token=claims.token_id)
            same_account = account is not None and h.account == account.id
            if not same_account and not self._known_at(h, source, leased):
                raise self._refuse_event(
                    409, "host is enrolled: it re-registers from its own address or with its "
                         "account's token (or an admin resets it)", source, mac, now,
                    "agent.refused", host=h.mac)
        if h is not None and not self._per_host.allow(h.mac, now):
            self.counters["refused.host_rate"] += 1
            raise Refused(429, "this host registers too often; try again later")
        if h is None:
            refused = self.registry.admit_http(mac, source, now)
            if refused:
                self.counters["refused.new_host_rate"] += 1
                raise Refused(429, refused)
        joining = account is not None and (h is None or h.account != account.id)
        if joining and tok.max_uses is not None and tok.uses >= tok.max_uses:
            # uses count the hosts a token brought in: the same host booting
            # its medium again is not a new use
            raise self._refuse_event(403, "token used up", source, mac, now, "agent.refused",
                                     token=claims.token_id)
        writes: list = []
        if joining:
            writes += self.accounts.use(claims.token_id)
        if h is not None and h.mac != mac:
            writes += self._merge(h, mac, now)
        host, reg = self.registry.agent_register(h.mac if h else mac, ip, uuid, now)
        writes += reg
        via = "token"
        if account is None and host.account is None and source:
            account, via = self.accounts.get(self.network_account(source)), "network"
            joining = account is not None
        if joining:
            writes.append(event(now, host.mac, "host.account",
                                old=self.accounts.name_of(host.account), new=account.name,
                                via=via, token=claims.token_id if claims else None))
            host.account = account.id
        member = self.accounts.by_id.get(host.account)
        if member is not None:
            self._enrolled_state(host, member, joining, now, writes)
        refused = self.registry.claim(host, found, MAX_IDS)
        if refused:
            writes.append(event(now, host.mac, "host.identity_conflict", ids=refused[:8]))
        secret = new_agent_secret(host.mac)
        host.secret_hash = secret_hash(secret)
        host.agent_addr = source
        writes.append(HostWrite(host))
        return {"mac": host.mac, "state": host.state.value,
                "account": self.accounts.name_of(host.account), "secret": secret,
                "poll": {"interval": POLL, "max": POLL_MAX}}, writes

    @staticmethod
    def _known_at(h: Host, source: str | None, leased) -> bool:
        """Is `source` an address the host is known at: the one its secret was
        issued to, or an active lease of one of its MACs (never an address
        an unauthenticated request reported)?"""
        if h.agent_addr == ANY:
            return True
        if source is None:
            return False
        if source == h.agent_addr:
            return True
        macs = [h.mac] + [v for k, v in h.ids if k == "mac"]
        return source in set(leased(macs).values())

    def _merge(self, h: Host, other: str, now: float) -> list:
        """`other` (the NIC this call came from) is another MAC of host h: a
        host DHCP made of it that holds nothing (no account, credential,
        profile, name or action) folds into h; anything more stays, for an
        admin to decide."""
        bare = self.registry.hosts.get(other)
        if bare is None or _enrolled(bare) or bare.profile or bare.hostname or bare.action \
                or bare.state not in (HostState.DISCOVERED, HostState.REGISTERED,
                                      HostState.IDLE):
            return []
        del self.registry.hosts[other]
        self.registry.unindex(bare)
        return [HostDelete(other), event(now, h.mac, "host.merged", nic=other)]

    def _enrolled_state(self, h: Host, account, joining: bool, now: float,
                        writes: list) -> None:
        """A host that joins a manual-approval account now is pending until an
        admin approves it, whatever it was; one that joins an automatic one,
        or an approved member, is idle; an account's default profile is its
        assignment."""
        if joining and account.approval == "manual" and h.state != HostState.RETIRED:
            h.action = None
            self.registry._set_state(h, HostState.PENDING, now, writes,
                                     f"joined {account.name}: awaiting approval")
            return
        if h.state in (HostState.DISCOVERED, HostState.REGISTERED, HostState.ERROR) or (
                h.state == HostState.PENDING and account.approval == "auto"):
            self.registry._set_state(h, HostState.IDLE, now, writes, f"member of "
                                     f"{account.name}")
        if h.state == HostState.IDLE and account.profile and h.profile is None:
            h.profile, h.profile_args = account.profile, dict(account.profile_args)
            self.registry._set_state(h, HostState.ASSIGNED, now, writes,
                                     f"account {account.name}'s default profile")
            writes.append(event(now, h.mac, "host.assign", profile=h.profile,
                                args=h.profile_args, via="account"))

    def approved(self, h: Host, now: float) -> list:
        """An admin approved a pending member: idle at once, with its account's
        default profile (what an automatic account gives at registration)."""
        writes: list = []
        account = self.accounts.by_id.get(h.account)
        if account is not None and h.state == HostState.REGISTERED:
            self.registry._set_state(h, HostState.IDLE, now, writes, "approved by admin")
            self._enrolled_state(h, account, False, now, writes)
            writes.append(HostWrite(h))
        return writes

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
        """Validated, stored with history when it changed, summarized in memory
        (with its disks, which a wipe is checked against).  Its identifiers
        are not indexed: a host claims identifiers by registering."""
        if not self._inventory.allow(h.mac, now):
            self.counters["refused.inventory_rate"] += 1
            raise Refused(429, "this host posts its inventory too often; try again later")
        try:
            clean = inv.validate(doc)
        except inv.InventoryError as e:
            raise Refused(400, str(e)) from None
        text = json.dumps(clean, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        changed = h.hw is None or h.hw.get("digest") != digest
        writes: list = []
        if changed:
            h.hw = dict(inv.summary(clean), digest=digest, disk_list=[
                {"name": d.get("name"), "bytes": d.get("bytes"), "serial": d.get("serial")}
                for d in clean.get("disks", [])[:MAX_DISKS]])
            writes += [InventoryWrite(now, h.mac, text), HostWrite(h)]
        writes.append(event(now, h.mac, "agent.inventory", changed=changed,
                            **{k: v for k, v in (h.hw or {}).items()
                               if k not in ("digest", "disk_list")}))
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
        known = QUEUED_ACTIONS + ("boot",) + SERVER_ACTIONS
        if action not in known:
            raise Refused(400, f"action: one of {', '.join(known)}")
        if status not in STATUSES:
            raise Refused(400, f"status: one of {', '.join(STATUSES)}")
        detail = body.get("detail", {})
        if not isinstance(detail, dict) or len(json.dumps(detail)) > DETAIL_MAX:
            raise Refused(400, f"detail: an object of at most {DETAIL_MAX} bytes as JSON")
        current = h.action or {}
        if aid is None or aid != current.get("id") or action != current.get("action"):
            raise Refused(409, "no such action pending for this host")
        if status not in ACTION_STATUSES[action]:
            raise Refused(400, f"status: {status} is not a status of {action} (one of "
                               f"{', '.join(ACTION_STATUSES[action])})")
        if action == "wipe" and status == "done" and not _all_verified(detail,
                                                                       current["disks"]):
            status = "failed"       # never recorded as done unless every disk verified
            detail = dict(detail, server="not every disk verified")
        writes: list = []
        check = self.report_checks.get(action)
        if check is not None:
            status, detail, more = check(h, current, status, detail, now)
            writes += more
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
            known = {d["name"]: d for d in (h.hw or {}).get("disk_list", [])}
            if not known:
                raise Refused(409, "no inventory of this host's disks yet: a wipe names "
                                   "disks the agent reported")
            missing = [d for d in disks if d not in known]
            if missing:
                raise Refused(409, f"disks: {missing[0]} is not in the host's inventory "
                                   f"({', '.join(sorted(known))})")
            disks = list(dict.fromkeys(disks))
            # The agent checks size and serial before wiping: a disk name can
            # move between boots (USB media reorder sdX).
            new.update(disks=disks, confirm=h.mac, expect=[known[d] for d in disks])
        elif "disks" in body or "confirm" in body:
            raise Refused(400, f"disks/confirm: only for wipe, not {action}")
        h.action = None if action == "wait" else new
        return [HostWrite(h), event(now, h.mac, "agent.queued", **new)]


    def queue_server_action(self, h: Host, fields: dict, now: float) -> list:
        """A server-queued action (SERVER_ACTIONS: a capture, with its job, disk and
        volume) for the host's agent; refused while another action is pending (it
        would be lost)."""
        if fields.get("action") not in SERVER_ACTIONS:
            raise Refused(400, f"action: one of {', '.join(SERVER_ACTIONS)}")
        if h.action is not None:
            raise Refused(409, f"the host has a pending {h.action.get('action')} action: wait "
                               "for it, or queue 'wait' to drop it")
        h.action = dict(fields, id=int(now * 1000))
        return [HostWrite(h), event(now, h.mac, "agent.queued", **h.action)]


def _all_verified(detail: dict, wanted: list) -> bool:
    """Every disk asked for, and only those, reported verified."""
    disks = detail.get("disks")
    if not isinstance(disks, list) or sorted(
            str(d.get("name")) if isinstance(d, dict) else "" for d in disks) != sorted(wanted):
        return False
    return bool(disks) and isinstance(disks, list) and all(
        isinstance(d, dict) and d.get("verified") is True and d.get("result") == "ok"
        for d in disks)
