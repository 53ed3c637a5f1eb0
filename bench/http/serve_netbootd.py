#!/usr/bin/env python3
"""Run only netbootd's HTTP site (netbootd/net/http/site.py) on the global reactor.

    python bench/http/serve_netbootd.py --root DIR --port 8080 [--ip 127.0.0.1]

Files are served as the daemon serves them: GET /files/<name> from
``HttpApp.roots`` through build_site() (BoundedRequest, FileLeaf, the
static.File subclass reading the checked descriptor).  The one difference:
``submit`` (the daemon's group commit of each finished transfer's event into
SQLite) only counts here.  There is no registry nor renderer: /boot and /api
are not part of this benchmark.  Prints "READY <port>" on stdout once
listening; SIGTERM/SIGINT stop it and print the app counters to stderr.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repo's netbootd
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402


def make_site(app, per_source: int):
    """build_site(app), as the daemon does.  If the site cannot be built
    (e.g. a half-written /api module in a work tree), the same Site with only
    /files (same Root, Files, BoundedRequest and settings as build_site), and
    the reason -- /files is all this benchmark requests."""
    try:
        from netbootd.net.http.limits import ConnectionLimits
        from netbootd.net.http.site import build_site
        from netbootd.runtime.fdlimit import http_connection_cap, soft_limit
        from twisted.internet import reactor
        # The daemon's caps ([http] max_per_source, default 32), raised per
        # source: every wrk connection comes from 127.0.0.1.
        limits = ConnectionLimits(reactor, total=http_connection_cap(soft_limit()),
                                  per_source=per_source, request_timeout=10.0,
                                  idle_timeout=30.0, counters=app.counters)
        return build_site(app, limits=limits), "build_site"
    except Exception as e:                      # noqa: BLE001
        from twisted.web import server

        from netbootd.net.http.common import BoundedRequest
        from netbootd.net.http.files import Files
        try:
            from netbootd.net.http.site import Root
        except Exception:                       # noqa: BLE001
            from twisted.web.resource import Resource as Root
        print(f"WARNING: build_site failed ({type(e).__name__}: {e}); serving /files only",
              file=sys.stderr, flush=True)
        root = Root()
        root.putChild(b"files", Files(app))
        site = server.Site(root)
        site.requestFactory = BoundedRequest
        site.displayTracebacks = False
        site.noisy = False
        return site, "files-only"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--backlog", type=int, default=50, help="listenTCP backlog (twisted default 50)")
    ap.add_argument("--per-source", type=int, default=1024,
                    help="connections per client address (the daemon's default is 32; all of "
                         "wrk's come from 127.0.0.1)")
    ap.add_argument("--no-sendfile", action="store_true",
                    help="copy file bodies through Python (static.File's producers), as before "
                         "net/http/sendfile.py")
    ap.add_argument("--reactor-send", action="store_true",
                    help="send file bodies by sendfile calls on the reactor's write events "
                         "instead of the sender thread (net/http/sendthread.py)")
    ap.add_argument("--cork", action="store_true",
                    help="cork the socket (TCP_CORK) from the headers to the end of the body "
                         "(net/http/sendfile.py CORK, off by default)")
    ap.add_argument("--budget-kib", type=int,
                    help="bytes (KiB) the sender thread sends to one connection per turn "
                         "(net/http/sendthread.py BUDGET; sendfile calls capped to it too)")
    ap.add_argument("--cork-at", type=int,
                    help="cork (as --cork) only while at least this many bodies are under way "
                         "(net/http/sendfile.py CORK_AT)")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-memtune", action="store_true",
                    help="skip netbootd.runtime.memtune.tune_malloc() (glibc defaults; the daemon applies it)")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    memtune = common.tune_memory(args.no_memtune)
    if args.no_sendfile:
        from netbootd.net.http import sendfile
        sendfile.ENABLED = False
    if args.cork:
        from netbootd.net.http import sendfile
        sendfile.CORK = True
    if args.budget_kib:
        from netbootd.net.http import sendthread
        sendthread.BUDGET = args.budget_kib << 10
        sendthread.CHUNK = min(sendthread.CHUNK, sendthread.BUDGET)
    if args.cork_at is not None:
        from netbootd.net.http import sendfile
        sendfile.CORK_AT = args.cork_at
    if args.reactor_send:
        from netbootd.net.http import sendfile
        sendfile.THREAD = False
    from twisted.internet import reactor

    from netbootd.net.http.app import HttpApp

    submitted = [0]

    def submit(writes, on_commit=None):
        submitted[0] += len(writes)
        if on_commit is not None:
            reactor.callLater(0, on_commit)

    app = HttpApp(registry=None, submit=submit, renderer=None, clock=reactor,
                  token="bench-token-not-used", roots=[args.root])
    site, how = make_site(app, args.per_source)
    port = reactor.listenTCP(args.port, site, backlog=args.backlog, interface=args.ip)

    return common.serve(reactor, lambda: f"READY {port.getHost().port} site={how} memtune={memtune}",
                        lambda: {"app": dict(app.counters), "events": submitted[0]})


if __name__ == "__main__":
    sys.exit(main())
