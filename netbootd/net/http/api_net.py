"""GET /api/v1/net/interfaces: every interface of the daemon's host as
netlink last reported it, with what netbootd serves there (its address, the
network, the RA quench) - the view `netbootd net show` prints.  Read-only:
bridges are made locally (`netbootd net bridge`, root), not through the API."""
from __future__ import annotations

from .errors import Unavailable


class NetApi:
    def __init__(self, interfaces):
        self.interfaces = interfaces      # () -> rows, set by net/services/netlink.py

    def list(self, request):
        rows = self.interfaces()
        if rows is None:
            raise Unavailable("interfaces are not followed yet")
        return rows
