"""`netbootd initrd build`: build the discover initrd (the agent hosts boot
when nothing is assigned to them) where the daemon serves it from.

This, or the install step (scripts/setup.sh), is where busybox-static may be
fetched (apt-get download): a running daemon never fetches packages, it only
(re)builds from what is installed (iso_builder.initrd, fetch=False)."""
from __future__ import annotations

import json
import os
import sys

from .common import add_state_args, effective_config


def add_parser(sub) -> None:
    p = sub.add_parser("initrd", help="the discover initrd (agent) hosts boot when unassigned")
    isub = p.add_subparsers(dest="initrd_cmd", required=True)
    b = isub.add_parser("build", help="build it (when its inputs changed) where serve finds it")
    add_state_args(b)
    b.add_argument("--out", help="output file (default: <state-dir>/discover.img, what serve "
                                 "serves unless boot.discover_initrd names another)")
    b.add_argument("--no-fetch", action="store_true",
                   help="never run apt-get download busybox-static; fail if none is installed")
    b.add_argument("--json", action="store_true", help="print the facts as JSON")
    b.set_defaults(func=build)


def default_path(state_dir: str) -> str:
    """Where `serve` looks for the image it builds (net/ services use the same name)."""
    return os.path.join(state_dir, "discover.img")


def build(args) -> int:
    from iso_builder.initrd import InitrdError, ensure_discover_initrd
    cfg = effective_config(args)
    if args.out:
        out = args.out
    else:
        os.makedirs(cfg.state_dir, mode=0o700, exist_ok=True)
        out = default_path(cfg.state_dir)
    try:
        info = ensure_discover_initrd(out, fetch=not args.no_fetch)
    except InitrdError as e:
        print(f"netbootd: cannot build the discover initrd: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        print(f"{info['path']}: {'unchanged' if info.get('reused') else 'built'}, "
              f"{info['size']} bytes, kernel {info['kernel_version']}, "
              f"modules {' '.join(info['modules'])}")
        tools = info.get("tools")
        if tools:
            print(f"{tools['path']}: agent tool pack, "
                  f"{'unchanged' if tools['reused'] else 'built'}, {tools['size']} bytes, "
                  f"openssl from {tools['openssl']}")
    return 0
