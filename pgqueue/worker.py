"""The worker: the claim loop and the slots. Everything else is a helper it starts.

Threads of one worker process, each named and supervised (if one dies, the worker stops
loudly rather than run without leases):

  main         this module's loop: record finished jobs and claim new ones in one round
               trip (`JobStore.finish_and_claim`), as many as `ClaimSizer` says; hand them
               to the slots; wait for a NOTIFY, a finished job, a deadline, the
               safety-net poll or the stop event
  slot-N       runs one job at a time (in-thread, or through its `SlotHost`'s child)
  leases       `pgqueue.leases`: heartbeats, cancellations, lost leases
  listener     `pgqueue.notify`: LISTEN, wakes the main loop
  maintenance  `pgqueue.maintenance`: rescue, prune, stale workers, on the elected leader

Connections: four per worker process (the loop's, the lease keeper's, the listener's and
maintenance's), whatever its concurrency, plus the pool of any task that enqueues or reads
through the Queue. Twelve single-slot clerkd workers hold about 50 of PostgreSQL's default
100; run more slots per process rather than more processes where that matters.
"""

from __future__ import annotations

import logging
import os
import queue as stdlib_queue
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue.claiming import ClaimSizer
from pgqueue.context import JobContext
from pgqueue.db import Outage
from pgqueue.errors import DatabaseUnavailable
from pgqueue.execution import Outcome, ProcessRunner, SlotHost, ThreadRunner, timed_out
from pgqueue.jobs import ClaimedJob
from pgqueue.leases import Leases
from pgqueue.maintenance import Maintenance
from pgqueue.notify import Listener
from pgqueue.retry import Backoff, decide
from pgqueue.signals import StopLevel, install_stop_handlers
from pgqueue.store import Final, JobStore, Retry

if TYPE_CHECKING:
    from pgqueue.tasks import Task

log = logging.getLogger("pgqueue.worker")

DEFAULT_LEASE_SECONDS = 30.0  # a dead worker's jobs come back within this
DEFAULT_POLL_INTERVAL = 5.0  # safety net for lost NOTIFYs (e.g. behind PgBouncer)
DEFAULT_SHUTDOWN_GRACE = 30.0
BURST_HORIZON_SECONDS = 60.0  # burst mode waits for retries due within this
BURST_RECHECK_SECONDS = 0.25
# Finished jobs wait at most this long to be recorded, so one round trip records a batch.
COALESCE_SECONDS = 0.02
RECONNECT_BACKOFF_MAX = 5.0


@dataclass(slots=True, eq=False)
class Held:
    """One claimed job, from its claim until its outcome is recorded."""

    job: ClaimedJob
    context: JobContext
    started: float = 0.0  # when a slot started it (time.monotonic)
    outcome: Outcome | None = None  # set once, by its slot or by the deadline
    seconds: float = 0.0


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    lost: int = 0
    timed_out: int = 0
    claim_round_trips: int = 0


