"""The agent over HTTPS (iso_builder/agent/lib.sh) with the TLS client the boot media
pack (iso_builder/tlsclient.py: Debian's curl and its libraries), run in a chroot
that holds only what the initrd holds (static busybox, the agent's files, curl with
its packed libraries), against netbootd's real TLS listener on 127.0.0.1:

* the right pin registers (token in, agent secret out) and the secret works;
* a wrong pin: "FAILED tls pin mismatch", and the site saw no request at all
  (neither the token nor the secret left the machine);
* https without a pin is refused before any connection, unless netbootd.insecure=1;
* the static IP setup (static_net) configures a NIC in a network namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from iso_builder import initrd as initrd_mod
from iso_builder import tlsclient
from netbootd.auth import tls
from netbootd.lab import netns
from netbootd.net.http.common import BoundedRequest
from netbootd.net.http.site import build_site
from netbootd.net.services.http import listen_tls

from .test_agent_api import make_token
from .test_api import api  # noqa: F401 - the fixture

AGENT = Path(initrd_mod.INITRD_SRC)
M1, M2 = "52:54:00:ee:00:01", "52:54:00:ee:00:02"
WRONG_PIN = "sha256//" + "B" * 43 + "="


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A directory tree like the media initrd's userland; commands run chrooted in it."""
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    try:
        bb = initrd_mod.find_busybox()
    except initrd_mod.InitrdError as e:
        pytest.skip(f"no static busybox: {e}")
    curl, why = tlsclient.pick(initrd_mod.cache_dir())
    if curl is None:
        pytest.skip(f"no curl to pack: {why}")
    r = tmp_path_factory.mktemp("agentroot")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "lib/netbootd", "run/netbootd", "tmp",
              "dev", "etc"):
        (r / d).mkdir(parents=True, exist_ok=True)
    os.chmod(r / "run/netbootd", 0o700)
    shutil.copy(bb, r / "bin/busybox")
    for app in initrd_mod.busybox_applets(bb):
        if not (r / app).exists():
            (r / app).symlink_to("/bin/busybox")
    for src, dst, _ in initrd_mod.SOURCES:
        shutil.copy(AGENT / src, r / dst)
    packed = tlsclient.files_for_initrd(curl)
    for path, data, mode in packed:
        (r / path).parent.mkdir(parents=True, exist_ok=True)
        (r / path).write_bytes(data)
        os.chmod(r / path, mode)
    subprocess.run(["mknod", "-m", "666", str(r / "dev/null"), "c", "1", "3"], check=True)
    subprocess.run(["mknod", "-m", "444", str(r / "dev/urandom"), "c", "1", "9"], check=True)
    return r


