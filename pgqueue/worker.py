"""The worker: the claim loop and the slots. Everything else is a helper it starts.

Threads of one worker process, each named and supervised (if one dies, the worker stops
loudly rather than run without leases):

  main         this module's loop: record finished jobs and claim new ones in one round
               trip (`JobStore.finish_and_claim`), as many as `ClaimSizer` says; hand them
               to the slots; wait for a NOTIFY, a finished job, a deadline, the
               safety-net poll or the stop event
  slot-N       `pgqueue.slots`: runs one job at a time (in-thread, or through its
               `SlotHost`'s child)
  async        `pgqueue.aioloop`: one event loop for the jobs of `async def` tasks,
               `async_concurrency` at once (only when such a task is registered)
  leases       `pgqueue.leases`: heartbeats, cancellations, lost leases
  listener     `pgqueue.notify`: LISTEN, wakes the main loop
  maintenance  `pgqueue.maintenance`: rescue, prune, stale workers, on the elected leader

Connections: a fixed number per worker process, whatever its concurrency
(`pgqueue.connections`): the loop's, the lease keeper's, the listener's and, on the
maintenance leader only, maintenance's (the others hold none between their tries for the
lock), the process's pool (at most `pool_size`, for in-thread tasks that enqueue or
read), and, with process isolation, at most `job_connections` for the job children,
which open one per job and only while it runs.
Run more slots per process rather than more processes: 16 slots cost what 1 slot does.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue import connections
from pgqueue.aioloop import DEFAULT_ASYNC_CONCURRENCY, is_async_task
from pgqueue.claiming import ClaimSizer
from pgqueue.db import Outage
from pgqueue.errors import DatabaseUnavailable
from pgqueue.execution import Outcome, SlotHost
from pgqueue.jobs import ClaimedJob
from pgqueue.leases import Leases
from pgqueue.maintenance import Maintenance
from pgqueue.notify import Listener
from pgqueue.retry import Backoff, decide
from pgqueue.signals import StopLevel, install_stop_handlers
from pgqueue.slots import Held, Slots
from pgqueue.store import Final, JobStore, Retry

if TYPE_CHECKING:
    from pgqueue.periodic import Schedule
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


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    lost: int = 0
    returned: int = 0  # jobs of tasks this worker does not know, given back
    timed_out: int = 0
    claim_round_trips: int = 0

    def summary(self) -> str:
        """For the log: `33 jobs (31 ok, 2 failed)`, only the outcomes that happened."""
        outcomes = [(self.succeeded, "ok"), (self.failed, "failed"), (self.retried, "retried"),
                    (self.cancelled, "cancelled"), (self.lost, "lost"),
                    (self.returned, "given back")]
        done = sum(n for n, _ in outcomes)
        parts = [f"{n} {label}" for n, label in outcomes if n]
        if self.timed_out:
            parts.append(f"{self.timed_out} of them timed out")
        return f"{done} job{'' if done == 1 else 's'}" + (f" ({', '.join(parts)})" if parts else "")


class Worker:
    """One worker process's loop over some queues. Use `Queue.work()` or `Queue.worker()`.

    `concurrency` jobs run at once, and besides them up to `async_concurrency` jobs of
    `async def` tasks on one event loop (`pgqueue.aioloop`). Claimed jobs beyond the free
    slots wait in memory (leased, so never lost), as many as `pgqueue.claiming` sizes from measured round
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
                 on_event: Callable[[str, dict[str, Any]], None] | None = None,
                 job_connections: int = connections.JOB_CONNECTIONS,
                 schedules: Sequence[Schedule] = (),
                 async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if isolation not in ("thread", "process"):
            raise ValueError("isolation is 'thread' or 'process'")
        self.store = store
        self.tasks = tasks
        self.queues = list(queues)
        self.concurrency = max(1, concurrency)
        if async_concurrency < 1:
            raise ValueError("async_concurrency is at least 1")
        # Places for async jobs exist only if an `async def` task of these queues is
        # registered; the claim counts them with the slots (`capacity`), so it sizes
        # batches for both kinds (a worker of sync queues claims for its slots alone).
        self.async_concurrency = (async_concurrency if any(
            is_async_task(task) for task in tasks.values() if task.queue in queues) else 0)
        self.capacity = self.concurrency + self.async_concurrency
        self.burst = burst
        self.isolation = isolation
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.max_jobs = max_jobs
        self.max_jobs_per_child = max_jobs_per_child
        self.install_signals = install_signals
        self.on_event = on_event
        self.job_connections = max(1, job_connections)
        self.worker_id: int | None = None
        self.stats = WorkerStats()
        self.sizer = ClaimSizer(self.capacity, prefetch)
        self.outage = Outage(f"worker {os.getpid()}")
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cold = threading.Event()
        self._exiting = threading.Event()
        self._fatal: str | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_opened: float | None = None
        self._hosts: list[SlotHost] = []
        self._threads: list[threading.Thread] = []
        self._started_jobs = 0
        self.threads_at_fork = 0  # process isolation: threads alive when the hosts forked
        self._last_trip = 0.0
        self._seen_empty = False  # the last claim got fewer jobs than it asked for
        self._nudged = True  # a NOTIFY (or the poll) since: worth asking again
        self.slots = Slots(self.concurrency, tasks, hosts=self._hosts,
                           max_jobs_per_child=max_jobs_per_child, wake=self._wake,
                           stopping=self._stopping, supervise=self._supervised,
                           async_concurrency=self.async_concurrency)
        self.leases = Leases(store, lease_seconds=lease_seconds, worker_id=lambda: self.worker_id,
                             held=self.slots.contexts, take_done=self.slots.take_done,
                             exiting=self._exiting, outage=self.outage)
        self.listener = Listener(store, self.queues, on_job=self._nudge,
                                 on_cancel=self.leases.beat_now.set, stop=self._stopping,
                                 outage=self.outage,
                                 on_listening=lambda: self._emit("listening"))
        self.maintenance = Maintenance(store, self._backoff, interval=max(1.0, lease_seconds / 2),
                                       stop=self._exiting, outage=self.outage,
                                       schedules=schedules)

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

    # -- the database ---------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.store.connect(autocommit=True, role=connections.WORK)
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
        batch = self.slots.take_finished()
        finals: list[Final] = []
        retries: list[Retry] = []
        results: dict[int, str] = {}
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
            if outcome.result is not None:
                results[job.id] = outcome.result
        # Jobs beyond the free slots wait in memory; they are claimed only at the best
        # priority in hand, so no backlog runs ahead of what a held job enqueues next.
        held = [item.job.priority for item in self.slots.unfinished()]
        free = max(0, self.capacity - self.slots.outstanding())
        started = time.monotonic()
        try:
            claimed = self.store.finish_and_claim(
                self._connection(), finals, retries, worker_id=self.worker_id,
                queues=self.queues, limit=limit, lease_seconds=self.lease_seconds,
                free=free, floor=max(held) if held else None,
                buffered=self.sizer.buffered_queues(), results=results)
        except DatabaseUnavailable:
            self.slots.put_back(batch)
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
        self.slots.forget(batch)
        for item in batch:
            outcome = item.outcome
            assert outcome is not None
            self.sizer.observe_job(item.job.queue, item.seconds)
            if outcome.error is not None and outcome.error.startswith("timed out"):
                self.stats.timed_out += 1
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

    def _dispatch(self, jobs: list[ClaimedJob]) -> None:
        if not jobs:
            return
        info = log.isEnabledFor(logging.INFO)
        self._started_jobs += len(jobs)
        self.stats.claimed += len(jobs)
        for job in jobs:
            if info:
                log.info("job %s started queue=%s task=%s tag=%s attempt=%s", job.id, job.queue,
                         job.task, job.tag, job.attempt,
                         extra={"action": "job_started", "job_id": job.id, "queue": job.queue,
                                "task": job.task, "tag": job.tag})
            if self.on_event is not None:
                self._emit("job_started", job=job)
        self.slots.hand_out(jobs)

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
        if not self.leases.connected.is_set():
            return 0  # the lease keeper lost its connection: nothing new until it is back
        outstanding = self.slots.outstanding()
        want = self.sizer.target() - outstanding
        if self.max_jobs is not None:
            want = min(want, self.max_jobs - self._started_jobs)
        if want <= 0:
            return 0
        idle = self.capacity - outstanding
        if idle > 0:
            # Slots are idle. With many slots and only a few idle while others are busy,
            # wait up to COALESCE_SECONDS for more to free up: one claim for a batch.
            if (idle < max(1, self.capacity // 2) and outstanding > 0
                    and time.monotonic() - self._last_trip < COALESCE_SECONDS):
                return 0
            return want
        if self._seen_empty and not self._nudged:
            return 0  # the queue was empty a moment ago: top the buffer up on a NOTIFY
        return want if want >= max(1, self.sizer.buffer() // 2) else 0

    def _refill_below(self) -> int:
        """Held jobs under which `_claim_limit` would claim again: a finishing slot wakes
        the loop then (and when a slot frees up)."""
        return max(self.capacity, self.sizer.target() - max(1, self.sizer.buffer() // 2) + 1)

    def _flush_due(self) -> bool:
        pending = self.slots.finished_count()
        if not pending:
            return False
        return (self.slots.outstanding() == 0 or pending >= self.slots.flush_at
                or time.monotonic() - self._last_trip >= COALESCE_SECONDS)

    def _run(self) -> int:
        if self.isolation == "process":
            # Before any thread of ours exists (see pgqueue.execution); the enqueue pool's
            # threads are ours too, so it is closed first (it reopens when next used).
            self.store.close()
            others = threading.active_count() - 1
            if others:
                log.warning("forking the job processes' hosts while %s other threads run "
                            "(not pgqueue's); start the worker before any thread to avoid "
                            "the fork-with-threads hazard", others,
                            extra={"action": "fork_with_threads"})
            # Job children share this many connections, whatever the number of slots.
            gate = connections.JobGate(min(self.concurrency, self.job_connections))
            connections.set_job_gate(gate)
            self._hosts.extend(SlotHost(self.tasks, self.max_jobs_per_child)
                               for _ in range(self.concurrency))
            self.threads_at_fork = others + 1
        try:
            self._register()
            self.leases.open()  # before any claim: what it claims, it can keep leased
            log.info("worker %s started: queues=%s concurrency=%s isolation=%s",
                     self.worker_id, ",".join(self.queues), self.concurrency, self.isolation,
                     extra={"action": "worker_started"})
            self.slots.start()
            self._threads = [self._supervised("leases", self.leases.run),
                             self._supervised("listener", self.listener.run),
                             self._supervised("maintenance", self.maintenance.run)]
            self._loop()
            self._shutdown()
        finally:
            for host in self._hosts:
                host.close()
            made = connections.job_gate()
            if self._hosts and made is not None:
                connections.set_job_gate(None)
                made.close()
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
                    if not self.slots.busy() or self._cold.is_set() or time.monotonic() > stop_deadline:
                        return
                    self._wake.wait(0.1)
                    continue
                next_deadline = self.slots.enforce_deadlines()
                limit = self._claim_limit()
                self.slots.refill_below = self._refill_below()
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
        if self.slots.busy():
            return False
        if self.max_jobs is not None and self._started_jobs >= self.max_jobs:
            log.info("worker %s recycled after %s jobs", self.worker_id, self._started_jobs,
                     extra={"action": "recycle"})
            return True
        return self.burst and self.store.idle_everywhere(
            self._connection(), self.queues, BURST_HORIZON_SECONDS)

    def _wait_seconds(self, next_deadline: float | None) -> float:
        wait = min(self.poll_interval, BURST_RECHECK_SECONDS) if self.burst else self.poll_interval
        if self.slots.finished_count():
            wait = min(wait, COALESCE_SECONDS)
        if next_deadline is not None:
            wait = min(wait, max(0.0, next_deadline - time.monotonic()) + 0.001)
        if self.store.wake_at is not None:  # a job parked by its limit may start then
            wait = min(wait, max(0.0, (self.store.wake_at - datetime.now(UTC)).total_seconds())
                       + 0.001)
        return wait

    def _shutdown(self) -> None:
        self._stopping.set()
        unfinished = self.slots.unfinished()
        for held in unfinished:
            held.context.interrupt("worker shutting down")
        try:
            self._flush_and_claim(0)
            if unfinished:
                released = self.store.release(
                    self._connection(), worker_id=self.worker_id,
                    ids=[held.job.id for held in unfinished],
                    started=[held.job.id for held in unfinished if held.started],
                    reason=f"given back at a warm shutdown: still running when the "
                           f"{self.shutdown_grace:g} s grace ended")
                log.info("worker %s gave back %s unfinished jobs", self.worker_id, released,
                         extra={"action": "released"})
            self.store.stop_worker(self._connection(), worker_id=self.worker_id)
        except DatabaseUnavailable as error:
            log.warning("worker %s: could not record shutdown (%s); leases will expire",
                        self.worker_id, error, extra={"action": "shutdown_unrecorded"})
        self.slots.close()
        self._exiting.set()
        self.leases.beat_now.set()
        for thread in self._threads:
            thread.join(5)
        self._drop_connection()
        log.info("worker %s stopped: %s", self.worker_id, self.stats.summary(),
                 extra={"action": "worker_stopped"})
