"""GET /metrics: the Prometheus text format (a read: no token, CONTRACT-api.md)."""
from __future__ import annotations

import logging

from twisted.web import resource

from .common import error

log = logging.getLogger("netbootd.http")


class MetricsPage(resource.Resource):
    isLeaf = True

    def __init__(self, metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        try:
            body, content_type = self.metrics.render()
        except Exception:
            log.exception("metrics: cannot render")
            return error(request, 500, "internal error")
        request.setHeader(b"content-type", content_type.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return body

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return error(request, 405, "metrics are read-only")
        return super().render(request)
