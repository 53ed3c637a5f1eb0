"""GET/HEAD /files/<path>: kernels, initrds, iPXE binaries for HTTP Boot.

Names are checked by policy/paths.py; what they resolve to must stay
inside its root (net/fileroots.py: symlinks leading out are refused).  Range,
HEAD and Content-Length come from twisted.web.static.File; the body goes out
by sendfile(2) from the checked descriptor on plain TCP (sendfile.py), by
static.File's copying producers otherwise.  The ETag names the file's inode,
mtime and size (If-None-Match -> 304).  Each finished transfer becomes a step
in the host's boot timeline.
"""
from __future__ import annotations

import functools
import io
import os
from json.encoder import encode_basestring_ascii

from twisted.web import resource, static
from twisted.web.static import getTypeAndEncoding

from ...policy.paths import PathRefused, normalize
from ...writes import event_json
from ..fileroots import open_in_root, open_in_roots
from .app import HttpApp
from .common import client_ip, error
from .sendfile import SendfileFile, file_etag, not_modified

_REGISTRY = static.Registry()          # static.File makes one per instance otherwise


@functools.lru_cache(maxsize=512)
def _type_of(basename: str) -> tuple:
    return getTypeAndEncoding(basename, static.File.contentTypes,
                              static.File.contentEncodings, "application/octet-stream")


class _Opened(SendfileFile):
    """static.File (Range, HEAD, Content-Length) that stats and reads the
    descriptor opened and checked by open_in_root, not a fresh open of the
    path, so a symlink swapped in after the check changes nothing.  Its stat
    is the one taken on that descriptor when it was opened."""

    def __init__(self, path: str, fd: int, st: os.stat_result, counters=None):
        self._fd = fd
        super().__init__(path, defaultType="application/octet-stream", registry=_REGISTRY)
        self._statinfo = st
        self.type, self.encoding = _type_of(self.basename())
        self.isLeaf = True
        self.counters = counters

    def restat(self, reraise=True):
        pass                                  # the descriptor's stat, from the open

    def openForReading(self):
        return io.FileIO(self._fd, "rb")

    def render_GET(self, request):
        if not_modified(request, file_etag(self._statinfo)):
            os.close(self._fd)
            return b""
        return super().render_GET(request)

    render_HEAD = render_GET


def open_file(app: HttpApp, name: str) -> tuple[str, int, os.stat_result]:
    """(path, open fd, its stat) of the file a request names, looked up as TFTP
    does (net/tftp.py): generated names first, then each root (open_in_roots).
    Raises PathRefused (reason "not_found" when there is no such file)."""
    rel = normalize(name)
    if app.generated and rel in app.generated:   # a generated name: its file, by path
        fd, st, real = open_in_root(*os.path.split(app.generated[rel]))
    else:
        fd, st, real = open_in_roots(app.roots, rel)
    return real, fd, st


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
        ip = client_ip(request)
        app.active[key] = {"client": ip, "file": name, "request": request,
                           "size": opened[2].st_size, "started": app.clock.seconds()}

        def finished(_):
            app.active.pop(key, None)
            self._log(request, name, _sent(request), request.code, ip)
        request.notifyFinish().addBoth(finished)
        return f.render(request)

    def _log(self, request, name: str, nbytes: int, status: int, ip=False) -> None:
        if ip is False:
            ip = client_ip(request)
        mac = self.app.ip_to_mac(ip) if ip else None
        self.app.submit([event_json(self.app.clock.seconds(), mac, "http.file",
                                    file_detail(name, nbytes, status, ip))])


def file_detail(name: str, nbytes: int, status: int, ip: str | None) -> str:
    """The http.file event's detail: the JSON writes.event would make of
    path, bytes, status and ip (sorted keys, compact, ASCII), built without
    an encoder pass over a dict."""
    jip = "null" if ip is None else encode_basestring_ascii(ip)
    return (f'{{"bytes":{int(nbytes)},"ip":{jip},"path":{encode_basestring_ascii(name)},'
            f'"status":{int(status)}}}')


def _sent(request) -> int:
    n = request.responseHeaders.getRawHeaders(b"content-length")
    return int(n[0]) if n and request.method == b"GET" else 0
