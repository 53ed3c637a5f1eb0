"""`netbootd media build`: an account's boot medium for field techs (issue 12;
iso_builder/media.py builds it).

    netbootd media build --account A --server-url http://IP:8080 -o acme.img
    netbootd media build --account A --server-url ... --token-file tok.txt -o acme.img

The image carries an enrollment token's *text*, which the daemon shows only
once (when the token is created): without --token-file, build creates a fresh
token for the account through the admin API (label "media full ...") and bakes
it in; a build that fails after that revokes it again.  --server-url is the
address the machines will reach netbootd at (the CLI's --server is usually
127.0.0.1, which is the machine itself).  A progress bar on a terminal, quiet
otherwise; the image is written to a temp file and renamed."""
from __future__ import annotations

import os
import sys
import time
import urllib.parse

from .client import ApiClient, Unreachable, admin_call, error_of
from .common import add_command_args, effective_config, fail, print_json


def add_parser(sub) -> None:
    m = sub.add_parser("media", help="boot media (USB/CD image) that enroll machines into an "
                                     "account")
    msub = m.add_subparsers(dest="media_cmd", required=True)
    b = msub.add_parser("build", help="build an account's boot image (BIOS + UEFI, Secure "
                                      "Boot)")
    b.add_argument("--account", required=True, help="the account hosts booting it join")
    b.add_argument("--flavour", choices=("full", "net"), default="full",
                   help="full: kernel + agent on the medium (default); net: boot loaders "
                        "only (~5 MiB), kernel + agent from netbootd over the LAN (http://)")
    b.add_argument("--server-url", help="URL the machines reach netbootd at "
                                        "(default: --server when given)")
    b.add_argument("--token-file", help="a file holding the enrollment token's text ('-': "
                                        "stdin); default: create a new token for the account")
    b.add_argument("--label", help="label of the token created (default 'media full DATE')")
    b.add_argument("--expires", help="the created token is valid for this long (30d, 12h)")
    b.add_argument("--cmdline", default="", help="extra kernel command-line words")
    b.add_argument("--ip", help="static address of the booted machine, CIDR (192.0.2.50/24); "
                                "default DHCP")
    b.add_argument("--gateway", help="default gateway with --ip")
    b.add_argument("--dns", help="DNS server with --ip")
    b.add_argument("--pin", help="the HTTPS server's public-key pin, sha256//BASE64")
    b.add_argument("-o", "--output", required=True, help="the image file to write")
    add_command_args(b)
    b.set_defaults(func=build)
    ls = msub.add_parser("list", help="media tokens (made by media build) and their state")
    ls.add_argument("--account", help="only this account's")
    add_command_args(ls)
    ls.set_defaults(func=list_)
    t = msub.add_parser("tftp", help="put the discover kernel + initrd in the files root, "
                                     "where the net medium's UEFI GRUB loads them over TFTP")
    add_command_args(t)
    t.set_defaults(func=tftp)
    w = msub.add_parser("write", help="write an image to a USB stick, then verify it")
    w.add_argument("image", help="the image file (media build -o)")
    w.add_argument("--device", required=True, help="the whole disk, e.g. /dev/sdb")
    w.add_argument("--force", action="store_true", help="write a disk that is not removable")
    w.add_argument("--yes", action="store_true", help="no confirmation question")
    w.add_argument("--json", action="store_true", help="machine-readable output")
    w.set_defaults(func=write)


class _Bar:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, on: bool):
        self.on = on

    def __call__(self, step: str, n: int, total: int) -> None:
        if self.on:
            w = 30
            done = w * (n - 1) // total
            sys.stderr.write(f"\r[{'#' * done}{'.' * (w - done)}] {n}/{total} {step:<24}")
            sys.stderr.flush()

    def bytes(self, done: int, total: int) -> None:
        if self.on:
            w = 30
            k = w * done // max(total, 1)
            sys.stderr.write(f"\r[{'#' * k}{'.' * (w - k)}] {done >> 20}/{total >> 20} MiB ")
            sys.stderr.flush()

    def end(self) -> None:
        if self.on:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


def _read_token(path: str) -> str | None:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="ascii").read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"netbootd: --token-file {path}: {e}", file=sys.stderr)
        return None
    words = text.split()
    if len(words) != 1 or not words[0].startswith("nbt1."):
        print(f"netbootd: --token-file {path}: not one enrollment token (nbt1....)",
              file=sys.stderr)
        return None
    return words[0]


