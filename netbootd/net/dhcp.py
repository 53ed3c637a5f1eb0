"""DHCP over UDP: decode -> engine -> (commit) -> send.  Nothing else here.

No exception escapes datagramReceived: a malformed packet is counted by its
DecodeError reason and dropped; an internal error is logged and counted; the
next packet is served either way.
"""
from __future__ import annotations

import dataclasses
import logging

from ..codec.dhcp import DecodeError, decode
from ..codec.dhcp_options import CLIENT_PORT, PXE_PORT
from ..policy.dhcp_engine import DhcpEngine, Ingress, Outcome
from ..policy.leases import int2ip
from ..writes import LeaseWrite, event
from .interfaces import set_arp

log = logging.getLogger("netbootd.dhcp")

MAX_PROBE_ATTEMPTS = 3


def _serve_first(item) -> int:
    """Batch order: REQUESTs (option 53 = 3, normally the first option)
    complete exchanges already under way, so they go before DISCOVERs.  A
    heuristic on raw bytes for ordering only; decoding decides the rest."""
    data = item[0]
    return 0 if data[240:243] == b"\x35\x01\x03" else 1


class DhcpProtocol:
    """Handler for one interface's DHCP socket (see net/udp.py)."""

    transport = None

    def __init__(self, engine: DhcpEngine, ingress: Ingress, committer, clock,
                 prober=None, arp=set_arp):
        self.engine = engine
        self.ingress = ingress
        self.committer = committer
        self.clock = clock
        self.prober = prober
        self.arp = arp
        self.counters = engine.counters

    def datagramsReceived(self, batch: list) -> None:
        if len(batch) > 1:
            batch.sort(key=_serve_first)     # stable: arrival order otherwise
            self.counters["rx.batched"] += len(batch)
        handle = self._handle
        for data, addr in batch:
            try:                             # datagramReceived(), inlined: per packet
                handle(data, addr)
            except Exception:
                self.counters["drop.internal_error"] += 1
                log.exception("dhcp: internal error on a packet from %s", addr)

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            self._handle(data, addr)
        except Exception:
            self.counters["drop.internal_error"] += 1
            log.exception("dhcp: internal error on a packet from %s", addr)

    def _handle(self, data: bytes, addr, attempt: int = 0) -> None:
        try:
            pkt = decode(data)
        except DecodeError as e:
            self.counters["drop." + e.reason] += 1
            log.debug("dhcp: dropped malformed packet from %s: %s", addr, e)
            return
        ing = self.ingress
        if ing.port == PXE_PORT:
            ing = dataclasses.replace(ing, src=addr)
        out = self.engine.handle(pkt, ing, self.clock.seconds())
        if out is None:
            return
        if out.probe is not None and self.prober is not None:
            if out.writes:
                self.committer.submit(out.writes)
                out.writes = []                  # submitted: not again after the probe
            self._probe_then_send(out, data, addr, attempt)
            return
        self._dispatch(out)

    def _dispatch(self, out: Outcome) -> None:
        if out.must_commit:                  # an ACK: out.lease is its binding
            prev = out.renews
            if prev is None or not self.committer.stored(prev.seq):
                # Durability: the ACK leaves only after its lease is committed.
                out.lease.seq = self.committer.submit(out.writes, lambda: self._send(out))
                return
            # It only extends a stored binding that reaches past the client's
            # T2: a crash that loses this commit still leaves the address held
            # while the client renews and rebinds.  It leaves now, its writes
            # commit in the next batch (no burst of ACKs when a commit lands).
            self.counters["ack.renewal_early"] += 1
            out.lease.seq = self.committer.submit(out.writes)
            self._send(out)
            return
        if out.writes:
            self.committer.submit(out.writes)
        if out.reply is not None:
            self._send(out)

    def _probe_then_send(self, out: Outcome, data: bytes, addr, attempt: int) -> None:
        ip = int2ip(out.probe)
        self.counters["probe.sent"] += 1

        def answered(in_use: bool) -> None:
            if not in_use:
                out.probe = None
                self._dispatch(out)
                return
            self.counters["probe.conflict"] += 1
            now = self.clock.seconds()
            offered = self.engine.leases.by_addr.get(out.probe)
            network = offered.network if offered is not None else (self.ingress.network or "")
            lease = self.engine.leases.conflict(network, out.probe, now,
                                                self.engine.s.decline_probation)
            self.committer.submit([LeaseWrite(lease),
                                   event(now, None, "dhcp.conflict", ip=ip)])
            if attempt + 1 < MAX_PROBE_ATTEMPTS:
                self._handle(data, addr, attempt + 1)   # offer another address

        self.prober.probe(ip).addCallback(answered).addErrback(
            lambda f: log.error("probe failed: %s", f.getErrorMessage()))

    def _send(self, out: Outcome) -> None:
        if self.transport is None:
            return
        if out.arp is not None:
            try:
                self.arp(self.transport.fileno(), self.ingress.iface, out.arp[0], out.arp[1])
            except OSError:
                # No ARP entry possible: the common fallback is a broadcast.
                out.dest = ("255.255.255.255", CLIENT_PORT)
        try:
            # The socket directly: twisted's Port.write re-validates the
            # address on every datagram, which the hot path cannot afford.
            self.transport.socket.sendto(out.reply, out.dest)
        except BlockingIOError:
            self.counters["tx_dropped_buffer_full"] += 1
        except OSError as e:
            self.counters["tx_error"] += 1
            log.warning("dhcp: cannot send %s to %s: %s", out.kind, out.dest, e)
