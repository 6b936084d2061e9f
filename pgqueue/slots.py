"""The slots: the jobs one worker holds, and the threads that run them.

A claimed job is `Held` from its claim until its outcome is recorded. It waits in the
shared inbox (leased, so never lost) until a slot thread takes it, runs it (in-thread, or
in a child of the slot's `SlotHost`), and files its outcome under `finished`, where the
worker's loop picks it up to record in its next round trip.

Thread isolation cannot kill a job: one past its deadline is filed as failed ("timed
out") by `enforce_deadlines`, its thread abandoned (when the task returns, its result is
ignored and the thread ends), and a new thread takes the slot.
"""

from __future__ import annotations

import logging
import os
import queue as stdlib_queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgqueue.aioloop import AsyncSlots, is_async_task
from pgqueue.context import CANCELLED, JobContext
from pgqueue.execution import Outcome, ProcessRunner, SlotHost, ThreadRunner, timed_out
from pgqueue.jobs import ClaimedJob

if TYPE_CHECKING:
    from pgqueue.tasks import Task

log = logging.getLogger("pgqueue.worker")

Supervise = Callable[[str, Callable[[], None]], threading.Thread]


@dataclass(slots=True, eq=False)
class Held:
    """One claimed job, from its claim until its outcome is recorded."""

    job: ClaimedJob
    context: JobContext
    started: float = 0.0  # when a slot started it (time.monotonic)
    outcome: Outcome | None = None  # set once, by its slot or by the deadline
    seconds: float = 0.0


