"""GET /api/v1/net/interfaces: every interface of the daemon's host as
netlink last reported it, with what netbootd serves there (its address, the
network, the RA quench) - the view `netbootd net show` prints.  Read-only:
bridges are made locally (`netbootd net bridge`, root), not through the API."""
from __future__ import annotations


class NetApi:
    def __init__(self, interfaces):
        self.interfaces = interfaces      # () -> rows, set by net/services/netlink.py

    def list(self, request):
        # None: no netlink service in this process (an HttpApp of its own, as
        # in tests and benches): no interface is followed, none is served.
        return self.interfaces() or []
