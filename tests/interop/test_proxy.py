"""proxyDHCP beside a real DHCP server (PXE 2.1): dnsmasq hands out addresses
in one namespace, `netbootd serve --mode proxy` runs in another, a scapy PXE
client in a third; a bridge in a 'wire' namespace joins them."""
from __future__ import annotations

import ipaddress
import random
import subprocess

import pytest

from .harness import (ACK, DISCOVER, OFFER, REQUEST, Agent, build_lan, describe_all, dhcp_frame,
                      iface_mac, ip_bytes, is_reply, leases, opt, require_bin, set_iface_mac,
                      wait_for)

DHCP_SRV = "10.78.0.1"    # dnsmasq
PROXY = "10.78.0.2"       # netbootd --mode proxy
POOL_LO, POOL_HI = ipaddress.IPv4Address("10.78.1.10"), ipaddress.IPv4Address("10.78.1.200")
PXE_MAC = "52:54:00:78:00:10"
PLAIN_MAC = "52:54:00:78:00:20"
UUID_LE = bytes.fromhex("5e3f7c8a2d1b3e4c9f1077aa00bb0010")

# What EDK2's PXE client (OVMF, x64 UEFI) sends, per fixtures/firmware-dhcp.
PXE_OPTS = (opt(57, (1472).to_bytes(2, "big"))
            + opt(55, [1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50,
                       51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135])
            + opt(97, b"\x00" + UUID_LE)
            + opt(94, [1, 3, 0])
            + opt(93, [0, 7])
            + opt(60, "PXEClient:Arch:00007:UNDI:003000"))


def start_dnsmasq(lab, ns: str, ifname: str, tmp_path):
    dnsmasq = require_bin("dnsmasq")["dnsmasq"]
    log = tmp_path / "dnsmasq.log"
    logf = open(log, "w")
    try:
        p = lab.popen(ns, [
            dnsmasq, "--no-daemon", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
            "--port=0", f"--interface={ifname}", "--bind-interfaces",
            f"--dhcp-range={POOL_LO},{POOL_HI},255.255.0.0,1h",
            f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}",
            "--no-ping", "--user=root", "--group=root", "--log-dhcp", "--log-facility=-",
        ], stdout=logf, stderr=subprocess.STDOUT)
    finally:
        logf.close()
    try:
        wait_for(lambda: "DHCP, IP range" in log.read_text() or p.poll() is not None, 10,
                 what="dnsmasq to start")
    except TimeoutError:
        pytest.fail(f"dnsmasq did not start: {log.read_text()}")
    if p.poll() is not None:
        pytest.fail(f"dnsmasq exited {p.returncode}: {log.read_text()}")
    return p, log


@pytest.fixture
def proxy_lab(lab, netbootd_factory, tmp_path):
    lan = build_lan(lab, {"dhcp": f"{DHCP_SRV}/16", "proxy": f"{PROXY}/16", "pxe": None})
    set_iface_mac(lab, lan.ns["pxe"], lan.ifs["pxe"], PXE_MAC)
    _p, dlog = start_dnsmasq(lab, lan.ns["dhcp"], lan.ifs["dhcp"], tmp_path)
    nb = netbootd_factory(lan.ns["proxy"], ["--mode", "proxy",
                                            "--interface", lan.ifs["proxy"]]).start()
    agent = Agent(lab, lan.ns["pxe"], lan.ifs["pxe"], absorb=(68,),
                  log_path=tmp_path / "agent.log")
    try:
        yield lan, nb, agent, dlog
    finally:
        agent.close()


def _split(replies, lan):
    dmac = iface_mac(lan.lab, lan.ns["dhcp"], lan.ifs["dhcp"])
    pmac = iface_mac(lan.lab, lan.ns["proxy"], lan.ifs["proxy"])
    from_dhcp = [r for r in replies if r.eth_src == dmac or r.ip_src == DHCP_SRV]
    from_proxy = [r for r in replies if r.eth_src == pmac or r.ip_src == PROXY]
    return from_dhcp, from_proxy


