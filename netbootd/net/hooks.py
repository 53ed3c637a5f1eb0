"""Event hooks: committed events of chosen kinds go out as webhooks and mail.

openQRM's event mailer, made safe for a DHCP server:

* ``observe(writes)`` (registered with ``Core.observe``) only filters and
  queues; every network step runs later on the reactor, never blocking it,
  and nothing a hook does (a dead receiver, a slow relay, an exception) can
  reach the DHCP path.
* Webhooks: each URL has its own bounded queue (the oldest event is dropped
  when full) and sends one JSON POST at a time holding up to ``BATCH`` events;
  a failure (connection, timeout, non-2xx) is retried after
  ``webhook_backoff * 2**attempt`` seconds, ``webhook_retries`` times, then
  the batch is dropped and counted.  A URL that never answers stalls only its
  own queue, until ``webhook_timeout`` aborts the connection.
* Mail: plain SMTP to one relay (STARTTLS only when ``smtp_starttls``, then
  required); events are gathered into at most one mail per ``mail_interval``.
* Host-controlled strings (hostnames, vendor classes, file names) are data:
  in JSON through ``json.dumps``; in the mail body as plain text with control
  and format characters removed, and never in a header.

An ``http.file`` event is reported only when its status is >= 400 (a failed
download); every other kind in ``HooksConfig.kinds`` is reported as is.
"""
from __future__ import annotations

import json
import logging
import socket
import time
import unicodedata
from collections import Counter, deque
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from io import BytesIO

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from ..config import HooksConfig
from ..writes import ADMIN_WRITES, EventWrite, HostDelete, HostWrite, LeaseWrite, TrimEvents

log = logging.getLogger("netbootd.hooks")

BATCH = 100               # events per webhook POST
MAIL_MAX_EVENTS = 500     # events listed in one mail; the rest are counted
MAIL_ATTEMPTS = 3         # a mail that fails this often is dropped
MAIL_GATHER = 5.0         # seconds to gather a burst before the first mail
MAX_BACKOFF = 300.0
RESPONSE_LIMIT = 64 * 1024   # bytes of a webhook response read before hanging up
VALUE_LIMIT = 200         # characters of one value in a mail line



def _why(failure, timeout: float):
    """What to log for a failed send: a timeout said as such."""
    why = getattr(failure, "value", failure)
    if isinstance(why, (defer.CancelledError, defer.TimeoutError)):
        return f"no answer within {timeout}s"
    return why

