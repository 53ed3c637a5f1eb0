"""Paced garbage collection (runtime/gcpace.py) for the daemon's process."""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.application import service

from ...runtime.gcpace import GcPacer
from .core import Core


class GcService(service.Service):
    """Started after the services have loaded the store's state (so that
    state is frozen at once) and before the daemon says it is ready."""
    name = "gc"

    def __init__(self, core: Core, pacer: GcPacer):
        self.pacer = pacer
        core.expose(metrics=lambda: metric_families(pacer))

    def startService(self) -> None:
        self.pacer.start()
        super().startService()

    def stopService(self):
        super().stopService()
        self.pacer.stop()


def metric_families(pacer: GcPacer):
    """Pauses, ticks and sweeps; nothing while the pacer is off (CPython 3.14)."""
    if not pacer.running:
        return []
    return [GaugeMetricFamily("netbootd_gc_pause_max_seconds",
                              "Longest paced garbage collection step since start-up "
                              "(a reactor stall)", value=pacer.max_pause_ms / 1000.0),
            CounterMetricFamily("netbootd_gc_sweeps",
                                "Full collections of every object, frozen ones included",
                                value=pacer.sweeps),
            CounterMetricFamily("netbootd_gc_ticks",
                                "Paced collections of the objects not yet frozen",
                                value=pacer.ticks)]
