"""GET/HEAD /files/<path>: kernels, initrds, iPXE binaries for HTTP Boot.

Names are checked by policy/paths.py; the realpath of what they resolve to
must stay inside its root (symlinks leading out are refused).  Range, HEAD
and Content-Length come from twisted.web.static.File; the body goes out by
sendfile(2) from the checked descriptor on plain TCP (sendfile.py), by
static.File's copying producers otherwise.  The ETag names the file's inode,
mtime and size (If-None-Match -> 304).  Each finished transfer becomes a step
in the host's boot timeline.
"""
from __future__ import annotations

import os

from twisted.web import resource

from ...policy.paths import PathRefused, resolve
from ...writes import event
from ..fileroots import open_in_root
from .app import HttpApp
from .common import client_ip, error
from .sendfile import SendfileFile, file_etag, not_modified


class _Opened(SendfileFile):
    """static.File (Range, HEAD, Content-Length) that stats and reads the
    descriptor opened and checked by open_in_root, not a fresh open of the
    path, so a symlink swapped in after the check changes nothing."""

    def __init__(self, path: str, fd: int, counters=None):
        self._fd = fd
        super().__init__(path, defaultType="application/octet-stream")
        self.isLeaf = True
        self.counters = counters

    def restat(self, reraise=True):
        self._statinfo = os.fstat(self._fd)

    def openForReading(self):
        return os.fdopen(self._fd, "rb")

    def render_GET(self, request):
        self.restat()
        if not_modified(request, file_etag(self._statinfo)):
            os.close(self._fd)
            return b""
        return super().render_GET(request)

    render_HEAD = render_GET


def open_file(app: HttpApp, name: str) -> tuple[str, int]:
    """(path, open fd) of the file a request names.  Raises PathRefused
    (reason "not_found" when there is no such file)."""
    res = resolve(name, app.roots, app.generated,
                  lambda root, rel: os.path.lexists(os.path.join(root, rel)))
    if res.root is None:                       # a generated name: its file, by path
        root, rel = os.path.split(app.generated[res.rel])
    else:
        root, rel = res.root, res.rel
    fd, _, real = open_in_root(root, rel)
    return real, fd


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
        name = ""
        try:
            name = "/".join(p.decode("utf-8") for p in request.prepath[1:] + request.postpath)
            opened = open_file(app, name)
        except UnicodeDecodeError:
            app.counters["http.file_refused"] += 1
            return error(request, 400, "refused: path is not UTF-8")
        except PathRefused as e:
            if e.reason == "not_found":
                app.counters["http.file_missing"] += 1
                self._log(request, name, 0, 404)
                return error(request, 404, f"no file {name!r}")
            app.counters["http.file_refused"] += 1
            code = 403 if e.reason in ("outside_root", "not_regular", "open_failed") else 400
            self._log(request, name, 0, code)
            return error(request, code, f"refused: {e.reason}")
        f = _Opened(*opened, counters=app.counters)
        app.counters["http.file"] += 1
        key = id(request)
        app.active[key] = {"client": client_ip(request), "file": name, "request": request,
                           "size": os.fstat(opened[1]).st_size, "started": app.clock.seconds()}

        def finished(_):
            app.active.pop(key, None)
            self._log(request, name, _sent(request), request.code)
        request.notifyFinish().addBoth(finished)
        return f.render(request)

    def _log(self, request, name: str, nbytes: int, status: int) -> None:
        ip = client_ip(request)
        mac = self.app.ip_to_mac(ip) if ip else None
        self.app.submit([event(self.app.clock.seconds(), mac, "http.file", path=name,
                               bytes=nbytes, status=status, ip=ip)])


def _sent(request) -> int:
    n = request.responseHeaders.getRawHeaders(b"content-length")
    return int(n[0]) if n and request.method == b"GET" else 0
