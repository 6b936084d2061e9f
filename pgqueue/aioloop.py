"""`async def` tasks in the worker: one asyncio event loop, in a thread of the worker process.

A task whose function is a coroutine function (`is_async_task`) is not given a slot
thread: the slots hand its job to this loop, which runs up to `limit` of them at once
(`Worker(async_concurrency=...)`, default 100), so thousands of I/O-bound jobs need one
thread, not thousands. Jobs over the limit wait for it in memory, claimed and leased like
jobs waiting for a slot thread, and the worker's claim counts these places as capacity
(`Worker.capacity`: slots plus places). The claim cannot tell a job's kind before it has
it, so a worker whose queues mix sync and async tasks may hold sync jobs in the places'
share, waiting for a slot (leased, never lost, but not available to other workers): give
async tasks queues of their own where that matters.

Why one worker process for sync and async tasks, rather than a separate pool: the jobs
share everything the process already holds per worker, not per job: its claim loop (one
round trip claims and finishes both kinds), its lease keeper (the held jobs of both kinds
are heartbeated by the same statement, so an async job's lease is kept, lost and rescued
exactly as a sync job's is), its listener, and its connections. A second pool would double
those for no gain: the loop never blocks the slot threads, nor they it. Process isolation
is for native code that can crash; a coroutine runs in the worker process whatever the
worker's isolation (a crash of the process loses nothing: its leases expire).

The same semantics as sync tasks, enforced the way asyncio allows (a coroutine, unlike a
thread, can be stopped at its next await):

- timeout: the coroutine runs under `asyncio.timeout` at the job's deadline; it sees
  `CancelledError` there, and the job fails "timed out" (then retries as any failure);
- cancel: the lease keeper marks the job's context (`JobContext.interrupt`) on a cancel
  request; a watcher of this loop cancels the coroutine (it sees `CancelledError`) within
  `WATCH_INTERVAL`, and the job is recorded cancelled;
- a lost lease, or a worker shutting down: the coroutine is cancelled the same way and
  the job recorded lost (rescued, or released, as a sync job is);
- a raised error: failed, retried per the task's policy, with its traceback as the error.

`pgqueue.current_job()` works inside the coroutine (each asyncio task has its own
context). A coroutine that blocks the loop (a sync `time.sleep`) delays every other async
job of the worker: use a sync task for blocking work.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pgqueue.context import CANCELLED, JobContext, set_current
from pgqueue.errors import JobCancelled, JobInterrupted, JobTimeout, PermanentFailure
from pgqueue.execution import Outcome, _format_error, succeeded, timed_out
from pgqueue.jobs import ClaimedJob, UndecodableArgs

if TYPE_CHECKING:
    from pgqueue.tasks import Task

log = logging.getLogger("pgqueue.worker")

DEFAULT_ASYNC_CONCURRENCY = 100
WATCH_INTERVAL = 0.2  # seconds between the watcher's looks for cancelled or lost jobs
SHUTDOWN_LOST = "worker shutting down"


def is_async_task(task: Task | None) -> bool:
    """Whether the task's function is a coroutine function (runs on the event loop)."""
    return task is not None and inspect.iscoroutinefunction(task.func)


async def execute_async(task: Task, job: ClaimedJob, context: JobContext) -> Outcome:
    """Run one async job here, under its deadline; never raises (a cancellation from the
    watcher becomes the job's outcome)."""
    if isinstance(job.args, UndecodableArgs):
        return Outcome("failed", f"args could not be decoded: {job.args.reason}",
                       retryable=False)
    set_current(context)  # this asyncio task's own context
    loop = asyncio.get_running_loop()
    when = None if context.deadline is None else loop.time() + (context.deadline - time.monotonic())
    scope = asyncio.timeout_at(when)
    try:
        async with scope:
            value = await task.func(**job.args)
    except asyncio.CancelledError:
        reason = context.stop_reason or SHUTDOWN_LOST
        if reason == CANCELLED:
            return Outcome("cancelled", "cancelled by request (its coroutine was cancelled)")
        return Outcome("lost", reason)
    except TimeoutError as error:
        if scope.expired():
            return timed_out(job, " (its coroutine was cancelled)")
        return _failed(task, error)
    except JobCancelled:
        return Outcome("cancelled", "cancelled by request")
    except JobTimeout:
        return timed_out(job)
    except JobInterrupted as error:
        return Outcome("lost", str(error))
    except BaseException as error:  # noqa: BLE001 - a task's failure is data, not a crash
        return _failed(task, error)
    if context.stop_reason == CANCELLED:
        return Outcome("cancelled", "cancelled by request")
    return succeeded(value)


