"""tgtd supervision: netbootd starts its own tgtd on its own control instance
number (tgtd's control socket /var/run/tgtd/socket.N is a path, so it is global
across network namespaces: two tgtds must never share an N), waits until it
answers, restarts it with a bounded backoff if it dies and then calls
``on_restart`` (the daemon rebuilds the exports from the database there).
``ExternalTgtd`` is the other mode: the config points at a tgtd someone else
runs; nothing is started or stopped, only its health is read.

Blocking, plain threads, no Twisted: the daemon calls start/stop off the
reactor; the watcher is a daemon thread.  ``wrap`` prefixes the tgtd command
(tests run it in a network namespace: ``["ip", "netns", "exec", NS]``).

Stopping: tgtd ignores SIGTERM while it has targets.  ``stop`` sets the system
offline (no new logins), deletes every target with --force (closing sessions),
deletes the system (tgtd exits), and SIGKILLs it if it has not exited within
``stop_timeout``.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .exports import ExportHealth
from .tgt import parse_targets

log = logging.getLogger(__name__)

SOCKET_DIR = "/var/run/tgtd"


class TgtdError(RuntimeError):
    pass


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number n (1-based) after failures in a row: doubling
    from `first` to `cap`; a run that lasted `stable` seconds resets the count."""
    first: float = 0.5
    cap: float = 30.0
    stable: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.cap, self.first * (2 ** max(0, failures - 1)))


def check_control(control: int) -> int:
    """tgtd's -C takes 0-32767 (a C short); 0 is the distribution's own tgtd
    (tgt.service), so netbootd's instance is 1-32767."""
    if isinstance(control, bool) or not isinstance(control, int) or not 0 < control <= 32767:
        raise TgtdError(f"tgtd control instance: {control!r} is not in 1-32767 "
                        "(0 is the system tgtd's)")
    return control


