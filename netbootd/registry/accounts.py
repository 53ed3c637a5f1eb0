"""Accounts and their enrollment tokens, in memory, with their writes.

The daemon's memory is the authority (as for hosts): a revoked token is
refused from the moment the admin's call returns, with no database read on
the agent's path.  Only a token's hash is held and stored; its text is
returned once, by `create_token`.  Checking a token is two steps: the
signature and expiry first (auth/enroll.verify_token: pure, no state), then
`redeem` here (known, not revoked, not used up), which counts the use.
"""
from __future__ import annotations

import dataclasses
import re
import secrets

from ..auth.enroll import KeyRing, TokenClaims, make_token, new_token_id, token_hash
from ..model import APPROVALS, Account, Token
from ..writes import AccountDelete, AccountWrite, TokenWrite, event

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
LABEL_MAX = 200


class AccountError(ValueError):
    """A refused admin request: `status` (400, 404, 409) and the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Accounts:
    def __init__(self, accounts: list[Account] = (), tokens: list[Token] = ()):
        self.by_id: dict[str, Account] = {a.id: a for a in accounts}
        self.tokens: dict[str, Token] = {t.id: t for t in tokens}

    # -- accounts ---------------------------------------------------------
    def get(self, ref: str | None) -> Account | None:
        """An account by id or name."""
        if ref is None:
            return None
        a = self.by_id.get(ref)
        if a is not None:
            return a
        for a in self.by_id.values():
            if a.name == ref:
                return a
        return None

    def name_of(self, account_id: str | None) -> str | None:
        a = self.by_id.get(account_id) if account_id else None
        return a.name if a is not None else account_id

    def must(self, ref: str) -> Account:
        a = self.get(ref)
        if a is None:
            raise AccountError(404, f"no account {ref!r}")
        return a

    def create(self, name: str, approval: str, profile: str | None, args: dict,
               now: float) -> tuple[Account, list]:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise AccountError(400, "name: 1-63 of a-z 0-9 . _ -, starting with a letter or "
                                    "digit")
        if approval not in APPROVALS:
            raise AccountError(400, f"approval: one of {', '.join(APPROVALS)}")
        if self.get(name) is not None:
            raise AccountError(409, f"account {name!r} exists")
        a = Account("acc-" + secrets.token_hex(5), name, approval, profile, dict(args), now)
        self.by_id[a.id] = a
        return a, [AccountWrite(dataclasses.replace(a)),
                   event(now, None, "account.created", account=name, approval=approval,
                         profile=profile)]

    def update(self, ref: str, now: float, **changes) -> tuple[Account, list]:
        a = self.must(ref)
        if "approval" in changes and changes["approval"] not in APPROVALS:
            raise AccountError(400, f"approval: one of {', '.join(APPROVALS)}")
        for k, val in changes.items():
            setattr(a, k, val)
        return a, [AccountWrite(dataclasses.replace(a)),
                   event(now, None, "account.changed", account=a.name,
                         **{k: changes[k] for k in changes if k != "profile_args"})]

    def delete(self, ref: str, hosts_in_it: int, now: float) -> list:
        a = self.must(ref)
        if hosts_in_it:
            raise AccountError(409, f"account {a.name!r} still has {hosts_in_it} host(s): "
                                    "move or delete them first")
        del self.by_id[a.id]
        for t in [t for t in self.tokens.values() if t.account == a.id]:
            del self.tokens[t.id]
        return [AccountDelete(a.id), event(now, None, "account.deleted", account=a.name)]

    # -- tokens -------------------------------------------------------------
    def create_token(self, ring: KeyRing, ref: str, now: float, *, expires: int | None = None,
                     max_uses: int | None = None, label: str | None = None
                     ) -> tuple[str, Token, list]:
        """(the token text - shown once, never stored -, its row, writes)."""
        a = self.must(ref)
        if expires is not None and expires <= now:
            raise AccountError(400, "expires: in the past")
        if max_uses is not None and not (isinstance(max_uses, int) and max_uses >= 1):
            raise AccountError(400, "uses: a positive integer")
        if label is not None and (not isinstance(label, str) or len(label) > LABEL_MAX
                                  or any(ord(c) < 32 for c in label)):
            raise AccountError(400, f"label: one line of at most {LABEL_MAX} characters")
        tid = new_token_id()
        text = make_token(ring, a.id, tid, expires)
        t = Token(tid, a.id, token_hash(text), label, now, expires, max_uses, 0, None)
        self.tokens[tid] = t
        return text, t, [TokenWrite(dataclasses.replace(t)),
                         event(now, None, "token.created", token=tid, account=a.name,
                               expires=expires, uses=max_uses, label=label)]

    def revoke(self, token_id: str, now: float) -> tuple[Token, list]:
        t = self.tokens.get(token_id)
        if t is None:
            raise AccountError(404, f"no token {token_id!r}")
        if t.revoked is not None:
            return t, []
        t.revoked = now
        return t, [TokenWrite(dataclasses.replace(t)),
                   event(now, None, "token.revoked", token=t.id,
                         account=self.name_of(t.account))]

    def redeem(self, claims: TokenClaims, text: str, now: float) -> tuple[Account | None, str,
                                                                          list]:
        """A token whose signature checked: (its account, "", []) or (None,
        why not, []).  Counting the use is `use`, once the call succeeds."""
        t = self.tokens.get(claims.token_id)
        if t is None or t.account != claims.account or \
                not secrets.compare_digest(t.hash, token_hash(text)):
            return None, "unknown token", []
        if t.revoked is not None:
            return None, "token revoked", []
        if t.expires is not None and now >= t.expires:
            return None, "token expired", []
        # "used up" is the caller's to say: uses count the hosts a token
        # brought in, and the same host booting its medium again is no new use.
        a = self.by_id.get(t.account)
        if a is None:
            return None, "token's account is gone", []
        return a, "", []

    def use(self, token_id: str) -> list:
        t = self.tokens[token_id]
        t.uses += 1
        return [TokenWrite(dataclasses.replace(t))]

    def token_json(self, t: Token, now: float) -> dict:
        d = dataclasses.asdict(t)
        del d["hash"]
        d["account"] = self.name_of(t.account)
        d["state"] = ("revoked" if t.revoked is not None else "expired"
                      if t.expires is not None and now >= t.expires else "used up"
                      if t.max_uses is not None and t.uses >= t.max_uses else "active")
        return d

    @staticmethod
    def account_json(a: Account, hosts: int = 0, tokens: int = 0) -> dict:
        return dict(dataclasses.asdict(a), hosts=hosts, tokens=tokens)
