"""/metrics: the live counters and the committed event stream, as Prometheus
text, parsed back with prometheus_client's own parser."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from netbootd.config import Config
from netbootd.net.metrics import Metrics, labelled_counter
from netbootd.net.services.core import Core
from netbootd.net.services.dhcp import metric_families as dhcp_metrics, pool_families
from netbootd.net.services.http import metric_families as http_metrics
from netbootd.net.services.tftp import metric_families as tftp_metrics
from netbootd.model import Host, HostState
from netbootd.net.http.metrics import MetricsPage
from netbootd.policy.leases import LeaseTable, ip2int, whole_subnet
from netbootd.registry.hosts import Registry
from netbootd.writes import LeaseWrite, event

NOW = 1_000_000.0
A = "52:54:00:00:00:0a"
B = "52:54:00:00:00:0b"


def build():
    clock = Clock()
    clock.advance(NOW)
    leases = LeaseTable([whole_subnet("lab", "10.0.0.1", 29), whole_subnet("b", "10.1.0.1", 24)])
    for i in (2, 3):
        leases.bind("lab", ip2int(f"10.0.0.{i}"), bytes([1, 1, 0, 0, 0, 0, 0, i]),
                    f"00:00:00:00:00:0{i}", NOW, 600)
    leases.bind("lab", ip2int("10.0.0.4"), b"\x01\x01old", "00:00:00:00:00:04", NOW - 700, 600)
    registry = Registry([Host(A, HostState.IDLE), Host(B, HostState.DISCOVERED),
                         Host("52:54:00:00:00:0c", HostState.IDLE)])
    core = Core(Config(), clock, store=None)          # as started: committer, registry, leases
    core.committer = SimpleNamespace(commits=7, committed_writes=123, failures=2, pending=4)
    core.registry, core.leases, core.started = registry, leases, NOW - 50
    dhcp = SimpleNamespace(counters=Counter({
        "rx.DISCOVER": 10, "rx.REQUEST": 8, "tx.OFFER": 9, "tx.ACK": 7, "tx.NAK": 1,
        "drop.truncated": 3, "drop.rate_mac": 2, "ignored.proxy_not_pxe": 5,
        "rx.batched": 4, "probe.sent": 6}), engine=None)
    tftp = SimpleNamespace(server=SimpleNamespace(
        counters=Counter({"transfer.finished": 3, "transfer.failed": 1, "refused.not_found": 2,
                          "tx.retransmit": 11, "drop.short": 1, "cache.hit": 2}),
        transfers={1: object(), 2: object()}))
    http = SimpleNamespace(app=SimpleNamespace(
        counters=Counter({"http.script": 4, "http.file": 3, "http.file_missing": 1,
                          "api.agent_register": 2})))
    hooks = Counter({"webhook.sent": 2, "mail.failed": 1})
    # What each service registers as it starts (net/services/*.py).
    core.expose(metrics=lambda: [*dhcp_metrics(dhcp.counters), *pool_families(leases, NOW)])
    core.expose(metrics=lambda: tftp_metrics(tftp.server))
    core.expose(metrics=lambda: http_metrics(http.app.counters, SimpleNamespace(open=3), {1: 1}))
    core.expose(metrics=lambda: [labelled_counter("netbootd_hooks", "hooks", "name", hooks)])
    return Metrics(core.metric_families, boot_timeout=3600), core, dhcp, tftp


def scrape(m: Metrics) -> dict:
    """{(sample name, frozenset(labels)): value} of one scrape."""
    body, ctype = m.render()
    assert ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def v(samples, metric, /, **labels):
    return samples[(metric, frozenset(labels.items()))]


def test_dhcp_packets_drops_and_ignores_come_from_the_live_counter():
    m, _, dhcp, _ = build()
    s = scrape(m)
    assert v(s, "netbootd_packets_total", protocol="dhcp", direction="rx", type="DISCOVER") == 10
    assert v(s, "netbootd_packets_total", protocol="dhcp", direction="tx", type="ACK") == 7
    assert v(s, "netbootd_dropped_total", protocol="dhcp", reason="truncated") == 3
    assert v(s, "netbootd_dropped_total", protocol="dhcp", reason="rate_mac") == 2
    assert v(s, "netbootd_dhcp_ignored_total", reason="proxy_not_pxe") == 5
    assert v(s, "netbootd_protocol_events_total", protocol="dhcp", name="rx.batched") == 4
    assert v(s, "netbootd_protocol_events_total", protocol="dhcp", name="probe.sent") == 6
    # read at scrape time: no copy to keep in step
    dhcp.counters["tx.ACK"] += 5
    dhcp.counters["drop.truncated"] += 1
    s = scrape(m)
    assert v(s, "netbootd_packets_total", protocol="dhcp", direction="tx", type="ACK") == 12
    assert v(s, "netbootd_dropped_total", protocol="dhcp", reason="truncated") == 4


def test_tftp_and_http_counters_and_active_transfers():
    m, *_ = build()
    s = scrape(m)
    assert v(s, "netbootd_tftp_transfers_total", outcome="finished") == 3
    assert v(s, "netbootd_tftp_transfers_total", outcome="failed") == 1
    assert v(s, "netbootd_tftp_refused_total", reason="not_found") == 2
    assert v(s, "netbootd_packets_total", protocol="tftp", direction="tx", type="retransmit") == 11
    assert v(s, "netbootd_dropped_total", protocol="tftp", reason="short") == 1
    assert v(s, "netbootd_tftp_transfers_active") == 2
    assert v(s, "netbootd_http_requests_total", type="script") == 4
    assert v(s, "netbootd_http_requests_total", type="file_missing") == 1
    assert v(s, "netbootd_http_requests_total", type="api.agent_register") == 2
    assert v(s, "netbootd_hooks_total", name="webhook.sent") == 2


def test_pool_usage_per_network_counts_held_addresses_only():
    m, *_ = build()
    s = scrape(m)
    assert v(s, "netbootd_pool_size", network="lab") == 5       # /29 minus net, bcast, self
    assert v(s, "netbootd_pool_used", network="lab") == 2       # the lease of .4 has expired
    assert v(s, "netbootd_pool_size", network="b") == 253
    assert v(s, "netbootd_pool_used", network="b") == 0


def test_group_commit_stats_and_host_states():
    m, *_ = build()
    s = scrape(m)
    assert v(s, "netbootd_commit_batches_total") == 7
    assert v(s, "netbootd_commit_writes_total") == 123
    assert v(s, "netbootd_commit_failures_total") == 2
    assert v(s, "netbootd_commit_pending") == 4
    assert v(s, "netbootd_hosts", state="idle") == 2
    assert v(s, "netbootd_hosts", state="discovered") == 1
    assert v(s, "netbootd_start_time_seconds") == NOW - 50


def test_boot_duration_runs_from_the_first_offer_to_agent_register():
    m, *_ = build()
    m.observe([event(NOW, A, "dhcp.offer", ip="10.0.0.2"), LeaseWrite(object())])
    m.observe([event(NOW + 8, A, "dhcp.offer"),                 # iPXE's DHCP: same boot
               event(NOW + 9, B, "proxy.offer")])              # proxy mode starts a boot too
    m.observe([event(NOW + 42, A, "agent.register", ip="10.0.0.2")])
    m.observe([event(NOW + 50, "52:54:00:00:00:0c", "agent.register")])   # no offer seen
    m.observe([event(NOW + 9 + 400, B, "agent.register")])
    s = scrape(m)
    assert v(s, "netbootd_boot_duration_seconds_count") == 2
    assert v(s, "netbootd_boot_duration_seconds_sum") == 42 + 400
    assert v(s, "netbootd_boot_duration_seconds_bucket", le="30.0") == 0
    assert v(s, "netbootd_boot_duration_seconds_bucket", le="45.0") == 1
    assert v(s, "netbootd_boot_duration_seconds_bucket", le="300.0") == 1
    assert v(s, "netbootd_boot_duration_seconds_bucket", le="600.0") == 2
    assert v(s, "netbootd_boot_duration_seconds_bucket", le="+Inf") == 2
    assert v(s, "netbootd_registrations_total") == 3
    assert v(s, "netbootd_events_total", kind="dhcp.offer") == 2
    assert v(s, "netbootd_boots_in_progress") == 0


def test_an_offer_older_than_boot_timeout_starts_a_new_boot():
    m, *_ = build()
    m.observe([event(NOW, A, "dhcp.offer")])
    m.observe([event(NOW + 4000, A, "dhcp.offer")])            # the first boot never registered
    m.observe([event(NOW + 4030, A, "agent.register")])
    s = scrape(m)
    assert v(s, "netbootd_boot_duration_seconds_count") == 1
    assert v(s, "netbootd_boot_duration_seconds_sum") == 30


def test_pending_boots_are_bounded():
    m, *_ = build()
    m.max_pending_boots = 100
    m.observe([event(NOW + i, f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}", "dhcp.offer")
               for i in range(1000)])
    assert len(m.boot_pending) == 100
    assert "52:54:00:00:03:e7" in m.boot_pending                # the newest are kept


def test_transfer_bytes_and_http_statuses_come_from_committed_events():
    m, *_ = build()
    m.observe([event(NOW, A, "tftp.finished", bytes=1000, file="undionly.kpxe"),
               event(NOW, A, "tftp.failed", bytes=24, file="x"),
               event(NOW, A, "http.file", path="vmlinuz", bytes=5000, status=200),
               event(NOW, A, "http.file", path="nope", bytes=0, status=404)])
    s = scrape(m)
    assert v(s, "netbootd_transfer_bytes_total", protocol="tftp") == 1024
    assert v(s, "netbootd_transfer_bytes_total", protocol="http") == 5000
    assert v(s, "netbootd_http_file_transfers_total", status="200") == 1
    assert v(s, "netbootd_http_file_transfers_total", status="404") == 1


def test_services_not_started_yet_are_left_out():
    core = Core(Config(), Clock(), store=None)     # nothing started, nothing registered
    m = Metrics(core.metric_families)
    s = scrape(m)
    assert v(s, "netbootd_registrations_total") == 0
    assert not any(name.startswith(("netbootd_tftp", "netbootd_pool", "netbootd_commit"))
                   for name, _ in s)


def test_own_registry_not_the_global_one():
    m, *_ = build()
    assert m.registry is not REGISTRY
    assert b"netbootd_" not in __import__("prometheus_client").generate_latest(REGISTRY)


def test_metrics_page_serves_the_text_format():
    m, *_ = build()
    req = DummyRequest([b""])
    body = MetricsPage(m).render(req)
    assert req.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    assert b"netbootd_packets_total{" in body
    req = DummyRequest([b""])
    req.method = b"POST"
    MetricsPage(m).render(req)
    assert req.responseCode == 405


def test_a_family_two_protocols_add_to_is_exposed_once_with_both_samples():
    """DHCP and TFTP both register netbootd_packets: one family in the text."""
    m, *_ = build()
    body, _ = m.render()
    assert body.count(b"# TYPE netbootd_packets_total counter") == 1
    s = scrape(m)
    assert v(s, "netbootd_packets_total", protocol="dhcp", direction="rx", type="DISCOVER") == 10
    assert v(s, "netbootd_packets_total", protocol="tftp", direction="tx", type="retransmit") == 11


def test_http_connections_open_and_transfers_under_way_are_gauges():
    m, *_ = build()
    s = scrape(m)
    assert v(s, "netbootd_http_connections_open") == 3
    assert v(s, "netbootd_http_transfers_active") == 1
