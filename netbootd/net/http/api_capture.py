"""Disk capture over HTTP (issue 13 item 4): the admin's POST hosts/{mac}/capture and
the agent's GET/POST /api/v1/agent/capture/{job}[/{offset}|/stream/{offset}].  The
logic is net/capture.py's; this module only speaks HTTP (the bodies: capture_body.py).

A chunk's body (up to policy/capture.CHUNK_MAX bytes, far past the API's 64 KiB)
is buffered in memory only when ``admit`` accepted it from the request's
headers, before any of it was read: the agent's secret checks, the job is that
host's running capture, the offset is the committed one and the length the
chunk's.  Any other body stays under the usual limit (413).  A stream (every chunk
still to send, framed) is admitted on the same checks with its exact framed length,
and parsed as it arrives (two chunk buffers at most); a refused one is answered at
once from its headers."""
from __future__ import annotations

import re

from ...policy import capture as cp
from . import validate as v
from .api_agent import AgentApi, agent_secret
from .capture_body import ChunkBody, RefusedBody, StreamBody
from .common import read_json
from .errors import BadRequest, Conflict, Refusal, TooLarge

_CHUNK_PATH = re.compile(rb"^/api/v1/agent/capture/([0-9a-f]{1,32})/([0-9]{1,20})(?:\?|$)")
_STREAM_PATH = re.compile(rb"^/api/v1/agent/capture/([0-9a-f]{1,32})/stream/([0-9]{1,20})"
                          rb"(?:\?|$)")


def _refusal(e) -> Refusal:
    return Refusal(getattr(e, "status", 400), getattr(e, "reason", str(e)))


