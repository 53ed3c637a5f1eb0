"""Event hooks against real servers on 127.0.0.1: a twisted.web webhook
receiver, an aiosmtpd SMTP server (its own thread), a TCP black hole."""
from __future__ import annotations

import email
import email.policy
import json
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.web import resource, server

from netbootd import config
from netbootd.config import HooksConfig
from netbootd.net.hooks import Hooks, clean
from netbootd.writes import HostWrite, event

MAC = "52:54:00:66:00:01"
EVIL = "evil\r\nBcc: victim@example.com\r\n.\r\nMAIL FROM:<x@y>\x1b[31m\x00\x07\u202e\u200b"


class Receiver(resource.Resource):
    """Answers 500 to the first `fail` POSTs, then 200; keeps every body."""
    isLeaf = True

    def __init__(self, fail: int = 0):
        super().__init__()
        self.fail = fail
        self.posts: list[tuple[float, bytes, bytes]] = []   # (time, content-type, body)

    def render_POST(self, request):
        ctype = request.requestHeaders.getRawHeaders(b"content-type", [b""])[0]
        self.posts.append((time.monotonic(), ctype, request.content.read()))
        if len(self.posts) <= self.fail:
            request.setResponseCode(500)
            return b"not yet"
        return b"ok"


class BlackHole(protocol.Protocol):
    """Accepts the connection, reads, never answers."""

    def connectionMade(self):
        self.factory.opened += 1

    def connectionLost(self, reason):
        self.factory.closed += 1


@pytest.fixture
def receiver():
    ports = []

    def start(fail=0):
        r = Receiver(fail)
        site = server.Site(r)
        site.noisy = False
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        ports.append(port)
        return r, f"http://127.0.0.1:{port.getHost().port}/hook"
    yield start
    for p in ports:
        p.stopListening()


@pytest.fixture
def blackhole():
    f = protocol.Factory.forProtocol(BlackHole)
    f.opened = f.closed = 0
    f.noisy = False
    port = reactor.listenTCP(0, f, interface="127.0.0.1")
    yield f, f"http://127.0.0.1:{port.getHost().port}/hook"
    port.stopListening()


@pytest.fixture
def smtpd():
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")

    class Handler:
        def __init__(self):
            self.envelopes = []

        async def handle_DATA(self, server, session, envelope):
            self.envelopes.append(envelope)
            return "250 Message accepted"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Handler()
    ctl = aiosmtpd.Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=5)
    ctl.start()
    yield handler, port
    ctl.stop()


@pytest.fixture
def hooks_factory():
    made = []

    def make(**kw):
        h = Hooks(reactor, HooksConfig(**kw))
        made.append(h)
        return h
    yield make
    for h in made:
        h.stop()