def _https_pin(args, pin: str | None, flavour: str = "full",
               server_url: str = "https://") -> tuple[str | None, str]:
    """The medium's pin (auth/tls.medium_pin, as the media API): --pin, else the
    daemon's own certificate ([http] tls_cert, netbootd tls pin); (pin, "") or (None, why)."""
    from ..auth import tls
    return tls.medium_pin(flavour, server_url, pin, effective_config(args).http.tls_cert,
                          ("--server-url", "--pin"))


def build(args) -> int:
    from iso_builder import initrd as initrd_mod
    from iso_builder import media, mediabuild
    server_url = args.server_url or args.server
    if not server_url:
        return fail("media build: --server-url is required: the URL the machines reach "
                    "netbootd at (e.g. http://192.0.2.10:8080)", 2)
    out = os.path.abspath(args.output)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        return fail(f"media build: -o {args.output}: directory {parent} is missing or not "
                    "writable")
    pin, why = _https_pin(args, args.pin, args.flavour, server_url)
    if why:
        return fail(f"media build: {why}")
    settings = dict(server_url=server_url, account=args.account, extra_cmdline=args.cmdline,
                    ip=args.ip, gateway=args.gateway, dns=args.dns, pin=pin)
    try:   # every Debian input and field before a token is made
        mediabuild.preflight(args.flavour, token="nbt1.x", **settings)
    except (media.MediaError, initrd_mod.InitrdError) as e:
        return fail(f"media build: {e}")
    api = ApiClient(effective_config(args), args.server)
    try:
        code, reply = api.get("/api/v1/accounts/" + urllib.parse.quote(args.account, safe=""))
    except Unreachable as e:
        return fail(f"media build: cannot reach the daemon at {api.base}: {e}")
    if code == 404:
        return fail(f"media build: unknown account {args.account!r}")
    if code != 200:
        return fail(f"media build: account {args.account!r}: ({code}) {error_of(reply)}")

    created = None
    if args.token_file:
        token = _read_token(args.token_file)
        if token is None:
            return 1
    else:
        body = {"account": args.account,
                "label": args.label or f"media {args.flavour} {time.strftime('%Y-%m-%d')} "
                         f"{os.path.basename(out)}"[:120]}
        if args.expires:
            from .common import duration
            try:
                body["expires_in"] = duration(args.expires)
            except ValueError as e:
                return fail(f"--expires: {e}", 2)
        created = admin_call(args, "POST", "/api/v1/tokens", body, "tokens create")
        if created is None:
            return 1
        token = created["token"]

    bar = _Bar(sys.stderr.isatty() and not args.json)
    try:
        info = mediabuild.build_image(out, flavour=args.flavour, token=token, progress=bar,
                                 **settings)
    except (media.MediaError, OSError) as e:
        bar.end()
        if created is not None:
            admin_call(args, "POST", f"/api/v1/tokens/{created['id']}/revoke", None,
                       "tokens revoke")
        return fail(f"media build: {e}" + (f" (token {created['id']} revoked)"
                                           if created else ""))
    bar.end()
    info["token_id"] = created["id"] if created else None
    if args.flavour == "net":
        info["tftp"] = publish_tftp(args)
        if not info["tftp"]["ok"]:
            print(f"netbootd: warning: {info['tftp']['error']}", file=sys.stderr)
    if args.json:
        print_json(info)
        return 0
    print(f"{info['path']}: {args.flavour}, {info['size']} bytes, sha256 {info['sha256'][:16]}..., account "
          f"{args.account}, server {server_url}" +
          (f", token {created['id']} (new)" if created else "") +
          f", {info['seconds']:.1f}s" + (" (cached parts)" if info["parts_reused"] else ""))
    print("Write it to a USB stick with dd (it is also a CD image). It boots BIOS and UEFI "
          "with Secure Boot" + ("; the net flavour loads the agent from "
                                f"{server_url}/files/" if args.flavour == "net" else "") + "; anyone holding it can enroll machines into the account until "
          "the token is revoked" + (f": netbootd tokens revoke {created['id']}" if created
                                    else "."), file=sys.stderr)
    return 0


TFTP_NAMES = ("vmlinuz", "discover.img")


