"""The IQN scheme and CHAP rules (policy/iscsi.py) and the tgt backend's pure
half (storage/tgt.py): parsing tgtadm's output, the tgtadm arguments, and the
plan's safety order, checked step by step on a simulated tgtd."""
from __future__ import annotations

import copy
import re

import pytest
from hypothesis import given, settings, strategies as st

from netbootd.policy import iscsi
from netbootd.policy.iscsi import (Chap, IscsiNameError, check_pair, generate_secret,
                                   host_chap_user, host_iqn, target_iqn, validate_base,
                                   validate_iqn, validate_secret,
                                   volume_of_target)
from netbootd.storage.exports import BackendFailed, Export, ExportSpec
from netbootd.storage.tgt import (Step, TgtBackend, TgtState, TgtTarget, parse_accounts,
                                  parse_targets, plan, plan_unexport)

BASE = "iqn.2026-12.lan.netboot"
volume_names = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


# -- names ----------------------------------------------------------------

@given(volume_names)
def test_target_iqn_is_valid_and_reversible(vol):
    iqn = target_iqn(BASE, vol)
    assert validate_iqn(iqn) == iqn and len(iqn) <= iscsi.MAX_IQN
    assert volume_of_target(BASE, iqn) == vol


@given(volume_names, volume_names)
def test_distinct_volumes_get_distinct_targets(a, b):
    assert (target_iqn(BASE, a) == target_iqn(BASE, b)) == (a == b)


@given(macs)
def test_host_iqn_is_valid_and_per_mac(mac):
    iqn = host_iqn(BASE, mac)
    assert validate_iqn(iqn) == iqn
    assert iqn == host_iqn(BASE, mac.upper().replace(":", "-"))
    assert iqn.endswith(mac.replace(":", "")) and host_chap_user(mac) == "host-" + mac.replace(":", "")
    Chap(host_chap_user(mac), generate_secret())


@pytest.mark.parametrize("bad", ["", "a/b", "../x", ".", "..", "a.b", "A", "-a", "_a", "a b",
                                 "a" * 64, "é", "a\n", "vol;rm"])
def test_bad_volume_names_are_refused_naming_the_field(bad):
    with pytest.raises(IscsiNameError, match="volume"):
        target_iqn(BASE, bad)


@pytest.mark.parametrize("bad", ["iqn.2026-13.lan.x", "iqn.26-12.lan", "iqn.2026-12.", "IQN.2026-12.lan",
                                 "iqn.2026-12.lan.x:y", "iqn.2026-12.Lan", "eui.0123", "iqn.2026-12.-a",
                                 "iqn.2026-12." + "a" * 200])
def test_bad_bases_are_refused(bad):
    with pytest.raises(IscsiNameError, match="iqn_base"):
        validate_base(bad)


@pytest.mark.parametrize("good", ["iqn.2026-12.lan.netboot:host.525400000001",
                                  "iqn.1993-08.org.debian:01:abcdef", "eui.02004567A425678D",
                                  "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"])
def test_initiator_names_accepted(good):
    assert validate_iqn(good) == good


@pytest.mark.parametrize("bad", ["", "ALL", "10.0.0.1", "iqn.2026-12.lan:UPPER", "iqn.2026-12.lan:a_b",
                                 "iqn.2026-12.lan:a b", "eui.02004567a425678d", "naa.123",
                                 "iqn.2026-12.lan:" + "a" * 210, "iqn.2026-12.lan:x\n"])
def test_bad_initiator_names_are_refused(bad):
    with pytest.raises(IscsiNameError, match="initiator_iqn"):
        validate_iqn(bad, "initiator_iqn")


@given(st.text(max_size=40))
def test_validate_iqn_never_crashes(text):
    try:
        validate_iqn(text)
    except IscsiNameError:
        pass


# -- CHAP -----------------------------------------------------------------

def test_generated_secrets_are_96_random_bits_in_a_safe_alphabet():
    seen = {generate_secret() for _ in range(200)}
    assert len(seen) == 200
    for s in seen:
        assert len(s) == 16 and validate_secret(s) == s
        assert re.fullmatch(r"[A-Za-z0-9_-]{16}", s)     # base64url: 6 bits x 16 = 96


