"""The ``tgt`` export backend: Linux's userspace iSCSI target driven by tgtadm
(argument lists, never a shell), one target per volume, the volume as LUN 1.

Two halves: pure functions (parse tgtadm's ``show`` output into a ``TgtState``;
``plan`` the tgtadm steps that turn a state into the desired one), and
``TgtBackend``, which reads the state, plans, runs the steps in order and calls
an optional ``on_step`` hook after each (tests kill the process there).

Order of a new export, so that a target is never reachable without its ACL and
CHAP whatever step the process dies after: ``target new`` (no ACL: tgtd answers
"target not found" to everyone) -> ``account bind`` (CHAP) -> ``acl bind`` (the
one initiator IQN; never ALL) -> ``logicalunit new`` (LUN 1).  A repair that
changes a target's CHAP takes its ACL off first and puts it back last.

tgt 1.0.85 (Debian 12) facts this code works around (measured here):
* unbinding (or deleting) an incoming account that is not the LAST one bound to
  a target leaves a hole in the target's account array and tgtd segfaults at the
  next ``show``: accounts are only ever unbound from the end of the list;
* accounts are global to a tgtd and have no "update password" operation; their
  passwords cannot be read back.  A secret this process did not set itself is
  reset (ACLs off on the targets using it, unbind, delete, new, bind, ACLs on);
* a target without any ACL entry refuses every login ("Target not found") and is
  left out of every initiator's discovery.
"""
from __future__ import annotations

import copy
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..policy.iscsi import Chap, target_iqn, validate_base, volume_of_target
from .exports import (SAN_LUN, BackendFailed, Export, ExportHealth, ExportSpec,
                      NotExported)

TGTADM_TIMEOUT = 30.0
BUSY_RETRY = 10.0          # seconds a busy target's deletion is retried


# -- the state, parsed ------------------------------------------------------

@dataclass
class TgtTarget:
    tid: int
    iqn: str
    luns: dict[int, Optional[str]] = field(default_factory=dict)   # lun -> backing path
    incoming: list[str] = field(default_factory=list)              # in bind order
    outgoing: list[str] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)                   # names and addresses
    sessions: int = 0


@dataclass
class TgtState:
    targets: dict[int, TgtTarget] = field(default_factory=dict)
    accounts: list[str] = field(default_factory=list)

    def by_iqn(self, iqn: str) -> Optional[TgtTarget]:
        return next((t for t in self.targets.values() if t.iqn == iqn), None)

    def bound_to(self, user: str) -> list[TgtTarget]:
        return [t for t in self.targets.values() if user in t.incoming or user in t.outgoing]


_TARGET_RE = re.compile(r"^Target (\d+): (\S+)$")


def parse_targets(text: str) -> dict[int, TgtTarget]:
    """``tgtadm --mode target --op show`` -> targets by tid."""
    targets: dict[int, TgtTarget] = {}
    cur: Optional[TgtTarget] = None
    section = ""
    lun: Optional[int] = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _TARGET_RE.match(raw)
        if m:
            cur = TgtTarget(int(m.group(1)), m.group(2))
            targets[cur.tid] = cur
            section, lun = "", None
            continue
        if cur is None or not line:
            continue
        indent = len(raw) - len(raw.lstrip())
        if indent == 4 and line.endswith(":"):
            section = line[:-1]
            continue
        if section == "I_T nexus information" and line.startswith("I_T nexus:"):
            cur.sessions += 1
        elif section == "LUN information":
            if line.startswith("LUN:"):
                lun = int(line.split(":", 1)[1])
                cur.luns[lun] = None
            elif lun is not None and line.startswith("Backing store path:"):
                path = line.split(":", 1)[1].strip()
                cur.luns[lun] = None if path == "None" else path
        elif section == "Account information":
            if line.endswith(" (outgoing)"):
                cur.outgoing.append(line[:-len(" (outgoing)")])
            else:
                cur.incoming.append(line)
        elif section == "ACL information":
            cur.acl.append(line)
    return targets