def agent_sh(root: Path, script: str, timeout: float = 90) -> subprocess.CompletedProcess:
    lib = ". /lib/netbootd/lib.sh\n"
    return subprocess.run(["chroot", str(root), "/bin/sh", "-c", lib + script],
                          env={"PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def https(api, tmp_path):  # noqa: F811
    app, base, store, committer = api
    pair = tls.make_selfsigned(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"),
                               cn="netbootd.test", sans=["127.0.0.1"])
    seen = []

    class Spy(BoundedRequest):
        def process(self):
            seen.append((self.method, self.uri, self.getHeader(b"authorization"),
                         self.content.read() if self.content else b""))
            if self.content:
                self.content.seek(0)
            return super().process()
    site = build_site(app)
    site.requestFactory = Spy
    port = listen_tls(reactor, 0, site, pair["cert"], pair["key"], "127.0.0.1")
    yield app, f"https://127.0.0.1:{port.getHost().port}", pair, seen, base
    port.stopListening()


def register_script(url: str, pin: str, token: str, mac: str, extra: str = "") -> str:
    body = json.dumps({"mac": mac, "token": token, "ids": {"macs": [mac]}})
    return f'''server='{url}'; tls_pin='{pin}'; secret=""; {extra}
        printf '%s\\n' '{body}' > "$NB_RUN/r.json"
        api POST /api/v1/agent/register "$NB_RUN/r.json"
        echo "REG $http_status [$http_error] $(jget "$NB_RUN/http.flat" account)"
        secret=$(jget "$NB_RUN/http.flat" secret)
        api GET /api/v1/agent/next
        echo "NEXT $http_status [$http_error] $(jget "$NB_RUN/http.flat" action)"
        ls -a "$NB_RUN"'''


@pytest_twisted.inlineCallbacks
def test_the_right_pin_registers_with_the_packed_curl_in_a_chroot(root, https):
    app, url, pair, seen, base = https
    tok = yield make_token(base, "field")
    r = yield threads.deferToThread(agent_sh, root,
                                    register_script(url, pair["pin"], tok["token"], M1))
    out = r.stdout.splitlines()
    assert out[0] == "REG 200 [] field", r.stdout + r.stderr
    assert out[1] == "NEXT 200 [] wait", r.stdout + r.stderr
    assert "http.hdr" not in out[2:], "the header file carrying the secret was kept"
    assert M1 in app.registry.hosts
    assert [(m, u) for m, u, _, _ in seen] == [(b"POST", b"/api/v1/agent/register"),
                                              (b"GET", b"/api/v1/agent/next")]
    assert seen[1][2].startswith(b"Agent nba1.")


@pytest_twisted.inlineCallbacks
def test_a_wrong_pin_is_refused_and_nothing_reaches_the_server(root, https):
    app, url, pair, seen, base = https
    tok = yield make_token(base, "field")
    script = register_script(url, WRONG_PIN, tok["token"], M2, extra="secret=nba1.keep.me")
    r = yield threads.deferToThread(agent_sh, root, script.replace('secret=""; ', ""))
    out = r.stdout.splitlines()
    assert out[0] == ("NETBOOTD-AGENT: FAILED tls pin mismatch server=" + url
                      + f" pin={WRONG_PIN}: nothing sent"), r.stdout + r.stderr
    assert out[1] == "REG 0 [tls pin mismatch] "
    assert out[3].startswith("NEXT 0 [tls pin mismatch]")
    assert seen == [], "no request reached the site (the token stayed home)"
    assert M2 not in app.registry.hosts


@pytest_twisted.inlineCallbacks
def test_https_without_a_pin_never_connects_unless_insecure(root, https):
    app, url, pair, seen, base = https
    r = yield threads.deferToThread(agent_sh, root, f'''server='{url}'; secret=""
        api GET /api/v1/status
        echo "A $http_status [$http_error]"
        nb_fetch '{url}/files/x' /tmp/x; echo "F $? $(cat "$NB_RUN/wget.err")"
        tls_insecure=1
        api GET /api/v1/status
        echo "B $http_status $(jget "$NB_RUN/http.flat" mode)"''')
    out = r.stdout.splitlines()
    assert out[0] == "A 0 [https without netbootd.pin (netbootd.insecure=1 allows it)]", r.stderr
    assert out[1] == "F 1 https download without a pinned TLS client refused"
    assert out[2] == "B 200 full"
    assert [u for _, u, _, _ in seen] == [b"/api/v1/status"], "only the insecure call went out"


@pytest_twisted.inlineCallbacks
def test_nb_fetch_downloads_over_the_pinned_connection(root, https, tmp_path):
    app, url, pair, seen, base = https
    files = tmp_path / "files"
    files.mkdir()
    (files / "vmlinuz").write_bytes(b"K" * 300000)
    app.roots = [str(files)]
    r = yield threads.deferToThread(agent_sh, root, f'''tls_pin='{pair["pin"]}'
        nb_fetch '{url}/files/vmlinuz' /tmp/k; echo "OK $? $(wc -c < /tmp/k)"
        tls_pin='{WRONG_PIN}'
        nb_fetch '{url}/files/vmlinuz' /tmp/k2; echo "BAD $? $(ls /tmp/k2 2>/dev/null)"''')
    out = r.stdout.splitlines()
    assert out[0] == "OK 0 300000", r.stdout + r.stderr
    assert out[1] == "BAD 90 ", r.stdout + r.stderr


# -- values from the medium, checked in shell -----------------------------------------------
CHECKS = [
    ("ipv4 10.0.0.1", 0), ("ipv4 255.255.255.255", 0), ("ipv4 256.1.1.1", 1),
    ("ipv4 1.2.3", 1), ("ipv4 1.2.3.4.5", 1), ("ipv4 01.2.3.4", 1), ("ipv4 '1.2.3.4;reboot'", 1),
    ("ipv4 '$(reboot)'", 1), ("ipv4 ''", 1), ("cidr 10.0.0.5/24", 0), ("cidr 10.0.0.5/33", 1),
    ("cidr 10.0.0.5/0", 1), ("cidr 10.0.0.5", 1), ("cidr 10.0.0.5/2x", 1),
    ("ifname eth0", 0), ("ifname enp0s31f6", 0), ("ifname '../x'", 1), ("ifname 'a b'", 1),
    ("ifname abcdefghijklmnop", 1),
    ("pins sha256//" + "A" * 43 + "=", 0),
    ("pins 'sha256//" + "A" * 43 + "=;sha256//" + "b" * 43 + "='", 0),
    ("pins sha256//" + "A" * 42 + "=", 1), ("pins md5//" + "A" * 43 + "=", 1),
    ("pins 'sha256//" + "A" * 42 + "$='", 1), ("pins ''", 1),
]


@pytest.mark.parametrize("call,rc", CHECKS)
def test_medium_values_are_checked(root, call, rc):
    r = agent_sh(root, f"{call}; echo rc=$?")
    assert r.stdout.strip().endswith(f"rc={rc}"), (call, r.stdout, r.stderr)


@pytest.mark.parametrize("args,why", [
    ("10.0.0.5/24 10.0.0.1 10.0.0.53,1.1.1.1 eth0", ""),
    ("10.0.0.5/24 '' '' ''", ""),
    ("10.0.0.5/24 10.0.1.1 '' ''", "netbootd.gw=10.0.1.1 is outside 10.0.0.5/24"),
    ("10.0.0.5 10.0.0.1 '' ''", "netbootd.ip=10.0.0.5 is not A.B.C.D/PREFIX"),
    ("10.0.0.5/24 10.0.0.1 'x;y' ''", "netbootd.dns=x;y is not a list of IPv4 addresses"),
    ("10.0.0.5/24 '' '' 'e th0'", "netbootd.iface=e th0 is not an interface name"),
    ("172.16.9.9/12 172.31.255.254 '' ''", ""),
])
def test_static_check_names_the_bad_value(root, args, why):
    r = agent_sh(root, f"static_check {args}")
    assert r.stdout.strip() == why, r.stderr


# -- static IP in a network namespace -------------------------------------------------------
def test_static_net_configures_the_nic_in_a_namespace(root, tmp_path):
    if (why := netns.available()):
        pytest.skip(why)
    with netns.Lab() as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        _, nic = lab.link(srv, "10.77.9.1/24", cli, None)
        script = (f". /lib/netbootd/lib.sh; NB_RESOLV=/tmp/resolv.conf; "
                  f"static_net 10.77.9.20/24 10.77.9.1 10.77.9.1,10.77.9.53 '' {nic}; "
                  f"echo rc=$? leased=$leased; cat /run/netbootd/lease/{nic}/ip; "
                  f"cat /tmp/resolv.conf; ping -c 3 -W 5 10.77.9.1 >/dev/null && echo ping-ok; "
                  f"static_net 10.77.9.21/24 '' '' nosuch0 {nic}; echo rc=$?")
        r = lab.ns_exec(cli, "chroot", str(root), "/bin/sh", "-c", script, check=False)
        out = r.stdout.splitlines()
        why = r.stdout + r.stderr
        assert f"rc=0 leased={nic}" in out, why
        assert "10.77.9.20" in out, why
        assert "nameserver 10.77.9.1" in out and "nameserver 10.77.9.53" in out, why
        assert "ping-ok" in out, why
        assert any("FAILED static IP: netbootd.iface=nosuch0 is not a NIC here" in x
                   for x in out) and out[-1] == "rc=1", why
        addr = lab.ns_exec(cli, "ip", "-4", "-o", "addr", "show", "dev", nic).stdout
        route = lab.ns_exec(cli, "ip", "route", "show", "default").stdout
        assert "10.77.9.20/24" in addr and f"default via 10.77.9.1 dev {nic}" in route