@pytest.mark.interop
def test_pxe_client_gets_address_from_dhcp_server_and_boot_file_from_proxy(proxy_lab, tmp_path):
    """A UEFI x64 PXE DISCOVER (60 PXEClient:Arch:00007, 93 = 7, 97) collects
    for 3 s: dnsmasq OFFERs a real address; netbootd OFFERs yiaddr 0.0.0.0
    with option 60 'PXEClient', boot file 'ipxe.efi' and siaddr = itself.
    After taking dnsmasq's address, a DHCPREQUEST to netbootd on UDP 4011
    gets a DHCPACK with boot file 'ipxe.efi' unicast back to the client.
    netbootd stores no lease."""
    lan, nb, agent, dlog = proxy_lab
    xid = random.getrandbits(32)
    agent.collect(0)
    agent.send(dhcp_frame(chaddr=PXE_MAC, xid=xid, msg_type=DISCOVER, options=PXE_OPTS))
    got = [r for r in agent.collect(3.0) if r.xid == xid]
    print("replies to the PXE DISCOVER:\n" + describe_all(got))
    from_dhcp, from_proxy = _split(got, lan)

    d_offers = [r for r in from_dhcp if r.msg_type == OFFER]
    assert len(d_offers) == 1, (f"expected one OFFER from dnsmasq; saw:\n{describe_all(got)}\n"
                                f"dnsmasq log:\n{dlog.read_text()[-2000:]}")
    d = d_offers[0]
    assert POOL_LO <= ipaddress.IPv4Address(d.yiaddr) <= POOL_HI, d.describe()

    p_offers = [r for r in from_proxy if r.msg_type == OFFER]
    assert len(p_offers) == 1, (f"expected one proxy OFFER from netbootd; saw:\n"
                                f"{describe_all(got)}\nnetbootd log:\n{nb.log_tail()}")
    p = p_offers[0]
    ctx = p.describe()
    assert p.yiaddr == "0.0.0.0", f"proxy OFFER assigns an address: {ctx}"
    assert p.options.get(60) == b"PXEClient", f"proxy OFFER option 60: {ctx}"
    assert p.boot_file == "ipxe.efi", f"proxy OFFER boot file for arch 7: {ctx}"
    assert p.siaddr == PROXY, f"proxy OFFER siaddr (TFTP server) is not netbootd: {ctx}"
    assert p.server_id == PROXY, f"proxy OFFER server id: {ctx}"
    assert p.chaddr == PXE_MAC, ctx
    assert p.dport == 68 and p.ip_dst == "255.255.255.255", (
        f"proxy OFFER to a broadcast-flag client not broadcast: {ctx}")

    # Take the address from dnsmasq, as the firmware does.
    req = PXE_OPTS + opt(50, ip_bytes(d.yiaddr)) + opt(54, ip_bytes(d.server_id))
    got = agent.exchange(dhcp_frame(chaddr=PXE_MAC, xid=xid, msg_type=REQUEST, options=req),
                         timeout=4, want=lambda r: r.xid == xid and r.msg_type == ACK
                         and r.ip_src == DHCP_SRV)
    d_acks = [r for r in _split(got, lan)[0] if r.msg_type == ACK]
    assert d_acks and d_acks[0].yiaddr == d.yiaddr, f"dnsmasq did not ACK:\n{describe_all(got)}"
    client_ip = d.yiaddr
    lan.lab.ns_exec(lan.ns["pxe"], "ip", "addr", "add", f"{client_ip}/16", "dev", lan.ifs["pxe"])

    # Boot server request to the proxy on UDP 4011 (PXE 2.1 §2.2.5).
    xid2 = random.getrandbits(32)
    frame = dhcp_frame(chaddr=PXE_MAC, xid=xid2, msg_type=REQUEST, src_mac=PXE_MAC,
                       dst_mac=p.eth_src, src_ip=client_ip, dst_ip=PROXY, sport=68,
                       dport=4011, ciaddr=client_ip, broadcast=False, options=PXE_OPTS)
    got = agent.exchange(frame, timeout=4, want=is_reply(ACK, xid2))
    acks = [r for r in got if is_reply(ACK, xid2)(r)]
    print("replies to the 4011 REQUEST:\n" + describe_all(got))
    assert acks, (f"no DHCPACK from netbootd to a REQUEST on {PROXY}:4011 from {client_ip}; "
                  f"saw:\n{describe_all(got)}\nnetbootd log:\n{nb.log_tail()}")
    a = acks[0]
    ctx = a.describe()
    assert a.ip_src == PROXY and a.sport == 4011, f"4011 ACK not from {PROXY}:4011: {ctx}"
    assert (a.ip_dst, a.dport) == (client_ip, 68), f"4011 ACK not sent to ciaddr:68: {ctx}"
    assert a.boot_file == "ipxe.efi", f"4011 ACK boot file: {ctx}"
    assert a.options.get(60) == b"PXEClient", f"4011 ACK option 60: {ctx}"
    assert a.yiaddr in ("0.0.0.0", client_ip), ctx

    rows = leases(nb.state_dir)
    assert rows == [], f"proxy mode stored leases: {rows}"


@pytest.mark.interop
def test_proxy_ignores_non_pxe_client_and_stores_no_lease(proxy_lab):
    """A DISCOVER without option 60 is answered by dnsmasq (control) and by
    nothing from netbootd; netbootd's leases table stays empty."""
    lan, nb, agent, dlog = proxy_lab
    xid = random.getrandbits(32)
    agent.collect(0)
    agent.send(dhcp_frame(chaddr=PLAIN_MAC, src_mac=PLAIN_MAC, xid=xid, msg_type=DISCOVER,
                          options=opt(55, [1, 3, 6, 15, 66, 67])))
    got = [r for r in agent.collect(3.0) if r.xid == xid]
    from_dhcp, from_proxy = _split(got, lan)
    assert [r.msg_type for r in from_dhcp] == [OFFER], (
        f"control: dnsmasq should OFFER once; saw:\n{describe_all(got)}")
    assert not from_proxy, f"netbootd answered a non-PXE client:\n{describe_all(from_proxy)}"
    rows = leases(nb.state_dir)
    assert rows == [], f"proxy mode stored leases: {rows}"
