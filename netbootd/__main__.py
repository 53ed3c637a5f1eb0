"""Entry point.  The only module that imports the global reactor."""
from __future__ import annotations

import logging
import os
import sys


def _logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr,
                        level={"warn": logging.WARNING}.get(level, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from twisted.python import log as twlog
    twlog.PythonLoggingObserver(loggerName="twisted").start()


def _show_new_token(state_dir: str) -> None:
    """Create the admin token at first start and show it, once: afterwards
    only root can read it from the state dir."""
    from .auth.admin_token import ensure_token, token_path
    token, created = ensure_token(state_dir)
    if created:
        print(f"netbootd: admin token (shown once, stored in {token_path(state_dir)}): {token}",
              file=sys.stderr)


def serve(args) -> int:
    from . import cli, config
    try:
        cfg = cli.effective_config(args)
    except config.ConfigError as e:
        print(f"netbootd: config error: {e}", file=sys.stderr)
        return 2
    _logging(cfg.log_level)
    from .store import lock as statelock
    try:
        # One daemon per state dir; `state restore` refuses while it is held.
        lock = statelock.acquire(cfg.state_dir)  # noqa: F841 - held until exit
    except statelock.StateLocked as e:
        print(f"netbootd: cannot start: {e}", file=sys.stderr)
        return 2
    from .runtime.fdlimit import raise_nofile
    nofile = raise_nofile()      # before any listener: the HTTP cap is sized from it
    logging.getLogger("netbootd").info("open files limit: %d (hard %d)", *nofile)
    from .runtime.memtune import tune_malloc
    tune_malloc()        # before the reactor allocates transfer buffers
    _show_new_token(cfg.state_dir)
    from .runtime.reactor import install
    install()            # Twisted's epoll reactor, minus a log context per event
    from twisted.internet import reactor

    from .net.services import makeService
    top = makeService(cfg, reactor)
    failed = []

    def start():
        try:
            top.startService()
        except Exception as e:
            logging.getLogger("netbootd").error("cannot start: %s", e)
            failed.append(e)
            reactor.stop()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: top.stopService() if top.running else None)
    profile = os.environ.get("NETBOOTD_PROFILE")   # developer aid: cProfile to this file
    if profile:
        import cProfile
        cProfile.runctx("reactor.run()", globals(), {"reactor": reactor}, profile)
    else:
        reactor.run()   # installs SIGTERM/SIGINT handlers -> clean stop
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from . import cli
    args = cli.build_parser().parse_args(argv)
    if args.cmd == "serve":
        return serve(args)
    return cli.run(args)

if __name__ == "__main__":
    sys.exit(main())
