"""GET /api/v1/events/stream: server-sent events (text/event-stream).

Each new event is sent as ``id: <id>`` + ``data: <event JSON>``; a client
that reconnects with Last-Event-ID (or ?after=) misses nothing still in the
store.  New rows are read off the reactor thread once a second; the number
of open streams is capped."""
from __future__ import annotations

import json
from collections import Counter
from typing import Callable

from twisted.internet import task
from twisted.web import server

from .common import client_ip
from .errors import BadRequest, TooMany, Unavailable

POLL = 1.0
KEEPALIVE = 15.0


class EventStreams:
    """Opens streams.  Each holds a connection and a poll: capped in all and
    per client address (`open_by`), so one client cannot take every slot."""

    def __init__(self, events: Callable, clock, counters: Counter, max_streams: int,
                 max_per_source: int, open_by: Counter):
        self.events = events          # StoreReads.events: (after, limit) -> Deferred
        self.clock, self.counters = clock, counters
        self.max_streams, self.max_per_source = max_streams, max_per_source
        self.open_by = open_by        # client address -> open streams

    def open(self, request):
        src = client_ip(request)
        if sum(self.open_by.values()) >= self.max_streams:
            self.counters["http.stream_refused_total"] += 1
            raise Unavailable(f"too many event streams (max {self.max_streams})")
        if self.open_by[src] >= self.max_per_source:
            self.counters["http.stream_refused_source"] += 1
            raise TooMany(f"too many event streams from {src} (max {self.max_per_source})",
                          retry_after=30)
        raw = request.getHeader(b"last-event-id") or \
            (request.args.get(b"after") or [b"0"])[0]
        try:
            last = int(raw)
        except (TypeError, ValueError):
            raise BadRequest("after / Last-Event-ID: not an integer") from None
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-store")
        request.write(b": netbootd events\n\n")
        self.open_by[src] += 1
        state = {"last": last, "busy": False, "idle": 0.0}

        def poll():
            if state["busy"]:
                return
            state["busy"] = True
            d = self.events(state["last"], 200)

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
        loop.clock = self.clock
        loop.start(POLL, now=True)

        def closed(_):
            self.open_by[src] -= 1
            if self.open_by[src] <= 0:
                del self.open_by[src]
            if loop.running:
                loop.stop()
        request.notifyFinish().addBoth(closed)
        return server.NOT_DONE_YET