class Slots:
    def __init__(self, concurrency: int, tasks: Mapping[str, Task], *,
                 hosts: list[SlotHost], max_jobs_per_child: int, wake: threading.Event,
                 stopping: threading.Event, supervise: Supervise,
                 async_concurrency: int = 0) -> None:
        self.concurrency = concurrency
        self.tasks = tasks
        self.hosts = hosts
        self.max_jobs_per_child = max_jobs_per_child
        self.wake = wake  # set when a job finishes: the loop records it and claims more
        self.stopping = stopping
        self.supervise = supervise
        self._lock = threading.Lock()
        self._held: dict[int, Held] = {}  # claimed, outcome not yet recorded (newest attempt)
        # A job re-claimed while this worker still runs an older attempt of it (the worker
        # was frozen past its lease, the job rescued): the new attempt waits here for the
        # old one, takes its success if it succeeded, runs otherwise. Never both at once.
        self._deferred: dict[int, Held] = {}
        self._finished: list[Held] = []  # outcome known, not yet recorded
        self._timed: dict[int, Held] = {}  # started with a deadline (thread isolation)
        self._outstanding = 0  # claimed and not finished: running, or waiting in the inbox
        # When a finished job wakes the loop (see _run): the loop keeps these current.
        self.flush_at = max(1, (concurrency + async_concurrency) // 2)  # a batch to record
        self.refill_below = 1 << 30  # until the loop says: every job
        self._done_since_beat = 0
        self._inbox: stdlib_queue.SimpleQueue[Held | None] = stdlib_queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        # `async def` tasks run on one event loop, `async_concurrency` at once (pgqueue.aioloop)
        self.aio = AsyncSlots(tasks, async_concurrency, begin=self._begin_async,
                              finish=self._finish_async, supervise=supervise
                              ) if async_concurrency > 0 else None

    # -- the loop's side ------------------------------------------------------------------

    def start(self) -> None:
        for index in range(self.concurrency):
            self._start(index)
        if self.aio is not None:
            self.aio.start()

    def hand_out(self, jobs: list[ClaimedJob]) -> None:
        items = [Held(job, JobContext.for_job(job)) for job in jobs]
        ready: list[Held] = []
        with self._lock:
            for item in items:
                older = self._held.get(item.job.id)
                if older is not None and older.outcome is None:
                    self._deferred[item.job.id] = item
                    log.warning("job %s re-claimed (attempt %s) while attempt %s still runs "
                                "here: it waits for that run", item.job.id, item.job.attempt,
                                older.job.attempt,
                                extra={"action": "reclaimed_own", "job_id": item.job.id})
                else:
                    ready.append(item)
                self._held[item.job.id] = item
            self._outstanding += len(items)
        self._ready_all(ready)

    def _ready(self, item: Held) -> None:
        self._ready_all([item])

    def _ready_all(self, items: list[Held]) -> None:
        """To the event loop (async tasks' jobs, in one hand-over) or the slot threads'
        inbox."""
        coroutines = []
        for item in items:
            if self.aio is not None and is_async_task(self.tasks.get(item.job.task)):
                coroutines.append((item, item.job, item.context))
            else:
                self._inbox.put(item)
        if coroutines and self.aio is not None:
            self.aio.submit(coroutines)

    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding

    def finished_count(self) -> int:
        with self._lock:
            return len(self._finished)

    def busy(self) -> bool:
        with self._lock:
            return self._outstanding > 0 or bool(self._finished)

    def take_finished(self) -> list[Held]:
        with self._lock:
            batch, self._finished = self._finished, []
        return batch

    def put_back(self, batch: list[Held]) -> None:
        """Not recorded (the database was away): recorded by the next round trip."""
        with self._lock:
            self._finished[:0] = batch

    def forget(self, batch: list[Held]) -> None:
        """Recorded: no longer held."""
        with self._lock:
            for item in batch:
                if self._held.get(item.job.id) is item:  # not a newer attempt of the job
                    del self._held[item.job.id]
            self._done_since_beat += len(batch)

    def unfinished(self) -> list[Held]:
        with self._lock:
            return [held for held in self._held.values() if held.outcome is None]

    # -- the lease keeper's side ----------------------------------------------------------

    def contexts(self) -> dict[int, JobContext]:
        """The jobs whose leases to extend: held, outcome not yet known."""
        with self._lock:
            return {job_id: held.context for job_id, held in self._held.items()
                    if held.outcome is None}

    def take_done(self) -> int:
        with self._lock:
            done, self._done_since_beat = self._done_since_beat, 0
        return done

    # -- the threads ----------------------------------------------------------------------

    def _start(self, index: int) -> None:
        host = self.hosts[index] if self.hosts else None
        name = f"slot-{index}" if len(self._threads) < self.concurrency else \
            f"slot-{index}-{len(self._threads)}"
        self._threads.append(self.supervise(name, lambda: self._run(host)))

    def _run(self, host: SlotHost | None) -> None:
        """Take the next job from the shared inbox, run it, file it; until told to stop
        (or until the deadline gave this thread's job up: a new thread took the slot)."""
        runner: ThreadRunner | ProcessRunner = (
            ProcessRunner(host, self.max_jobs_per_child) if host is not None
            else ThreadRunner(self.tasks))
        try:
            while True:
                item = self._inbox.get()
                if item is None:
                    return
                if self.stopping.is_set():
                    with self._lock:  # not started: given back to the queue at shutdown
                        self._outstanding -= 1
                    self.wake.set()
                    continue
                if item.job.task not in self.tasks:
                    self._file(item, self._unknown(item.job))
                    continue
                reason = item.context.stop_reason
                if reason is not None:  # its lease was lost (or it was cancelled) while it
                    self._file(item, Outcome(  # waited in the buffer: it must not start
                        "cancelled" if reason == CANCELLED else "lost",
                        "cancelled by request" if reason == CANCELLED else reason))
                    continue
                timeout = item.job.timeout_seconds
                item.started = time.monotonic()
                if timeout:
                    item.context.deadline = item.started + timeout
                    if host is None:
                        with self._lock:
                            self._timed[item.job.id] = item
                        self.wake.set()  # the loop now waits no longer than the deadline
                outcome = runner.run(item.job, item.context)
                follow: Held | None = None
                with self._lock:
                    abandoned = item.outcome is not None
                    if not abandoned:
                        item.outcome = outcome
                        item.seconds = time.monotonic() - item.started
                        self._finished.append(item)
                        self._outstanding -= 1
                        self._timed.pop(item.job.id, None)
                        follow = self._settle(item)
                    # The loop acts on a first outcome (its coalescing timer starts), on a
                    # batch worth a round trip, and when the held jobs run low; waking it for
                    # every job cost two thread switches a job.
                    wanted = (len(self._finished) in (1, self.flush_at)
                              or self._outstanding < self.refill_below)
                if follow is not None:
                    self._ready(follow)
                if abandoned:
                    log.warning("job %s returned %.0f s after its timeout; its result (%s) "
                                "is ignored", item.job.id, time.monotonic() - item.started
                                - (timeout or 0), outcome.state,
                                extra={"action": "late_return", "job_id": item.job.id})
                    return
                if wanted:
                    self.wake.set()
        finally:
            runner.close()

    def _file(self, item: Held, outcome: Outcome) -> None:
        """An outcome known without running the job."""
        with self._lock:
            item.outcome = outcome
            self._finished.append(item)
            self._outstanding -= 1
            follow = self._settle(item)
        if follow is not None:
            self._ready(follow)
        self.wake.set()

    # -- the event loop's side (async tasks) ----------------------------------------------

    def _begin_async(self, item: Held) -> bool:
        """An async job got its place on the loop: start it (True), or file why not."""
        if self.stopping.is_set():
            with self._lock:  # not started: given back to the queue at shutdown
                self._outstanding -= 1
            self.wake.set()
            return False
        reason = item.context.stop_reason
        if reason is not None:  # cancelled, or its lease lost, while it waited
            self._file(item, Outcome("cancelled" if reason == CANCELLED else "lost",
                                     "cancelled by request" if reason == CANCELLED else reason))
            return False
        item.started = time.monotonic()
        if item.job.timeout_seconds:  # enforced by the loop: the coroutine is cancelled
            item.context.deadline = item.started + item.job.timeout_seconds
        return True

    def _finish_async(self, item: Held, outcome: Outcome) -> None:
        with self._lock:
            item.outcome = outcome
            item.seconds = time.monotonic() - item.started
            self._finished.append(item)
            self._outstanding -= 1
            follow = self._settle(item)
        if follow is not None:
            self._ready(follow)
        self.wake.set()

    def _settle(self, item: Held) -> Held | None:
        """`item`'s outcome is known: a newer attempt of its job waiting for it takes its
        success (the job ran once, to the end), or, after any other outcome, is returned to
        be run. Called with the lock held."""
        newer = self._deferred.get(item.job.id)
        if newer is None or newer is item:
            return None
        del self._deferred[item.job.id]
        assert item.outcome is not None
        if item.outcome.state != "succeeded":
            return newer
        newer.outcome = item.outcome
        newer.seconds = item.seconds
        self._finished.append(newer)
        self._outstanding -= 1
        item.outcome = Outcome("lost", f"superseded by attempt {newer.job.attempt}, which "
                               "records this run's success")
        return None

    @staticmethod
    def _unknown(job: ClaimedJob) -> Outcome:
        """A task this worker does not know, maybe not yet (a rolling upgrade): the job
        goes back to the queue for a worker that knows it, a bounded number of times
        (`JobStore.give_back_unknown`); the attempt is not counted."""
        log.warning("job %s: no task named %r is registered on this worker; giving it back "
                    "for a worker that knows it (attempt not counted)", job.id, job.task,
                    extra={"action": "unknown_task", "job_id": job.id, "task": job.task})
        return Outcome("returned", f"no task named {job.task!r} is registered on the worker "
                       f"that claimed it (pid {os.getpid()})", retryable=False)

    def enforce_deadlines(self) -> float | None:
        """Thread isolation: file jobs past their deadline as timed out, give their slots
        new threads. Returns the next deadline, if any."""
        if not self._timed:
            return None
        now = time.monotonic()
        expired: list[Held] = []
        upcoming: float | None = None
        with self._lock:
            for item in list(self._timed.values()):
                deadline = item.context.deadline
                assert deadline is not None
                if deadline <= now:
                    item.outcome = timed_out(item.job, " (the job's thread was abandoned)")
                    item.seconds = now - item.started
                    self._finished.append(item)
                    self._outstanding -= 1
                    del self._timed[item.job.id]
                    expired.append(item)
                elif upcoming is None or deadline < upcoming:
                    upcoming = deadline
        follows: list[Held] = []
        with self._lock:
            for item in expired:
                follow = self._settle(item)
                if follow is not None:
                    follows.append(follow)
        for follow in follows:
            self._ready(follow)
        for item in expired:
            log.warning("job %s is over its timeout of %s s: recorded failed, its thread "
                        "abandoned", item.job.id, item.job.timeout_seconds,
                        extra={"action": "timed_out", "job_id": item.job.id})
            self._start(len(self._threads) % self.concurrency)
        return upcoming

    def close(self) -> None:
        """Tell every thread to end once its job is done; wait a little for them."""
        if self.aio is not None:
            self.aio.close()
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join(2)
