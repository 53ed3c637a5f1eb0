"""Disk capture at run time (issue 13 item 4; docs/storage.md, Capture).

An admin starts one (POST /api/v1/hosts/{mac}/capture): the volume is created in
the pool, sized to the disk the host's inventory lists (or an existing empty
volume is used), and a ``capture`` action is queued for the host's agent.  The
capture is a job of net/storage.py's job list (GET /api/v1/jobs/{id}: ``done``
and ``total`` in bytes) but does not hold the storage lock while the agent
uploads.  The agent (iso_builder/agent/capture.sh) then:

    POST /api/v1/agent/report               capture started
    GET  /api/v1/agent/capture/{job}        {"committed": N, ...}: where to (re)start
    POST /api/v1/agent/capture/{job}/{off}?sha256=HEX  one chunk, in order
    POST /api/v1/agent/report               capture done {"sha256", "bytes"} | failed

Every call carries the host's agent secret; a job answers only the host whose
current action it is.  Chunks are written in a worker thread (storage/capture.py),
one at a time per capture.  The committed offset is kept in memory and, at every
10% step, in the host's stored action: after a daemon restart the committed
chunks are read back and hashed again and the agent resumes from there.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from twisted.internet import defer, threads

from iso_builder.hashtool import HTTP_NAME as TOOLS_NAME
from iso_builder.hashtool import URL_PATH as TOOLS_URL

from ..policy import capture as cp
from ..policy.volumes import InUse, NotFound, VolumeError, check_name
from ..writes import HostWrite, event

log = logging.getLogger("netbootd")

MAX_RUNNING = 4          # captures uploading at once (each buffers up to one chunk)
SWEEP = 30.0             # seconds between checks for abandoned captures
IDLE = 3600.0            # a capture whose agent made no call for this long fails


class Capture:
    """One capture job's state (reactor thread)."""

    def __init__(self, job, mac: str, volume: str, pool: str, disk: str, total: int,
                 chunk: int):
        self.job, self.mac, self.volume, self.pool = job, mac, volume, pool
        self.disk, self.total, self.chunk = disk, total, chunk
        self.committed = 0
        self.hashes: list[str] = []
        self.target = None           # storage.capture.Target once opened
        self.busy = False            # a chunk is being written
        self.receiving = False       # a chunk's body is being received (api_capture)
        self.active = 0.0            # clock time of the last call of its agent
        self.t0 = time.monotonic()   # when the agent's first chunk came
        self.uploading = False
        self.created = False         # the capture made the volume
        self.refused = None          # why the last chunk or stream was refused (GET shows it)

    def view(self) -> dict:
        return {"job": self.job.id, "volume": self.volume, "pool": self.pool,
                "disk": self.disk, "bytes": self.total, "chunk": self.chunk,
                "committed": self.committed, "state": self.job.state,
                **({"refused": self.refused} if self.refused else {})}


def tool_pack(generated) -> dict:
    """The capture action's {"tools": URL path, "tools_sha256": HEX} when the agent
    tool pack (iso_builder/hashtool.py: openssl for a SHA-NI sha256; TOOLS_NAME among
    the daemon's generated files, net/bootfiles.py) is served and its sidecar
    (<pack>.sha256, sha256sum's format) is well formed; else {}: the agent hashes
    with what it has."""
    path = (generated or {}).get(TOOLS_NAME)
    if not isinstance(path, str):
        return {}
    try:
        with open(path + ".sha256") as f:
            digest = f.read(200).split()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return {}
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return {}
    return {"tools": TOOLS_URL, "tools_sha256": digest}