def _tgtadm(tgtadm: str, control: int, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([tgtadm, "-C", str(control), *args], capture_output=True, text=True,
                          timeout=timeout)


def answers(tgtadm: str, control: int, timeout: float = 5.0) -> bool:
    """Does a tgtd answer on control instance `control`?"""
    try:
        return _tgtadm(tgtadm, control, ["--op", "show", "--mode", "sys"], timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _health(tgtadm: str, control: int, ok_detail: str) -> ExportHealth:
    try:
        r = _tgtadm(tgtadm, control, ["--lld", "iscsi", "--op", "show", "--mode", "target"], 5.0)
    except (OSError, subprocess.TimeoutExpired) as e:
        return ExportHealth(False, f"tgtd -C {control}: {e}")
    if r.returncode != 0:
        return ExportHealth(False, f"tgtd -C {control}: not answering "
                                   f"({r.stderr.strip() or r.returncode})")
    n = len(parse_targets(r.stdout))
    return ExportHealth(True, f"tgtd -C {control}: {ok_detail}, {n} targets", n)


class TgtdSupervisor:
    """One tgtd that netbootd owns."""

    def __init__(self, control: int, portal: str, *, tgtd: str = "tgtd", tgtadm: str = "tgtadm",
                 wrap: Optional[list[str]] = None, log_path: Optional[str] = None,
                 on_restart: Optional[Callable[[], None]] = None,
                 backoff: Backoff = Backoff(), start_timeout: float = 10.0,
                 stop_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.control = check_control(control)
        self.portal = portal
        self.tgtd, self.tgtadm = tgtd, tgtadm
        self.wrap = list(wrap or [])
        self.log_path = log_path
        self.on_restart = on_restart
        self.backoff = backoff
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.clock = clock
        self.proc: Optional[subprocess.Popen] = None
        self.restarts = 0
        self.last_error = ""
        self._stopping = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def command(self) -> list[str]:
        return [*self.wrap, self.tgtd, "-f", "-C", str(self.control),
                "--iscsi", f"portal={self.portal}"]

    # -- start ---------------------------------------------------------------
    def _spawn(self) -> subprocess.Popen:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            # own session: a terminal's ^C does not reach it; stop() ends it
            return subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            raise TgtdError(f"cannot start {self.tgtd}: {e}") from None
        finally:
            if out is not subprocess.DEVNULL:
                out.close()

    def _start_once(self) -> subprocess.Popen:
        if answers(self.tgtadm, self.control):
            raise TgtdError(f"control instance {self.control} is already in use by another tgtd "
                            f"({SOCKET_DIR}/socket.{self.control}): choose another number, or "
                            "configure that tgtd as an existing one")
        proc = self._spawn()
        deadline = self.clock() + self.start_timeout
        while True:
            if answers(self.tgtadm, self.control):
                return proc
            rc = proc.poll()
            if rc is not None:
                raise TgtdError(f"tgtd -C {self.control} exited with {rc} at start "
                                f"(portal {self.portal} in use?)")
            if self.clock() >= deadline:
                self._kill(proc)
                raise TgtdError(f"tgtd -C {self.control} did not answer within "
                                f"{self.start_timeout:g} s")
            time.sleep(0.05)

    def start(self) -> None:
        """Start tgtd and the watcher; returns once tgtd answers tgtadm."""
        with self._lock:
            self._stopping.clear()
            self.proc = self._start_once()
        self._watcher = threading.Thread(target=self._watch, name=f"tgtd-{self.control}",
                                         daemon=True)
        self._watcher.start()

    # -- watch ---------------------------------------------------------------
    def _watch(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            proc = self.proc
            started = self.clock()
            if proc is not None:
                rc = proc.wait()
                if self._stopping.is_set():
                    return
                self.last_error = f"tgtd -C {self.control} exited with {rc}"
                log.warning("%s; restarting", self.last_error)
                if self.clock() - started >= self.backoff.stable:
                    failures = 0
            failures += 1
            if self._stopping.wait(self.backoff.delay(failures)):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.proc = self._start_once()
                except TgtdError as e:
                    self.last_error = str(e)
                    log.warning("%s", e)
                    self.proc = None
                    continue
            self.restarts += 1
            if self.on_restart is not None:
                try:
                    self.on_restart()
                except Exception as e:        # the next death or a health check shows it
                    self.last_error = f"rebuild after restart failed: {e}"
                    log.error("%s", self.last_error)

    # -- stop ----------------------------------------------------------------
    def _kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def _offline_and_empty(self, deadline: float) -> None:
        """No new logins, every target deleted (a busy one again until its commands
        drain), then the system: tgtd exits."""
        t = min(5.0, self.stop_timeout)
        _tgtadm(self.tgtadm, self.control, ["--op", "update", "--mode", "sys", "--name",
                                            "State", "-v", "offline"], t)
        while True:
            r = _tgtadm(self.tgtadm, self.control,
                        ["--lld", "iscsi", "--op", "show", "--mode", "target"], t)
            tids = parse_targets(r.stdout) if r.returncode == 0 else {}
            if not tids or self.clock() >= deadline:
                break
            for tid in tids:
                _tgtadm(self.tgtadm, self.control, ["--lld", "iscsi", "--op", "delete", "--force",
                                                    "--mode", "target", "--tid", str(tid)], t)
            time.sleep(0.1)
        _tgtadm(self.tgtadm, self.control, ["--op", "delete", "--mode", "system"], t)

    def stop(self) -> Optional[int]:
        """Offline, delete targets, delete the system, SIGKILL after the bound."""
        self._stopping.set()
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            deadline = self.clock() + self.stop_timeout
            try:
                self._offline_and_empty(deadline)
            except (OSError, subprocess.TimeoutExpired):
                pass
            try:
                proc.wait(max(0.1, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                self._kill(proc)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(5)
        if proc.poll() is not None and not answers(self.tgtadm, self.control):
            for leftover in (f"socket.{self.control}", f"socket.{self.control}.lock"):
                try:            # tgtd leaves both behind; they are ours (our N)
                    os.unlink(os.path.join(SOCKET_DIR, leftover))
                except OSError:
                    pass
        return proc.returncode

    def health(self) -> ExportHealth:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return ExportHealth(False, f"tgtd -C {self.control}: not running"
                                       + (f" ({self.last_error})" if self.last_error else ""))
        return _health(self.tgtadm, self.control, f"pid {proc.pid}, {self.restarts} restarts")


class ExternalTgtd:
    """A tgtd run by someone else: never started, stopped or restarted here."""

    def __init__(self, control: int, *, tgtadm: str = "tgtadm"):
        self.control = control
        self.tgtadm = tgtadm

    def start(self) -> None:
        if not answers(self.tgtadm, self.control):
            raise TgtdError(f"no tgtd answers on control instance {self.control} "
                            f"({SOCKET_DIR}/socket.{self.control})")

    def stop(self) -> None:
        return None

    def health(self) -> ExportHealth:
        return _health(self.tgtadm, self.control, "external")
