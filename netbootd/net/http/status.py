"""GET / (the status page) and GET /static/<file> (its script and style).

The page is rendered on the server from the same shapes /api/v1/status and
/api/v1/hosts return (docs/CONTRACT-api.md), so its first paint is complete
without JavaScript; static/status.js then polls the API and keeps it live.

Host-controlled strings are data (DESIGN rule 9): Jinja2 autoescape on the
server, textContent in the browser, and a Content-Security-Policy that allows
no inline script or style at all, so an escaping slip still runs nothing.
Static files go through the same name policy and confined open as /files
(policy/paths.py, net/fileroots.py).
"""
from __future__ import annotations

import logging
import os

from twisted.internet import defer
from twisted.web import resource, server

from ...policy.paths import PathRefused, normalize
from ...registry.hosts import page
from ...web import STATIC_DIR, environment
from ..fileroots import open_in_roots
from .common import error
from .views import hosts_json, status_json

log = logging.getLogger("netbootd.http")

# No inline script, no inline style, no third party, no framing, no form
# posts (the token field is read by the script; it never leaves as a form).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")

STATIC_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".txt": b"text/plain; charset=utf-8",
}
MAX_STATIC = 1024 * 1024
PAGE = 50                     # hosts per page (static/status.js PAGE is the same)


def secure_headers(request) -> None:
    request.setHeader(b"content-security-policy", CSP.encode())
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"x-frame-options", b"DENY")


class StatusPage(resource.Resource):
    """GET / (?account=NAME): hosts with their accounts and hardware, boot
    timelines, transfers, pools, recent events."""
    isLeaf = True

    def __init__(self, registry, info, reads, leases):
        super().__init__()
        self.registry, self.info, self.reads, self.leases = registry, info, reads, leases
        self.template = environment().get_template("status.html")

    def _reads(self, macs: list[str]) -> defer.Deferred:
        """(newest 50 events, last event of each host on the first page), read
        off the reactor thread (DESIGN rule 8); empty when the store fails,
        and the script fills them in on its first poll."""
        d = defer.gatherResults([self.reads.events(0, 50, None, None, True),
                                 self.reads.last_events(macs)], consumeErrors=True)
        d.addCallback(tuple)

        def failed(f):
            log.error("status page: cannot read events: %s", f.getErrorMessage())
            return [], {}
        return d.addErrback(failed)

    def _accounts(self):
        # HttpApp always has one (its own when the wiring gives none); a bare
        # StatusInfo in a test may not.
        return getattr(self.info, "accounts", None)

    def _first_page(self, account: str | None = None) -> tuple[list, str | None, int]:
        """Only the first page is rendered (and the script fetches one page at
        a time): after a MAC flood, every host made a 9.4 MB page.  `account`
        (?account=NAME, "-": in none) filters it as /api/v1/hosts?account= does;
        an unknown name matches no host."""
        match = None
        if account:
            accounts = self._accounts()
            a = accounts.get(account) if accounts is not None and account != "-" else None
            want = "" if account == "-" else a.id if a is not None else None
            match = lambda h: want is not None and (h.account or "") == want  # noqa: E731
        return page(self.registry.hosts.values(), PAGE, None, match)

    def _storage(self) -> defer.Deferred:
        """Pools, volumes and exports (net/storage.py), read off the
        reactor thread; None when storage is off, starting or unreadable."""
        st = self.info.storage
        if st is None or not st.ready:
            return defer.succeed(None)

        def shown(listing):
            return dict(listing, exports=[st.export_view(r) for r in st.exports.values()],
                        problem=st.export_problem)

        def failed(f):
            log.error("status page: cannot list volumes: %s", f.getErrorMessage())
            return None
        return st.listing().addCallbacks(shown, failed)

    def context(self, events: list, last: dict, first=None, account: str | None = None,
                storage: dict | None = None) -> dict:
        hosts, nxt, total = first if first is not None else self._first_page(account)
        accounts = self._accounts()
        names = accounts.name_of if accounts is not None else (lambda x: x)
        return {"status": status_json(self.info, self.registry.hosts.values(), events),
                "hosts": hosts_json(hosts, last, self.leases([h.mac for h in hosts]), names),
                "total": total, "next": nxt, "seen": len(self.registry.seen),
                "page_size": PAGE, "account": account or "", "storage": storage,
                # [storage] configured: the script polls /api/v1/volumes (else a 503)
                "storage_on": self.info.storage is not None,
                "accounts": sorted(a.name for a in accounts.by_id.values())
                if accounts is not None else []}

    def render_GET(self, request):
        if request.postpath not in ([], [b""]):
            return error(request, 404, "no such page")
        secure_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")

        account = _arg(request, b"account")
        first = self._first_page(account)

        def done(reads):
            if request.finished or request._disconnected:
                return
            try:
                body = self.template.render(**self.context(*reads[0], first, account,
                                                           reads[1])).encode("utf-8")
            except Exception:
                log.exception("status page: render failed")
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                body = b"status page failed; see the daemon log\n"
            request.write(body)
            request.finish()
        defer.gatherResults([self._reads([h.mac for h in first[0]]), self._storage()]
                            ).addCallback(done)
        return server.NOT_DONE_YET


def _arg(request, name: bytes, limit: int = 128) -> str | None:
    """A query parameter as text (None when absent, not UTF-8 or too long)."""
    vals = (request.args or {}).get(name)
    if not vals or len(vals[0]) > limit:
        return None
    try:
        return vals[0].decode("utf-8")
    except UnicodeDecodeError:
        return None


class Static(resource.Resource):
    """GET /static/<name>: the page's own files, by the shared path policy."""

    def __init__(self, root: str = STATIC_DIR):
        super().__init__()
        self.root = root

    def getChild(self, name: bytes, request):
        return _StaticLeaf(self.root)

    def render_GET(self, request):
        return error(request, 404, "no file named")


class _StaticLeaf(resource.Resource):
    isLeaf = True

    def __init__(self, root: str):
        super().__init__()
        self.root = root

    def render(self, request):
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return error(request, 405, "static files are read-only")
        try:
            # prepath is [b"static", first] once the site has routed here.
            name = "/".join(p.decode("utf-8") for p in request.prepath[1:] + request.postpath)
            ctype = STATIC_TYPES.get(os.path.splitext(name)[1].lower())
            if ctype is None:
                return error(request, 404, "no such static file")
            fd, st, _ = open_in_roots([self.root], normalize(name))
        except UnicodeDecodeError:
            return error(request, 400, "refused: path is not UTF-8")
        except PathRefused as e:
            if e.reason == "not_found":
                return error(request, 404, "no such static file")
            return error(request, 403 if e.reason in ("outside_root", "not_regular",
                                                      "open_failed") else 400,
                         f"refused: {e.reason}")
        try:
            if st.st_size > MAX_STATIC:
                return error(request, 403, "refused: too large")
            chunks, left = [], st.st_size
            while left > 0:
                c = os.read(fd, left)
                if not c:
                    break
                chunks.append(c)
                left -= len(c)
        finally:
            os.close(fd)
        body = b"".join(chunks)
        secure_headers(request)
        request.setHeader(b"content-type", ctype)
        # Revalidate each time: a daemon upgrade must not leave an old script
        # running against a newer API.
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"content-length", str(len(body)).encode())
        return b"" if request.method == b"HEAD" else body
