"""`netbootd config check FILE`: load and validate a config file, and check
that the boot templates it names (or the packaged ones) are there."""
from __future__ import annotations

import sys

from .. import config as config_mod


def add_parser(sub) -> None:
    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    chk = csub.add_parser("check", help="validate a config file")
    chk.add_argument("file")
    chk.set_defaults(func=check)


def check(args) -> int:
    try:
        cfg = config_mod.load(args.file)
    except config_mod.ConfigError as e:
        print(f"netbootd: config error: {e}", file=sys.stderr)
        return 1
    import jinja2

    from ..policy.boot import Renderer, default_templates_dir
    try:
        # What `serve` loads at start: a check that passes means serve finds them.
        Renderer(cfg.boot.templates_dir)
    except jinja2.TemplateNotFound as e:
        where = cfg.boot.templates_dir or default_templates_dir()
        print(f"netbootd: boot template {e.name} not found in {where}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK (mode={cfg.mode}, {len(cfg.networks)} network(s), admin token "
          f"over plain http: {cfg.http.admin_plain()})")
    return 0