@defer.inlineCallbacks
def wait_for(pred, timeout: float = 5.0, step: float = 0.01):
    """Poll pred on the reactor (bounded)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        yield task.deferLater(reactor, step, lambda: None)


def batch(now: float) -> list:
    return [
        HostWrite(object()),
        event(now, MAC, "host.discovered", arch=7, vendor_class=EVIL, interface="eth0"),
        event(now, MAC, "dhcp.offer", ip="10.0.0.5"),                   # not a hook kind
        event(now, MAC, "http.file", path="ok", bytes=10, status=200),  # not a failure
        event(now, MAC, "http.file", path="vmlinuz", bytes=0, status=404),
        event(now, MAC, "tftp.failed", file=EVIL, bytes=512, error="timeout"),
    ]


@pytest_twisted.inlineCallbacks
def test_webhook_is_retried_with_backoff_until_accepted_and_posts_the_events(
        receiver, hooks_factory):
    r, url = receiver(fail=2)
    hooks = hooks_factory(webhooks=(url,), webhook_retries=3, webhook_backoff=0.1,
                          webhook_timeout=5)
    hooks.observe(batch(1000.0))
    yield wait_for(lambda: hooks.counters["webhook.sent"] == 1)
    assert len(r.posts) == 3
    assert hooks.counters["webhook.retry"] == 2 and hooks.counters["webhook.failed"] == 0
    (t0, _, b0), (t1, _, b1), (t2, ctype, b2) = r.posts
    assert b0 == b1 == b2                                  # the same batch, retried
    assert t1 - t0 >= 0.09 and t2 - t1 >= 0.19            # 0.1 s, then doubled
    assert ctype == b"application/json"
    body = json.loads(b2)
    assert body["source"] == "netbootd"
    assert [(e["kind"], e["mac"]) for e in body["events"]] == [
        ("host.discovered", MAC), ("http.file", MAC), ("tftp.failed", MAC)]
    assert body["events"][0]["detail"]["vendor_class"] == EVIL    # data, intact, in JSON
    assert body["events"][1]["detail"] == {"path": "vmlinuz", "bytes": 0, "status": 404}
    assert body["events"][2]["detail"]["file"] == EVIL
    assert b"\x1b" not in b2 and b"\x00" not in b2 and b"\r" not in b2   # escaped by json


@pytest_twisted.inlineCallbacks
def test_webhook_gives_up_after_the_retries_and_counts_the_dropped_events(
        receiver, hooks_factory):
    r, url = receiver(fail=100)
    hooks = hooks_factory(webhooks=(url,), webhook_retries=1, webhook_backoff=0.05,
                          webhook_timeout=5)
    hooks.observe([event(1.0, MAC, "pool.exhausted", network="lab")])
    yield wait_for(lambda: hooks.counters["webhook.failed"] == 1)
    assert len(r.posts) == 2
    assert hooks.counters["webhook.events_dropped"] == 1
    # the queue keeps working afterwards
    r.fail = 0
    hooks.observe([event(2.0, MAC, "tftp.failed", error="timeout")])
    yield wait_for(lambda: hooks.counters["webhook.sent"] == 1)
    assert json.loads(r.posts[-1][2])["events"][0]["kind"] == "tftp.failed"


@pytest_twisted.inlineCallbacks
def test_mail_goes_to_the_relay_with_events_as_clean_plain_text(smtpd, hooks_factory):
    handler, port = smtpd
    hooks = hooks_factory(smtp_host="127.0.0.1", smtp_port=port, mail_from="netbootd@lab.test",
                          mail_to=("ops@lab.test", "oncall@lab.test"), mail_interval=0.2,
                          smtp_timeout=5)
    hooks.observe(batch(1000.0))
    yield wait_for(lambda: hooks.counters["mail.sent"] == 1)
    assert len(handler.envelopes) == 1                     # nothing smuggled as a 2nd mail
    env = handler.envelopes[0]
    assert env.mail_from == "netbootd@lab.test"
    assert sorted(env.rcpt_tos) == ["oncall@lab.test", "ops@lab.test"]
    raw = env.original_content
    for c in (b"\x1b", b"\x00", b"\x07", "\u202e".encode(), "\u200b".encode()):
        assert c not in raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == ("netbootd: 3 events (host.discovered x1, http.file x1, "
                              "tftp.failed x1)")
    assert msg["Bcc"] is None and msg["To"] == "ops@lab.test, oncall@lab.test"
    body = msg.get_content().replace("\r\n", "\n")        # CRLF: SMTP's own line ends
    assert not any(ord(c) < 32 and c != "\n" for c in body)
    lines = body.splitlines()
    assert not any(ln.startswith(("Bcc:", "MAIL FROM", ".")) for ln in lines)
    discovered = next(ln for ln in lines if "host.discovered" in ln)
    assert MAC in discovered
    assert "vendor_class=evilBcc: victim@example.com.MAIL FROM:<x@y>[31m" in discovered
    assert any("http.file" in ln and "status=404" in ln for ln in lines)
    assert any("tftp.failed" in ln and "error=timeout" in ln for ln in lines)
    assert not any("dhcp.offer" in ln or "status=200" in ln for ln in lines)


@pytest_twisted.inlineCallbacks
def test_mails_are_rate_limited_to_one_per_interval(smtpd, hooks_factory):
    handler, port = smtpd
    hooks = hooks_factory(smtp_host="127.0.0.1", smtp_port=port, mail_to=("ops@lab.test",),
                          mail_interval=0.5, smtp_timeout=5)
    hooks.observe([event(1.0, MAC, "pool.exhausted", network="lab")])
    yield wait_for(lambda: hooks.counters["mail.sent"] == 1)
    first = time.monotonic()
    for i in range(20):       # a burst after the first mail: all in the next one
        hooks.observe([event(2.0 + i, f"52:54:00:66:01:{i:02x}", "host.discovered")])
    yield wait_for(lambda: hooks.counters["mail.sent"] == 2)
    assert time.monotonic() - first >= 0.4
    assert len(handler.envelopes) == 2
    second = email.message_from_bytes(handler.envelopes[1].original_content,
                                      policy=email.policy.default)
    assert second["Subject"] == "netbootd: 20 events (host.discovered x20)"
    assert "52:54:00:66:01:13" in second.get_content()


@pytest_twisted.inlineCallbacks
def test_a_receiver_that_never_answers_delays_nothing_else(
        blackhole, receiver, smtpd, hooks_factory):
    hole, hole_url = blackhole
    r, url = receiver()
    handler, port = smtpd
    hooks = hooks_factory(webhooks=(hole_url, url), webhook_timeout=1.0, webhook_retries=0,
                          smtp_host="127.0.0.1", smtp_port=port, mail_to=("ops@lab.test",),
                          mail_interval=0.1, smtp_timeout=5)
    ticks = []
    start = time.monotonic()
    reactor.callLater(0.05, lambda: ticks.append(time.monotonic() - start))
    hooks.observe([event(1.0, MAC, "boot.unsupported", arch=99)])
    assert time.monotonic() - start < 0.05                 # observe only queues
    assert r.posts == [] and hole.opened == 0               # nothing was sent inline
    yield wait_for(lambda: r.posts and handler.envelopes)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0                                    # before the black hole timed out
    assert ticks and ticks[0] < 0.5                         # the reactor kept its timers
    assert hole.opened == 1 and hooks.counters["webhook.failed"] == 0
    yield wait_for(lambda: hooks.counters["webhook.failed"] == 1)
    assert time.monotonic() - start >= 0.95                 # the timeout fired, later
    yield wait_for(lambda: hole.closed == 1)                # and hung up the connection


@pytest_twisted.inlineCallbacks
def test_an_unreachable_relay_is_counted_not_raised(hooks_factory):
    with socket.socket() as s:                                # a closed port: refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hooks = hooks_factory(smtp_host="127.0.0.1", smtp_port=port, mail_to=("ops@lab.test",),
                          mail_interval=0.05, smtp_timeout=2)
    hooks.observe([event(1.0, MAC, "dhcp.nak", ip="10.0.0.9")])
    yield wait_for(lambda: hooks.counters["mail.failed"] >= 1)
    assert hooks.counters["mail.sent"] == 0


def test_no_hooks_configured_means_observe_does_nothing():
    hooks = Hooks(reactor, HooksConfig())
    assert not hooks.enabled
    before = len(reactor.getDelayedCalls())
    hooks.observe(batch(1.0))
    assert len(reactor.getDelayedCalls()) == before and not hooks.counters


def test_clean_strips_control_and_format_characters():
    assert clean("a\r\nb\x00c\x1b[0m\u202ed\u2028e") == "abc[0mde"
    assert clean("x" * 300).endswith("...") and len(clean("x" * 300)) == 203
    assert clean({"k": "v\n"}) == '{"k": "v\\n"}'       # non-strings: JSON text, one line


@pytest.mark.parametrize("toml, where", [
    ('[hooks]\nwebhooks = ["ftp://example.com/x"]', "hooks.webhooks"),
    ('[hooks]\nwebhooks = ["http://exa mple.com/"]', "hooks.webhooks"),
    ('[hooks]\nwebhook_timeout = 0', "hooks.webhook_timeout"),
    ('[hooks]\nmail_to = ["ops@lab.test\\nBcc: x@y"]', "hooks.mail_to"),
    ('[hooks]\nsmtp_host = "relay.lab.test"', "hooks.mail_to"),
    ('[hooks]\nkinds = ["TFTP failed"]', "hooks.kinds"),
    ('[metrics]\nboot_timeout = -1', "metrics.boot_timeout"),
])
def test_hook_and_metrics_config_is_validated(toml, where):
    with pytest.raises(config.ConfigError) as e:
        config.parse(toml, "netbootd.toml")
    assert where in str(e.value)


def test_hook_config_defaults_and_a_valid_file():
    cfg = config.parse('[hooks]\nwebhooks = ["https://hooks.lab.test/netbootd"]\n'
                       'smtp_host = "127.0.0.1"\nmail_to = ["ops@lab.test"]\n')
    assert cfg.hooks.webhooks == ("https://hooks.lab.test/netbootd",)
    assert cfg.hooks.smtp_starttls is False and cfg.hooks.smtp_port == 25
    assert set(cfg.hooks.kinds) == {"host.discovered", "tftp.failed", "http.file",
                                    "boot.unsupported", "dhcp.nak", "pool.exhausted",
                                    "agent.refused", "host.conflict", "agent.action_failed",
                                    "token.revoked", "host.identity_conflict",
                                    "storage.failed", "dhcp.no_network", "iface.down",
                                    "ra.router_seen"}
    assert cfg.metrics.enabled is True
