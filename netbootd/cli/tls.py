"""`netbootd tls`: the HTTPS listener's certificate.

    netbootd tls selfsigned --cn NAME [--san IP|DNS ...] [--days N] [--force]
        a P-256 key (0600) and a self-signed certificate, written to [http] tls_key /
        tls_cert of the config, else <state_dir>/tls/netbootd.key / .crt (then the
        two config lines to add are printed)
    netbootd tls pin [--cert PATH]
        the public-key pin sha256//BASE64 (curl --pinnedpubkey; the boot media's
        netbootd.pin=) of the given certificate, else the configured one
"""
from __future__ import annotations

import os

from ..auth import tls
from .common import add_state_args, effective_config, facts, fail, print_json


def _paths(cfg) -> tuple[str, str, bool]:
    """(cert, key, configured?)"""
    h = cfg.http
    if h.tls_cert and h.tls_key:
        return h.tls_cert, h.tls_key, True
    d = os.path.join(cfg.state_dir, "tls")
    return os.path.join(d, "netbootd.crt"), os.path.join(d, "netbootd.key"), False


def selfsigned(args) -> int:
    try:
        cfg = effective_config(args)
    except ValueError as e:
        return fail(f"config error: {e}", 2)
    cert, key, configured = _paths(cfg)
    try:
        out = tls.make_selfsigned(cert, key, cn=args.cn, sans=args.san or (), days=args.days,
                                  overwrite=args.force)
    except tls.TlsError as e:
        return fail(str(e), 2)
    except OSError as e:
        return fail(f"cannot write {e.filename or cert}: {e.strerror}")
    out["configured"] = configured
    if args.json:
        print_json(out)
        return 0
    print(facts([("certificate", out["cert"]), ("key", f"{out['key']} (mode 0600)"),
                 ("names", ", ".join(out["sans"]) or out["cn"]), ("valid until", out["not_after"]),
                 ("pin", out["pin"])]))
    if not configured:
        print("\nHTTPS is on once the config has (then restart netbootd):\n"
              f'[http]\ntls_cert = "{cert}"\ntls_key = "{key}"\ntls_port = 8443')
    return 0


def pin(args) -> int:
    cert = args.cert
    if not cert:
        try:
            cfg = effective_config(args)
        except ValueError as e:
            return fail(f"config error: {e}", 2)
        cert, _, configured = _paths(cfg)
        if not configured and not os.path.exists(cert):
            return fail("no certificate: give --cert PATH, set [http] tls_cert, or make one "
                        "with `netbootd tls selfsigned --cn NAME`", 2)
    try:
        p = tls.pubkey_pin(cert)
    except tls.TlsError as e:
        return fail(str(e), 2)
    if args.json:
        print_json({"cert": cert, "pin": p})
    else:
        print(p)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("tls", help="the HTTPS certificate: make a self-signed one, print its pin")
    tsub = p.add_subparsers(dest="tls_cmd", required=True)
    s = tsub.add_parser("selfsigned", help="write a key (0600) and a self-signed certificate")
    s.add_argument("--cn", required=True, help="the certificate's name (the server's DNS name "
                                               "or address)")
    s.add_argument("--san", action="append", metavar="IP|DNS",
                   help="another name the certificate is valid for (repeatable)")
    s.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    s.add_argument("--force", action="store_true", help="replace an existing key and certificate")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_state_args(s)
    s.set_defaults(func=selfsigned)
    q = tsub.add_parser("pin", help="print the public-key pin sha256//BASE64 (curl "
                                    "--pinnedpubkey, netbootd.pin= on boot media)")
    q.add_argument("--cert", help="certificate file (default: [http] tls_cert, else the "
                                  "state dir's)")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    add_state_args(q)
    q.set_defaults(func=pin)
