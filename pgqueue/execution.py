"""Running one job: in the worker's thread, or in a child process that can be killed.

`thread` isolation suits light, cooperative tasks (timeouts and cancellation are flags the
task checks with `current_job().check()`). `process` isolation is for native code that can
crash, hang or bloat (Tesseract, Poppler, spaCy): the job runs in a persistent child
process; the parent keeps the connection and the lease, kills the child on timeout or
cancellation, and records "killed by signal 11" as the job's error if it dies.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgqueue.context import JobContext, set_current
from pgqueue.db import mask_url
from pgqueue.errors import (
    JobCancelled,
    JobInterrupted,
    JobTimeout,
    PermanentFailure,
    UnknownTask,
)
from pgqueue.jobs import ClaimedJob

if TYPE_CHECKING:
    from pgqueue.queue import Queue

PR_SET_PDEATHSIG = 1
CHECK_INTERVAL = 0.2  # seconds between the parent's checks of a child's deadline and flags
MAX_ERROR_CHARS = 20_000


@dataclass(frozen=True)
class Outcome:
    state: str  # succeeded | failed | cancelled | lost
    error: str | None = None
    retryable: bool = True


def _format_error(error: BaseException) -> str:
    text = mask_url("".join(traceback.format_exception(error)))  # no password in job errors
    return text[-MAX_ERROR_CHARS:]


def execute(queue: Queue, job: ClaimedJob, context: JobContext) -> Outcome:
    """Run the job's function here and now; never raises."""
    token = set_current(context)
    try:
        task = queue.get_task(job.task)
        task.func(**job.args)
    except UnknownTask as error:
        return Outcome("failed", str(error), retryable=False)
    except JobCancelled:
        return Outcome("cancelled", "cancelled by request")
    except JobTimeout:
        return Outcome("failed", f"timed out after {job.timeout_seconds} s")
    except JobInterrupted as error:
        return Outcome("lost", str(error))
    except BaseException as error:  # noqa: BLE001 - a task's failure is data, not a crash
        retryable = True
        try:
            retryable = (not isinstance(error, PermanentFailure)
                         and isinstance(error, queue.get_task(job.task).retry_on))
        except UnknownTask:
            retryable = False
        return Outcome("failed", _format_error(error), retryable=retryable)
    finally:
        set_current(None)
        del token
    if context.stop_reason == "cancelled":
        return Outcome("cancelled", "cancelled by request")
    return Outcome("succeeded")


class ThreadRunner:
    """Runs jobs in the calling (slot) thread."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def run(self, job: ClaimedJob, context: JobContext) -> Outcome:
        return execute(self.queue, job, context)

    def close(self) -> None:
        pass


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies (say, by SIGKILL), so
    a job never outlives the worker that holds its lease."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass


def _child_main(queue: Queue, pipe: multiprocessing.connection.Connection, max_jobs: int,
                parent_pid: int) -> None:
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    # The parent decides when a job stops; a Ctrl-C to the process group must not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for _ in range(max_jobs):
        try:
            message = pipe.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        job = ClaimedJob(**message)
        context = JobContext(job.id, job.queue, job.task, job.attempt, job.max_attempts,
                             job.tag, job.group_id, job.origin_group_id, job.priority)
        outcome = execute(queue, job, context)
        pipe.send((outcome.state, outcome.error, outcome.retryable))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "worker process vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"worker process killed by signal {-code} ({name})"
    return f"worker process exited with status {code}"


class ProcessRunner:
    """One persistent child process, recycled after `max_jobs` jobs."""

    def __init__(self, queue: Queue, max_jobs: int = 1000) -> None:
        self.queue = queue
        self.max_jobs = max_jobs
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: multiprocessing.connection.Connection | None = None
        self._jobs = 0

    def _ensure_child(self) -> tuple[Any, multiprocessing.connection.Connection]:
        if self._process is None or not self._process.is_alive() or self._jobs >= self.max_jobs:
            self.close()
            parent_end, child_end = multiprocessing.Pipe()
            ctx = multiprocessing.get_context("fork")
            self._process = ctx.Process(target=_child_main, name="pgqueue-job",
                                        args=(self.queue, child_end, self.max_jobs, os.getpid()),
                                        daemon=True)
            self._process.start()
            child_end.close()
            self._pipe = parent_end
            self._jobs = 0
        assert self._pipe is not None
        return self._process, self._pipe

    def _kill(self) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.join(5)
        code = process.exitcode
        self._process = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        return code

    def run(self, job: ClaimedJob, context: JobContext) -> Outcome:
        process, pipe = self._ensure_child()
        self._jobs += 1
        fields = {name: getattr(job, name) for name in ClaimedJob.__dataclass_fields__}
        try:
            pipe.send(fields)
        except (BrokenPipeError, OSError):
            return Outcome("failed", describe_exit(self._kill()))
        while True:
            if context.deadline is not None and time.monotonic() > context.deadline:
                self._kill()
                return Outcome("failed", f"timed out after {job.timeout_seconds} s "
                                         "(worker process killed)")
            if context.stop_reason is not None:
                self._kill()
                if context.stop_reason == "cancelled":
                    return Outcome("cancelled", "cancelled by request (worker process killed)")
                return Outcome("lost", context.stop_reason)
            try:
                if pipe.poll(CHECK_INTERVAL):
                    state, error, retryable = pipe.recv()
                    return Outcome(state, error, retryable)
            except (EOFError, OSError):
                return Outcome("failed", describe_exit(self._kill()))
            if not process.is_alive() and not pipe.poll(0):
                return Outcome("failed", describe_exit(self._kill()))

    def close(self) -> None:
        if self._process is not None and self._process.is_alive() and self._pipe is not None:
            try:
                self._pipe.send(None)
            except OSError:
                pass
            self._process.join(2)
        self._kill()