@pytest.mark.parametrize("bad,why", [("a" * 11, "11 characters"), ("a" * 17, "17 characters"),
                                     ("abcdefghijk%", "only"), ("abcdefghij@k", "only"),
                                     ("abcdefghij/k", "only"), ("abcdefghij k", "only")])
def test_bad_secrets_refused_without_echoing_them(bad, why):
    with pytest.raises(IscsiNameError, match=why) as ei:
        validate_secret(bad)
    assert bad not in str(ei.value)


def test_chap_repr_hides_the_secret():
    c = Chap("host-525400000001", "S3cretS3cret12")
    assert "S3cret" not in repr(c) and "14 chars" in repr(c)


@pytest.mark.parametrize("user", ["", "a b", "a%b", "a@b", "-x", "x" * 129])
def test_bad_chap_users(user):
    with pytest.raises(IscsiNameError, match="chap user"):
        Chap(user, generate_secret())


def test_mutual_chap_rules():
    a, b = Chap("host-1", generate_secret()), Chap("target-1", generate_secret())
    check_pair(a, b)
    check_pair(a, None)
    with pytest.raises(IscsiNameError, match="needs an initiator"):
        check_pair(None, b)
    with pytest.raises(IscsiNameError, match="mutual chap user"):
        check_pair(a, Chap("host-1", generate_secret()))
    with pytest.raises(IscsiNameError, match="mutual chap secret"):
        check_pair(a, Chap("target-1", a.secret))


def test_export_spec_checks_its_fields():
    with pytest.raises(IscsiNameError, match="path"):
        ExportSpec("v", "relative.img", host_iqn(BASE, "52:54:00:00:00:01"))
    with pytest.raises(IscsiNameError, match="initiator_iqn"):
        ExportSpec("v", "/x.img", "ALL")
    with pytest.raises(IscsiNameError, match="comma"):
        ExportSpec("v", "/pool/a,bstype=sg", host_iqn(BASE, "52:54:00:00:00:01"))


def test_a_volume_listed_twice_is_refused():
    a = _spec("a", "52:54:00:00:00:01")
    with pytest.raises(BackendFailed, match="'a': listed twice"):
        plan(TgtState(), [a, a], BASE, {}, prune=True)


def test_san_uri_is_ipxe_form():
    e = Export("v", target_iqn(BASE, "v"), 1, "10.0.0.1:3260")
    assert e.san_uri() == "iscsi:10.0.0.1:::1:iqn.2026-12.lan.netboot:vol.v"
    assert Export("v", "iqn.x", 1, "10.0.0.1:3261").san_uri() == "iscsi:10.0.0.1::3261:1:iqn.x"


# -- tgtadm output and arguments -----------------------------------------

SHOW = """\
Target 1: iqn.2026-12.lan.netboot:vol.a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 3
            Initiator: iqn.2026-12.lan.netboot:host.aabbccddeeff alias: none
            Connection: 0
                IP Address: 10.0.0.2
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            Backing store type: null
            Backing store path: None
            Backing store flags: 
        LUN: 1
            Type: disk
            Size: 67 MB, Block size: 512
            Backing store type: rdwr
            Backing store path: /tmp/tgtexp.img
            Backing store flags: 
    Account information:
        hostA
        tgtout (outgoing)
    ACL information:
        iqn.2026-12.lan.netboot:host.aabbccddeeff
Target 2: iqn.2026-12.lan.netboot:vol.noacl
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
    LUN information:
        LUN: 0
            Backing store path: None
    Account information:
    ACL information:
"""


def test_parse_targets_reads_real_show_output():
    t = parse_targets(SHOW)
    assert sorted(t) == [1, 2]
    a = t[1]
    assert a.iqn == "iqn.2026-12.lan.netboot:vol.a" and a.sessions == 1
    assert a.luns == {0: None, 1: "/tmp/tgtexp.img"}
    assert (a.incoming, a.outgoing) == (["hostA"], ["tgtout"])
    assert a.acl == ["iqn.2026-12.lan.netboot:host.aabbccddeeff"]
    assert (t[2].luns, t[2].acl, t[2].incoming) == ({0: None}, [], [])


