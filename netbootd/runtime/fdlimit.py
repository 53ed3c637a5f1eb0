"""File descriptors: raise the soft limit at start, and size the HTTP
connection cap from it so the other services never run out.

systemd starts services with RLIMIT_NOFILE 1024 (soft) / 524288 (hard); the
soft limit exists for select()-based programs, which this is not (the reactor
is epoll).  Under the 1,024 soft limit ~1,000 slow HTTP clients used to take
every descriptor: TFTP transfer sockets, DNS TCP, SQLite and accept() itself
failed with EMFILE.  So the daemon raises soft to hard once at start, and HTTP
connections are capped well below whatever limit it got, leaving a reserve.
"""
from __future__ import annotations

import logging
import resource

log = logging.getLogger("netbootd.fdlimit")

# Descriptors one HTTP connection may hold: its socket, and the file a
# /files download reads from.
FDS_PER_HTTP_CONNECTION = 2
# Kept for everything else: DHCP/DNS/TFTP listeners, TFTP transfer sockets
# (256 by default) and the files they read, DNS TCP connections, SQLite
# (database, WAL, shm, journal), hooks, logs, epoll, pipes.  A quarter of the
# limit, and never less than this.
MIN_RESERVE = 512
# A cap above this buys nothing on one appliance and costs memory per channel.
DEFAULT_HTTP_MAX = 4096


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard or \
            hard == resource.RLIM_INFINITY and soft != hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:     # e.g. a container capping it lower
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, e)
    return soft, hard


def soft_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def http_connection_cap(soft: int, configured: int = 0) -> int:
    """The most HTTP connections at once: the configured value if set (never
    above what the descriptors allow), else what the limit leaves after the
    reserve, at two descriptors per connection, at most DEFAULT_HTTP_MAX."""
    reserve = max(MIN_RESERVE, soft // 4)
    room = max(16, (soft - reserve) // FDS_PER_HTTP_CONNECTION)
    return min(configured, room) if configured else min(DEFAULT_HTTP_MAX, room)
