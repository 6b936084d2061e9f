"""Every signal rule of pgqueue in one place: supervisor side and worker side.

Supervisor (one process, many children):

- first SIGTERM or SIGINT: warm stop. Stop restarting children, send them SIGTERM, wait up
  to the grace period for running jobs to finish, SIGKILL whatever is left, exit 0.
- second SIGTERM or SIGINT: cold stop. SIGKILL the children now.
- SIGHUP: reload (clerkd re-reads its configuration and resizes its pools).

Python runs signal handlers only between bytecodes of the main thread, so the supervisor's
handlers do nothing but write the signal number to a self-pipe; the supervisor's wait loop
(`multiprocessing.connection.wait` on child sentinels plus that pipe) wakes up and acts.

Worker (`pgqueue.worker.Worker`, through `install_stop_handlers`):

- first SIGTERM or SIGINT: warm stop. Claim nothing more; running jobs get the grace
  period to finish; claimed jobs not started, and jobs still running at the end of the
  grace, are given back at once (`release_jobs`: queued again, the attempt not counted).
- second: cold stop. Running jobs are told to stop (a process-isolated job's child is
  killed) and given back at once, without waiting for their leases to expire.

A plain process that holds no leases (the supervisor's test harness) can use
`install_worker_handlers` instead: the first signal sets an event, the second raises
`ColdStop`.

A supervised child ignores SIGINT and SIGHUP: Ctrl-C in a terminal reaches the whole
process group, and the supervisor already relays the stop as SIGTERM, so a child that also
counted the SIGINT would treat the relayed SIGTERM as a second, cold, stop.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "RELOAD_SIGNAL",
    "STOP_SIGNALS",
    "ColdStop",
    "SignalPipe",
    "StopLevel",
    "StopState",
    "block_signals",
    "install_stop_handlers",
    "install_worker_handlers",
    "reset_child_signals",
]

logger = logging.getLogger(__name__)

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP
SUPERVISOR_SIGNALS: tuple[signal.Signals, ...] = (*STOP_SIGNALS, RELOAD_SIGNAL)

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StopLevel(enum.IntEnum):
    """How hard a process has been asked to stop; each stop signal moves one step up."""

    RUNNING = 0
    WARM = 1
    COLD = 2


class StopState:
    """Counts stop requests: the first is warm, any later one is cold."""

    def __init__(self) -> None:
        self.level = StopLevel.RUNNING

    def escalate(self) -> StopLevel:
        """Record one more stop request and return the level it leads to."""
        self.level = StopLevel(min(self.level + 1, StopLevel.COLD))
        return self.level


class ColdStop(SystemExit):
    """Raised in a worker by its second stop signal: abandon the job, exit now.

    A SystemExit so that `except Exception` in task code cannot swallow it; the exit code
    is 128 + the signal number, as a shell would report it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class SignalPipe:
    """Turns supervisor signals into bytes on a pipe that a wait loop can select on.

    `install()` must run in the main thread (a rule of `signal.signal`). The write end is
    non-blocking: if a flood of signals fills the pipe the extra bytes are dropped, which
    is harmless because one byte per signal number is enough to act on it.
    """

    def __init__(self, signals: Iterable[signal.Signals] = SUPERVISOR_SIGNALS) -> None:
        self.signals = tuple(signals)
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._previous: dict[int, _Handler] = {}

    def fileno(self) -> int:
        """The read end, for `select` or `multiprocessing.connection.wait`."""
        return self._read_fd

    def fds(self) -> tuple[int, int]:
        """Both ends, so that a forked child can close its copies."""
        return self._read_fd, self._write_fd

    def install(self) -> None:
        """Route the signals to the pipe, remembering the handlers they replace."""
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        """Put back the handlers that `install()` replaced."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def post(self, signum: int) -> None:
        """Queue a signal number by hand: how another thread asks the loop to stop."""
        try:
            os.write(self._write_fd, bytes([signum]))
        except BlockingIOError:
            logger.warning("signal pipe full; dropped signal %s", signum,
                           extra={"action": "signal_dropped"})

    def drain(self) -> list[int]:
        """Return the signal numbers received since the last drain, oldest first."""
        received: list[int] = []
        while True:
            try:
                chunk = os.read(self._read_fd, 512)
            except BlockingIOError:
                return received
            if not chunk:
                return received
            received.extend(chunk)

    def close(self) -> None:
        """Restore handlers and close both ends; a forked child calls this on its copy."""
        self.restore()
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def close_in_child(self) -> None:
        """Close the inherited ends without touching handlers (the child resets those)."""
        self._previous.clear()
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.post(signum)

    def __enter__(self) -> SignalPipe:
        self.install()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


@contextmanager
def block_signals(signals: Iterable[signal.Signals] = SUPERVISOR_SIGNALS) -> Iterator[None]:
    """Hold the supervisor's signals pending across a fork.

    Between fork and `reset_child_signals()` a child still has the parent's handlers,
    which would write into the parent's self-pipe; with the signals blocked they wait
    until the child has put its own handlers in place (the mask survives fork and exec).
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(signals))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def reset_child_signals() -> None:
    """First thing in a supervised child: default SIGTERM, ignore SIGINT/SIGHUP, unblock.

    With SIG_DFL a plain child dies on the supervisor's SIGTERM; a worker that wants a
    warm stop calls `install_worker_handlers()` next.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)


def install_worker_handlers(stop_event: threading.Event,
                            signals: Iterable[signal.Signals] = STOP_SIGNALS) -> StopState:
    """Make the first stop signal set `stop_event` and the second raise `ColdStop`.

    Call from the worker's main thread. A signal that is already ignored (SIGINT in a
    supervised child, or under `nohup`) stays ignored, so one Ctrl-C is never counted
    twice. Returns the `StopState` so the caller can see how far the stop has gone.
    """
    state = StopState()

    def handle(signum: int, frame: FrameType | None) -> None:
        level = state.escalate()
        if level is StopLevel.WARM:
            logger.info("signal %s: finishing the current job, then stopping", signum,
                        extra={"action": "warm_stop"})
            stop_event.set()
            return
        logger.warning("signal %s again: stopping now", signum,
                       extra={"action": "cold_stop"})
        raise ColdStop(signum)

    for signum in signals:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue
        signal.signal(signum, handle)
    return state


def install_stop_handlers(on_stop: Callable[[int, StopLevel], None],
                          signals: Iterable[signal.Signals] = STOP_SIGNALS
                          ) -> Callable[[], None]:
    """The Worker's rule: the first stop signal calls `on_stop(signum, WARM)`, any later one
    `on_stop(signum, COLD)`. Returns a function that puts the previous handlers back.

    A handler runs in the main thread between bytecodes, possibly while that thread holds
    the lock inside `threading.Event.wait`; setting the same event there would deadlock.
    So the handler only starts a thread, which calls `on_stop`. A signal already ignored
    stays ignored: a supervised worker ignores SIGINT, since the supervisor relays a
    terminal's Ctrl-C as SIGTERM. Call from the main thread.
    """
    state = StopState()

    def handle(signum: int, frame: FrameType | None) -> None:
        level = state.escalate()
        threading.Thread(target=on_stop, args=(signum, level), name="pgqueue-signal",
                         daemon=True).start()

    previous: dict[signal.Signals, _Handler] = {}
    for signum in signals:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, handle)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return restore
