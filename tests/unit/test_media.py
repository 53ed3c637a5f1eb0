"""iso_builder/media.py: the account boot medium (issue 12).

The build tests need Debian's packages (xorriso, grub-pc-bin, grub-efi-amd64-signed,
shim-signed, mtools, dosfstools, a kernel, busybox-static) and skip without them;
booting the image is tests/e2e/test_media_qemu.py."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from iso_builder import initrd as initrd_mod
from iso_builder import media, mediabuild

URL = "http://192.0.2.10:8080"
TOKEN = "nbt1.abcdefghijklmnop.QRSTUVWXYZ012345"


def _can_build() -> str | None:
    try:
        media.check_inputs(initrd_mod.default_kernel_version())
        initrd_mod.find_busybox()
    except (media.MediaError, initrd_mod.InitrdError) as e:
        return str(e)
    return None


needs_debs = pytest.mark.skipif(_can_build() is not None,
                                reason=f"cannot build media here: {_can_build()}")


def test_medium_config_is_grub_set_lines_padded_to_a_fixed_size():
    cfg = media.medium_config(server_url=URL, token=TOKEN, account="acme",
                              extra_cmdline="console=ttyS0,115200")
    assert len(cfg) == media.MEDIUM_CFG_SIZE
    text = cfg.decode()
    assert f'set nb_server="{URL}"\n' in text and f'set nb_token="{TOKEN}"\n' in text
    assert 'set nb_account="acme"\n' in text and text.endswith("#\n")


@pytest.mark.parametrize("field,kw", [
    ("server_url", {"server_url": 'http://x/"; reboot; "'}),
    ("server_url", {"server_url": "ftp://x"}),
    ("token", {"token": "nbt1.a b"}),
    ("token", {"token": "nbt1.$x"}),
    ("account", {"account": 'ac"me'}),
    ("extra_cmdline", {"extra_cmdline": "a\nb"}),
])
def test_medium_config_refuses_what_grub_or_the_kernel_command_line_would_misread(field, kw):
    args = {"server_url": URL, "token": TOKEN, "account": "acme", **kw}
    with pytest.raises(media.MediaError, match=f"^{field}: "):
        media.medium_config(**args)


def test_a_missing_debian_package_is_one_line_naming_it(monkeypatch, tmp_path):
    real = media.shutil.which
    monkeypatch.setattr(media.shutil, "which", lambda t: None if t == "xorriso" else real(t))
    with pytest.raises(media.MediaError, match=r"^xorriso is missing \(Debian package "
                                               r"xorriso: apt-get install xorriso\)$"):
        media.check_inputs("0")
    monkeypatch.setattr(media.shutil, "which", lambda t: "/usr/bin/" + t)
    monkeypatch.setattr(media, "SHIM_DIR", tmp_path / "no-shim")
    monkeypatch.setattr(media, "GRUB_PC_DIR", tmp_path)
    (tmp_path / "boot_hybrid.img").write_bytes(b"")
    with pytest.raises(media.MediaError, match="shimx64.efi.signed is missing .Debian package "
                                               "shim-signed"):
        media.check_inputs("0")


@needs_debs
def test_an_unwritable_output_leaves_nothing_behind(tmp_path):
    with pytest.raises(media.MediaError, match="does not exist"):
        media.build_full_image(tmp_path / "nope" / "x.img", server_url=URL, token=TOKEN)
    assert not (tmp_path / "nope").exists()


@needs_debs
def test_two_builds_in_different_dirs_at_different_times_are_byte_identical(
        tmp_path, monkeypatch):
    """Everything built from scratch (no cached parts) twice, a few seconds apart,
    SOURCE_DATE_EPOCH fixed; then another account's image: the same size and
    layout, the bytes differ only inside /netbootd/medium.cfg."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = tmp_path / "one", tmp_path / "two"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    ia = media.build_full_image(a / "acme.img", server_url=URL, token=TOKEN, account="acme",
                                cache=None)
    time.sleep(1.5)
    monkeypatch.chdir(b)
    ib = media.build_full_image(b / "acme.img", server_url=URL, token=TOKEN, account="acme",
                                cache=tmp_path / "cache")
    assert ia["sha256"] == ib["sha256"] and ia["size"] == ib["size"]
    assert (a / "acme.img").read_bytes() == (b / "acme.img").read_bytes()
    assert ia["source_date_epoch"] == 1700000000
    assert not [p for p in a.iterdir() if p.name.startswith(".")], "a temp file left behind"
    # cached parts: the same bytes again, quickly
    ic = media.build_full_image(b / "again.img", server_url=URL, token=TOKEN, account="acme",
                                cache=tmp_path / "cache")
    assert ic["parts_reused"] and ic["sha256"] == ia["sha256"]
    # another account: only medium.cfg's bytes differ
    other = media.build_full_image(b / "other.img", server_url="http://198.51.100.7:8080",
                                   token=TOKEN[:-3] + "xyz", account="other-co",
                                   cache=tmp_path / "cache")
    x, y = (a / "acme.img").read_bytes(), (b / "other.img").read_bytes()
    assert len(x) == len(y) == other["size"]
    diff = [i for i in range(0, len(x), 1 << 16) if x[i:i + (1 << 16)] != y[i:i + (1 << 16)]]
    assert len(diff) == 1, diff
    start = diff[0]
    idx = [start + i for i in range(1 << 16) if x[start + i] != y[start + i]]
    assert idx[-1] - idx[0] < media.MEDIUM_CFG_SIZE, (idx[0], idx[-1])
    assert x.find(b'set nb_account="acme"') // 2048 == idx[0] // 2048


