"""The HTTP site: /boot, /files, /api."""
from __future__ import annotations

from twisted.web import resource, server

from .api import Api
from .app import HttpApp
from .boot import BootScripts
from .common import BoundedRequest
from .files import Files


class Root(resource.Resource):
    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"netbootd\n"


def build_site(app: HttpApp) -> server.Site:
    root = Root()
    root.putChild(b"boot", BootScripts(app))
    root.putChild(b"files", Files(app))
    root.putChild(b"api", Api(app))
    site = server.Site(root)
    site.requestFactory = BoundedRequest
    site.displayTracebacks = False
    site.noisy = False
    return site
