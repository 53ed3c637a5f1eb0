"""GET /api/v1/events/stream: server-sent events (text/event-stream).

Each new event is sent as ``id: <id>`` + ``data: <event JSON>``; a client
that reconnects with Last-Event-ID (or ?after=) misses nothing still in the
store.  New rows are read off the reactor thread once a second; the number
of open streams is capped."""
from __future__ import annotations

import json

from twisted.internet import task
from twisted.web import resource, server

from .app import HttpApp
from .common import client_ip, error

POLL = 1.0
KEEPALIVE = 15.0


class EventStream(resource.Resource):
    isLeaf = True

    def __init__(self, app: HttpApp):
        super().__init__()
        self.app = app

    def render_GET(self, request):
        app, src = self.app, client_ip(request)
        if sum(app.streams.values()) >= app.max_streams:
            app.counters["http.stream_refused_total"] += 1
            return error(request, 503, f"too many event streams (max {app.max_streams})")
        if app.streams[src] >= app.max_streams_per_source:
            app.counters["http.stream_refused_source"] += 1
            request.setHeader(b"retry-after", b"30")
            return error(request, 429, f"too many event streams from {src} "
                                       f"(max {app.max_streams_per_source})")
        raw = request.getHeader(b"last-event-id") or \
            (request.args.get(b"after") or [b"0"])[0]
        try:
            last = int(raw)
        except (TypeError, ValueError):
            return error(request, 400, "after / Last-Event-ID: not an integer")
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-store")
        request.write(b": netbootd events\n\n")
        app.streams[src] += 1
        state = {"last": last, "busy": False, "idle": 0.0}

        def poll():
            if state["busy"]:
                return
            state["busy"] = True
            d = self.app.read(self.app.store_events, state["last"], 200)

            def got(events):
                state["busy"] = False
                if request.finished or request._disconnected:
                    return
                for ev in events:
                    state["last"] = ev["id"]
                    request.write(f"id: {ev['id']}\ndata: {json.dumps(ev)}\n\n".encode())
                state["idle"] = 0.0 if events else state["idle"] + POLL
                if state["idle"] >= KEEPALIVE:
                    state["idle"] = 0.0
                    request.write(b": keepalive\n\n")

            def failed(f):
                state["busy"] = False
            d.addCallbacks(got, failed)

        loop = task.LoopingCall(poll)
        loop.clock = self.app.clock
        loop.start(POLL, now=True)

        def closed(_):
            app.streams[src] -= 1
            if app.streams[src] <= 0:
                del app.streams[src]
            if loop.running:
                loop.stop()
        request.notifyFinish().addBoth(closed)
        return server.NOT_DONE_YET