def _esp_of(img, report: str, tmp_path):
    """GPT partition 2 of the image (xorriso's -report_system_area) as a file."""
    esp = tmp_path / "esp.img"
    line = [ln for ln in report.splitlines() if ln.startswith("GPT start and size :   2")][0]
    start, size = (int(v) for v in line.split()[-2:])
    with open(img, "rb") as f:
        f.seek(start * 512)
        esp.write_bytes(f.read(size * 512))
    return esp


@needs_debs
def test_the_image_is_isohybrid_with_an_esp_holding_only_the_signed_chain(tmp_path):
    img = tmp_path / "m.img"
    media.build_full_image(img, server_url=URL, token=TOKEN, account="acme")
    r = subprocess.run(["xorriso", "-indev", str(img), "-report_el_torito", "plain",
                        "-report_system_area", "plain", "-find", "/", "-type", "f"],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert "El Torito boot img :   1  BIOS" in out and "El Torito boot img :   2  UEFI" in out
    assert "grub2-mbr" in out and "28732ac11ff8d211ba4b00a0c93ec93b" in out   # ESP type
    for f in ("'/.disk/info'", "'/boot/grub/grub.cfg'", "'/netbootd/vmlinuz'",
              "'/netbootd/agent.img'", "'/netbootd/medium.cfg'"):
        assert f in out, f
    # the ESP (GPT partition 2): shim as BOOTX64.EFI, grubx64.efi, mmx64.efi, never fbx64
    esp = _esp_of(img, out, tmp_path)
    r = subprocess.run(["mdir", "-b", "-i", str(esp), "::/EFI/BOOT"], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    names = sorted(n.rsplit("/", 1)[-1].upper() for n in r.stdout.split())
    assert names == ["BOOTX64.EFI", "GRUBX64.EFI", "MMX64.EFI"], r.stdout + r.stderr


# -- issue 12 part 2: static address, pin, the net flavour ---------------------------------
PIN = "sha256//" + "Ab+/" * 10 + "xyz="
HTTPS = "https://192.0.2.10:8443"


def test_static_address_and_pin_become_grub_variables_of_the_medium():
    cfg = media.medium_config(server_url=HTTPS, token=TOKEN, account="acme", ip="192.0.2.50/24",
                              gateway="192.0.2.1", dns="198.51.100.53", pin=PIN).decode()
    for line in ('set nb_ip="192.0.2.50/24"', 'set nb_ip_addr="192.0.2.50"',
                 'set nb_ip_net="192.0.2.0/24"', 'set nb_gw="192.0.2.1"',
                 'set nb_dns="198.51.100.53"', f'set nb_pin="{PIN}"',
                 'set nb_tftp="192.0.2.10"'):
        assert line + "\n" in cfg, line
    plain = media.medium_config(server_url=URL, token=TOKEN).decode()
    assert 'set nb_ip=""\n' in plain and 'set nb_pin=""\n' in plain


def test_grub_cfg_passes_the_fields_to_the_kernel_under_the_agreed_names():
    for name in ("ip", "gw", "dns", "pin"):
        assert f'nb_args="${{nb_args}} netbootd.{name}=${{nb_{name}}}"' in media.NB_ARGS
    assert "${nb_args}" in media.GRUB_CFG and media.NB_ARGS in media.GRUB_CFG


@pytest.mark.parametrize("kw,message", [
    ({"ip": "192.0.2.50"}, "^ip: .*with a prefix"),
    ({"ip": "192.0.2.300/24"}, "^ip: "),
    ({"ip": "2001:db8::5/64"}, "^ip: "),
    ({"ip": "192.0.2.0/24"}, "^ip: .*not a host address"),
    ({"ip": "192.0.2.255/24"}, "^ip: .*not a host address"),
    ({"ip": "192.0.2.50/24; reboot"}, "^ip: "),
    ({"gateway": "192.0.2.1"}, "^gateway: needs ip"),
    ({"dns": "192.0.2.1"}, "^dns: needs ip"),
    ({"ip": "192.0.2.50/24", "gateway": "198.51.100.1"}, "^gateway: .* is not another address"),
    ({"ip": "192.0.2.50/24", "gateway": "192.0.2.50"}, "^gateway: "),
    ({"ip": "192.0.2.50/24", "dns": "dns.example"}, "^dns: "),
    ({"pin": "sha256//short="}, "^pin: "),
    ({"pin": "sha1//" + "A" * 43 + "="}, "^pin: "),
    ({"pin": "sha256//" + "A" * 43 + "=\nset x=1"}, "^pin: "),
    ({"pin": "sha256//" + "A" * 42 + "$="}, "^pin: "),
    ({"pin": PIN, "server_url": URL}, "^pin: only for an https:// server_url"),
])
def test_static_address_and_pin_are_validated_naming_the_field(kw, message):
    with pytest.raises(media.MediaError, match=message):
        media.medium_config(**{"server_url": HTTPS, "token": TOKEN, **kw})


def test_net_ipxe_script_dhcp_or_static_with_the_token_on_the_command_line():
    from iso_builder import media_net
    dhcp = media_net.medium_ipxe(server_url=URL, token=TOKEN, account="acme").decode()
    assert dhcp.startswith("#!ipxe\n") and len(dhcp) == media.MEDIUM_CFG_SIZE
    assert "ifconf -c dhcp || dhcp || goto retry\n" in dhcp
    kernel = [ln for ln in dhcp.splitlines() if ln.startswith("kernel ")][0]
    assert kernel.startswith(f"kernel {URL}/files/netbootd/vmlinuz initrd=discover.img ")
    assert f"netbootd.server={URL} netbootd.token={TOKEN} " in kernel + " "
    assert "netbootd.ip" not in kernel
    assert f"initrd --name discover.img {URL}/files/netbootd/discover.img" in dhcp
    static = media_net.medium_ipxe(server_url=URL + "/", token=TOKEN, ip="192.0.2.50/25",
                                   gateway="192.0.2.1", dns="192.0.2.2").decode()
    assert "ifconf" not in static
    for line in ("set net0/ip 192.0.2.50", "set net0/netmask 255.255.255.128",
                 "set net0/gateway 192.0.2.1", "set net0/dns 192.0.2.2"):
        assert line + "\n" in static, line
    assert ("netbootd.ip=192.0.2.50/25 netbootd.gw=192.0.2.1 netbootd.dns=192.0.2.2 "
            "|| goto retry") in static
    assert f"{URL}//files" not in static


def test_net_flavour_needs_a_plain_http_server_url():
    from iso_builder import media_net
    with pytest.raises(media.MediaError, match="^server_url: .*plain http://"):
        media_net.medium_ipxe(server_url="https://192.0.2.10:8443", token=TOKEN)
    with pytest.raises(media.MediaError, match="^server_url: "):
        mediabuild.preflight("net", server_url="https://192.0.2.10:8443", token=TOKEN)
    with pytest.raises(media.MediaError, match="^flavour: "):
        mediabuild.preflight("floppy", server_url=URL, token=TOKEN)


def test_uefi_net_grub_cfg_finds_the_medium_and_loads_over_tftp():
    from iso_builder import media_net
    cfg = media_net.UEFI_GRUB_CFG
    assert "search --file --set=nb_dev /netbootd/medium.cfg" in cfg
    assert "linux (tftp,${nb_tftp})/netbootd/vmlinuz " in cfg
    assert "initrd (tftp,${nb_tftp})/netbootd/discover.img" in cfg
    assert "net_add_addr nb0 efinet0 ${nb_ip_addr}" in cfg and "net_bootp" in cfg
    assert "netbootd.token=${nb_token} ${nb_args}" in cfg


@needs_debs
def test_net_flavour_two_builds_are_byte_identical_and_only_the_settings_differ(
        tmp_path, monkeypatch):
    """As the full flavour's test: from scratch twice, apart in time and directory;
    then another account with a static address: same size, only medium.cfg and
    medium.ipxe differ.  Small and quick from the cache."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = tmp_path / "one", tmp_path / "two"
    a.mkdir()
    b.mkdir()
    monkeypatch.chdir(a)
    ia = mediabuild.build_image(a / "n.img", flavour="net", server_url=URL, token=TOKEN,
                           account="acme", cache=None)
    # it carries the token: 0600, and nothing else left beside it
    assert (a / "n.img").stat().st_mode & 0o777 == 0o600
    assert [x.name for x in a.iterdir()] == ["n.img"]
    time.sleep(1.5)
    monkeypatch.chdir(b)
    ib = mediabuild.build_image(b / "n.img", flavour="net", server_url=URL, token=TOKEN,
                           account="acme", cache=tmp_path / "cache")
    assert ia["flavour"] == "net" and ia["sha256"] == ib["sha256"]
    assert (a / "n.img").read_bytes() == (b / "n.img").read_bytes()
    assert not [p for p in a.iterdir() if p.name.startswith(".")], "a temp file left behind"
    ic = mediabuild.build_image(b / "again.img", flavour="net", server_url=URL, token=TOKEN,
                           account="acme", cache=tmp_path / "cache")
    assert ic["parts_reused"] and ic["sha256"] == ia["sha256"]
    assert ia["size"] < 6 << 20, ia
    other = mediabuild.build_image(b / "o.img", flavour="net", server_url="http://198.51.100.7",
                              token=TOKEN[:-3] + "xyz", account="other-co",
                              ip="198.51.100.50/24", gateway="198.51.100.1",
                              cache=tmp_path / "cache")
    x, y = (a / "n.img").read_bytes(), (b / "o.img").read_bytes()
    assert len(x) == len(y) == other["size"]
    sectors = {i // 2048 for i in range(len(x)) if x[i] != y[i]}
    cfg_at = x.find(b'set nb_account="acme"') // 2048
    ipxe_at = x.find(b"#!ipxe\n") // 2048
    assert sectors == {cfg_at, ipxe_at}, (sorted(sectors), cfg_at, ipxe_at)


@needs_debs
def test_net_image_layout_esp_with_shim_and_grubnetx64_bios_with_ipxe(tmp_path):
    from iso_builder import media_net
    if not media_net.IPXE_LKRN.is_file():
        pytest.skip("/boot/ipxe.lkrn missing (Debian package ipxe)")
    img = tmp_path / "n.img"
    mediabuild.build_image(img, flavour="net", server_url=URL, token=TOKEN, account="acme")
    r = subprocess.run(["xorriso", "-indev", str(img), "-report_el_torito", "plain",
                        "-report_system_area", "plain", "-find", "/", "-type", "f"],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert "El Torito boot img :   1  BIOS" in out and "El Torito boot img :   2  UEFI" in out
    for f in ("'/boot/ipxe.lkrn'", "'/boot/grub/grub.cfg'", "'/grub/grub.cfg'",
              "'/netbootd/medium.cfg'", "'/netbootd/medium.ipxe'"):
        assert f in out, f
    assert "'/netbootd/vmlinuz'" not in out
    esp = _esp_of(img, out, tmp_path)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    r = subprocess.run(["mdir", "-b", "-i", str(esp), "::/EFI/BOOT"], capture_output=True,
                       text=True, timeout=30, env=env)
    names = sorted(n.rsplit("/", 1)[-1].upper() for n in r.stdout.split())
    assert names == ["BOOTX64.EFI", "GRUBX64.EFI"], r.stdout + r.stderr
    r = subprocess.run(["mtype", "-i", str(esp), "::/grub/grub.cfg"], capture_output=True,
                       text=True, timeout=30, env=env)
    assert r.stdout == media_net.UEFI_GRUB_CFG
    grubnet = media_net.net_files()["grub_net"][0].read_bytes()
    r = subprocess.run(["mtype", "-i", str(esp), "::/EFI/BOOT/grubx64.efi"],
                       capture_output=True, timeout=30, env=env)
    assert r.stdout == grubnet, "grubx64.efi is not Debian's signed grubnetx64, unchanged"


@pytest.mark.parametrize("extra,message", [
    (["--flavour", "net", "--server-url", "https://192.0.2.10:8443"], "server_url: .*http://"),
    (["--ip", "192.0.2.50"], "ip: .*with a prefix"),
    (["--dns", "192.0.2.1"], "dns: needs ip"),
    (["--pin", "sha256//nope"], "pin: "),
])
def test_cli_media_build_refuses_bad_fields_before_any_token_is_made(
        tmp_path, capsys, extra, message):
    """One line naming the field, exit 1, no daemon called (the server is
    unreachable: a check that came after the API call would say so instead)."""
    import re
    from netbootd.cli import build_parser, run
    argv = ["media", "build", "--account", "acme", "--server", "http://127.0.0.1:9",
            "--state-dir", str(tmp_path), "-o", str(tmp_path / "x.img")]
    if "--server-url" not in extra:
        argv += ["--server-url", URL]
    args = build_parser().parse_args(argv + extra)
    if "--flavour" not in extra and _can_build() is not None:
        pytest.skip(f"cannot build media here: {_can_build()}")
    assert run(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search("media build: " + message, err[0]), err
    assert list(tmp_path.iterdir()) == []


def test_an_https_full_medium_takes_the_daemons_pin_or_needs_one(tmp_path, capsys):
    """--server-url https://... without --pin: the pin of [http] tls_cert (what
    `netbootd tls pin` prints), else one line saying how to get one."""
    from netbootd.auth import tls
    from netbootd.cli import build_parser
    from netbootd.cli.media import _https_pin
    argv = ["media", "build", "--account", "acme", "--server-url", "https://192.0.2.10:8443",
            "--state-dir", str(tmp_path), "-o", str(tmp_path / "x.img")]
    args = build_parser().parse_args(argv)
    pin, why = _https_pin(args, None)
    assert pin is None and "--pin sha256//" in why and "tls_cert" in why
    assert _https_pin(args, "sha256//" + "A" * 43 + "=") == ("sha256//" + "A" * 43 + "=", "")
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    tls.make_selfsigned(str(cert), str(key), cn="netbootd.test")
    conf = tmp_path / "netbootd.toml"
    conf.write_text(f'[http]\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    args = build_parser().parse_args(argv + ["--config", str(conf)])
    assert _https_pin(args, None) == (tls.pubkey_pin(str(cert)), "")
    cert.write_text("not a certificate")
    pin, why = _https_pin(args, None)
    assert pin is None and why.startswith("[http] tls_cert: ") and str(cert) in why


def test_media_tftp_copies_the_served_discover_files_into_the_files_root(tmp_path):
    """`netbootd media tftp` against a real HTTP server on loopback serving
    /files/netbootd/{vmlinuz,discover.img}: copied (0644), a second run changes
    nothing, a server without them is one error naming the command."""
    import functools
    import http.server
    import threading
    from netbootd.cli import build_parser
    from netbootd.cli.media import publish_tftp
    served = tmp_path / "www"
    (served / "files" / "netbootd").mkdir(parents=True)
    (served / "files/netbootd/vmlinuz").write_bytes(b"K" * 5000)
    (served / "files/netbootd/discover.img").write_bytes(b"I" * 7000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        state = tmp_path / "state"
        args = build_parser().parse_args(["media", "tftp", "--server",
                                          f"http://127.0.0.1:{srv.server_port}",
                                          "--state-dir", str(state)])
        first = publish_tftp(args)
        assert first["ok"], first
        root = state / "files" / "netbootd"
        assert (root / "vmlinuz").read_bytes() == b"K" * 5000
        assert (root / "discover.img").read_bytes() == b"I" * 7000
        assert oct((root / "vmlinuz").stat().st_mode & 0o777) == "0o644"
        assert all(f["changed"] for f in first["files"].values())
        again = publish_tftp(args)
        assert again["ok"] and not any(f["changed"] for f in again["files"].values())
        assert sorted(p.name for p in root.iterdir()) == ["discover.img", "vmlinuz"]
        (served / "files/netbootd/discover.img").unlink()
        gone = publish_tftp(args)
        assert not gone["ok"] and "netbootd media tftp" in gone["error"]
        assert "404" in gone["error"]
        assert sorted(p.name for p in root.iterdir()) == ["discover.img", "vmlinuz"]
    finally:
        srv.shutdown()
        srv.server_close()
