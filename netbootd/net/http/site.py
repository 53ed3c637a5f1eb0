"""The HTTP site: /boot, /files, /api."""
from __future__ import annotations

from twisted.web import resource, server

from .api import Api
from .app import HttpApp
from .boot import BootScripts
from .common import BoundedRequest, error
from .files import Files
from .metrics import MetricsPage
from .status import Static, StatusPage


class NotFound(resource.Resource):
    """JSON 404 (twisted's default page is HTML, and deprecated)."""
    isLeaf = True

    def render(self, request):
        return error(request, 404, "no such route")


class Root(resource.Resource):
    def getChild(self, name, request):
        return NotFound()


def build_site(app: HttpApp, metrics=None) -> server.Site:
    root = Root()
    root.putChild(b"boot", BootScripts(app))
    root.putChild(b"files", Files(app))
    root.putChild(b"api", Api(app))
    root.putChild(b"", StatusPage(app))
    root.putChild(b"static", Static())
    if metrics is not None:
        root.putChild(b"metrics", MetricsPage(metrics))
    site = server.Site(root)
    site.requestFactory = BoundedRequest
    site.displayTracebacks = False
    site.noisy = False
    return site
