"""policy/plan.py: config + interface facts -> networks, attachments, boot config (pure)."""
from __future__ import annotations

from netbootd.config import parse
from netbootd.model import ip2int
from netbootd.net.interfaces import IfAddr
from netbootd.policy.plan import make_plan

ETH0 = IfAddr("eth0", "10.0.0.1", 24)
ETH1 = IfAddr("eth1", "192.168.5.1", 24)


def plan(text: str, *ifaces):
    return make_plan(parse(text), ifaces or (ETH0,))


def test_configured_ranges_are_parsed_into_inclusive_int_pairs():
    p = plan('mode = "full"\n[[networks]]\nname = "lab"\nsubnet = "10.0.0.0/24"\n'
             'ranges = ["10.0.0.100-10.0.0.110", "10.0.0.200 - 10.0.0.201"]\n')
    (net,) = p.networks
    assert net.ranges == ((ip2int("10.0.0.100"), ip2int("10.0.0.110")),
                          (ip2int("10.0.0.200"), ip2int("10.0.0.201")))
    assert net.pool_size == 13


def test_server_router_relay_network_and_broadcast_are_never_in_the_pool():
    p = plan('mode = "full"\n[[networks]]\nname = "lab"\nsubnet = "10.0.0.0/24"\n'
             'router = "10.0.0.254"\nrelays = ["10.0.0.9"]\n')
    (net,) = p.networks
    for ip in ("10.0.0.0", "10.0.0.255", "10.0.0.1", "10.0.0.254", "10.0.0.9"):
        assert ip2int(ip) in net.excluded, ip
    assert net.pool_size == 254 - 3          # .1-.254 minus server, router, relay


def test_a_server_address_outside_the_subnet_is_not_excluded():
    p = plan('mode = "full"\n[[networks]]\nname = "far"\nsubnet = "10.9.0.0/24"\n'
             'relays = ["10.0.0.2"]\n')
    net = p.networks[0]
    assert ip2int("10.0.0.1") not in net.excluded


def test_full_mode_serves_an_unmatched_interface_its_whole_subnet():
    p = plan('mode = "full"\n', ETH0)
    (net,) = p.networks
    assert (net.name, str(net.subnet), net.interface) == ("eth0", "10.0.0.0/24", "eth0")
    assert net.pool_size == 253                # all but network, broadcast and our .1
    assert p.attached == {"eth0": "eth0"}


def test_proxy_mode_serves_no_network_of_its_own():
    p = plan('mode = "proxy"\n', ETH0)
    assert p.networks == () and p.attached == {"eth0": None}


def test_interfaces_attach_by_name_first_then_by_address():
    p = plan('mode = "full"\n'
             '[[networks]]\nname = "a"\nsubnet = "10.0.0.0/24"\n'
             '[[networks]]\nname = "pinned"\nsubnet = "172.16.0.0/24"\ninterface = "eth1"\n',
             ETH0, ETH1)
    assert p.attached == {"eth0": "a", "eth1": "pinned"}
    assert [n.name for n in p.networks] == ["a", "pinned"]   # no whole-subnet default added


def test_lease_time_defaults_to_the_dhcp_section():
    p = plan('mode = "full"\n[dhcp]\nlease_time = 900\n'
             '[[networks]]\nname = "a"\nsubnet = "10.0.0.0/24"\n'
             '[[networks]]\nname = "b"\nsubnet = "10.1.0.0/24"\nlease_time = 60\n')
    assert [n.lease_time for n in p.networks] == [900, 60]


def test_reservations_are_normalized():
    p = plan('mode = "full"\n[[networks]]\nname = "a"\nsubnet = "10.0.0.0/24"\n'
             '[[networks.reservations]]\nmac = "52-54-00-AA-BB-CC"\nip = "10.0.0.50"\n'
             'hostname = "web"\n')
    (r,) = p.networks[0].reservations
    assert (r.mac, r.address, r.hostname) == ("52:54:00:aa:bb:cc", ip2int("10.0.0.50"), "web")


def test_the_boot_config_is_the_configs_one_boot_section():
    p = plan('[boot]\nuefi_x64 = "snponly.efi"\nhttp_port = 8081\n')
    assert p.boot.uefi_x64 == "snponly.efi" and p.boot.http_port == 8081
    assert p.boot.bios == "undionly.kpxe"      # defaults as the engine has always had them
