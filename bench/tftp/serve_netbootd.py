#!/usr/bin/env python3
"""Run only netbootd's TFTP server (netbootd/net/tftp.py) on the global reactor.

    python bench/tftp/serve_netbootd.py --root DIR --port 6969 [--ip 127.0.0.1]

The server is built exactly as the daemon's TftpService builds it (the
TftpServer defaults: max_blksize 1468, max_windowsize 64, per_client 8,
total 256, cache_limit 4 MiB, ...), minus the per-transfer event that the
daemon stores in SQLite (here on_event only counts).  Prints "READY <port>"
on stdout once listening; SIGTERM/SIGINT stop it cleanly and print the
server's counters to stderr.

--diag applies monkeypatches to this process only, to measure what a
change not made in netbootd would buy (netbootd's code is unchanged):
  mmap       large files are mmap()ed: a block is a memoryview slice instead
             of a slice of FileSource's read-ahead buffer (not done in the
             daemon: a file truncated in place while mapped raises SIGBUS).
(The former `logprefix`, `read1` and `threads` diagnostics are now how
netbootd works: transfer sockets sit in one epoll set that a thread of its
own waits on, net/tftp_loop.py's TransferLoop.)
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repo's netbootd
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/, for common
import common  # noqa: E402


def _patch_mmap():
    import mmap

    from netbootd.net import tftp
    orig_init, orig_close = tftp.FileSource.__init__, tftp.FileSource.close
    maps: dict[int, tuple] = {}

    def __init__(self, fd, size, chunk=0):
        orig_init(self, fd, size, chunk)
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else None
        maps[id(self)] = (mm, memoryview(mm) if mm else memoryview(b""))

    def read(self, offset, n):
        return maps[id(self)][1][offset:offset + n]

    def close(self):
        mm, view = maps.pop(id(self), (None, None))
        try:
            if view is not None:
                view.release()
            if mm is not None:
                mm.close()
        except BufferError:
            pass                        # a slice still alive: the GC unmaps it
        orig_close(self)
    tftp.FileSource.__init__, tftp.FileSource.read, tftp.FileSource.close = __init__, read, close


PATCHES = {"mmap": _patch_mmap}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=6969)
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--per-client", type=int, default=None,
                    help="override TftpServer's per_client cap (default: its own)")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-memtune", action="store_true",
                    help="skip netbootd.runtime.memtune.tune_malloc() (glibc defaults; the daemon applies it)")
    ap.add_argument("--diag", default="", help="comma list of: mmap (see above)")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    memtune = common.tune_memory(args.no_memtune)
    from twisted.internet import reactor

    from netbootd.net.tftp import TftpServer

    for name in filter(None, args.diag.split(",")):
        PATCHES[name]()

    outcomes: Counter = Counter()
    kw = {}
    if args.per_client is not None:
        kw["per_client"] = args.per_client
    server = TftpServer(reactor, [args.root], on_event=lambda ev: outcomes.update([ev["outcome"]]),
                        **kw)
    listener = server.listen(args.port, ip=args.ip)

    return common.serve(reactor, lambda: f"READY {listener.port} memtune={memtune}",
                        lambda: {"server": dict(server.counters), "outcomes": dict(outcomes)},
                        stop=server.stop)


if __name__ == "__main__":
    sys.exit(main())
