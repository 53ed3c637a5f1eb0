"""GET /api/v1/accounts/{name}/media?flavour=full|net[&server_url=URL][&ip=CIDR&gateway=IP
&dns=IP][&pin=sha256//B64] (admin): an
account's boot image (iso_builder/media.py), streamed with Content-Length,
Range/HEAD (twisted's static.File) and an ETag from the content's SHA-256.

The image carries an enrollment token's text; the daemon keeps only hashes, so
this route uses the account's "media api" token: the newest live one whose text
the current signing key re-derives (a token is a signature over its id, account
and expiry), else a new one (event token.created).  The same inputs give the same
bytes (the build is reproducible), so a download can be resumed with Range and
cached by its ETag.  Revoke that token (`netbootd media list`, `tokens revoke`) to
retire every image served so far; the next GET makes a new one.

An https `full` medium without pin= carries the pin of the daemon's own certificate
([http] tls_cert), as `netbootd media build` does (auth/tls.medium_pin: one rule for
both); without either, 400 saying how to get one.

The build runs off the reactor thread, one at a time (the medium-independent parts
come from the build cache: a fraction of a second), into <state_dir>/media/."""
from __future__ import annotations

import hashlib
import json
import os

from twisted.internet import defer, threads
from twisted.web import server

from ...auth import tls
from ...auth.enroll import token_hash
from .common import error, local_base
from .errors import ApiError, BadRequest, NotFound, Unavailable
from .routes import Streaming
from .sendfile import SendfileFile
from . import validate as v

MEDIA_LABEL = "media api"


class MediaApi:
    def __init__(self, accounts, ring, state_dir, clock, committed, http_base=None,
                 tls_cert=None):
        self.accounts, self.ring, self.state_dir = accounts, ring, state_dir
        self.clock, self.committed, self.http_base = clock, committed, http_base
        self.tls_cert = tls_cert     # [http] tls_cert: the pin of an https medium
        self.lock = defer.DeferredLock()

    def _token(self, a):
        """(text, writes): the account's reusable media token, or a new one."""
        live = sorted((t for t in self.accounts.tokens.values()
                       if t.account == a.id and t.label == MEDIA_LABEL and t.revoked is None
                       and t.expires is None and t.max_uses is None),
                      key=lambda t: (t.created, t.id), reverse=True)
        for t in live:
            text = self.ring.sign(a.id, t.id, None)
            if token_hash(text) == t.hash:
                return text, []
        text, _, writes = self.accounts.create_token(self.ring, a.name, self.clock.seconds(),
                                                     label=MEDIA_LABEL)
        return text, writes

    def get(self, request, name):
        from iso_builder import media, mediabuild
        flavour = v.str_arg(request, "flavour")
        flavour = "full" if flavour is None else flavour
        if flavour not in media.FLAVOURS:
            raise BadRequest(f"flavour: one of {', '.join(media.FLAVOURS)}")
        a = self.accounts.get(name)
        if a is None:
            raise NotFound(f"no account {name!r}")
        server_url = v.str_arg(request, "server_url")
        if server_url is None:
            server_url = local_base(request, self.http_base)
        settings = {"server_url": server_url, "account": a.name}
        for field in ("ip", "gateway", "dns", "pin"):
            settings[field] = v.str_arg(request, field)
        settings["pin"], why = tls.medium_pin(flavour, server_url, settings["pin"],
                                              self.tls_cert)
        if why:
            raise BadRequest(why)
        try:
            mediabuild.preflight(flavour, token="nbt1.x", **settings)
        except media.MediaError as e:
            raise BadRequest(str(e)) from None
        if self.state_dir is None:
            raise Unavailable("no state dir to keep the images in (not a daemon)")
        text, writes = self._token(a)
        # One file per account, flavour and settings: a build for other settings
        # never replaces the file another request is sending (same settings and
        # the account's reused token give the same bytes: builds are reproducible).
        tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        out = os.path.join(self.state_dir, "media", f"{a.id}-{flavour}-{tag}.img")

        def build(_):
            os.makedirs(os.path.dirname(out), mode=0o700, exist_ok=True)
            return mediabuild.build_image(out, flavour=flavour, token=text, **settings)
        d = self.committed(writes, None)
        d.addCallback(lambda _: self.lock.run(threads.deferToThread, build, None))
        d.addCallbacks(self._send, self._failed, callbackArgs=(request, a.name, flavour),
                       errbackArgs=(request,))
        return Streaming

    def _send(self, info, request, account, flavour):
        if request.finished or request._disconnected:
            return
        etag = f'"{info["sha256"]}"'.encode()
        request.setHeader(b"etag", etag)
        request.setHeader(b"content-disposition",
                          f'attachment; filename="{account}-{flavour}.img"'.encode())
        if etag in (request.getHeader(b"if-none-match") or b"").replace(b" ", b"").split(b","):
            request.setResponseCode(304)
            request.finish()
            return
        f = SendfileFile(info["path"], defaultType="application/octet-stream")
        f.isLeaf = True
        body = f.render(request)
        if body is not server.NOT_DONE_YET:
            request.write(body)
            request.finish()

    def _failed(self, failure, request):
        if request.finished or request._disconnected:
            return
        from iso_builder.media import MediaError
        if failure.check(ApiError):
            body = error(request, failure.value.status, failure.value.reason)
        elif failure.check(MediaError):
            body = error(request, 503, f"cannot build the image: {failure.value}")
        else:
            body = error(request, 500, "internal error")
        request.write(body)
        request.finish()
