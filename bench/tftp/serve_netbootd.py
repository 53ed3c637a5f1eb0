#!/usr/bin/env python3
"""Run only netbootd's TFTP server (netbootd/net/tftp.py) on the global reactor.

    python bench/tftp/serve_netbootd.py --root DIR --port 6969 [--ip 127.0.0.1]

The server is built exactly as the daemon's TftpService builds it (the
TftpServer defaults: max_blksize 1468, max_windowsize 64, per_client 8,
total 256, cache_limit 4 MiB, ...), minus the per-transfer event that the
daemon stores in SQLite (here on_event only counts).  Prints "READY <port>"
on stdout once listening; SIGTERM/SIGINT stop it cleanly and print the
server's counters to stderr.

--diag applies monkeypatches to this process only, to measure what the
suggestions in the benchmark report would buy (netbootd's code is unchanged):
  logprefix  UdpEndpoint.logPrefix returns a constant: Twisted calls it for
             every readiness event, and it does a getsockname() syscall;
  read1      a transfer socket reads one datagram per readiness event instead
             of reading until EAGAIN (one recvfrom and one exception less per
             ACK; epoll is level-triggered, so nothing is left behind);
  mmap       large files are mmap()ed: a block is a memoryview slice instead
             of an os.pread() per block.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repo's netbootd


def _patch_logprefix():
    from netbootd.net import udp
    udp.UdpEndpoint.logPrefix = lambda self: "UdpEndpoint"


def _patch_read1():
    from netbootd.net import tftp, udp
    orig = udp.UdpEndpoint.doRead

    def doRead(self):
        if not isinstance(self.handler, tftp._Transfer):
            return orig(self)
        try:
            got = self.socket.recvfrom(self.max_size)
        except OSError as e:
            if e.errno in udp._AGAIN or e.errno in udp._IGNORE:
                return None
            self.read_errors += 1
            return None
        self.handler.datagramsReceived([got])
        return None
    udp.UdpEndpoint.doRead = doRead


def _patch_mmap():
    import mmap

    from netbootd.net import tftp
    orig_init, orig_close = tftp.FileSource.__init__, tftp.FileSource.close
    maps: dict[int, tuple] = {}

    def __init__(self, fd, size):
        orig_init(self, fd, size)
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


PATCHES = {"logprefix": _patch_logprefix, "read1": _patch_read1, "mmap": _patch_mmap}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=6969)
    ap.add_argument("--ip", default="127.0.0.1")
    ap.add_argument("--per-client", type=int, default=None,
                    help="override TftpServer's per_client cap (default: its own)")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--no-memtune", action="store_true",
                    help="skip netbootd.memtune.tune_malloc() (glibc defaults; the daemon applies it)")
    ap.add_argument("--diag", default="", help="comma list of: logprefix,read1,mmap (see above)")
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    memtune = "off"
    if not args.no_memtune:
        # As netbootd/__main__.py serve() does, before the reactor allocates.
        try:
            from netbootd.memtune import tune_malloc
            memtune = "on" if tune_malloc() else "unavailable"
        except ImportError:
            memtune = "absent"
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

    def ready():
        print(f"READY {listener.port} memtune={memtune}", flush=True)

    def stop():
        server.stop()
        print("counters " + json.dumps({"server": dict(server.counters),
                                        "outcomes": dict(outcomes)}, sort_keys=True),
              file=sys.stderr, flush=True)

    reactor.callWhenRunning(ready)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