class Hooks(service.Service):
    name = "hooks"

    def __init__(self, reactor, cfg: HooksConfig):
        self.reactor = reactor
        self.cfg = cfg
        self.kinds = frozenset(cfg.kinds)
        self.counters: Counter = Counter()
        self.stopped = False
        self._agent = None
        if cfg.webhooks:
            self._agent = Agent(reactor, connectTimeout=cfg.webhook_timeout,
                                pool=HTTPConnectionPool(reactor, persistent=False))
        self._webhooks = [_Webhook(self, url) for url in cfg.webhooks]
        self._mailer = _Mailer(self) if cfg.smtp_host and cfg.mail_to else None
        if self._mailer is not None:
            # Import now, at start-up: twisted.mail.smtp asks for the FQDN (a
            # possibly slow DNS lookup) at import time; not on a running reactor.
            import twisted.mail.smtp  # noqa: F401

    @property
    def enabled(self) -> bool:
        return bool(self._webhooks or self._mailer)

    # -- Core.observe --------------------------------------------------------------
    # Only events are reported (tests/unit/test_writes.py checks the rest is listed).
    IGNORED_WRITES = (HostWrite, HostDelete, LeaseWrite, TrimEvents) + ADMIN_WRITES

    def observe(self, writes: list) -> None:
        """Pick the reportable events of a committed batch and queue them.
        Returns at once; sending happens on later reactor turns."""
        if self.stopped or not self.enabled:
            return
        try:
            picked = self._pick(writes)
            if picked:
                for wh in self._webhooks:
                    wh.enqueue(picked)
                if self._mailer is not None:
                    self._mailer.enqueue(picked)
        except Exception:
            self.counters["observe.error"] += 1
            log.exception("hooks: cannot queue events")

    def _pick(self, writes: list) -> list[dict]:
        picked = []
        kinds = self.kinds
        for w in writes:
            if type(w) is not EventWrite or w.kind not in kinds:
                continue
            ts, mac, ekind, detail_json = w.ts, w.mac, w.kind, w.detail
            try:
                detail = json.loads(detail_json) if detail_json else {}
            except ValueError:
                detail = {"raw": str(detail_json)}
            if not isinstance(detail, dict):
                detail = {"value": detail}
            if ekind == "http.file" and not _failed_status(detail.get("status")):
                continue
            picked.append({"ts": ts, "mac": mac, "kind": ekind, "detail": detail})
        return picked

    # -- lifecycle -----------------------------------------------------------------
    def stopService(self):
        super().stopService()
        self.stop()

    def stop(self) -> None:
        """Cancel timers and requests in flight; queued events are dropped."""
        self.stopped = True
        for wh in self._webhooks:
            wh.stop()
        if self._mailer is not None:
            self._mailer.stop()

    # -- transports ----------------------------------------------------------------
    def post(self, url: str, body: bytes) -> defer.Deferred:
        """POST body; fires with the status code once the response is read
        (at most RESPONSE_LIMIT bytes), or fails; the whole exchange is cut
        after webhook_timeout."""
        headers = Headers({b"content-type": [b"application/json"],
                           b"user-agent": [b"netbootd-hooks"]})
        d = self._agent.request(b"POST", url.encode("ascii"), headers, _Body(body))
        d.addCallback(_discard_body)
        d.addTimeout(self.cfg.webhook_timeout, self.reactor)
        return d

    def sendmail(self, message: bytes) -> defer.Deferred:
        """Hand one message to the relay; fires when it accepted it."""
        # Not at module level: twisted.mail.smtp imports the global reactor
        # (DESIGN rule 5); only configured mail loads it (see __init__).
        from twisted.mail.smtp import ESMTPSenderFactory
        cfg = self.cfg
        connector = None

        def cancel(d):
            factory.sendFinished = True
            if factory.currentProtocol is not None and factory.currentProtocol.transport:
                factory.currentProtocol.transport.abortConnection()
            elif connector is not None:
                connector.disconnect()

        d = defer.Deferred(cancel)
        factory = ESMTPSenderFactory(
            None, None, cfg.mail_from, list(cfg.mail_to), BytesIO(message), d, retries=0,
            timeout=cfg.smtp_timeout, contextFactory=None,
            heloFallback=not cfg.smtp_starttls, requireAuthentication=False,
            requireTransportSecurity=cfg.smtp_starttls,
            # A TLS context (for STARTTLS) is only built when a hostname is given.
            hostname=cfg.smtp_host if cfg.smtp_starttls else None)
        factory.currentProtocol = None
        factory.domain = self._helo_name().encode("ascii", "replace")
        factory.noisy = False
        connector = self.reactor.connectTCP(cfg.smtp_host, cfg.smtp_port, factory,
                                            timeout=cfg.smtp_timeout)
        d.addTimeout(cfg.smtp_timeout, self.reactor)
        return d

    @staticmethod
    def _helo_name() -> str:
        return socket.gethostname() or "netbootd"


def _cancel_pending(sender) -> None:
    """A sender's scheduled timer and in-flight request, both cancelled
    (webhook and mailer stop the same way)."""
    if sender.timer is not None and sender.timer.active():
        sender.timer.cancel()
    sender.timer = None
    if sender.inflight is not None:
        d, sender.inflight = sender.inflight, None
        d.cancel()