def publish_tftp(args) -> dict:
    """The discover kernel + initrd the daemon serves over HTTP (/files/netbootd/...,
    what PXE-booted hosts get), copied into its files root as netbootd/vmlinuz and
    netbootd/discover.img, which its TFTP serves: the net medium's UEFI GRUB
    (Debian's signed grubnetx64, no http module) loads them from there.  Each is
    written to a temp file and renamed, and only when its bytes changed.  Needs the
    daemon's files root on this machine (run where the daemon runs)."""
    import hashlib
    import urllib.request
    cfg = effective_config(args)
    root = cfg.boot.files_root or os.path.join(cfg.state_dir, "files")
    out = {"ok": False, "files_root": root, "files": {}}
    base = ApiClient(cfg, args.server).base
    try:
        os.makedirs(os.path.join(root, "netbootd"), mode=0o755, exist_ok=True)
        for name in TFTP_NAMES:
            dest = os.path.join(root, "netbootd", name)
            tmp = f"{dest}.{os.getpid()}.tmp"
            h = hashlib.sha256()
            try:
                with urllib.request.urlopen(f"{base}/files/netbootd/{name}", timeout=60) as r, \
                        open(tmp, "wb") as f:
                    while chunk := r.read(1 << 20):
                        h.update(chunk)
                        f.write(chunk)
                same = os.path.isfile(dest) and _sha256(dest) == h.hexdigest()
                if not same:
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            out["files"][f"netbootd/{name}"] = {"sha256": h.hexdigest(), "changed": not same,
                                                "bytes": os.path.getsize(dest)}
    except OSError as e:     # urllib's errors are OSErrors
        out["error"] = (f"the net medium's UEFI path loads netbootd/vmlinuz and "
                        f"netbootd/discover.img over TFTP from {root}, and copying them from "
                        f"{base}/files/netbootd/ failed: {e} (run `netbootd media tftp` where "
                        "the daemon runs)")
        return out
    out["ok"] = True
    return out


def _sha256(path: str) -> str:
    import hashlib
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tftp(args) -> int:
    info = publish_tftp(args)
    if not info["ok"]:
        return fail(f"media tftp: {info['error']}")
    if getattr(args, "json", False):
        print_json(info)
        return 0
    from .common import print_rows
    print_rows(args, [{"file": k, "bytes": v["bytes"], "sha256": v["sha256"][:16],
                       "changed": "yes" if v["changed"] else "no"}
                      for k, v in sorted(info["files"].items())],
               ["file", "bytes", "sha256", "changed"])
    return 0


def list_(args) -> int:
    """Tokens whose label says media build made them: which sticks can still enroll."""
    from .tokens import TOKEN_COLS, token_rows
    query = urllib.parse.urlencode({"account": args.account} if args.account else {})
    rows = admin_call(args, "GET", "/api/v1/tokens" + ("?" + query if query else ""), None,
                      "media list")
    if rows is None:
        return 1
    rows = sorted((t for t in rows if str(t.get("label") or "").startswith("media ")),
                  key=lambda t: (t.get("created") or 0, t["id"]))
    if args.json:
        print_json(rows)
        return 0
    from .common import print_rows
    print_rows(args, token_rows(rows), ["id", "account"] + TOKEN_COLS[1:])
    return 0


def write(args) -> int:
    from iso_builder import mediawrite
    try:
        size = os.path.getsize(args.image)
        dev = mediawrite.check_device(args.device, size, force=args.force)
    except (OSError, mediawrite.MediaWriteError) as e:
        return fail(f"media write: {e}")
    if not args.yes:
        if not sys.stdin.isatty():
            return fail("media write: not a terminal: --yes to write without asking", 2)
        answer = input(f"Erase {dev['device']} ({dev['model'] or dev['name']}, "
                       f"{dev['bytes'] >> 20} MiB) and write {args.image}? Type the device "
                       "name to confirm: ")
        if answer.strip() not in (dev["device"], dev["name"]):
            return fail("media write: not confirmed, nothing written")
    bar = _Bar(sys.stderr.isatty() and not args.json)
    try:
        info = mediawrite.write_image(args.image, dev["device"], progress=bar.bytes)
    except (OSError, mediawrite.MediaWriteError) as e:
        bar.end()
        return fail(f"media write: {e}")
    bar.end()
    if args.json:
        print_json(dict(dev, **info))
    else:
        print(f"{info['device']}: wrote {info['bytes']} bytes, read back sha256 "
              f"{info['sha256'][:16]}... verified")
    return 0
