"""Prometheus metrics, read from the live counters at scrape time.

The protocols already count everything they do in plain ``Counter`` objects
and the group committer keeps its own totals.  Each service turns its own
counters into metric families and registers that provider with the core
(``Core.expose(metrics=...)``); the collector here iterates the providers
when /metrics is scraped and knows no service, so nothing is counted twice
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

from ..writes import ADMIN_WRITES, EventWrite, HostDelete, HostWrite, LeaseWrite, TrimEvents

log = logging.getLogger("netbootd.metrics")

# The classic text format every Prometheus version parses (prometheus-client
# >= 0.22 calls its output "1.0.0" but it is the same text for our names).
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

# Seconds from a host's first offer to its agent's registration: firmware,
# iPXE, kernel and initrd downloads, agent start.
BOOT_BUCKETS = (5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
                1200.0, 1800.0, 3600.0)

# Offers that start a boot: full mode answers with dhcp.offer, proxy mode
# (the default) with proxy.offer.
_BOOT_START = frozenset(("dhcp.offer", "proxy.offer"))
_TRANSFER_KINDS = frozenset(("tftp.finished", "tftp.failed", "tftp.aborted", "tftp.refused",
                             "http.file"))



class Metrics:
    """Built once by the wiring module over Core.metric_families: a service
    not started yet has registered nothing, so its families are left out."""

    def __init__(self, families, *, boot_timeout: float = 3600.0,
                 buckets: tuple = BOOT_BUCKETS, max_pending_boots: int = 65536):
        self.families = families      # () -> the registered services' metric families
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
    IGNORED_WRITES = (HostWrite, HostDelete, LeaseWrite, TrimEvents) + ADMIN_WRITES

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


def _shared_families() -> list:
    """The families every protocol adds to (DHCP, TFTP, ...): merged by name."""
    return [
        CounterMetricFamily("netbootd_packets", "Packets by protocol, direction and type "
                            "(DHCP message type, TFTP event)",
                            labels=["protocol", "direction", "type"]),
        CounterMetricFamily("netbootd_dropped", "Packets dropped, by protocol and reason",
                            labels=["protocol", "reason"]),
        CounterMetricFamily("netbootd_protocol_events", "Other protocol counters (probe, "
                            "cache, errors)", labels=["protocol", "name"])]


def protocol_families(protocol: str, counters: Counter, own: dict, packet_types=None) -> list:
    """A protocol's Counter, keys "<head>.<rest>", as metric families: rx/tx
    (of `packet_types`, if given) -> netbootd_packets, drop -> netbootd_dropped,
    a head in `own` -> that family labelled with the rest, anything else ->
    netbootd_protocol_events.  The shared three are merged with the other
    protocols' at scrape time."""
    packets, dropped, other = _shared_families()
    for key, n in sorted(counters.items()):
        head, _, rest = key.partition(".")
        if head in ("rx", "tx") and (packet_types is None or rest in packet_types):
            packets.add_metric([protocol, head, rest], n)
        elif head == "drop":
            dropped.add_metric([protocol, rest], n)
        elif head in own:
            own[head].add_metric([rest], n)
        else:
            other.add_metric([protocol, key], n)
    return [*own.values(), packets, dropped, other]


def labelled_counter(name: str, doc: str, label: str, counters: Counter):
    """One counter family with a sample per key of `counters`."""
    fam = CounterMetricFamily(name, doc, labels=[label])
    for key, n in sorted(counters.items()):
        fam.add_metric([key], n)
    return fam


class _Collector(Collector):
    def __init__(self, m: Metrics):
        self.m = m

    def collect(self):
        """The registered families, those of one name merged into one (the
        exposition format allows a name once), then the derived ones."""
        merged = {f.name: f for f in _shared_families()}
        for fam in self.m.families():
            first = merged.setdefault(fam.name, fam)
            if first is not fam:
                first.samples.extend(fam.samples)
        yield from merged.values()
        yield from self._derived()

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


def _le(v: float) -> str:
    return str(int(v)) + ".0" if v == int(v) else repr(v)