def test_parse_accounts():
    assert parse_accounts("Account list:\n    tgtout\n    hostA\n") == ["tgtout", "hostA"]
    assert parse_accounts("") == []


def test_tgtadm_argv_is_a_list_with_the_control_instance():
    from netbootd.storage.exports import ExportBackend
    be = TgtBackend(917, "10.0.0.1:3260", BASE)
    assert isinstance(be, ExportBackend)
    step = Step("account-new", ("--mode", "account", "--op", "new", "--user", "u",
                                "--password", "S3cretS3cret12"))
    assert be.argv(step.args)[:5] == ["tgtadm", "-C", "917", "--lld", "iscsi"]
    assert "S3cret" not in step.shown() and "--password ***" in step.shown()


def _spec(vol, mac, mutual=False, path=None):
    return ExportSpec(vol, path or f"/pool/{vol}.img", host_iqn(BASE, mac),
                      Chap(host_chap_user(mac), generate_secret()),
                      Chap("tgt-" + vol[:8], generate_secret()) if mutual else None)


def test_a_new_export_binds_chap_and_acl_before_the_lun():
    s = _spec("disk_a", "52:54:00:00:00:01")
    steps = plan(TgtState(), [s], BASE, {}, prune=False)
    assert [x.what for x in steps] == ["account-new", "target-new", "account-bind", "acl-bind",
                                       "lun-new"]
    assert steps[1].args == ("--mode", "target", "--op", "new", "--tid", "1", "--targetname",
                             "iqn.2026-12.lan.netboot:vol.disk.a")
    assert steps[3].args[-2:] == ("--initiator-name", s.initiator_iqn)
    assert steps[4].args == ("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1",
                             "--backing-store", "/pool/disk_a.img", "--bstype", "rdwr")


def test_unknown_secret_is_reset_with_the_acl_off():
    s = _spec("disk_a", "52:54:00:00:00:01")
    t = TgtTarget(1, target_iqn(BASE, "disk_a"), {0: None, 1: s.path}, [s.chap.user], [],
                  [s.initiator_iqn])
    steps = plan(TgtState({1: t}, [s.chap.user]), [s], BASE, {}, prune=True)
    assert [x.what for x in steps] == ["acl-unbind", "account-unbind", "account-delete",
                                       "account-new", "account-bind", "acl-bind"]
    assert plan(TgtState({1: t}, [s.chap.user]), [s], BASE, {s.chap.user: s.chap.secret},
                prune=True) == []


def test_unexport_deletes_target_then_its_own_accounts():
    a = _spec("a", "52:54:00:00:00:01")
    b = ExportSpec("b", "/pool/b.img", a.initiator_iqn, a.chap)      # one host, two volumes
    st0 = _simulate(TgtState(), plan(TgtState(), [a, b], BASE, {}, prune=True))
    steps = plan_unexport(st0, target_iqn(BASE, "a"), {})
    assert [x.what for x in steps] == ["target-delete"]          # b still uses the account
    st1 = _simulate(st0, steps)
    assert [x.what for x in plan_unexport(st1, target_iqn(BASE, "b"), {})] == \
        ["target-delete", "account-delete"]


def test_two_secrets_for_one_user_refused():
    a = _spec("a", "52:54:00:00:00:01")
    b = ExportSpec("b", "/p/b", a.initiator_iqn, Chap(a.chap.user, generate_secret()))
    with pytest.raises(BackendFailed, match="two different secrets"):
        plan(TgtState(), [a, b], BASE, {}, prune=True)


# -- the plan on a simulated tgtd: safety at every step ---------------------

def _arg(args, name):
    return args[args.index(name) + 1]