class _Webhook:
    """One URL: a bounded queue and at most one POST in flight."""

    def __init__(self, hooks: Hooks, url: str):
        self.hooks = hooks
        self.url = url
        self.queue: deque = deque()
        self.busy = False
        self.timer = None        # a scheduled start or retry
        self.inflight = None

    def enqueue(self, events: list[dict]) -> None:
        limit = self.hooks.cfg.queue_size
        for ev in events:
            if len(self.queue) >= limit:
                self.queue.popleft()
                self.hooks.counters["webhook.dropped_queue_full"] += 1
            self.queue.append(ev)
        if not self.busy:
            self.busy = True
            self.timer = self.hooks.reactor.callLater(0, self._start)

    def _start(self) -> None:
        self.timer = None
        if not self.queue or self.hooks.stopped:
            self.busy = False
            return
        n = min(BATCH, len(self.queue))
        batch = [self.queue.popleft() for _ in range(n)]
        body = json.dumps({"source": "netbootd", "events": batch}, sort_keys=True,
                          default=str).encode()
        self._attempt(body, n, 0)

    def _attempt(self, body: bytes, n: int, attempt: int) -> None:
        self.timer = None
        h = self.hooks
        try:
            d = h.post(self.url, body)
        except Exception as e:            # e.g. a URL Agent cannot handle
            self._failed(e, body, n, attempt)
            return
        self.inflight = d

        def check(code):
            if not 200 <= code < 300:
                raise _Status(code)
            return code
        d.addCallback(check)
        d.addCallbacks(self._sent, self._failed, callbackArgs=(n,),
                       errbackArgs=(body, n, attempt))
        d.addErrback(lambda f: log.error("hooks: webhook bookkeeping failed: %s", f.value))

    def _sent(self, code, n: int) -> None:
        self.inflight = None
        self.hooks.counters["webhook.sent"] += 1
        self.hooks.counters["webhook.events"] += n
        self._start()

    def _failed(self, failure, body: bytes, n: int, attempt: int) -> None:
        self.inflight = None
        h = self.hooks
        if h.stopped:
            return
        why = _why(failure, h.cfg.webhook_timeout)
        if attempt < h.cfg.webhook_retries:
            delay = min(h.cfg.webhook_backoff * (2 ** attempt), MAX_BACKOFF)
            h.counters["webhook.retry"] += 1
            log.info("hooks: webhook %s failed (%s); retry %d in %.1fs", self.url, why,
                     attempt + 1, delay)
            self.timer = h.reactor.callLater(delay, self._attempt, body, n, attempt + 1)
            return
        h.counters["webhook.failed"] += 1
        h.counters["webhook.events_dropped"] += n
        log.warning("hooks: webhook %s failed (%s); %d events dropped after %d attempts",
                    self.url, why, n, attempt + 1)
        self._start()

    def stop(self) -> None:
        self.queue.clear()
        _cancel_pending(self)
        self.busy = False


class _Mailer:
    """Gathers events into one mail per mail_interval."""

    def __init__(self, hooks: Hooks):
        self.hooks = hooks
        self.pending: list[dict] = []
        self.omitted = 0
        self.attempts = 0
        self.last_sent = float("-inf")
        self.timer = None
        self.inflight = None

    def enqueue(self, events: list[dict]) -> None:
        room = max(0, MAIL_MAX_EVENTS - len(self.pending))
        self.pending.extend(events[:room])
        if len(events) > room:
            self.omitted += len(events) - room
            self.hooks.counters["mail.events_omitted"] += len(events) - room
        self._schedule()

    def _schedule(self) -> None:
        h = self.hooks
        if h.stopped or self.timer is not None or self.inflight is not None or not self.pending:
            return
        interval = h.cfg.mail_interval
        delay = max(self.last_sent + interval - h.reactor.seconds(), min(MAIL_GATHER, interval))
        self.timer = h.reactor.callLater(delay, self._send)

    def _send(self) -> None:
        self.timer = None
        h = self.hooks
        if h.stopped or not self.pending:
            return
        events, omitted = self.pending, self.omitted
        self.pending, self.omitted = [], 0
        self.last_sent = h.reactor.seconds()
        try:
            message = build_mail(h.cfg, events, omitted)
            d = h.sendmail(message)
        except Exception as e:
            self._failed(e, events, omitted)
            return
        self.inflight = d
        d.addCallbacks(self._sent, self._failed, callbackArgs=(len(events),),
                       errbackArgs=(events, omitted))
        d.addErrback(lambda f: log.error("hooks: mail bookkeeping failed: %s", f.value))

    def _sent(self, result, n: int) -> None:
        self.inflight = None
        self.attempts = 0
        self.hooks.counters["mail.sent"] += 1
        self.hooks.counters["mail.events"] += n
        self._schedule()

    def _failed(self, failure, events: list[dict], omitted: int) -> None:
        self.inflight = None
        h = self.hooks
        if h.stopped:
            return
        why = _why(failure, h.cfg.smtp_timeout)
        self.attempts += 1
        h.counters["mail.failed"] += 1
        if self.attempts < MAIL_ATTEMPTS:
            log.info("hooks: mail to %s:%d failed (%s); retrying with the next mail",
                     h.cfg.smtp_host, h.cfg.smtp_port, why)
            combined = events + self.pending
            self.pending = combined[:MAIL_MAX_EVENTS]
            self.omitted += omitted + max(0, len(combined) - MAIL_MAX_EVENTS)
        else:
            log.warning("hooks: mail to %s:%d failed (%s); %d events dropped after %d attempts",
                        h.cfg.smtp_host, h.cfg.smtp_port, why, len(events), self.attempts)
            h.counters["mail.events_dropped"] += len(events)
            self.attempts = 0
        self._schedule()

    def stop(self) -> None:
        self.pending, self.omitted = [], 0
        _cancel_pending(self)


