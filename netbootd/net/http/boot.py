"""GET/HEAD /boot/{mac}.ipxe: the host's boot script (policy/boot.py)."""
from __future__ import annotations

import dataclasses
import logging

from twisted.web import resource, server

from ...model import normalize_mac
from ...policy.boot import ProfileError, boot_spec
from .app import HttpApp
from .common import client_ip, local_base

log = logging.getLogger("netbootd.http")


class BootScripts(resource.Resource):
    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def getChild(self, name: bytes, request):
        return BootScript(self.app, name)


class BootScript(resource.Resource):
    isLeaf = True

    def __init__(self, app: HttpApp, name: bytes):
        super().__init__()
        self.app = app
        self.name = name

    def render_HEAD(self, request):
        return self.render_GET(request)

    def render_GET(self, request):
        app = self.app
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        try:
            stem = self.name.decode("ascii")
            if not stem.endswith(".ipxe") or request.postpath:
                raise ValueError("not a boot script name")
            mac = normalize_mac(stem[:-5])
        except (UnicodeDecodeError, ValueError):
            app.counters["http.script_bad_name"] += 1
            request.setResponseCode(404)
            return b"#!ipxe\necho netbootd: no such boot script\n"
        refused = app.registry.admit_http(mac, client_ip(request), app.clock.seconds())
        if refused:
            # A flood of GET /boot/<random-mac>.ipxe made a host per URL.
            app.counters["http.script_new_host_refused"] += 1
            request.setResponseCode(429)
            request.setHeader(b"retry-after", b"1")
            return f"#!ipxe\necho netbootd: {refused}\n".encode()
        host = app.registry.get(mac)
        # a host not assigned boots its network's BOOT_PROFILE, else [boot] default_profile
        default = app.default_profile
        if app.networks is not None:
            default = app.networks.profile_for(client_ip(request)) or default
        spec = boot_spec(host, mac, app.http_base or local_base(request), default)
        storage = app.storage     # net/storage.py, when [storage]
        if spec.profile == "sanboot" and storage is not None:
            # this host's own CHAP secret, in this host's script only
            spec = dataclasses.replace(spec, chap=storage.chap_for(mac))
        try:
            body = app.renderer.render(spec).encode("utf-8")
        except (ProfileError, Exception) as e:     # a broken template must not kill a boot
            log.error("boot script for %s (%s) failed to render: %s", mac, spec.profile, e)
            app.counters["http.script_error"] += 1
            request.setResponseCode(500)
            return b"#!ipxe\necho netbootd: boot script error, see the server log\nshell\n"
        app.counters["http.script"] += 1
        writes = app.registry.script_served(mac, client_ip(request), spec.profile, len(body),
                                           app.clock.seconds())

        def reply():
            if not request.finished and not getattr(request, "_disconnected", False):
                request.setHeader(b"content-length", str(len(body)).encode())
                request.write(body if request.method != b"HEAD" else b"")
                request.finish()
        # The state change (assigned -> booting) is stored before the script
        # leaves, so a crash cannot lose it.
        app.commit_then(writes, reply)
        return server.NOT_DONE_YET