def parse_accounts(text: str) -> list[str]:
    """``tgtadm --mode account --op show`` -> user names."""
    return [ln.strip() for ln in text.splitlines()
            if ln.strip() and ln.startswith((" ", "\t")) and ln.strip() != "Account list:"]


def _is_name(acl_entry: str) -> bool:
    """ACL entries are initiator names or address rules (an IP, a subnet, ALL)."""
    return acl_entry.startswith(("iqn.", "eui.", "naa."))


# -- the plan (pure) -------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One tgtadm call: ``what`` names it for hooks and logs; ``args`` follow
    ``tgtadm -C N --lld iscsi``."""
    what: str
    args: tuple[str, ...]

    def shown(self) -> str:
        """The arguments with any password replaced: safe for logs and errors."""
        out, hide = [], False
        for a in self.args:
            out.append("***" if hide else a)
            hide = a == "--password"
        return " ".join(out)


class _Planner:
    """Emits steps and applies each to a simulated copy of the state, so every
    later decision sees the effect of the earlier ones."""

    def __init__(self, state: TgtState):
        self.s = copy.deepcopy(state)
        self.steps: list[Step] = []

    def _emit(self, what: str, *args: str) -> None:
        self.steps.append(Step(what, tuple(args)))

    def alloc_tid(self) -> int:
        tid = 1
        while tid in self.s.targets:
            tid += 1
        return tid

    def new_target(self, iqn: str) -> TgtTarget:
        tid = self.alloc_tid()
        self._emit("target-new", "--mode", "target", "--op", "new", "--tid", str(tid),
                   "--targetname", iqn)
        t = self.s.targets[tid] = TgtTarget(tid, iqn, luns={0: None})
        return t

    def delete_target(self, t: TgtTarget) -> None:
        self._emit("target-delete", "--mode", "target", "--op", "delete", "--force",
                   "--tid", str(t.tid))
        del self.s.targets[t.tid]

    def new_account(self, user: str, secret: str) -> None:
        self._emit("account-new", "--mode", "account", "--op", "new", "--user", user,
                   "--password", secret)
        self.s.accounts.append(user)

    def delete_account(self, user: str) -> None:
        assert not self.s.bound_to(user), user   # tgt's hole bug: unbind first, from the end
        self._emit("account-delete", "--mode", "account", "--op", "delete", "--user", user)
        self.s.accounts.remove(user)

    def bind_account(self, t: TgtTarget, user: str, outgoing: bool) -> None:
        self._emit("account-bind", "--mode", "account", "--op", "bind", "--tid", str(t.tid),
                   "--user", user, *(("--outgoing",) if outgoing else ()))
        (t.outgoing if outgoing else t.incoming).append(user)

    def unbind_accounts(self, t: TgtTarget) -> None:
        """Every account off `t`, incoming from the LAST one (tgt's hole bug)."""
        for user in reversed(list(t.incoming)):
            self._emit("account-unbind", "--mode", "account", "--op", "unbind",
                       "--tid", str(t.tid), "--user", user)
            t.incoming.pop()
        for user in reversed(list(t.outgoing)):
            self._emit("account-unbind", "--mode", "account", "--op", "unbind",
                       "--tid", str(t.tid), "--user", user, "--outgoing")
            t.outgoing.pop()

    def _acl_args(self, entry: str) -> tuple[str, str]:
        return ("--initiator-name", entry) if _is_name(entry) else ("--initiator-address", entry)

    def bind_acl(self, t: TgtTarget, entry: str) -> None:
        self._emit("acl-bind", "--mode", "target", "--op", "bind", "--tid", str(t.tid),
                   *self._acl_args(entry))
        t.acl.append(entry)

    def unbind_acl(self, t: TgtTarget, entry: str) -> None:
        self._emit("acl-unbind", "--mode", "target", "--op", "unbind", "--tid", str(t.tid),
                   *self._acl_args(entry))
        t.acl.remove(entry)

    def close_acl(self, t: TgtTarget) -> None:
        for entry in reversed(list(t.acl)):
            self.unbind_acl(t, entry)

    def new_lun(self, t: TgtTarget, lun: int, path: str, bstype: str,
                bsoflags: Optional[str]) -> None:
        self._emit("lun-new", "--mode", "logicalunit", "--op", "new", "--tid", str(t.tid),
                   "--lun", str(lun), "--backing-store", path, "--bstype", bstype,
                   *(("--bsoflags", bsoflags) if bsoflags else ()))
        t.luns[lun] = path

    def delete_lun(self, t: TgtTarget, lun: int) -> None:
        self._emit("lun-delete", "--mode", "logicalunit", "--op", "delete",
                   "--tid", str(t.tid), "--lun", str(lun))
        del t.luns[lun]


def _secrets_wanted(desired: list[ExportSpec]) -> dict[str, str]:
    need: dict[str, str] = {}
    for d in desired:
        for c in (d.chap, d.mutual):
            if c is None:
                continue
            if need.setdefault(c.user, c.secret) != c.secret:
                raise BackendFailed(f"chap user {c.user!r}: two different secrets in one request "
                                    "(tgt accounts are global: one secret per user)")
    return need


def _reset_accounts(p: _Planner, users: list[str], managed: Callable[[str], bool],
                    need: dict[str, str], want: set[str]) -> None:
    """Give existing accounts new secrets without a moment where a target that
    used them is reachable without CHAP: the ACLs of the targets using them go
    first and come back last.  Desired targets (`want`) are left closed and
    bare: _converge then binds what they should have, in its safe order."""
    affected = [t for t in p.s.targets.values()
                if set(t.incoming + t.outgoing) & set(users)]
    for t in affected:
        if not managed(t.iqn):
            raise BackendFailed(f"chap user {sorted(set(t.incoming + t.outgoing) & set(users))}: "
                                f"also bound to target {t.iqn}, which netbootd does not manage")
    saved = {t.tid: (list(t.acl), list(t.incoming), list(t.outgoing)) for t in affected}
    for t in affected:
        p.close_acl(t)
    for t in affected:
        p.unbind_accounts(t)
    for user in users:
        p.delete_account(user)
        p.new_account(user, need[user])
    restore = [t for t in affected if t.iqn not in want]
    for t in restore:
        acl, inc, out = saved[t.tid]
        for user in inc:
            p.bind_account(t, user, False)
        for user in out:
            p.bind_account(t, user, True)
    for t in restore:
        for entry in saved[t.tid][0]:
            p.bind_acl(t, entry)


def _converge(p: _Planner, t: TgtTarget, d: ExportSpec, bstype: str,
              bsoflags: Optional[str]) -> None:
    """One target to its spec, tightening before loosening."""
    want_in = [d.chap.user] if d.chap else []
    want_out = [d.mutual.user] if d.mutual else []
    for entry in reversed(list(t.acl)):
        if entry != d.initiator_iqn:
            p.unbind_acl(t, entry)
    if t.incoming != want_in:
        p.close_acl(t)                       # unreachable while its CHAP changes
        p.unbind_accounts(t)
        for user in want_in:
            p.bind_account(t, user, False)
        for user in want_out:
            p.bind_account(t, user, True)
    elif t.outgoing != want_out:
        for user in reversed(list(t.outgoing)):
            p._emit("account-unbind", "--mode", "account", "--op", "unbind", "--tid",
                    str(t.tid), "--user", user, "--outgoing")
            t.outgoing.pop()
        for user in want_out:
            p.bind_account(t, user, True)
    if d.initiator_iqn not in t.acl:
        p.bind_acl(t, d.initiator_iqn)
    for lun in sorted(t.luns):
        if lun not in (0, SAN_LUN):
            p.delete_lun(t, lun)
    if t.luns.get(SAN_LUN, "") != d.path:
        if SAN_LUN in t.luns:
            p.delete_lun(t, SAN_LUN)
        p.new_lun(t, SAN_LUN, d.path, bstype, bsoflags)


def plan(state: TgtState, desired: list[ExportSpec], base: str, known: dict[str, str],
         prune: bool, bstype: str = "rdwr", bsoflags: Optional[str] = None) -> list[Step]:
    """The tgtadm steps that turn `state` into `desired`.

    `known` maps the account users whose secrets this process set to those
    secrets (any other existing account's secret is reset).  With `prune`, the
    targets of `base` that are not desired go, and so do the accounts they
    alone used; targets of any other name are never touched."""
    def managed(iqn: str) -> bool:
        return volume_of_target(base, iqn) is not None

    p = _Planner(state)
    want = {target_iqn(base, d.volume): d for d in desired}
    if len(want) != len(desired):
        dup = sorted({d.volume for d in desired if sum(x.volume == d.volume for x in desired) > 1})
        raise BackendFailed(f"volume {dup[0]!r}: listed twice in the desired exports")
    ours = {u for t in p.s.targets.values() if managed(t.iqn)
            for u in t.incoming + t.outgoing} | set(known)
    if prune:
        for t in [t for t in p.s.targets.values() if managed(t.iqn) and t.iqn not in want]:
            p.delete_target(t)
    need = _secrets_wanted(desired)
    reset = [u for u, s in need.items() if u in p.s.accounts and known.get(u) != s]
    if reset:
        _reset_accounts(p, reset, managed, need, set(want))
    for user, secret in need.items():
        if user not in p.s.accounts:
            p.new_account(user, secret)
    for iqn, d in want.items():
        t = p.s.by_iqn(iqn) or p.new_target(iqn)
        _converge(p, t, d, bstype, bsoflags)
    if prune:
        for user in list(p.s.accounts):
            if user in ours and user not in need and not p.s.bound_to(user):
                p.delete_account(user)
    return p.steps


def plan_unexport(state: TgtState, iqn: str, known: dict[str, str]) -> list[Step]:
    """Delete the target (closing its sessions), then the accounts that only it
    used and that this process manages."""
    t = state.by_iqn(iqn)
    if t is None:
        return []
    p = _Planner(state)
    users = t.incoming + t.outgoing
    p.delete_target(p.s.targets[t.tid])
    for user in users:
        if user in p.s.accounts and not p.s.bound_to(user):
            p.delete_account(user)
    return p.steps


# -- the backend -----------------------------------------------------------

class TgtBackend:
    """Exports through one tgtd, addressed by its control instance number."""

    kind = "tgt"

    def __init__(self, control: int, portal: str, base: str, *, tgtadm: str = "tgtadm",
                 bstype: str = "rdwr", bsoflags: Optional[str] = None,
                 on_step: Optional[Callable[[Step], None]] = None,
                 timeout: float = TGTADM_TIMEOUT):
        self.control = int(control)
        self.portal = portal
        self.base = validate_base(base)
        self.tgtadm = tgtadm
        self.bstype = bstype
        self.bsoflags = bsoflags
        self.on_step = on_step
        self.timeout = timeout
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    # tgtadm
    def argv(self, args: tuple[str, ...] | list[str]) -> list[str]:
        return [self.tgtadm, "-C", str(self.control), "--lld", "iscsi", *args]

    def _tgtadm(self, step: Step) -> str:
        deadline = time.monotonic() + BUSY_RETRY
        while True:
            try:
                r = subprocess.run(self.argv(step.args), capture_output=True, text=True,
                                   timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise BackendFailed(f"tgtadm {step.shown()}: no answer in {self.timeout:g} s") \
                    from None
            except OSError as e:
                raise BackendFailed(f"tgtadm: {e}") from None
            # --force closes the target's connections, but while commands are still in
            # flight tgtd answers "this logical unit is still active": ask again
            if r.returncode == 0 or "still active" not in r.stderr \
                    or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if r.returncode != 0:
            msg = (r.stderr.strip() or r.stdout.strip()).replace("tgtadm: ", "")
            raise BackendFailed(f"tgtadm {step.shown()}: {msg} (rc {r.returncode})")
        return r.stdout

    def state(self) -> TgtState:
        targets = parse_targets(self._tgtadm(Step("show", ("--mode", "target", "--op", "show"))))
        accounts = parse_accounts(self._tgtadm(Step("show", ("--mode", "account", "--op", "show"))))
        return TgtState(targets, accounts)

    def _apply(self, steps: list[Step], touched: set[str]) -> None:
        try:
            for step in steps:
                self._tgtadm(step)
                if self.on_step is not None:
                    self.on_step(step)
        except BaseException:
            for user in touched:          # unsure what they hold now: reset next time
                self._known.pop(user, None)
            raise

    def _export_of(self, t: TgtTarget) -> Optional[Export]:
        vol = volume_of_target(self.base, t.iqn)
        if vol is None:
            return None
        return Export(volume=vol, target_iqn=t.iqn, tid=t.tid, portal=self.portal,
                      path=t.luns.get(SAN_LUN), initiators=tuple(t.acl),
                      chap_user=t.incoming[0] if t.incoming else None,
                      mutual_user=t.outgoing[0] if t.outgoing else None, sessions=t.sessions)

    # ExportBackend
    def export(self, volume_name: str, path: str, initiator_iqn: str,
               chap: Optional[Chap], mutual: Optional[Chap] = None) -> Export:
        spec = ExportSpec(volume_name, path, initiator_iqn, chap, mutual)
        with self._lock:
            self._run_plan([spec], prune=False)
            t = self.state().by_iqn(target_iqn(self.base, volume_name))
        if t is None:
            raise BackendFailed(f"volume {volume_name!r}: target vanished after export")
        return self._export_of(t)  # type: ignore[return-value]

    def _run_plan(self, desired: list[ExportSpec], prune: bool) -> None:
        steps = plan(self.state(), desired, self.base, self._known, prune,
                     self.bstype, self.bsoflags)
        need = _secrets_wanted(desired)
        self._apply(steps, set(need))
        self._known.update(need)
        if prune:
            self._known = {u: s for u, s in self._known.items() if u in need}

    def unexport(self, volume_name: str) -> None:
        iqn = target_iqn(self.base, volume_name)
        with self._lock:
            state = self.state()
            t = state.by_iqn(iqn)
            if t is None:
                raise NotExported(volume_name)
            steps = plan_unexport(state, iqn, self._known)
            self._apply(steps, set())
            for s in steps:
                if s.what == "account-delete":
                    self._known.pop(s.args[-1], None)

    def list(self) -> list[Export]:
        with self._lock:
            state = self.state()
        return sorted((e for e in map(self._export_of, state.targets.values()) if e),
                      key=lambda e: e.volume)

    def rebuild(self, desired: list[ExportSpec]) -> list[Export]:
        with self._lock:
            self._run_plan(list(desired), prune=True)
        return self.list()

    def forget_secrets(self) -> None:
        """After tgtd restarts (its accounts are gone) or anything else may have
        changed them: the next plan sets every secret again."""
        with self._lock:
            self._known.clear()

    def health(self) -> ExportHealth:
        try:
            out = self._tgtadm(Step("show", ("--mode", "system", "--op", "show")))
            n = len(parse_targets(self._tgtadm(Step("show", ("--mode", "target", "--op", "show")))))
        except BackendFailed as e:
            return ExportHealth(False, str(e))
        m = re.search(r"^\s*State:\s*(\S+)", out, re.M)
        state = m.group(1) if m else "unknown"
        return ExportHealth(state == "ready", f"tgtd -C {self.control}: {state}, {n} targets", n)