# -- mail text -------------------------------------------------------------------------
_DROP_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"))


def clean(value, limit: int = VALUE_LIMIT) -> str:
    """A value as one line of plain text: control, format (bidi overrides,
    zero-width), separator and unassigned characters removed, length bounded."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    out = "".join(c for c in text if unicodedata.category(c) not in _DROP_CATEGORIES)
    return out if len(out) <= limit else out[:limit] + "..."


def _line(ev: dict) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ev["ts"]))
    parts = [f"{when}Z", clean(ev["kind"]), clean(ev["mac"] or "-")]
    for k, v in sorted(ev["detail"].items()):
        if v is not None:
            parts.append(f"{clean(k, 40)}={clean(v)}")
    return "  ".join(parts)


def build_mail(cfg: HooksConfig, events: list[dict], omitted: int = 0) -> bytes:
    kinds = Counter(ev["kind"] for ev in events)
    summary = ", ".join(f"{clean(k, 40)} x{n}" for k, n in sorted(kinds.items()))
    total = len(events) + omitted
    msg = EmailMessage()
    # Only server-chosen text in headers: no host string can add a header.
    msg["Subject"] = f"netbootd: {total} event{'s' if total != 1 else ''} ({summary})"[:200]
    msg["From"] = cfg.mail_from
    msg["To"] = ", ".join(cfg.mail_to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid("netbootd", domain=Hooks._helo_name())
    lines = [f"netbootd on {clean(Hooks._helo_name())} reports {total} event(s):", ""]
    lines += [_line(ev) for ev in events]
    if omitted:
        lines += ["", f"... and {omitted} more events (see the event log)."]
    msg.set_content("\n".join(lines) + "\n", charset="utf-8")
    return msg.as_bytes()


# -- HTTP plumbing ---------------------------------------------------------------------
class _Status(Exception):
    def __init__(self, code: int):
        super().__init__(f"HTTP status {code}")
        self.code = code


def _failed_status(status) -> bool:
    try:
        return int(status) >= 400
    except (TypeError, ValueError):
        return False


@implementer(IBodyProducer)
class _Body:
    """A request body already in memory (FileBodyProducer would need the
    global cooperator, i.e. the global reactor)."""

    def __init__(self, data: bytes):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _Discard(protocol.Protocol):
    def __init__(self, done: defer.Deferred, code: int):
        self.done = done
        self.code = code
        self.seen = 0

    def dataReceived(self, data: bytes) -> None:
        self.seen += len(data)
        if self.seen > RESPONSE_LIMIT and self.transport is not None:
            self.transport.stopProducing()      # enough: we only need the status

    def connectionLost(self, reason) -> None:
        if not self.done.called:
            self.done.callback(self.code)


def _discard_body(response) -> defer.Deferred:
    proto = None

    def cancel(d):
        if proto is not None and proto.transport is not None:
            proto.transport.stopProducing()

    d = defer.Deferred(cancel)
    proto = _Discard(d, response.code)
    response.deliverBody(proto)
    return d