class Captures:
    def __init__(self, storage: Callable, registry, agents, submit: Callable, clock,
                 run=threads.deferToThread, chunk: int = cp.CHUNK,
                 tools: Callable[[], dict] = dict):
        self.tools = tools           # () -> tool_pack(...) fields for the action
        self.storage, self.registry, self.agents = storage, registry, agents
        self.submit, self.clock, self.run = submit, clock, run
        self.chunk_size = cp.check_chunk_size(chunk)
        self.by_job: dict[str, Capture] = {}
        agents.report_checks["capture"] = self.reported
        self._sweep = None

    def sweep(self) -> None:
        """End captures nobody will finish: the host's action was replaced (an admin
        queued another) or its agent made no call for IDLE seconds."""
        from .storage import Refused
        self._sweep = None
        now = self.clock.seconds()
        for cap in list(self.by_job.values()):
            if cap.job.state != "running":
                continue
            h = self.registry.hosts.get(cap.mac)
            act = (h.action or {}) if h is not None else {}
            if act.get("job") != cap.job.id:
                self._end(cap, Refused(409, "the host's capture action was replaced"))
            elif now - cap.active > IDLE:
                self._end(cap, Refused(409, f"no call from the host's agent for {IDLE:.0f} s"))
        self._arm()

    def _arm(self) -> None:
        if self._sweep is None and any(c.job.state == "running" for c in self.by_job.values()):
            self._sweep = self.clock.callLater(SWEEP, self.sweep)

    def _st(self):
        from .storage import Refused
        st = self.storage()
        if st is None:
            raise Refused(503, "storage is not configured (no [[storage.pools]])")
        if not st.ready:
            raise Refused(503, "storage is starting")
        return st

    def commit(self, writes: list) -> defer.Deferred:
        d = defer.Deferred()
        self.submit(writes, lambda: d.callback(None))
        return d

    # -- admin ---------------------------------------------------------------------
    def start(self, mac: str, disk, volume, pool: Optional[str]) -> defer.Deferred:
        """Create (or adopt an empty) volume, queue the host's capture action; fires
        with the job's view once the action is stored."""
        from .storage import Job, Refused
        st = self._st()
        h = self.registry.hosts.get(mac)
        if h is None:
            raise Refused(404, f"no host {mac}")
        name = cp.disk_name(disk)
        if not isinstance(volume, str):
            raise cp.CaptureError("volume: a volume name", "volume")
        check_name(volume, "volume")
        disks = {d.get("name"): d for d in (h.hw or {}).get("disk_list", [])}
        if not disks:
            raise Refused(409, "no inventory of this host's disks yet: a capture reads a "
                               "disk the agent reported")
        if name not in disks:
            raise Refused(409, f"disk: {name} is not in the host's inventory "
                               f"({', '.join(sorted(disks))})")
        total = cp.check_total(disks[name].get("bytes"))
        if h.action is not None:
            raise Refused(409, f"the host has a pending {h.action.get('action')} action: wait "
                               "for it, or queue 'wait' to drop it")
        running = [c for c in self.by_job.values() if c.job.state == "running"]
        if any(c.mac == mac for c in running):
            raise Refused(409, f"host {mac} is already capturing")
        if any(c.volume == volume for c in running):
            raise Refused(409, f"volume {volume!r} is already being captured into")
        if len(running) >= MAX_RUNNING:
            raise Refused(409, f"{MAX_RUNNING} captures are running: wait for one to end")
        if pool is not None:
            st._pool(pool)
        job = Job("capture", volume, self.clock.seconds())
        job.total = total
        cap = Capture(job, mac, volume, pool or "", name, total, self.chunk_size)
        cap.active = self.clock.seconds()
        self.by_job[job.id] = cap
        st.jobs[job.id] = job
        st.busy[volume] = f"host {mac} is capturing into it"
        st.running[volume] = job

        def prepare():
            """Blocking, under the storage lock: the volume made or found, opened."""
            from ..storage.capture import open_target
            try:
                p, vol = st._find(volume)
            except NotFound:
                p = st._pool(pool)
                st._refuse_taken(volume)
                p.create(volume, total)
                cap.created = True
                need_empty = False
            else:
                if pool is not None and p.name != pool:
                    raise VolumeError(f"volume {volume!r} is in pool {p.name!r}, not {pool!r}",
                                      "pool", pool)
                if vol.kind == "snapshot":
                    raise InUse(f"volume {volume!r} is a read-only snapshot", "volume", volume)
                need_empty = True
            cap.pool = p.name
            cap.target = open_target(p, volume, total, need_empty)

        def queued(_):
            from ..registry.agent import Refused as AgentRefused
            now = self.clock.seconds()
            try:
                writes = self.agents.queue_server_action(h, {
                    "action": "capture", "job": job.id, "disk": name, "volume": volume,
                    "bytes": total, "chunk": self.chunk_size, **self.tools()}, now)
            except AgentRefused as e:
                raise Refused(e.status, e.reason) from None
            writes.append(event(now, mac, "storage.capture", job=job.id, status="queued",
                                volume=volume, pool=cap.pool, disk=name, bytes=total,
                                created=cap.created))
            self._arm()
            return self.commit(writes).addCallback(lambda _: job.view())

        def failed(f):
            self._end(cap, f.value)
            return f
        d = st.lock.run(lambda: self.run(prepare))
        return d.addCallback(queued).addErrback(failed)

    # -- the agent's calls ---------------------------------------------------------
    def _mine(self, h, job_id: str) -> Optional[Capture]:
        """The running capture ``job_id`` of host ``h`` (its current action), None
        when the daemon restarted since (the action says so); else refused."""
        from .storage import Refused
        act = h.action or {}
        cap = self.by_job.get(job_id)
        if act.get("action") != "capture" or act.get("job") != job_id:
            if cap is not None and cap.mac == h.mac and cap.job.state == "running":
                self._end(cap, Refused(409, "the host's capture action was replaced"))
            raise Refused(404, f"no capture {job_id!r} pending for this host")
        if cap is not None and cap.job.state != "running":
            raise Refused(409, f"capture {job_id!r} has ended ({cap.job.state})")
        if cap is not None:
            cap.active = self.clock.seconds()
        return cap

    def status(self, h, job_id: str):
        """Where the agent (re)starts: a dict, or a Deferred of one after a restart."""
        cap = self._mine(h, job_id)
        if cap is not None:
            return cap.view()
        return self._restore(h, job_id).addCallback(lambda c: c.view())

    def _restore(self, h, job_id: str) -> defer.Deferred:
        """The daemon restarted during a capture: reopen its volume, hash the chunks
        committed at the last stored step again (read back), resume there."""
        from .storage import Job
        st = self._st()
        act = h.action
        total, chunk = cp.check_total(act.get("bytes")), cp.check_chunk_size(act.get("chunk"))
        committed = int(act.get("committed") or 0)
        job = Job("capture", act["volume"], self.clock.seconds())
        job.id, job.total, job.done = job_id, total, committed
        cap = Capture(job, h.mac, act["volume"], "", act.get("disk", ""), total, chunk)
        cap.busy, cap.active = True, self.clock.seconds()
        self.by_job[job_id] = cap
        self._arm()
        st.jobs[job_id] = job
        st.busy[cap.volume] = f"host {h.mac} is capturing into it"
        st.running[cap.volume] = job

        def reopen():
            from ..storage.capture import open_target
            p, _ = st._find(cap.volume)
            cap.pool = p.name
            cap.target = open_target(p, cap.volume, total, False)
            hashes = cap.target.rehash(committed, chunk)
            cap.target.high = total      # beyond: maybe an earlier attempt's data
            return hashes

        def ready(hashes):
            cap.hashes, cap.committed = hashes, committed
            self._idle(cap)
            self.submit([event(self.clock.seconds(), h.mac, "storage.capture", job=job_id,
                               status="resumed", committed=committed, bytes=total)])
            return cap

        def failed(f):
            cap.busy = False
            self._end(cap, f.value)
            return f
        return self.run(reopen).addCallbacks(ready, failed)

    def _running(self, h, job_id: str) -> Capture:
        """_mine, refused when the daemon has no state of the capture (restarted)."""
        from .storage import Refused
        cap = self._mine(h, job_id)
        if cap is None:
            raise Refused(409, "the daemon restarted: GET the capture's committed offset "
                               "first")
        return cap

    def check(self, h, job_id: str, offset: int) -> None:
        """Would a chunk at ``offset`` of the expected length be taken now?"""
        cap = self._running(h, job_id)
        n = cp.expected_length(cap.total, cap.chunk, offset) if 0 <= offset < cap.total else 0
        cp.check_offset(cap.total, cap.chunk, cap.committed, offset, n)

    def check_stream(self, h, job_id: str, offset: int, length: int) -> Capture:
        """Would a stream from ``offset`` declaring ``length`` body bytes be taken now?"""
        from .storage import Refused
        cap = self._running(h, job_id)
        cp.check_stream(cap.total, cap.chunk, cap.committed, offset, length)
        if cap.busy or cap.receiving:
            raise Refused(409, "the previous upload of this capture is still being received "
                               "or written: ask for the offset and retry")
        return cap

    def chunk(self, h, job_id: str, offset: int, data, sha) -> defer.Deferred:
        cap = self._running(h, job_id)
        if not cap.busy:
            cp.check_offset(cap.total, cap.chunk, cap.committed, offset, len(data))
        return self.write(h, cap, offset, data, cp.check_sha(sha))

    def write(self, h, cap: Capture, offset: int, data, sha: str) -> defer.Deferred:
        """Write the next chunk (checked against ``sha`` in the worker thread) and
        commit it; fires with {"committed", "bytes"}.  The stream (api_capture.py)
        calls this per chunk, the per-chunk POST through chunk()."""
        from .storage import Refused
        job_id = cap.job.id
        if self._running(h, job_id) is not cap:
            raise Refused(409, f"capture {job_id!r} is not this host's running capture")
        if cap.busy:
            raise Refused(409, "a chunk of this capture is being written")
        n = cp.check_offset(cap.total, cap.chunk, cap.committed, offset, len(data))
        cap.busy = True
        if not cap.uploading:
            cap.uploading, cap.t0 = True, time.monotonic()
        last = offset + n == cap.total

        def write():
            ok = cap.target.write(offset, data, sha)
            if ok and last:
                cap.target.finish()
            return ok

        def written(ok):
            self._idle(cap)
            if cap.job.state != "running":
                raise Refused(409, f"capture {job_id!r} has ended ({cap.job.state})")
            if not ok:
                raise cp.CaptureError("sha256: the chunk's bytes do not match its sha256: "
                                      "send it again", "sha256", 422)
            before = cap.committed
            cap.committed += n
            cap.hashes.append(sha)
            cap.job.progress(cap.committed, cap.total)
            self._steps(h, cap, before)
            return {"committed": cap.committed, "bytes": cap.total}

        def failed(f):
            self._idle(cap)
            if not f.check(cp.CaptureError):
                self._end(cap, f.value)
            else:
                cap.refused = f.value.reason
            return f
        return self.run(write).addCallbacks(written, failed)

    def _steps(self, h, cap: Capture, before: int) -> None:
        """A progress event at every 10% (and the committed offset in the stored
        action, where a restart resumes)."""
        steps = cp.steps_crossed(before, cap.committed, cap.total)
        if not steps:
            return
        now = self.clock.seconds()
        if h.action is not None and h.action.get("job") == cap.job.id:
            h.action["committed"] = cap.committed
        self.submit([HostWrite(h), event(now, h.mac, "storage.capture", job=cap.job.id,
                                         status="progress", percent=steps[-1],
                                         committed=cap.committed, bytes=cap.total,
                                         mb_s=self._rate(cap))])

    @staticmethod
    def _rate(cap: Capture):
        return cp.rate_mb_s(cap.committed, time.monotonic() - cap.t0)

    # -- the end -----------------------------------------------------------------------
    def reported(self, h, action: dict, status: str, detail: dict, now: float):
        """registry/agent.py's report check: started is noted; done holds only when
        every byte is committed and the digests agree; either end ends the job."""
        cap = self.by_job.get(action.get("job"))
        if status == "started":
            return status, detail, []
        if cap is None or cap.job.state != "running":
            if status == "done":
                status, detail = "failed", dict(detail, server="the daemon has no state of "
                                                "this capture (restarted after its last chunk)")
            return status, detail, []
        if status == "done":
            why = cp.verdict(cap.total, cap.committed, cp.list_digest(cap.hashes),
                             detail.get("sha256"), detail.get("bytes"))
            if why is not None:
                status, detail = "failed", dict(detail, server=why)
        from .storage import Refused
        if status == "done":
            self._end(cap, None)
        else:
            reason = detail.get("server") or detail.get("error") or "the agent reported failure"
            self._end(cap, Refused(409, f"capture failed: {str(reason)[:300]}"), event_too=False)
        return status, detail, [self._end_event(cap, now)]

    def _end_event(self, cap: Capture, now: float):
        j = cap.job
        fields = dict(job=j.id, volume=cap.volume, status=j.state, bytes=cap.total,
                      committed=cap.committed, mb_s=self._rate(cap) if cap.uploading else None,
                      seconds=round(time.monotonic() - cap.t0, 1) if cap.uploading else None)
        if j.state == "done":
            fields.update(sha256=j.result["sha256"], sparse_skipped=j.result["sparse_skipped"])
        else:
            fields.update(reason=j.error.reason)
        return event(now, cap.mac, "storage.capture", **fields)

    def _close(self, cap: Capture) -> None:
        """Close the volume's fd (in a thread), never while a write uses it: a number
        closed under a pending pwrite could be reused by another open.  A failed
        capture's volume that the capture made is deleted after (nothing half-done:
        a partial disk is no disk, and its name is free for the next try)."""
        target, cap.target = cap.target, None
        d = self.run(target.close) if target is not None else defer.succeed(None)
        st = self.storage()
        if cap.created and cap.job.state == "failed" and st is not None:
            def delete():
                pool, _ = st._find(cap.volume)
                pool.delete(cap.volume)
            d.addCallback(lambda _: st.lock.run(lambda: self.run(delete)))
            d.addCallback(lambda _: log.info("capture %s failed: its volume %s was removed",
                                             cap.job.id, cap.volume))
        d.addErrback(lambda f: log.warning("capture: closing/removing %s failed: %s",
                                           cap.volume, f.getErrorMessage()))

    def _idle(self, cap: Capture) -> None:
        """A thread's call on the volume returned: close it now if the job ended meanwhile."""
        cap.busy = False
        if cap.job.state != "running":
            self._close(cap)

    def _end(self, cap: Capture, error: Optional[BaseException], event_too: bool = True) -> None:
        from .storage import refusal
        j = cap.job
        if j.state != "running":
            return
        now = self.clock.seconds()
        if error is None:
            j.state = "done"
            j.result = {"volume": cap.volume, "pool": cap.pool, "host": cap.mac,
                        "disk": cap.disk, "bytes": cap.total,
                        "sha256": cp.list_digest(cap.hashes),
                        "sparse_skipped": cap.target.skipped if cap.target else 0,
                        "mb_s": self._rate(cap),
                        "seconds": round(time.monotonic() - cap.t0, 1)}
            j.done = cap.total
        else:
            if isinstance(error, cp.CaptureError):
                from .storage import Refused
                error = Refused(error.status, error.reason)
            j.state, j.error = "failed", refusal(error, in_job=True)
        j.ended = now
        st = self.storage()
        if st is not None:
            st.busy.pop(cap.volume, None)
            st.running.pop(cap.volume, None)
        if not cap.busy:            # else closed when the thread's write returns
            self._close(cap)
        if event_too:
            self.submit([self._end_event(cap, now)])
        j.finished.callback(j)
        log.info("capture %s of host %s into %s: %s", j.id, cap.mac, cap.volume, j.state)