def _simulate(state: TgtState, steps: list[Step], check=None) -> TgtState:
    """An independent interpreter of tgtadm arguments (what tgtd would do,
    including refusing what it refuses); `check(state, step)` runs before each."""
    s = copy.deepcopy(state)
    for step in steps:
        if check:
            check(s, step)
        a = step.args
        mode, op = _arg(a, "--mode"), _arg(a, "--op")
        t = s.targets.get(int(_arg(a, "--tid"))) if "--tid" in a else None
        if mode == "target" and op == "new":
            assert t is None
            s.targets[int(_arg(a, "--tid"))] = TgtTarget(int(_arg(a, "--tid")),
                                                         _arg(a, "--targetname"), {0: None})
        elif mode == "target" and op == "delete":
            del s.targets[t.tid]
        elif mode == "target":
            entry = _arg(a, "--initiator-name")
            assert entry != "ALL"
            if op == "bind":
                assert entry not in t.acl
                t.acl.append(entry)
            else:
                t.acl.remove(entry)
        elif mode == "account" and op == "new":
            assert _arg(a, "--user") not in s.accounts
            s.accounts.append(_arg(a, "--user"))
        elif mode == "account" and op == "delete":
            u = _arg(a, "--user")
            assert not s.bound_to(u), "tgt 1.0.85 crashes later if a bound account is deleted"
            s.accounts.remove(u)
        elif mode == "account":
            u, lst = _arg(a, "--user"), (t.outgoing if "--outgoing" in a else t.incoming)
            assert u in s.accounts
            if op == "bind":
                lst.append(u)
            else:
                assert lst[-1] == u, "tgt 1.0.85 segfaults unless the LAST account is unbound"
                lst.pop()
        elif mode == "logicalunit" and op == "new":
            t.luns[int(_arg(a, "--lun"))] = _arg(a, "--backing-store")
        elif mode == "logicalunit":
            del t.luns[int(_arg(a, "--lun"))]
    return s


MAC_POOL = [f"52:54:00:00:00:{i:02x}" for i in range(1, 5)]


@st.composite
def scenarios(draw):
    """A tgtd in some state (possibly half-made or stale exports, foreign
    accounts on them, wrong LUNs, a foreign target) and a desired list."""
    vols = ["a", "b_c", "d"]
    specs = {v: _spec(v, draw(st.sampled_from(MAC_POOL)), mutual=draw(st.booleans()))
             for v in draw(st.lists(st.sampled_from(vols), unique=True))}
    # the same host's user must carry one secret
    by_user: dict[str, str] = {}
    fixed = {}
    for v, s in specs.items():
        sec = by_user.setdefault(s.chap.user, s.chap.secret)
        fixed[v] = ExportSpec(s.volume, s.path, s.initiator_iqn, Chap(s.chap.user, sec), s.mutual)
    state = TgtState(accounts=["foreign"])
    state.targets[7] = TgtTarget(7, "iqn.2000-01.com.other:t", {0: None, 1: "/x"}, ["foreign"],
                                 [], ["ALL"])
    users = [host_chap_user(m) for m in MAC_POOL] + ["junk"]
    tid = 1
    for v in draw(st.lists(st.sampled_from(vols), unique=True)):
        t = TgtTarget(tid, target_iqn(BASE, v), {0: None})
        tid += 1
        for u in draw(st.lists(st.sampled_from(users), unique=True, max_size=2)):
            if u not in state.accounts:
                state.accounts.append(u)
            t.incoming.append(u)
        t.acl = draw(st.lists(st.sampled_from([host_iqn(BASE, m) for m in MAC_POOL]),
                              unique=True, max_size=2))
        if draw(st.booleans()):
            t.luns[1] = draw(st.sampled_from([f"/pool/{v}.img", "/wrong.img"]))
        if draw(st.booleans()):
            t.luns[2] = "/extra.img"
        state.targets[t.tid] = t
    known = {u: by_user[u] for u in by_user if draw(st.booleans())}
    return state, list(fixed.values()), known, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_plan_reaches_the_desired_state_and_never_opens_a_target(sc):
    state, desired, known, prune = sc
    steps = plan(state, desired, BASE, known, prune)
    want = {target_iqn(BASE, d.volume): d for d in desired}
    final_in: dict[str, list[str]] = {}

    def check(s: TgtState, step: Step):
        a = step.args
        t = s.targets.get(int(_arg(a, "--tid"))) if "--tid" in a else None
        if t is not None and t.iqn in want:
            d = want[t.iqn]
            if step.what == "acl-bind":          # CHAP is in place before anyone is let in
                assert t.incoming == ([d.chap.user] if d.chap else [])
                assert _arg(a, "--initiator-name") == d.initiator_iqn
            if step.what == "lun-new":           # and the ACL is exactly the host's
                assert t.acl == [d.initiator_iqn]
                assert t.incoming == ([d.chap.user] if d.chap else [])
        if t is not None and t.iqn == "iqn.2000-01.com.other:t":
            raise AssertionError(f"touched a foreign target: {step}")

    end = _simulate(state, steps, check)
    for iqn, d in want.items():
        t = end.by_iqn(iqn)
        assert t.acl == [d.initiator_iqn]
        assert t.incoming == [d.chap.user]
        assert t.outgoing == ([d.mutual.user] if d.mutual else [])
        assert t.luns == {0: None, 1: d.path}
        final_in[iqn] = t.incoming
    assert 7 in end.targets
    if prune:
        assert {t.iqn for t in end.targets.values() if volume_of_target(BASE, t.iqn)} == set(want)
    # a second plan from the end state has nothing to do
    need = {c.user: c.secret for d in desired for c in (d.chap, d.mutual) if c}
    assert plan(end, desired, BASE, need, prune) == []


