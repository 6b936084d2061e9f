"""A generic process-pool supervisor: keep N children per pool alive, stop them gently.

The supervisor knows nothing of queues. Each pool is a name and a size; each child runs
`target(WorkerSlot)` in its own process and exits with the integer it returns.

- A child that exits 0 (a worker recycled after N jobs) is replaced at once.
- A child that exits non-zero or dies from a signal is a crash: it is replaced after an
  exponential backoff per slot (`restart_backoff=(first, longest)`). Five crashes within
  60 s (configurable) is a crash loop: logged at ERROR with `action=crash_loop`, shown in
  `status()` and `health()`, and still retried at the longest backoff, because the cause
  (an unreachable database, a full disk) is often outside the worker and goes away.
- `resize()` grows pools at once and shrinks them by sending SIGTERM to the
  highest-numbered children, which finish their job first; busy children below the new
  size are left alone.
- Signals follow `pgqueue.signals`: a warm stop, then a cold one; SIGHUP calls `on_reload`.

The loop blocks in `multiprocessing.connection.wait` on one handle per child plus the
signal self-pipe, with a timeout that is the nearest of: a pending restart, the end of
the grace period, the next systemd watchdog ping. It never polls on a fixed sleep.
On Linux the handle is a pidfd, which signals the child's exit even when a grandchild
(a job process forked by the worker) still holds the child's inherited pipes open;
elsewhere it is the multiprocessing sentinel.

Children die with the supervisor. A SIGKILLed supervisor runs no cleanup, and its orphaned
workers would go on claiming jobs (a restarted one would then double them): on Linux each
child asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), a warm stop
that lets its job finish and gives the lease back, and exits at once if the parent died
before that request took effect.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from pgqueue import sdnotify
from pgqueue.signals import (
    RELOAD_SIGNAL,
    STOP_SIGNALS,
    SignalPipe,
    StopLevel,
    StopState,
    block_signals,
    reset_child_signals,
)

__all__ = ["PoolSpec", "Supervisor", "SupervisorEvent", "WorkerSlot", "pools_from_sizes"]

logger = logging.getLogger(__name__)

_WAKE = 0  # a byte on the signal pipe that is not a signal: "look at pending work"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_DEATH_SIGNAL = signal.SIGTERM  # a warm stop: the running job finishes


@dataclass(frozen=True)
class PoolSpec:
    """A pool: how many children named `name` to keep running."""

    name: str
    size: int

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a pool needs a name")
        if self.size < 0:
            raise ValueError(f"pool {self.name!r}: size must be >= 0, not {self.size}")


@dataclass(frozen=True)
class WorkerSlot:
    """What a child is told about itself: its pool, its place, how many ran before it."""

    pool: str
    index: int
    generation: int  # 0 for the first child in this slot, +1 for each replacement


@dataclass(frozen=True)
class SupervisorEvent:
    """Something the supervisor did or saw, for `on_event` (metrics, tests, logs).

    kind: started, exited, crashed, crash_loop, retired, killed, ready, reload, resized,
    stopping, stopped.
    """

    kind: str
    pool: str | None = None
    index: int | None = None
    pid: int | None = None
    exitcode: int | None = None
    delay: float | None = None


def pools_from_sizes(sizes: Mapping[str, int]) -> dict[str, PoolSpec]:
    """`{"ocr": 8}` -> `{"ocr": PoolSpec("ocr", 8)}`: the usual way to build pools."""
    return {name: PoolSpec(name, size) for name, size in sizes.items()}


@dataclass
class _Slot:
    pool: str
    index: int
    process: BaseProcess | None = None
    handle: int | None = None
    pidfd: int | None = None
    generation: int = 0
    started_at: float = 0.0
    restart_at: float | None = 0.0  # monotonic time to (re)start; None while running
    crash_times: deque[float] = field(default_factory=deque)
    consecutive_crashes: int = 0
    crash_loop: bool = False
    retiring: bool = False
    term_sent: bool = False
    last_exit: int | None = None


def die_with_parent(parent_pid: int, signum: int = PARENT_DEATH_SIGNAL) -> None:
    """Linux: have the kernel send `signum` to this process when its parent dies; exit now
    if it already has (this process was re-parented before the request took effect).

    The kernel watches the thread that forked this process: fork from a thread that lives
    as long as the supervisor (its loop's thread), as `Supervisor.run` does.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
                logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s",
                               os.strerror(ctypes.get_errno()), extra={"action": "pdeathsig"})
        except (OSError, AttributeError):  # no libc to load: the getppid check still holds
            pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _child_main(target: Callable[[WorkerSlot], int | None], slot: WorkerSlot,
                close_fds: tuple[int, ...], child_setup: Callable[[], None] | None,
                parent_pid: int) -> None:
    """Entry point of every child: die with the supervisor, shed its signal plumbing, run
    the target."""
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    reset_child_signals()  # first: a parent-death SIGTERM must find the default action
    die_with_parent(parent_pid)
    sdnotify.forget_environment()
    if child_setup is not None:
        child_setup()
    code = target(slot)
    sys.exit(code or 0)