class Worker:
    """One worker process's loop over some queues. Use `Queue.work()` or `Queue.worker()`.

    `concurrency` jobs run at once. Claimed jobs beyond the free slots wait in memory
    (leased, so never lost), as many as `pgqueue.claiming` sizes from measured round
    trips and run times: hundreds of short jobs per claim, one long job per free slot.
    `prefetch=N` caps that buffer (0: free slots only). Timeouts count from when a slot
    starts the job. `on_event(action, details)` reports "listening", "job_started" and
    "job_finished", for tests and dashboards.
    """

    def __init__(self, store: JobStore, tasks: Mapping[str, Task], queues: Sequence[str], *,
                 concurrency: int = 1, burst: bool = False, isolation: str = "thread",
                 lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
                 max_jobs: int | None = None, max_jobs_per_child: int = 1000,
                 prefetch: int | None = None, install_signals: bool | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if isolation not in ("thread", "process"):
            raise ValueError("isolation is 'thread' or 'process'")
        self.store = store
        self.tasks = tasks
        self.queues = list(queues)
        self.concurrency = max(1, concurrency)
        self.burst = burst
        self.isolation = isolation
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.max_jobs = max_jobs
        self.max_jobs_per_child = max_jobs_per_child
        self.install_signals = install_signals
        self.on_event = on_event
        self.worker_id: int | None = None
        self.stats = WorkerStats()
        self.sizer = ClaimSizer(self.concurrency, prefetch)
        self.outage = Outage(f"worker {os.getpid()}")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cold = threading.Event()
        self._exiting = threading.Event()
        self._fatal: str | None = None
        self._lock = threading.Lock()
        self._held: dict[int, Held] = {}  # claimed, outcome not yet recorded
        self._finished: list[Held] = []  # outcome known, not yet recorded
        self._timed: dict[int, Held] = {}  # started with a deadline (thread isolation)
        self._outstanding = 0  # claimed and not finished: running, or waiting in the inbox
        self._done_since_beat = 0
        self._inbox: stdlib_queue.SimpleQueue[Held | None] = stdlib_queue.SimpleQueue()
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_opened: float | None = None
        self._hosts: list[SlotHost] = []
        self._slot_threads: list[threading.Thread] = []
        self._threads: list[threading.Thread] = []
        self._started_jobs = 0
        self._last_trip = 0.0
        self._seen_empty = False  # the last claim got fewer jobs than it asked for
        self._nudged = True  # a NOTIFY (or the poll) since: worth asking again
        self._slot_names = 0
        self.leases = Leases(store, lease_seconds=lease_seconds, worker_id=lambda: self.worker_id,
                             held=self._held_contexts, take_done=self._take_done,
                             exiting=self._exiting, outage=self.outage)
        self.listener = Listener(store, self.queues, on_job=self._nudge,
                                 on_cancel=self.leases.beat_now.set, stop=self._stopping,
                                 outage=self.outage,
                                 on_listening=lambda: self._emit("listening"))
        self.maintenance = Maintenance(store, self._backoff, interval=max(1.0, lease_seconds / 2),
                                       stop=self._exiting, outage=self.outage)

    @property
    def listening(self) -> threading.Event:
        """Set once the listener's LISTENs are in place: a NOTIFY from now on wakes us."""
        return self.listener.listening

    # -- control --------------------------------------------------------------------------

    def stop(self, cold: bool = False) -> None:
        """Warm stop: claim nothing more, let running jobs finish. Cold: give them back now."""
        if cold:
            self._cold.set()
        self._stopping.set()
        self._wake.set()

    def _stop_from_signal(self, signum: int, level: StopLevel) -> None:
        if level is StopLevel.COLD:
            log.warning("second signal %s: cold stop", signum, extra={"action": "cold_stop"})
        else:
            log.info("signal %s: warm stop (grace %.1f s)", signum, self.shutdown_grace,
                     extra={"action": "warm_stop"})
        self.stop(cold=level is StopLevel.COLD)

    def _emit(self, action: str, **details: Any) -> None:
        if self.on_event is not None:
            self.on_event(action, details)

    def _nudge(self) -> None:
        self._nudged = True
        self._wake.set()

    def _backoff(self, task_name: str) -> Backoff:
        task = self.tasks.get(task_name)
        return task.retry_backoff if task is not None else Backoff()

    # -- what the helpers read ------------------------------------------------------------

    def _held_contexts(self) -> dict[int, JobContext]:
        with self._lock:
            return {job_id: held.context for job_id, held in self._held.items()
                    if held.outcome is None}

    def _take_done(self) -> int:
        with self._lock:
            done, self._done_since_beat = self._done_since_beat, 0
        return done

    # -- the database ---------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.store.connect(autocommit=True)
            self._conn_opened = time.monotonic()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None
        self._conn_opened = None

    def _register(self) -> None:
        self.worker_id = self.store.register_worker(
            self._connection(), host=socket.gethostname(), pid=os.getpid(), queues=self.queues,
            concurrency=self.concurrency, isolation=self.isolation)

    def _flush_and_claim(self, limit: int) -> list[ClaimedJob]:
        """Record finished jobs (final states and retries) and claim up to `limit`."""
        with self._lock:
            batch, self._finished = self._finished, []
        finals: list[Final] = []
        retries: list[Retry] = []
        for item in batch:
            outcome = item.outcome
            assert outcome is not None
            job = item.job
            if outcome.state == "lost":
                continue  # rescued elsewhere; the guard would discard it anyway
            if outcome.state == "failed":
                decision = decide(job.attempt, job.max_attempts, self._backoff(job.task),
                                  retryable=outcome.retryable)
                if decision.retry:
                    retries.append((job.id, job.attempt, decision.delay, outcome.error))
                    continue
            finals.append((job.id, job.attempt, outcome.state, outcome.error))
        started = time.monotonic()
        try:
            claimed = self.store.finish_and_claim(
                self._connection(), finals, retries, worker_id=self.worker_id,
                queues=self.queues, limit=limit, lease_seconds=self.lease_seconds)
        except DatabaseUnavailable:
            with self._lock:  # keep them; the next round trip after reconnecting records them
                self._finished[:0] = batch
            raise
        self._last_trip = time.monotonic()
        if limit > 0:
            self.stats.claim_round_trips += 1
            self.sizer.observe_round_trip(self._last_trip - started)
            self._seen_empty = len(claimed) < limit
        self._recorded(batch, retries)
        return claimed

    def _recorded(self, batch: list[Held], retries: list[Retry]) -> None:
        retried = {r[0]: r[2] for r in retries}
        with self._lock:
            for item in batch:
                self._held.pop(item.job.id, None)
            self._done_since_beat += len(batch)
        for item in batch:
            outcome = item.outcome
            assert outcome is not None
            self.sizer.observe_job(item.job.queue, item.seconds)
            if outcome.state == "lost":
                self.stats.lost += 1
                self._log_finish(item, outcome, "lost")
            elif item.job.id in retried:
                self.stats.retried += 1
                self._log_finish(item, outcome, f"retry in {retried[item.job.id]:.1f} s")
            else:
                setattr(self.stats, outcome.state, getattr(self.stats, outcome.state) + 1)
                self._log_finish(item, outcome, outcome.state)

    def _log_finish(self, item: Held, outcome: Outcome, result: str) -> None:
        job = item.job
        if self.on_event is not None:
            self._emit("job_finished", job=job, state=outcome.state, seconds=item.seconds,
                       error=outcome.error)
        level = logging.INFO if outcome.state == "succeeded" else logging.WARNING
        if not log.isEnabledFor(level):
            return
        error = "" if not outcome.error else (
            " error=" + outcome.error.strip().splitlines()[-1][:300])
        log.log(level, "job %s %s queue=%s task=%s tag=%s attempt=%s/%s %.3fs%s",
                job.id, result, job.queue, job.task, job.tag, job.attempt, job.max_attempts,
                item.seconds, error,
                extra={"action": "job_finished", "job_id": job.id, "queue": job.queue,
                       "task": job.task, "tag": job.tag, "result": outcome.state,
                       "duration": item.seconds})

    # -- slots ----------------------------------------------------------------------------

    def _start_slot(self, index: int) -> None:
        host = self._hosts[index] if self._hosts else None
        self._slot_names += 1
        thread = self._supervised(f"slot-{index}" if self._slot_names <= self.concurrency
                                  else f"slot-{index}-{self._slot_names}",
                                  lambda: self._slot_loop(host))
        self._slot_threads.append(thread)

    def _slot_loop(self, host: SlotHost | None) -> None:
        """Take the next job from the shared inbox, run it, report it; until told to stop
        (or until the deadline gave this thread's job up: a new thread took the slot)."""
        runner: ThreadRunner | ProcessRunner = (
            ProcessRunner(host, self.max_jobs_per_child) if host is not None
            else ThreadRunner(self.tasks))
        try:
            while True:
                item = self._inbox.get()
                if item is None:
                    return
                if self._stopping.is_set():
                    with self._lock:  # not started: given back to the queue at shutdown
                        self._outstanding -= 1
                    self._wake.set()
                    continue
                timeout = item.job.timeout_seconds
                item.started = time.monotonic()
                if timeout:
                    item.context.deadline = item.started + timeout
                    if host is None:
                        with self._lock:
                            self._timed[item.job.id] = item
                        self._wake.set()  # the main loop now waits no longer than the deadline
                outcome = runner.run(item.job, item.context)
                with self._lock:
                    abandoned = item.outcome is not None
                    if not abandoned:
                        item.outcome = outcome
                        item.seconds = time.monotonic() - item.started
                        self._finished.append(item)
                        self._outstanding -= 1
                        self._timed.pop(item.job.id, None)
                if abandoned:
                    log.warning("job %s returned %.0f s after its timeout; its result (%s) "
                                "is ignored", item.job.id, time.monotonic() - item.started
                                - (timeout or 0), outcome.state,
                                extra={"action": "late_return", "job_id": item.job.id})
                    return
                self._wake.set()
        finally:
            runner.close()

    def _enforce_deadlines(self) -> float | None:
        """Thread isolation: a job past its deadline is recorded failed ("timed out") and
        its thread abandoned (a thread cannot be killed); a new thread takes the slot.
        Returns the next deadline, if any."""
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
        for item in expired:
            self.stats.timed_out += 1
            log.warning("job %s is over its timeout of %s s: recorded failed, its thread "
                        "abandoned", item.job.id, item.job.timeout_seconds,
                        extra={"action": "timed_out", "job_id": item.job.id})
            self._start_slot(len(self._slot_threads) % self.concurrency)
        return upcoming

    def _dispatch(self, jobs: list[ClaimedJob]) -> None:
        info = log.isEnabledFor(logging.INFO)
        items = [Held(job, JobContext.for_job(job)) for job in jobs]
        with self._lock:
            for item in items:
                self._held[item.job.id] = item
            self._outstanding += len(items)
        self._started_jobs += len(items)
        self.stats.claimed += len(items)
        for item in items:
            job = item.job
            if info:
                log.info("job %s started queue=%s task=%s tag=%s attempt=%s", job.id, job.queue,
                         job.task, job.tag, job.attempt,
                         extra={"action": "job_started", "job_id": job.id, "queue": job.queue,
                                "task": job.task, "tag": job.tag})
            if self.on_event is not None:
                self._emit("job_started", job=job)
            self._inbox.put(item)

    # -- the loop -------------------------------------------------------------------------

    def _supervised(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def guard() -> None:
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - reported, then the worker stops
                self._fatal = f"{name} thread died: {error!r}"
                log.critical("%s; stopping the worker", self._fatal,
                             extra={"action": "thread_died"})
                self.stop(cold=True)
        thread = threading.Thread(target=guard, name=f"pgqueue-{name}", daemon=True)
        thread.start()
        return thread

    def run(self) -> int:
        """Run until stopped (or idle, with burst). Returns 0, or 1 after a fatal error."""
        install = self.install_signals
        if install is None:
            install = threading.current_thread() is threading.main_thread()
        restore = install_stop_handlers(self._stop_from_signal) if install else None
        try:
            return self._run()
        finally:
            if restore is not None:
                restore()

    def _claim_limit(self) -> int:
        """How many jobs to claim now (0: not worth a round trip yet)."""
        with self._lock:
            outstanding = self._outstanding
        want = self.sizer.target() - outstanding
        if self.max_jobs is not None:
            want = min(want, self.max_jobs - self._started_jobs)
        if want <= 0:
            return 0
        idle = self.concurrency - outstanding
        if idle > 0:
            # Slots are idle. With many slots and only a few idle while others are busy,
            # wait up to COALESCE_SECONDS for more to free up: one claim for a batch.
            if (idle < max(1, self.concurrency // 2) and outstanding > 0
                    and time.monotonic() - self._last_trip < COALESCE_SECONDS):
                return 0
            return want
        if self._seen_empty and not self._nudged:
            return 0  # the queue was empty a moment ago: top the buffer up on a NOTIFY
        return want if want >= max(1, self.sizer.buffer() // 2) else 0

    def _flush_due(self) -> bool:
        with self._lock:
            if not self._finished:
                return False
            pending, outstanding = len(self._finished), self._outstanding
        return (outstanding == 0 or pending >= max(1, self.concurrency // 2)
                or time.monotonic() - self._last_trip >= COALESCE_SECONDS)

    def _busy(self) -> bool:
        with self._lock:
            return self._outstanding > 0 or bool(self._finished)

    def _run(self) -> int:
        if self.isolation == "process":
            # Before any thread of ours exists: see pgqueue.execution.
            self._hosts = [SlotHost(self.tasks, self.max_jobs_per_child)
                           for _ in range(self.concurrency)]
        try:
            self._register()
            log.info("worker %s started: queues=%s concurrency=%s isolation=%s",
                     self.worker_id, ",".join(self.queues), self.concurrency, self.isolation,
                     extra={"action": "worker_started"})
            for index in range(self.concurrency):
                self._start_slot(index)
            self._threads = [self._supervised("leases", self.leases.run),
                             self._supervised("listener", self.listener.run),
                             self._supervised("maintenance", self.maintenance.run)]
            self._loop()
            self._shutdown()
        finally:
            for host in self._hosts:
                host.close()
        return 1 if self._fatal else 0

    def _loop(self) -> None:
        backoff = 0.2
        stop_deadline: float | None = None
        while True:
            try:
                # Cleared before looking, so a slot finishing from here on wakes the wait
                # below (clearing after the round trip lost such wake-ups: a 5 s stall).
                self._wake.clear()
                if self._stopping.is_set():
                    self._flush_and_claim(0)
                    if stop_deadline is None:
                        stop_deadline = time.monotonic() + self.shutdown_grace
                    if not self._busy() or self._cold.is_set() or time.monotonic() > stop_deadline:
                        return
                    self._wake.wait(0.1)
                    continue
                next_deadline = self._enforce_deadlines()
                limit = self._claim_limit()
                if limit > 0 or self._flush_due():
                    self._nudged = False
                    jobs = self._flush_and_claim(limit)
                    self._dispatch(jobs)
                    self.outage.reached(self._conn_opened)
                    if jobs:
                        continue
                    if limit > 0 and self._finished_everything():
                        return
                wait = self._wait_seconds(next_deadline)
                if not self._wake.wait(wait):
                    self._nudged = True  # the safety-net poll: ask again
                backoff = 0.2
            except DatabaseUnavailable as error:
                self.outage.failed(error, self._conn_opened)
                self._drop_connection()
                if self._stopping.wait(backoff) and self._cold.is_set():
                    return
                backoff = min(RECONNECT_BACKOFF_MAX, backoff * 2)

    def _finished_everything(self) -> bool:
        """After a claim that found nothing: recycled (max_jobs), or burst mode and idle."""
        if self._busy():
            return False
        if self.max_jobs is not None and self._started_jobs >= self.max_jobs:
            log.info("worker %s recycled after %s jobs", self.worker_id, self._started_jobs,
                     extra={"action": "recycle"})
            return True
        return self.burst and self.store.idle_everywhere(
            self._connection(), self.queues, BURST_HORIZON_SECONDS)

    def _wait_seconds(self, next_deadline: float | None) -> float:
        wait = min(self.poll_interval, BURST_RECHECK_SECONDS) if self.burst else self.poll_interval
        with self._lock:
            if self._finished:
                wait = min(wait, COALESCE_SECONDS)
        if next_deadline is not None:
            wait = min(wait, max(0.0, next_deadline - time.monotonic()) + 0.001)
        return wait

    def _shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            unfinished = [held for held in self._held.values() if held.outcome is None]
        for held in unfinished:
            held.context.interrupt("worker shutting down")
        for _ in self._slot_threads:
            self._inbox.put(None)
        try:
            self._flush_and_claim(0)
            if unfinished:
                released = self.store.release(self._connection(), worker_id=self.worker_id,
                                              ids=[held.job.id for held in unfinished])
                log.info("worker %s gave back %s unfinished jobs", self.worker_id, released,
                         extra={"action": "released"})
            self.store.stop_worker(self._connection(), worker_id=self.worker_id)
        except DatabaseUnavailable as error:
            log.warning("worker %s: could not record shutdown (%s); leases will expire",
                        self.worker_id, error, extra={"action": "shutdown_unrecorded"})
        for thread in self._slot_threads:
            thread.join(2)
        self._exiting.set()
        self.leases.beat_now.set()
        for thread in self._threads:
            thread.join(5)
        self._drop_connection()
        log.info("worker %s stopped: %s", self.worker_id, self.stats,
                 extra={"action": "worker_stopped"})
