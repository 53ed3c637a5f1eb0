"""`netbootd token rotate|show-path`: the admin token in the state dir (the
enrollment tokens of accounts are `netbootd tokens`, tokens.py)."""
from __future__ import annotations

from .common import add_state_args, effective_config


def add_parser(sub) -> None:
    t = sub.add_parser("token", help="admin token")
    t.add_argument("action", choices=("rotate", "show-path"))
    add_state_args(t)
    t.set_defaults(func=run)


def run(args) -> int:
    from ..auth import admin_token
    cfg = effective_config(args)
    if args.action == "show-path":
        print(admin_token.token_path(cfg.state_dir))
        return 0
    tok = admin_token.rotate_token(cfg.state_dir)
    print(f"new admin token (restart the daemon to apply): {tok}")
    return 0