def _failed(task: Task, error: BaseException) -> Outcome:
    retryable = not isinstance(error, PermanentFailure) and isinstance(error, task.retry_on)
    return Outcome("failed", _format_error(error), retryable=retryable)


Begin = Callable[[Any], bool]
Finish = Callable[[Any, Outcome], None]


class AsyncSlots:
    """The worker's event loop thread: runs submitted async jobs, `limit` at once.

    `begin(token)` is called when a job gets its place (False: the slots filed an outcome
    without running it: cancelled while waiting, the worker stopping); `finish(token,
    outcome)` when it ends. Both are called on the loop's thread.
    """

    def __init__(self, tasks: Mapping[str, Task], limit: int, *, begin: Begin, finish: Finish,
                 supervise: Callable[[str, Callable[[], None]], threading.Thread]) -> None:
        self.tasks = tasks
        self.limit = max(1, limit)
        self.begin = begin
        self.finish = finish
        self.supervise = supervise
        # Made in `start`: after process isolation's slot hosts are forked, which must not
        # inherit the loop's self-pipe.
        self.loop: asyncio.AbstractEventLoop | None = None
        self._places = asyncio.Semaphore(self.limit)
        self._running: dict[asyncio.Task[None], JobContext] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = self.supervise("async", lambda: self._run_loop(self._ready_loop()))

    def _ready_loop(self) -> asyncio.AbstractEventLoop:
        assert self.loop is not None, "AsyncSlots.start() first"
        return self.loop

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        watcher = loop.create_task(self._watch())
        try:
            loop.run_forever()
        finally:
            watcher.cancel()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=2))
            loop.close()

    def submit(self, jobs: list[tuple[Any, ClaimedJob, JobContext]]) -> None:
        """From any thread: run each (token, job, context) when a place is free. One
        hand-over (one wake-up of the loop) for a whole claim."""
        self._ready_loop().call_soon_threadsafe(self._spawn, jobs)

    def _spawn(self, jobs: list[tuple[Any, ClaimedJob, JobContext]]) -> None:
        loop = self._ready_loop()
        for token, job, context in jobs:
            task = loop.create_task(self._job(token, job, context))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _job(self, token: Any, job: ClaimedJob, context: JobContext) -> None:
        async with self._places:
            if not self.begin(token):
                return
            me = asyncio.current_task()
            assert me is not None
            self._running[me] = context
            try:
                outcome = await execute_async(self.tasks[job.task], job, context)
            finally:
                del self._running[me]
        self.finish(token, outcome)

    async def _watch(self) -> None:
        """Cancel the coroutines of jobs told to stop (a cancel request, a lost lease, the
        worker shutting down): a plain attribute their context carries, set by any thread."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            for task, context in list(self._running.items()):
                if context.stop_reason is not None and not task.cancelling():
                    log.info("job %s: cancelling its coroutine (%s)", context.id,
                             context.stop_reason, extra={"action": "async_cancel",
                                                         "job_id": context.id})
                    task.cancel(context.stop_reason)

    def running(self) -> int:
        return len(self._running)

    def close(self) -> None:
        """Stop the loop (its remaining coroutines are cancelled) and wait for the thread."""
        if self._closed or self.loop is None:
            return
        self._closed = True
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return  # already closed
        if self._thread is not None:
            self._thread.join(5)