# -- tgtd supervision rules ---------------------------------------------------

def test_restart_backoff_doubles_to_a_cap():
    from netbootd.storage.tgtd import Backoff
    b = Backoff(first=0.5, cap=30.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [0.5, 1, 2, 4, 30, 30, 30]


@pytest.mark.parametrize("bad", [0, -1, 32768, True, "5"])
def test_control_instance_is_1_to_32767(bad):
    from netbootd.storage.tgtd import TgtdError, TgtdSupervisor
    with pytest.raises(TgtdError, match="control instance"):
        TgtdSupervisor(bad, "10.0.0.1:3260")


# -- lio: detection and the plan ------------------------------------------

def test_lio_without_configfs_is_unsupported_in_one_line(tmp_path):
    from netbootd.storage.exports import ExportUnsupported
    from netbootd.storage.lio import LioBackend, detect
    with pytest.raises(ExportUnsupported, match="this kernel has no configfs/LIO") as ei:
        detect(str(tmp_path / "nope"))
    assert "\n" not in str(ei.value)
    with pytest.raises(ExportUnsupported):
        LioBackend("10.0.0.1:3260", BASE, configfs=str(tmp_path / "nope"))


def test_lio_plan_enables_the_tpg_last_after_acl_chap_and_lun():
    from netbootd.storage.lio import plan_export
    s = _spec("disk_a", "52:54:00:00:00:01", mutual=True)
    steps = plan_export(s, BASE, "10.0.0.1:3260")
    assert [x.kind for x in steps] == ["backstore", "target", "tpg", "portal", "acl", "lun",
                                       "mapped_lun", "enable"]
    tpg = steps[2]
    assert tpg.get("enable") is False and tpg.get("generate_node_acls") == "0"
    assert tpg.get("authentication") == "1" and tpg.get("demo_mode_discovery") == "0"
    assert steps[1].get("wwn") == "iqn.2026-12.lan.netboot:vol.disk.a"
    assert (steps[3].get("ip"), steps[3].get("port")) == ("10.0.0.1", 3260)
    acl = steps[4]
    assert acl.get("initiator") == s.initiator_iqn
    assert (acl.get("chap_userid"), acl.get("chap_password")) == (s.chap.user, s.chap.secret)
    assert acl.get("chap_mutual_userid") == s.mutual.user
    assert steps[5].get("lun") == 1 and steps[6].get("mapped_lun") == 1
    nochap = plan_export(ExportSpec("v", "/p/v", s.initiator_iqn), BASE, "10.0.0.1:3260")
    assert nochap[2].get("authentication") == "0"
    assert "chap_userid" not in dict(nochap[4].attrs)


def test_a_tgtd_that_exits_at_start_is_reported(tmp_path):
    from netbootd.storage.tgtd import TgtdError, TgtdSupervisor
    sup = TgtdSupervisor(32001, "127.0.0.1:3260", tgtd="/bin/false", start_timeout=5)
    with pytest.raises(TgtdError, match="exited with 1 at start"):
        sup.start()
    assert sup.proc is None and not sup.health().ok