class CaptureApi:
    def __init__(self, captures, agents, counters):
        self.captures, self.agents, self.counters = captures, agents, counters

    # -- body admission (from the headers, before the body is read) ---------------
    def admit(self, request, method: bytes, target: bytes, length: int):
        """A ChunkBody for an upload this host may send now, a StreamBody for a
        stream, a RefusedBody (answered at once) for a refused stream, else None."""
        if method == b"POST" and (target or b"").startswith(b"/api/v1/agent/capture/"):
            m = _STREAM_PATH.match(target)
            if m is not None:
                return self._admit_stream(request, m, length)
        m = _CHUNK_PATH.match(target or b"")
        if method != b"POST" or m is None or not 0 < length <= cp.CHUNK_MAX:
            return None
        try:
            h = self.agents.authenticate(agent_secret(request))
            cap = self.captures.by_job.get(m.group(1).decode())
            act = h.action or {}
            if cap is None or cap.mac != h.mac or act.get("job") != cap.job.id or cap.busy \
                    or cap.receiving or cap.job.state != "running":
                return None
            cp.check_offset(cap.total, cap.chunk, cap.committed, int(m.group(2)), length)
        except Exception:          # refused: the handler answers with the reason
            return None
        # one body in memory per capture at a time (MAX_RUNNING bounds the captures)
        self._receiving(request, cap, length)
        return ChunkBody(length, getattr(request.channel, "transport", None))

    @staticmethod
    def _receiving(request, cap, length: int, body=None) -> None:
        cap.receiving = True
        allow = getattr(getattr(request, "channel", None), "allow_body", None)
        if allow is not None:          # the request deadline grows with the body
            allow(length)

        def done(_):
            cap.receiving = False

        def lost(f):
            if body is not None:
                body.lost(f"the connection was lost: {f.getErrorMessage()}")
        request.notifyFinish().addErrback(lost).addBoth(done)

    def _admit_stream(self, request, m, length: int):
        """A stream's body is admitted only when it may start now (the host's secret,
        its running capture, the committed offset, exactly the framed remainder); else
        the refusal is answered at once, before any body byte is read."""
        transport = getattr(request.channel, "transport", None)
        try:
            h = self._host(request)
            cap = self.captures.check_stream(h, m.group(1).decode(), int(m.group(2)), length)
        except Exception as e:
            err = self._mapped(e)
            self.counters["api.capture_stream_refused"] += 1
            return RefusedBody(transport, err) if transport is not None else None
        cap.refused = None             # GET tells why this stream stops, if it does
        body = StreamBody(self.captures, h, cap, int(m.group(2)), length, transport)
        self._receiving(request, cap, length, body)
        return body

    _host = AgentApi._host          # the agent's secret (uses .agents, .counters)

    # -- routes -------------------------------------------------------------------
    def start(self, request, mac):
        """POST hosts/{mac}/capture {"disk", "volume", "pool"?}: the capture's job."""
        mac = v.mac(mac)
        body = read_json(request)
        unknown = sorted(set(body) - {"disk", "volume", "pool"})
        if unknown:
            raise BadRequest(f"{unknown[0]}: not a field of a capture")
        for k in ("disk", "volume"):
            if not isinstance(body.get(k), str):
                raise BadRequest(f"{k}: required (a string)")
        pool = body.get("pool")
        if pool is not None and not isinstance(pool, str):
            raise BadRequest("pool: a string or null")
        try:
            d = self.captures.start(mac, body["disk"], body["volume"], pool)
        except Exception as e:
            raise self._mapped(e) from None
        return d.addErrback(lambda f: self._raise(f.value))

    def _mapped(self, e) -> Exception:
        from ..storage import refusal
        if isinstance(e, Refusal):
            return e
        if isinstance(e, cp.CaptureError):
            return _refusal(e)
        r = refusal(e)
        return Refusal(r.status, r.reason)

    def _raise(self, e):
        raise self._mapped(e)

    def status(self, request, job):
        """GET agent/capture/{job}: the committed offset (where to resume)."""
        h = self._host(request)
        try:
            out = self.captures.status(h, job)
        except Exception as e:
            raise self._mapped(e) from None
        if isinstance(out, dict):
            return out
        return out.addErrback(lambda f: self._raise(f.value))

    def chunk(self, request, job, offset):
        """POST agent/capture/{job}/{offset}?sha256=HEX: one chunk (or its sha256 in
        an X-Sha256 header)."""
        h = self._host(request)
        body = getattr(request, "big_body", None)
        try:
            off = int(offset)
        except ValueError:
            raise BadRequest("offset: a whole number of bytes") from None
        sha = v.str_arg(request, "sha256") or \
            (request.getHeader(b"x-sha256") or b"").decode("ascii", "replace")
        if body is None:
            # not admitted from its headers: answer why (the same checks), or 413
            n = request.content.tell() if request.content is not None else 0
            if getattr(request, "body_too_large", False):
                try:
                    self.captures.check(h, job, off)
                except Exception as e:
                    raise self._mapped(e) from None
                cap = self.captures.by_job.get(job)
                if cap is not None and (cap.busy or cap.receiving):
                    # a retry while the previous chunk is still in: the agent asks
                    # for the committed offset again (a 413 would end the capture)
                    raise Conflict("the previous chunk of this capture is still being "
                                   "received or written: ask for the offset and retry")
                raise TooLarge(f"body larger than the chunk ({cp.CHUNK_MAX} bytes at most)")
            data = request.content.read() if n else b""
        else:
            data = body.buf
            if body.pos != len(data):
                raise BadRequest("body: shorter or longer than its Content-Length")
        self.counters["api.capture_chunk"] += 1
        try:
            d = self.captures.chunk(h, job, off, data, sha)
        except Exception as e:
            raise self._mapped(e) from None
        return d.addErrback(lambda f: self._raise(f.value))

    def stream(self, request, job, offset):
        """POST agent/capture/{job}/stream/{offset}: every chunk from the committed
        offset to the end over this one request, each after its sha256 line
        (capture_body.StreamBody); answers {"committed", "bytes"} once all are."""
        h = self._host(request)
        body = getattr(request, "big_body", None)
        if isinstance(body, RefusedBody):     # answered from the headers already
            raise body.error
        if isinstance(body, StreamBody):
            self.counters["api.capture_stream"] += 1
            return body.outcome()
        try:
            off = int(offset)
        except ValueError:
            raise BadRequest("offset: a whole number of bytes") from None
        length = request.getHeader(b"content-length")
        try:
            self.captures.check_stream(h, job, off, int(length) if length else 0)
        except Exception as e:
            raise self._mapped(e) from None
        raise Conflict("the stream was not admitted: ask for the committed offset and retry")
