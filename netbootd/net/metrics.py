"""Prometheus metrics, read from the live counters at scrape time.

The protocols already count everything they do in plain ``Counter`` objects
(DhcpService.counters, TftpService.server.counters, HttpService.app.counters)
and the group committer keeps its own totals.  A custom collector turns those
into metric families when /metrics is scraped, so nothing is counted twice
and the hot paths pay nothing.  Only what no counter holds is derived here,
from the committed event stream (``Core.observe``): transfer bytes, HTTP file
statuses, events by kind, registrations and the boot-duration histogram.

The registry is our own ``CollectorRegistry`` (never the process-global one),
so tests and several daemons in one process do not share state.
"""
from __future__ import annotations

import json
import logging
from collections import Counter

from prometheus_client import CollectorRegistry, exposition, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from ..writes import EventWrite, HostDelete, HostWrite, LeaseWrite, TrimEvents

log = logging.getLogger("netbootd.metrics")

# The classic text format every Prometheus version parses (prometheus-client
# >= 0.22 calls its output "1.0.0" but it is the same text for our names).
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

# Seconds from a host's first offer to its agent's registration: firmware,
# iPXE, kernel and initrd downloads, agent start.
BOOT_BUCKETS = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
                1200.0, 1800.0, 3600.0)

# The DHCP message types (RFC 2132 §9.6) counted as rx.<TYPE> / tx.<TYPE>.
DHCP_TYPES = frozenset(("DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE",
                        "INFORM", "other"))

# Offers that start a boot: full mode answers with dhcp.offer, proxy mode
# (the default) with proxy.offer.
_BOOT_START = frozenset(("dhcp.offer", "proxy.offer"))
_TRANSFER_KINDS = frozenset(("tftp.finished", "tftp.failed", "tftp.aborted", "tftp.refused",
                             "http.file"))


# HTTP counters about connections, not requests (net/http/limits.py).
_HTTP_CONN_KEYS = frozenset(("http.conn_refused_source", "http.conn_refused_total",
                             "http.conn_evicted", "http.request_timeout", "http.idle_timeout"))


class Metrics:
    """Built once by the wiring module with the core and the services; any
    service may be None (or not started yet): its families are left out."""

    def __init__(self, core, dhcp=None, tftp=None, http=None, hooks=None, *, gc=None,
                 boot_timeout: float = 3600.0, buckets: tuple = BOOT_BUCKETS,
                 max_pending_boots: int = 65536):
        self.core = core
        self.dhcp = dhcp
        self.tftp = tftp
        self.http = http
        self.hooks = hooks
        self.gc = gc
        self.boot_timeout = boot_timeout
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self.max_pending_boots = max_pending_boots
        # Derived from the event stream (no counter holds these).
        self.events: Counter = Counter()                  # kind -> committed events
        self.transfer_bytes: Counter = Counter()          # "tftp" / "http" -> bytes
        self.http_status: Counter = Counter()             # status code -> http.file events
        self.boot_pending: dict[str, float] = {}          # mac -> first offer ts (oldest first)
        self.boot_counts = [0] * len(self.buckets)        # per bucket, not cumulative
        self.boot_over = 0                                # above the last bucket
        self.boot_sum = 0.0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # -- Core.observe --------------------------------------------------------------
    # Writes with nothing to count here: hosts are counted at scrape time
    # from the registry, leases from the lease table (tests/unit/test_writes.py).
    IGNORED_WRITES = (HostWrite, HostDelete, LeaseWrite, TrimEvents)

    def observe(self, writes: list) -> None:
        """Runs on the reactor thread after every committed batch: kept to a
        dict lookup per event; JSON is parsed only for transfer events."""
        for w in writes:
            if type(w) is not EventWrite:
                continue
            ts, mac, ekind, detail = w.ts, w.mac, w.kind, w.detail
            self.events[ekind] += 1
            if ekind in _BOOT_START:
                if mac:
                    self._boot_started(mac, ts)
            elif ekind == "agent.register":
                if mac:
                    self._boot_finished(mac, ts)
            elif ekind in _TRANSFER_KINDS:
                self._transfer(ekind, detail)

    def _boot_started(self, mac: str, ts: float) -> None:
        start = self.boot_pending.get(mac)
        if start is not None and ts - start <= self.boot_timeout:
            return                       # a later offer of the same boot (iPXE, 4011)
        self.boot_pending.pop(mac, None)  # re-insert: the dict stays ordered by start
        self.boot_pending[mac] = ts
        if len(self.boot_pending) > self.max_pending_boots:
            del self.boot_pending[next(iter(self.boot_pending))]

    def _boot_finished(self, mac: str, ts: float) -> None:
        start = self.boot_pending.pop(mac, None)
        if start is None:
            return                       # a callback without a boot we saw (restart, OS)
        took = ts - start
        if not 0 <= took <= self.boot_timeout:
            return
        self.boot_sum += took
        for i, le in enumerate(self.buckets):
            if took <= le:
                self.boot_counts[i] += 1
                return
        self.boot_over += 1

    def _transfer(self, kind: str, detail: str) -> None:
        try:
            d = json.loads(detail)
            nbytes = int(d.get("bytes") or 0)
        except (ValueError, TypeError, AttributeError):
            return
        if kind == "http.file":
            self.transfer_bytes["http"] += nbytes
            self.http_status[str(d.get("status"))] += 1
        else:
            self.transfer_bytes["tftp"] += nbytes

    # -- scrape --------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of the registry, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE


def _counters(svc, attr: str) -> Counter | None:
    """A service's live Counter, or None before it has started."""
    if svc is None:
        return None
    if attr:
        svc = getattr(svc, attr, None)
        if svc is None:
            return None
    return getattr(svc, "counters", None)


class _Collector(Collector):
    def __init__(self, m: Metrics):
        self.m = m

    def collect(self):
        m = self.m
        packets = CounterMetricFamily(
            "netbootd_packets", "Packets by protocol, direction and type (DHCP message type, "
            "TFTP event)", labels=["protocol", "direction", "type"])
        dropped = CounterMetricFamily(
            "netbootd_dropped", "Packets dropped, by protocol and reason",
            labels=["protocol", "reason"])
        other = CounterMetricFamily(
            "netbootd_protocol_events", "Other protocol counters (probe, cache, errors)",
            labels=["protocol", "name"])
        dhcp = _counters(m.dhcp, "")
        if dhcp is not None:
            ignored = CounterMetricFamily(
                "netbootd_dhcp_ignored", "DHCP packets deliberately not answered, by reason",
                labels=["reason"])
            for key, n in sorted(dhcp.items()):
                head, _, rest = key.partition(".")
                if head in ("rx", "tx") and rest in DHCP_TYPES:
                    packets.add_metric(["dhcp", head, rest], n)
                elif head == "drop":
                    dropped.add_metric(["dhcp", rest], n)
                elif head == "ignored":
                    ignored.add_metric([rest], n)
                else:
                    other.add_metric(["dhcp", key], n)
            yield ignored
        tftp = _counters(m.tftp, "server")
        if tftp is not None:
            transfers = CounterMetricFamily(
                "netbootd_tftp_transfers", "TFTP transfers ended, by outcome",
                labels=["outcome"])
            refused = CounterMetricFamily(
                "netbootd_tftp_refused", "TFTP requests refused, by reason", labels=["reason"])
            for key, n in sorted(tftp.items()):
                head, _, rest = key.partition(".")
                if head in ("rx", "tx"):
                    packets.add_metric(["tftp", head, rest], n)
                elif head == "drop":
                    dropped.add_metric(["tftp", rest], n)
                elif head == "transfer":
                    transfers.add_metric([rest], n)
                elif head == "refused":
                    refused.add_metric([rest], n)
                else:
                    other.add_metric(["tftp", key], n)
            yield transfers
            yield refused
            yield GaugeMetricFamily("netbootd_tftp_transfers_active",
                                    "TFTP transfers under way",
                                    value=len(getattr(m.tftp.server, "transfers", ())))
        http = _counters(m.http, "app")
        if http is not None:
            requests = CounterMetricFamily(
                "netbootd_http_requests", "HTTP requests by type (boot script, file, agent "
                "API, refusals)", labels=["type"])
            conns = CounterMetricFamily(
                "netbootd_http_connections_closed", "HTTP connections closed by a bound "
                "(cap per source or in total, eviction, request or idle deadline)",
                labels=["reason"])
            for key, n in sorted(http.items()):
                if key in _HTTP_CONN_KEYS:
                    conns.add_metric([key[5:]], n)
                else:
                    requests.add_metric([key[5:] if key.startswith("http.") else key], n)
            yield requests
            yield conns
            limits = getattr(m.http, "limits", None)
            if limits is not None:
                yield GaugeMetricFamily("netbootd_http_connections_open",
                                        "HTTP connections open", value=limits.open)
            active = getattr(m.http.app, "active", None)
            if active is not None:
                yield GaugeMetricFamily("netbootd_http_transfers_active",
                                        "HTTP file transfers under way", value=len(active))
        yield packets
        yield dropped
        yield other
        yield from self._derived()
        yield from self._core()
        hooks = _counters(m.hooks, "")
        if hooks is not None:
            fam = CounterMetricFamily("netbootd_hooks", "Event hook deliveries (webhook, mail)",
                                      labels=["name"])
            for key, n in sorted(hooks.items()):
                fam.add_metric([key], n)
            yield fam

    def _derived(self):
        m = self.m
        fam = CounterMetricFamily("netbootd_transfer_bytes",
                                  "Bytes sent by finished TFTP/HTTP file transfers",
                                  labels=["protocol"])
        for proto in ("tftp", "http"):
            fam.add_metric([proto], m.transfer_bytes[proto])
        yield fam
        fam = CounterMetricFamily("netbootd_http_file_transfers",
                                  "HTTP file transfers ended, by status", labels=["status"])
        for status, n in sorted(m.http_status.items()):
            fam.add_metric([status], n)
        yield fam
        fam = CounterMetricFamily("netbootd_events", "Committed events by kind",
                                  labels=["kind"])
        for kind, n in sorted(m.events.items()):
            fam.add_metric([kind], n)
        yield fam
        yield CounterMetricFamily("netbootd_registrations",
                                  "Agent registrations (agent.register events committed)",
                                  value=m.events["agent.register"])
        cumulative, buckets = 0, []
        for le, n in zip(m.buckets, m.boot_counts):
            cumulative += n
            buckets.append((_le(le), cumulative))
        buckets.append(("+Inf", cumulative + m.boot_over))
        yield HistogramMetricFamily(
            "netbootd_boot_duration_seconds",
            "Seconds from a host's first DHCP/proxy offer to its agent.register",
            buckets=buckets, sum_value=m.boot_sum)
        yield GaugeMetricFamily("netbootd_boots_in_progress",
                                "Hosts offered an address whose agent has not registered yet",
                                value=len(m.boot_pending))

    def _core(self):
        core = self.m.core
        committer = getattr(core, "committer", None)
        if committer is not None:
            yield CounterMetricFamily("netbootd_commit_batches",
                                      "Group commits (transactions) that succeeded",
                                      value=committer.commits)
            yield CounterMetricFamily("netbootd_commit_writes",
                                      "Writes stored by successful group commits",
                                      value=committer.committed_writes)
            yield CounterMetricFamily("netbootd_commit_failures",
                                      "Group commits that failed (their replies withheld)",
                                      value=committer.failures)
            yield CounterMetricFamily("netbootd_commit_writes_dropped",
                                      "Writes the store could not hold, isolated from their "
                                      "batch and dropped (the rest committed)",
                                      value=getattr(committer, "dropped_writes", 0))
            yield CounterMetricFamily("netbootd_commit_replies_withheld",
                                      "Replies withheld because a write of theirs was dropped",
                                      value=getattr(committer, "withheld", 0))
            yield GaugeMetricFamily("netbootd_commit_pending", "Writes waiting for a commit",
                                    value=committer.pending)
        pacer = self.m.gc
        if pacer is not None and pacer.running:
            yield GaugeMetricFamily("netbootd_gc_pause_max_seconds",
                                    "Longest paced garbage collection step since start-up "
                                    "(a reactor stall)",
                                    value=pacer.max_pause_ms / 1000.0)
            yield CounterMetricFamily("netbootd_gc_sweeps",
                                      "Full collections of every object, frozen ones included",
                                      value=pacer.sweeps)
            yield CounterMetricFamily("netbootd_gc_ticks",
                                      "Paced collections of the objects not yet frozen",
                                      value=pacer.ticks)
        leases = getattr(core, "leases", None)
        if leases is None and self.m.dhcp is not None:
            leases = getattr(getattr(self.m.dhcp, "engine", None), "leases", None)
        if leases is not None:
            now = core.reactor.seconds()
            used = GaugeMetricFamily("netbootd_pool_used", "Addresses held (offered, leased, "
                                     "declined) per network", labels=["network"])
            size = GaugeMetricFamily("netbootd_pool_size", "Pool addresses per network",
                                     labels=["network"])
            for name in sorted(leases.nets):
                u, s = leases.usage(name, now)
                used.add_metric([name], u)
                size.add_metric([name], s)
            yield used
            yield size
        registry = getattr(core, "registry", None)
        if registry is not None:
            states = Counter(h.state.value for h in registry.hosts.values())
            fam = GaugeMetricFamily("netbootd_hosts", "Known hosts by state", labels=["state"])
            for state, n in sorted(states.items()):
                fam.add_metric([state], n)
            yield fam
            # MACs only seen on DHCP (not stored; bounded, expiring) and what
            # became of them: a random-MAC flood shows as evictions here.
            yield GaugeMetricFamily("netbootd_hosts_seen", "MACs seen on DHCP only, "
                                    "held in memory", value=len(registry.seen))
            fam = CounterMetricFamily("netbootd_registry_events", "Seen-set and host "
                                      "creation counters", labels=["event"])
            for name, n in sorted(registry.counters.items()):
                fam.add_metric([name], n)
            yield fam
        started = getattr(core, "started", 0.0)
        if started:
            yield GaugeMetricFamily("netbootd_start_time_seconds",
                                    "When the daemon started (Unix time)", value=started)


def _le(v: float) -> str:
    return str(int(v)) + ".0" if v == int(v) else repr(v)
