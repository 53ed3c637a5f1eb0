"""/api/v1/accounts, /api/v1/tokens and the agent-facing host admin calls
(queue an action, reset a credential): admin token on every mutating call.

A token's text is in exactly one reply, the one that creates it; lists and
events carry its id.  The logic is registry/accounts.py's and
registry/agent.py's; this module only speaks HTTP."""
from __future__ import annotations

from ...policy.boot import ProfileError, validate_args
from ...registry.accounts import AccountError
from ...registry.agent import ANY, Refused
from ...writes import HostWrite, event
from . import validate as v
from .common import read_json
from .errors import BadRequest, NotFound, Refusal, Unavailable

def _fields(body: dict, allowed: set, what: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"{unknown[0]}: not a field of {what}")


def _raise(e: AccountError):
    return Refusal(e.status, str(e))


def _boot(body: dict) -> tuple[str | None, dict]:
    """An account's "boot": {"profile", "args"} (an assignment) or null."""
    boot = body.get("boot")
    if boot is None:
        return None, {}
    if not isinstance(boot, dict):
        raise BadRequest("boot: an object {profile, args} or null")
    _fields(boot, {"profile", "args"}, "boot")
    if not isinstance(boot.get("profile"), str):
        raise BadRequest("boot.profile: required")
    try:
        return boot["profile"], validate_args(boot["profile"], boot.get("args", {}))
    except ProfileError as e:
        raise BadRequest(f"boot.{e}") from None


class AccountsApi:
    def __init__(self, accounts, registry, clock, committed):
        self.accounts, self.registry = accounts, registry
        self.clock, self.committed = clock, committed

    def _view(self, a) -> dict:
        hosts = sum(1 for h in self.registry.hosts.values() if h.account == a.id)
        tokens = sum(1 for t in self.accounts.tokens.values()
                     if t.account == a.id and t.revoked is None)
        return self.accounts.account_json(a, hosts, tokens)

    def list(self, request):
        return [self._view(a) for a in self.accounts.by_id.values()]

    def get(self, request, name):
        try:
            return self._view(self.accounts.must(name))
        except AccountError as e:
            raise _raise(e) from None

    def create(self, request):
        body = read_json(request)
        _fields(body, {"name", "approval", "boot"}, "an account")
        profile, args = _boot(body)
        try:
            a, writes = self.accounts.create(body.get("name"), body.get("approval", "auto"),
                                             profile, args, self.clock.seconds())
        except AccountError as e:
            raise _raise(e) from None
        return self.committed(writes, self._view(a))

    def patch(self, request, name):
        body = read_json(request)
        _fields(body, {"approval", "boot"}, "an account change")
        if not body:
            raise BadRequest("nothing to change")
        changes = {}
        if "approval" in body:
            changes["approval"] = body["approval"]
        if "boot" in body:
            changes["profile"], changes["profile_args"] = _boot(body)
        try:
            a, writes = self.accounts.update(name, self.clock.seconds(), **changes)
        except AccountError as e:
            raise _raise(e) from None
        return self.committed(writes, self._view(a))

    def delete(self, request, name):
        try:
            a = self.accounts.must(name)
            n = sum(1 for h in self.registry.hosts.values() if h.account == a.id)
            writes = self.accounts.delete(name, n, self.clock.seconds())
        except AccountError as e:
            raise _raise(e) from None
        return self.committed(writes, {"deleted": a.name})


class TokensApi:
    def __init__(self, accounts, ring, state_dir, clock, committed):
        self.accounts, self.ring, self.state_dir = accounts, ring, state_dir
        self.clock, self.committed = clock, committed

    def list(self, request):
        account = v.str_arg(request, "account")
        a = None
        if account is not None:
            a = self.accounts.get(account)
            if a is None:
                raise NotFound(f"no account {account!r}")
        now = self.clock.seconds()
        return [self.accounts.token_json(t, now) for t in self.accounts.tokens.values()
                if a is None or t.account == a.id]

    def create(self, request):
        body = read_json(request)
        _fields(body, {"account", "expires_in", "uses", "label"}, "a token")
        if not isinstance(body.get("account"), str):
            raise BadRequest("account: required (a name)")
        expires_in, uses = body.get("expires_in"), body.get("uses")
        for key, val in (("expires_in", expires_in), ("uses", uses)):
            if val is not None and (type(val) is not int or not 1 <= val <= v.MAX_COUNT):
                raise BadRequest(f"{key}: a positive integer or null")
        now = self.clock.seconds()
        try:
            text, t, writes = self.accounts.create_token(
                self.ring, body["account"], now,
                expires=None if expires_in is None else int(now) + expires_in,
                max_uses=uses, label=body.get("label"))
        except AccountError as e:
            raise _raise(e) from None
        return self.committed(writes, dict(self.accounts.token_json(t, now), token=text))

    def revoke(self, request, token_id):
        try:
            t, writes = self.accounts.revoke(token_id, self.clock.seconds())
        except AccountError as e:
            raise _raise(e) from None
        return self.committed(writes, self.accounts.token_json(t, self.clock.seconds()))

    def rotate_key(self, request):
        """A new signing key for new tokens; tokens signed by older keys stay
        valid (they are revoked one by one, or their key retired)."""
        if self.state_dir is None:
            raise Unavailable("no state dir to keep the keys in (not a daemon)")
        kid = self.ring.rotate(self.state_dir)
        return {"current": kid, "keys": sorted(self.ring.keys)}


class HostAgentApi:
    """Admin calls about a host's agent and account."""

    def __init__(self, registry, accounts, agents, clock, committed, view):
        self.registry, self.accounts, self.agents = registry, accounts, agents
        self.clock, self.committed, self.view = clock, committed, view

    def _host(self, mac):
        h = self.registry.hosts.get(v.mac(mac))
        if h is None:
            raise NotFound(f"no host {mac}")
        return h

    def queue(self, request, mac):
        h = self._host(mac)
        try:
            writes = self.agents.queue(h, read_json(request), self.clock.seconds())
        except Refused as e:
            raise Refusal(e.status, e.reason) from None
        return self.committed(writes, self.view(h))

    def reset(self, request, mac):
        """Forget the host's agent credential: its next registration, from
        anywhere, gets a new one (after a move to another network)."""
        h = self._host(mac)
        h.secret_hash = None
        h.agent_addr = ANY
        now = self.clock.seconds()
        return self.committed([HostWrite(h), event(now, h.mac, "host.credential_reset")],
                              self.view(h))

    def account_of(self, ref):
        """PATCH's "account": a name (or id), or null for none."""
        if ref is None:
            return None
        if not isinstance(ref, str):
            raise BadRequest("account: a name or null")
        a = self.accounts.get(ref)
        if a is None:
            raise NotFound(f"no account {ref!r}")
        return a

    def move(self, h, a, now: float) -> list:
        """An admin moves a host to account `a` (None: no account), also out of
        a conflict."""
        new = a.id if a else None
        if new == h.account:
            return []
        old = self.accounts.name_of(h.account)
        h.account = new
        return [HostWrite(h), event(now, h.mac, "host.account", old=old,
                                    new=a.name if a else None, via="admin")]