class Supervisor:
    """Keeps pools of child processes running until told to stop."""

    def __init__(
        self,
        pools: Mapping[str, PoolSpec],
        target: Callable[[WorkerSlot], int | None],
        *,
        grace: float,
        restart_backoff: tuple[float, float] = (0.5, 30.0),
        crash_loop_threshold: int = 5,
        crash_loop_window: float = 60.0,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        on_reload: Callable[[], None] | None = None,
        child_setup: Callable[[], None] | None = None,
        start_method: str = "fork",
    ) -> None:
        """See the module docstring. `child_setup` runs first in each child: a forked child
        shares the parent's descriptors, so close what it must not hold there, such as
        the health server's listening socket (`HealthServer.close_in_child`)."""
        first, longest = restart_backoff
        if not 0 <= first <= longest:
            raise ValueError("restart_backoff must be (first, longest) with 0 <= first <= longest")
        if crash_loop_threshold < 1:
            raise ValueError("crash_loop_threshold must be >= 1")
        self._target = target
        self._grace = grace
        self._backoff = (first, longest)
        self._loop_threshold = crash_loop_threshold
        self._loop_window = crash_loop_window
        self._on_event = on_event
        self._on_reload = on_reload
        self._child_setup = child_setup
        # typeshed types get_context() as BaseContext, which lacks the Process attribute
        self._context: Any = multiprocessing.get_context(start_method)
        self._start_method = start_method
        self._lock = threading.RLock()
        self._pipe = SignalPipe()
        self._stop = StopState()
        self._state = "new"
        self._deadline: float | None = None
        self._killed = False
        self._specs: dict[str, PoolSpec] = {}
        self._slots: dict[str, list[_Slot]] = {}
        self._pending: dict[str, PoolSpec] | None = dict(pools)

    # -- public -------------------------------------------------------------------------

    def run(self) -> int:
        """Start the pools and supervise them until stopped.

        Returns 0 after a warm stop (even if stragglers had to be SIGKILLed after the grace
        period) and 1 after a cold stop. Installs signal handlers when called from the
        main thread; from another thread, stop it with `stop()`.
        """
        with self._lock:
            if self._state != "new":
                raise RuntimeError("a Supervisor runs once")
            self._state = "starting"
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread:
            self._pipe.install()
        try:
            return self._loop()
        finally:
            self._kill_all("supervisor exiting")
            self._reap_all_blocking()
            self._pipe.close()
            with self._lock:
                self._state = "stopped"
            self._emit(SupervisorEvent("stopped"))

    def stop(self, *, cold: bool = False) -> None:
        """Ask the loop to stop, as SIGTERM would (twice for `cold`); safe from any thread."""
        self._pipe.post(signal.SIGTERM)
        if cold:
            self._pipe.post(signal.SIGTERM)

    def resize(self, pools: Mapping[str, PoolSpec]) -> None:
        """Make the pools match `pools`; pools left out shrink to zero. Safe from any thread.

        Applied by the loop: growing starts children at once, shrinking sends SIGTERM to
        the highest-numbered children and lets them finish their job.
        """
        with self._lock:
            self._pending = dict(pools)
        self._pipe.post(_WAKE)

    def restart(self, pool: str) -> None:
        """Replace the pool's running children: each is asked to stop warm (SIGTERM: its
        jobs finish) and a new one starts as soon as it exits, as after a recycle (a
        reload whose new settings a child reads when it starts). Safe from any thread."""
        with self._lock:
            for slot in self._slots.get(pool, []):
                self._terminate(slot)

    def status(self) -> dict[str, Any]:
        """A JSON-ready picture of every pool and slot, crash loops included."""
        now = time.monotonic()
        with self._lock:
            pools: dict[str, Any] = {}
            loops: list[str] = []
            for name in sorted(set(self._specs) | set(self._slots)):
                slots = self._slots.get(name, [])
                rows = [self._slot_status(slot, now) for slot in slots]
                in_loop = [row["index"] for row in rows if row["crash_loop"]]
                loops.extend(f"{name}/{index}" for index in in_loop)
                spec = self._specs.get(name)
                pools[name] = {
                    "size": spec.size if spec else 0,
                    "alive": sum(1 for row in rows if row["alive"]),
                    "crash_loop": bool(in_loop),
                    "slots": rows,
                }
            return {
                "state": self._state,
                "stop": self._stop.level.name.lower(),
                "pools": pools,
                "crash_loops": loops,
            }

    def health(self) -> dict[str, Any]:
        """For /health: status 'ok' only while running with no crash loop."""
        current = self.status()
        if current["state"] != "running":
            verdict = current["state"]
        elif current["crash_loops"]:
            verdict = "crash_loop"
        else:
            verdict = "ok"
        return {
            "status": verdict,
            "crash_loops": current["crash_loops"],
            "workers": {name: pool["alive"] for name, pool in current["pools"].items()},
        }

    # -- the loop -----------------------------------------------------------------------

    def _loop(self) -> int:
        with self._lock:
            self._apply_pending(time.monotonic())
            self._start_due(time.monotonic())
            self._state = "running"
        sdnotify.ready()
        sdnotify.status(self._summary())
        self._emit(SupervisorEvent("ready"))
        logger.info("supervisor ready: %s", self._summary(), extra={"action": "ready"})

        interval = sdnotify.watchdog_interval()
        ping_every = interval / 2 if interval else None
        next_ping = time.monotonic()
        while True:
            now = time.monotonic()
            if ping_every is not None and now >= next_ping:
                sdnotify.watchdog()
                next_ping = now + ping_every
            with self._lock:
                if self._stop.level is not StopLevel.RUNNING and not self._live_slots():
                    break
                handles = [self._pipe.fileno()]
                handles.extend(slot.handle for slot in self._live_slots()
                               if slot.handle is not None)
                timeout = self._timeout(now, next_ping if ping_every is not None else None)
            ready = wait(handles, timeout)
            for signum in self._pipe.drain():
                self._on_signal(signum)
            now = time.monotonic()
            with self._lock:
                self._reap(ready, now)
                if self._stop.level is StopLevel.RUNNING:
                    self._apply_pending(now)
                    self._start_due(now)
                elif self._deadline is not None and now >= self._deadline and not self._killed:
                    self._kill_all("grace period over")
        return 0 if self._stop.level is StopLevel.WARM else 1

    def _timeout(self, now: float, next_ping: float | None) -> float | None:
        moments: list[float] = []
        if next_ping is not None:
            moments.append(next_ping)
        if self._stop.level is StopLevel.RUNNING:
            moments.extend(
                slot.restart_at
                for slots in self._slots.values()
                for slot in slots
                if slot.process is None and slot.restart_at is not None
            )
        elif self._deadline is not None and not self._killed:
            moments.append(self._deadline)
        if not moments:
            return None
        return max(0.0, min(moments) - now)

    def _on_signal(self, signum: int) -> None:
        if signum == _WAKE:
            return
        if signum == RELOAD_SIGNAL:
            self._reload()
            return
        if signum not in STOP_SIGNALS:
            return
        level = self._stop.escalate()
        with self._lock:
            if level is StopLevel.WARM:
                self._begin_warm_stop()
            else:
                self._state = "stopping"
                logger.warning("second stop signal: killing workers now",
                               extra={"action": "cold_stop"})
                self._kill_all("cold stop")

    def _reload(self) -> None:
        if self._stop.level is not StopLevel.RUNNING:
            return
        logger.info("SIGHUP: reloading", extra={"action": "reload"})
        self._emit(SupervisorEvent("reload"))
        if self._on_reload is None:
            return
        try:
            self._on_reload()
        except Exception:  # a bad new config must not take down running workers
            logger.exception("reload failed; keeping the current pools",
                             extra={"action": "reload_failed"})

    def _begin_warm_stop(self) -> None:
        self._state = "stopping"
        self._deadline = time.monotonic() + self._grace
        sdnotify.stopping()
        live = self._live_slots()
        logger.info("stopping: asking %d workers to finish within %.0f s", len(live),
                    self._grace, extra={"action": "warm_stop"})
        self._emit(SupervisorEvent("stopping"))
        for slot in live:
            self._terminate(slot)

    # -- children -----------------------------------------------------------------------

    def _live_slots(self) -> list[_Slot]:
        return [slot for slots in self._slots.values() for slot in slots
                if slot.process is not None]

    def _start_due(self, now: float) -> None:
        for slots in self._slots.values():
            for slot in slots:
                if (slot.process is None and not slot.retiring
                        and slot.restart_at is not None and slot.restart_at <= now):
                    self._start(slot, now)

    def _start(self, slot: _Slot, now: float) -> None:
        worker = WorkerSlot(slot.pool, slot.index, slot.generation)
        # a forked child shares every descriptor; a spawned one inherits none of these
        close_fds = self._pipe.fds() if self._start_method == "fork" else ()
        process = self._context.Process(
            target=_child_main,
            args=(self._target, worker, close_fds, self._child_setup, os.getpid()),
            name=f"pgqueue-{slot.pool}-{slot.index}",
        )
        with block_signals():
            process.start()
        pid = process.pid
        assert pid is not None
        slot.process = process
        slot.generation += 1
        slot.started_at = now
        slot.restart_at = None
        slot.term_sent = False
        slot.pidfd = _pidfd(pid)
        slot.handle = slot.pidfd if slot.pidfd is not None else process.sentinel
        logger.debug("started %s/%d pid %d", slot.pool, slot.index, pid,
                     extra={"action": "worker_started"})
        self._emit(SupervisorEvent("started", slot.pool, slot.index, pid))

    def _terminate(self, slot: _Slot) -> None:
        if slot.process is not None and slot.process.pid is not None and not slot.term_sent:
            slot.term_sent = True
            _send(slot.process.pid, signal.SIGTERM)

    def _kill_all(self, reason: str) -> None:
        with self._lock:
            self._killed = True
            for slot in self._live_slots():
                process = slot.process
                assert process is not None and process.pid is not None
                if process.exitcode is not None:
                    continue
                logger.warning("killing %s/%d pid %d: %s", slot.pool, slot.index, process.pid,
                               reason, extra={"action": "worker_killed"})
                _send(process.pid, signal.SIGKILL)
                self._emit(SupervisorEvent("killed", slot.pool, slot.index, process.pid))

    def _reap_all_blocking(self) -> None:
        with self._lock:
            for slot in self._live_slots():
                assert slot.process is not None
                slot.process.join()
                self._on_exit(slot, time.monotonic())

    def _reap(self, ready: list[Any], now: float) -> None:
        for slot in self._live_slots():
            if slot.handle not in ready:
                continue
            assert slot.process is not None
            if slot.process.exitcode is None:  # readable but not reaped yet: next round
                continue
            self._on_exit(slot, now)

    def _on_exit(self, slot: _Slot, now: float) -> None:
        process = slot.process
        assert process is not None
        code = process.exitcode
        pid = process.pid
        if slot.pidfd is not None:
            os.close(slot.pidfd)
        process.close()
        slot.process = slot.handle = slot.pidfd = None
        slot.last_exit = code
        if self._stop.level is not StopLevel.RUNNING:
            self._emit(SupervisorEvent("exited", slot.pool, slot.index, pid, code))
            return
        if slot.retiring:
            self._slots[slot.pool].remove(slot)
            if not self._slots[slot.pool] and slot.pool not in self._specs:
                del self._slots[slot.pool]
            logger.info("retired %s/%d (exit %s)", slot.pool, slot.index, code,
                        extra={"action": "worker_retired"})
            self._emit(SupervisorEvent("retired", slot.pool, slot.index, pid, code))
            return
        if code == 0 or slot.term_sent:
            # recycled, or stopped by us and wanted back (a shrink undone): not a crash
            slot.restart_at = now
            if code == 0:
                slot.consecutive_crashes = 0
                slot.crash_times.clear()
                slot.crash_loop = False
            self._emit(SupervisorEvent("exited", slot.pool, slot.index, pid, code))
            return
        self._record_crash(slot, pid, code, now)

    def _record_crash(self, slot: _Slot, pid: int | None, code: int | None, now: float) -> None:
        if now - slot.started_at >= self._loop_window:  # it ran well for a while: start over
            slot.consecutive_crashes = 0
            slot.crash_times.clear()
            slot.crash_loop = False
        slot.consecutive_crashes += 1
        slot.crash_times.append(now)
        while slot.crash_times and now - slot.crash_times[0] > self._loop_window:
            slot.crash_times.popleft()
        first, longest = self._backoff
        if len(slot.crash_times) >= self._loop_threshold:
            slot.crash_loop = True
        if slot.crash_loop:
            delay = longest
        else:
            delay = min(longest, first * 2 ** (slot.consecutive_crashes - 1))
        slot.restart_at = now + delay
        how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
        logger.warning("worker %s/%d pid %s crashed (%s); restarting in %.1f s", slot.pool,
                       slot.index, pid, how, delay, extra={"action": "worker_crashed"})
        self._emit(SupervisorEvent("crashed", slot.pool, slot.index, pid, code, delay))
        if slot.crash_loop:
            logger.error("worker %s/%d is crash-looping: %d crashes within %.0f s, last %s; "
                         "retrying every %.0f s", slot.pool, slot.index,
                         len(slot.crash_times), self._loop_window, how, longest,
                         extra={"action": "crash_loop"})
            self._emit(SupervisorEvent("crash_loop", slot.pool, slot.index, pid, code, delay))

    # -- pools --------------------------------------------------------------------------

    def _apply_pending(self, now: float) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        for name in set(self._slots) | set(pending):
            size = pending[name].size if name in pending else 0
            slots = self._slots.setdefault(name, [])
            taken = {slot.index for slot in slots}
            for slot in slots:
                if slot.index < size:
                    slot.retiring = False
            slots.extend(_Slot(name, index, restart_at=now)
                         for index in range(size) if index not in taken)
            slots.sort(key=lambda slot: slot.index)
            for slot in [slot for slot in slots if slot.index >= size]:
                if slot.process is None:
                    slots.remove(slot)
                else:
                    slot.retiring = True
                    self._terminate(slot)
            if not slots:
                del self._slots[name]
        changed = self._specs != pending
        self._specs = dict(pending)
        if changed and self._state != "starting":
            logger.info("pools resized: %s", self._summary(), extra={"action": "resized"})
            self._emit(SupervisorEvent("resized"))

    def _summary(self) -> str:
        return ", ".join(f"{name}={spec.size}" for name, spec in self._specs.items())

    def _slot_status(self, slot: _Slot, now: float) -> dict[str, Any]:
        alive = slot.process is not None
        recovered = alive and now - slot.started_at >= self._loop_window
        waiting = None if alive or slot.restart_at is None else max(0.0, slot.restart_at - now)
        return {
            "index": slot.index,
            "pid": slot.process.pid if slot.process is not None else None,
            "alive": alive,
            "starts": slot.generation,
            "recent_crashes": 0 if recovered else len(slot.crash_times),
            "crash_loop": slot.crash_loop and not recovered,
            "last_exit": slot.last_exit,
            "retiring": slot.retiring,
            "restart_in": waiting,
        }

    def _emit(self, event: SupervisorEvent) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:  # an observer's bug must not stop supervision
            logger.exception("on_event callback failed", extra={"action": "on_event_failed"})


def _pidfd(pid: int) -> int | None:
    """A pidfd for the child on Linux >= 5.3, else None (use the sentinel)."""
    opener: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

