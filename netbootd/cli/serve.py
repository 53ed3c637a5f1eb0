"""`netbootd serve`: its options only.  Running the daemon is __main__'s
(the one module that imports the global reactor)."""
from __future__ import annotations

from .. import config as config_mod


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("--config", help="TOML config file (default: embedded defaults)")
    s.add_argument("--mode", choices=("proxy", "full"), help="DHCP mode (default: proxy)")
    s.add_argument("--interface", action="append", default=[],
                   help="serve on this interface (repeatable; default: all with IPv4 but lo)")
    s.add_argument("--state-dir", help=f"state directory (default {config_mod.DEFAULT_STATE_DIR})")
    s.add_argument("--log-level", choices=("debug", "info", "warn", "error"))
    s.set_defaults(func=None)   # __main__.serve
