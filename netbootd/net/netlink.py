"""Follow the kernel's interfaces: a netlink socket subscribed to link and
address changes (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR) is a
reader on the reactor; a burst of notifications is settled for `settle`
seconds, then one pyroute2 dump (interfaces.links) is handed to `on_change`.

Why a dump and not the messages themselves: a dump is the truth even after
the socket overflowed (ENOBUFS loses notifications) and for changes the
messages describe only in part (an address removed with its interface).  Why
a plain socket and not pyroute2's own: pyroute2 0.9 reads its socket into an
internal queue, so the fd is no longer readable while messages wait there
(measured: a second message stayed queued until the next kernel event); the
reactor must see every notification.  No thread, no polling: nothing runs
until the kernel says something changed.
"""
from __future__ import annotations

import errno
import logging
import socket
import struct
from collections import Counter
from typing import Callable

from . import interfaces
from .udp import SockReader

log = logging.getLogger("netbootd")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
RTM_NAMES = {16: "newlink", 17: "dellink", 20: "newaddr", 21: "deladdr"}


class NetlinkWatcher(SockReader):
    """IReadDescriptor on a NETLINK_ROUTE socket; `on_change(links)` runs on
    the reactor after each settled burst of changes."""

    def __init__(self, reactor, on_change: Callable[[dict], None], settle: float = 0.1,
                 snapshot: Callable[[], dict] | None = None):
        self.reactor = reactor
        self.on_change = on_change
        self.settle = settle
        self.counters: Counter = Counter()
        self._ipr = None
        self.snapshot = snapshot or self._dump
        self._pending = None
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, GROUPS))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        reactor.addReader(self)

    def _dump(self) -> dict:
        if self._ipr is None:
            from pyroute2 import IPRoute
            self._ipr = IPRoute()
        return interfaces.links(self._ipr)

    # IReadDescriptor: doRead (the rest: udp.SockReader) -------------------
    def doRead(self) -> None:
        changed = False
        for _ in range(256):
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:        # notifications lost: the dump resyncs
                    self.counters["overrun"] += 1
                    changed = True
                    continue
                self.counters["read_error"] += 1
                log.warning("netlink: read error: %s", e)
                break
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                self.counters[RTM_NAMES.get(kind, "other")] += 1
                changed = True
                if length < 16:
                    break
                off += (length + 3) & ~3
        if changed and self._pending is None:
            self._pending = self.reactor.callLater(self.settle, self._settled)

    def _settled(self) -> None:
        self._pending = None
        try:
            have = self.snapshot()
        except Exception:
            self.counters["dump_error"] += 1
            log.exception("netlink: cannot read the interfaces; retrying in 1 s")
            self._pending = self.reactor.callLater(1.0, self._settled)
            return
        self.counters["dumps"] += 1
        try:
            self.on_change(have)
        except Exception:
            log.exception("netlink: applying an interface change failed")

    def close(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self.sock.fileno() >= 0:
            self.reactor.removeReader(self)
            self.sock.close()
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
