"""GET/HEAD /files/<path>: kernels, initrds, iPXE binaries for HTTP Boot.

Names are checked by policy/paths.py; the realpath of what they resolve to
must stay inside its root (symlinks leading out are refused).  Range, HEAD
and Content-Length come from twisted.web.static.File.  Each finished
transfer becomes a step in the host's boot timeline.
"""
from __future__ import annotations

import os

from twisted.web import resource, static

from ...policy.paths import PathRefused, inside, split_request
from ...registry import event
from .app import HttpApp
from .common import client_ip, error


def resolve(app: HttpApp, name: str) -> str | None:
    """The file a request names, or None.  Raises PathRefused."""
    parts = split_request(name)
    rel = "/".join(parts)
    if rel in app.generated:
        path = app.generated[rel]
        return path if os.path.isfile(path) else None
    for root in app.roots:
        root_real = os.path.realpath(root)
        real = os.path.realpath(os.path.join(root_real, *parts))
        if inside(root_real, real) and os.path.isfile(real):
            return real
    return None


class Files(resource.Resource):
    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def getChild(self, name: bytes, request):
        return FileLeaf(self.app)


class FileLeaf(resource.Resource):
    isLeaf = True

    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def render(self, request):
        app = self.app
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return error(request, 405, "files are read-only")
        try:
            name = "/".join(p.decode("utf-8") for p in request.prepath[1:] + request.postpath)
            path = resolve(app, name)
        except (UnicodeDecodeError, PathRefused) as e:
            app.counters["http.file_refused"] += 1
            return error(request, 400, f"refused: {getattr(e, 'reason', 'not UTF-8')}")
        if path is None:
            app.counters["http.file_missing"] += 1
            self._log(request, name, 0, 404)
            return error(request, 404, f"no file {name!r}")
        f = static.File(path, defaultType="application/octet-stream")
        f.isLeaf = True
        app.counters["http.file"] += 1
        request.notifyFinish().addBoth(lambda _: self._log(request, name, _sent(request),
                                                           request.code))
        return f.render(request)

    def _log(self, request, name: str, nbytes: int, status: int) -> None:
        ip = client_ip(request)
        mac = self.app.ip_to_mac(ip) if ip else None
        self.app.submit([event(self.app.clock.seconds(), mac, "http.file", path=name,
                               bytes=nbytes, status=status, ip=ip)])


def _sent(request) -> int:
    n = request.responseHeaders.getRawHeaders(b"content-length")
    return int(n[0]) if n and request.method == b"GET" else 0
