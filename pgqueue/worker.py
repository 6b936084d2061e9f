"""The worker: claim up to the free slots, run, finish in batches, wait on events.

Threads of one worker process, each named and supervised (if one dies, the worker stops
loudly rather than run without leases):

  main        claims jobs for free slots, flushes finished jobs in one statement, waits for
              a NOTIFY, a finished job, the safety-net poll or the stop event
  slot-N      runs one job at a time (in-thread, or through a child process)
  heartbeat   extends the leases of held jobs, learns of cancellations, rescues expired
              leases of dead workers
  listener    LISTENs on the queues' channels and wakes the main thread
"""

from __future__ import annotations

import functools
import logging
import os
import queue as stdlib_queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from pgqueue.context import JobContext
from pgqueue.db import is_connection_error, mask_url
from pgqueue.errors import DatabaseUnavailable
from pgqueue.execution import Outcome, ProcessRunner, ThreadRunner
from pgqueue.jobs import ClaimedJob
from pgqueue.retry import decide

if TYPE_CHECKING:
    from pgqueue.queue import Queue

log = logging.getLogger("pgqueue.worker")

DEFAULT_LEASE_SECONDS = 30.0  # a dead worker's jobs come back within this
DEFAULT_POLL_INTERVAL = 5.0  # safety net for lost NOTIFYs (e.g. behind PgBouncer)
DEFAULT_SHUTDOWN_GRACE = 30.0
BURST_HORIZON_SECONDS = 60.0  # burst mode waits for retries due within this
BURST_RECHECK_SECONDS = 0.25
# A worker with many slots records finished jobs and claims new ones once half its slots are
# free, or after this long: batches of ~concurrency/2 per round trip instead of 1 or 2.
COALESCE_SECONDS = 0.02
# What a lost or restarting server raises: psycopg's errors, and ours from connect().
DATABASE_ERRORS = (psycopg.Error, DatabaseUnavailable)
RECONNECT_BACKOFF_MAX = 5.0
LISTENER_PROBE_SECONDS = 10.0


@dataclass
class RunningJob:
    job: ClaimedJob
    context: JobContext
    started: float  # when claimed; reset when a slot starts it


@dataclass
class Finished:
    job: ClaimedJob
    outcome: Outcome
    seconds: float


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    lost: int = 0


@dataclass
class _Slot:
    index: int
    thread: threading.Thread | None = None
    busy: bool = False


class Worker:
    """One worker process's loop over some queues. Use `Queue.work()` or `Queue.worker()`.

    `concurrency` jobs run at once. By default a worker claims only for free slots; with
    `prefetch=N` it also keeps up to N claimed jobs waiting in its inbox (leased, so they
    are not lost), which suits floods of short jobs: a slot takes its next job without a
    round trip or a thread wake-up. Timeouts count from when a slot starts the job.
    """

    def __init__(self, queue: Queue, queues: Sequence[str], *, concurrency: int = 1,
                 burst: bool = False, isolation: str = "thread",
                 lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 poll_interval: float = DEFAULT_POLL_INTERVAL,
                 shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
                 max_jobs: int | None = None, max_jobs_per_child: int = 1000,
                 prefetch: int = 0,
                 install_signals: bool | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        if isolation not in ("thread", "process"):
            raise ValueError("isolation is 'thread' or 'process'")
        self.queue = queue
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
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._cold = threading.Event()
        self._fatal: str | None = None
        self._lock = threading.Lock()
        self._running: dict[int, RunningJob] = {}
        self._finished: list[Finished] = []
        self._slots = [_Slot(i) for i in range(self.concurrency)]
        self._inbox: stdlib_queue.SimpleQueue[RunningJob | None] = stdlib_queue.SimpleQueue()
        self._outstanding = 0  # claimed and not yet finished: running, or waiting in the inbox
        self._capacity = self.concurrency + max(0, prefetch)
        self._conn: psycopg.Connection[Any] | None = None
        self._beat_now = threading.Event()
        self._done_since_beat = 0
        self._started_jobs = 0
        self._threads: list[threading.Thread] = []
        self._signals = 0
        self._exiting = threading.Event()
        self._coalesce_below = max(1, self._capacity // 2)
        self._last_cycle = 0.0

    # -- control --------------------------------------------------------------------------

    def stop(self, cold: bool = False) -> None:
        """Warm stop: claim nothing more, let running jobs finish. Cold: give them back now."""
        if cold:
            self._cold.set()
        self._stopping.set()
        self._wake.set()

    def _handle_signal(self, signum: int, frame: Any) -> None:
        # A handler runs in the main thread between bytecodes, possibly while that thread
        # holds the lock inside `Event.wait`; setting the same event here would deadlock.
        # So the handler only starts a thread, which takes the locks normally.
        self._signals += 1
        cold = self._signals > 1
        threading.Thread(target=self._stop_from_signal, args=(signum, cold),
                         name="pgqueue-signal", daemon=True).start()

    def _stop_from_signal(self, signum: int, cold: bool) -> None:
        if cold:
            log.warning("second signal %s: cold stop", signum, extra={"action": "cold_stop"})
        else:
            log.info("signal %s: warm stop (grace %.1f s)", signum, self.shutdown_grace,
                     extra={"action": "warm_stop"})
        self.stop(cold=cold)

    def _emit(self, action: str, **details: Any) -> None:
        if self.on_event is not None:
            self.on_event(action, details)

    # -- database -------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self.queue.connect(autocommit=True)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def _register(self) -> None:
        row = self._connection().execute(self.queue.statements.register_worker, {
            "host": socket.gethostname(), "pid": os.getpid(), "queues": self.queues,
            "concurrency": self.concurrency,
            "metadata": psycopg.types.json.Jsonb({"isolation": self.isolation})}).fetchone()
        assert row is not None
        self.worker_id = int(row["id"])

    def _claim_statement(self, limit: int) -> tuple[Any, dict[str, Any]]:
        """One queue: the simple claim. Several: the best jobs across them (priority first)."""
        params = {"limit": limit, "worker_id": self.worker_id,
                  "lease_seconds": self.lease_seconds}
        if len(self.queues) == 1:
            return self.queue.statements.claim, {**params, "queue": self.queues[0]}
        return self.queue.statements.claim_across_queues, {**params, "queues": self.queues}

    def _claim(self, limit: int) -> list[ClaimedJob]:
        statement, params = self._claim_statement(limit)
        rows = self._connection().execute(statement, params).fetchall()
        return [ClaimedJob.from_row(row) for row in rows]

    def _flush_and_claim(self, free: int) -> list[ClaimedJob]:
        """Record finished jobs and claim up to `free` new ones.

        With both to do, they share one transaction sent as one pipeline: one round trip and
        one commit (one WAL flush) per cycle instead of two. Final states go in one
        statement, retries in another.
        """
        with self._lock:
            batch, self._finished = self._finished, []
        finals: list[tuple[Finished, str]] = []
        retries: list[tuple[Finished, float]] = []
        for item in batch:
            outcome = item.outcome
            if outcome.state == "lost":
                continue  # rescued elsewhere; the guard would discard it anyway
            if outcome.state == "failed":
                decision = decide(item.job.attempt, item.job.max_attempts,
                                  self._backoff(item.job.task), retryable=outcome.retryable)
                if decision.retry:
                    retries.append((item, decision.delay))
                    continue
            finals.append((item, outcome.state))
        claimed: list[ClaimedJob] = []
        try:
            conn = self._connection()
            if finals or retries:
                with conn.pipeline(), conn.transaction():
                    # Claim first, record last: recording locks the group rows of the
                    # finished members, and they stay locked until the commit; taking them
                    # last keeps that short (fan-in workers otherwise queue on the row).
                    cursor = conn.execute(*self._claim_statement(free)) if free > 0 else None
                    self._record(conn, finals, retries)
                if cursor is not None:
                    claimed = [ClaimedJob.from_row(row) for row in cursor.fetchall()]
            elif free > 0:
                claimed = self._claim(free)
        except DATABASE_ERRORS:
            with self._lock:  # keep them; the next flush after reconnecting records them
                self._finished[:0] = batch
            raise
        self._recorded(batch, finals, retries)
        return claimed

    def _flush(self) -> None:
        self._flush_and_claim(0)

    def _record(self, conn: psycopg.Connection[Any], finals: list[tuple[Finished, str]],
                retries: list[tuple[Finished, float]]) -> None:
        if finals:
            conn.execute(self.queue.statements.finish_jobs, {
                "ids": [f.job.id for f, _ in finals],
                "attempts": [f.job.attempt for f, _ in finals],
                "states": [state for _, state in finals],
                "errors": [f.outcome.error for f, _ in finals],
                "from_state": "running"})
        if retries:
            conn.execute(self.queue.statements.retry_later, {
                "ids": [f.job.id for f, _ in retries],
                "attempts": [f.job.attempt for f, _ in retries],
                "delays": [delay for _, delay in retries],
                "errors": [f.outcome.error for f, _ in retries]})

    def _recorded(self, batch: list[Finished], finals: list[tuple[Finished, str]],
                  retries: list[tuple[Finished, float]]) -> None:
        with self._lock:
            for item in batch:
                self._running.pop(item.job.id, None)
            self._done_since_beat += len(batch)
        for item, state in finals:
            setattr(self.stats, state, getattr(self.stats, state) + 1)
            self._log_finish(item, state)
        for item, delay in retries:
            self.stats.retried += 1
            self._log_finish(item, f"retry in {delay:.1f} s")
        for item in batch:
            if item.outcome.state == "lost":
                self.stats.lost += 1
                self._log_finish(item, "lost")

    def _log_finish(self, item: Finished, result: str) -> None:
        job = item.job
        level = logging.INFO if item.outcome.state == "succeeded" else logging.WARNING
        if self.on_event is not None:
            self._emit("job_finished", job=job, state=item.outcome.state, seconds=item.seconds,
                       error=item.outcome.error)
        if not log.isEnabledFor(level):
            return
        log.log(level, "job %s %s queue=%s task=%s tag=%s attempt=%s/%s %.3fs%s",
                job.id, result, job.queue, job.task, job.tag, job.attempt, job.max_attempts,
                item.seconds,
                "" if not item.outcome.error else " error=" + item.outcome.error.strip()
                .splitlines()[-1][:300],
                extra={"action": "job_finished", "job_id": job.id, "queue": job.queue,
                       "task": job.task, "tag": job.tag, "result": item.outcome.state,
                       "duration": item.seconds})

    def _backoff(self, task_name: str) -> Any:
        from pgqueue.retry import Backoff
        task = self.queue.tasks.get(task_name)
        return task.retry_backoff if task is not None else Backoff()

    # -- slots ----------------------------------------------------------------------------

    def _slot_loop(self, slot: _Slot) -> None:
        """Take the next job from the shared inbox, run it, report it; until told to stop.

        A slot that finishes a job takes the next one itself when the inbox has one (with
        `prefetch`), so no thread needs waking between jobs."""
        runner: ThreadRunner | ProcessRunner = (
            ProcessRunner(self.queue, self.max_jobs_per_child) if self.isolation == "process"
            else ThreadRunner(self.queue))
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
                item.context.deadline = time.monotonic() + timeout if timeout else None
                item.started = time.monotonic()
                slot.busy = True
                outcome = runner.run(item.job, item.context)
                slot.busy = False
                finished = Finished(item.job, outcome, time.monotonic() - item.started)
                with self._lock:
                    self._finished.append(finished)
                    self._outstanding -= 1
                self._wake.set()
        finally:
            runner.close()

    def _dispatch(self, job: ClaimedJob) -> None:
        context = JobContext(job.id, job.queue, job.task, job.attempt, job.max_attempts,
                             job.tag, job.group_id, job.origin_group_id, job.priority)
        running = RunningJob(job, context, time.monotonic())
        with self._lock:
            self._running[job.id] = running
            self._outstanding += 1
        self._started_jobs += 1
        self.stats.claimed += 1
        if log.isEnabledFor(logging.INFO):
            log.info("job %s started queue=%s task=%s tag=%s attempt=%s", job.id, job.queue,
                     job.task, job.tag, job.attempt,
                     extra={"action": "job_started", "job_id": job.id, "queue": job.queue,
                            "task": job.task, "tag": job.tag})
        if self.on_event is not None:
            self._emit("job_started", job=job)
        self._inbox.put(running)

    def _free_slots(self) -> int:
        """Jobs to claim now: free slots, plus room in the prefetch buffer."""
        with self._lock:
            return self._capacity - self._outstanding

    def _busy(self) -> bool:
        with self._lock:
            return self._outstanding > 0 or bool(self._finished)

    # -- background threads ---------------------------------------------------------------

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

    def _heartbeat_loop(self) -> None:
        holder: list[psycopg.Connection[Any]] = []
        try:
            self._heartbeats(holder)
        finally:
            for conn in holder:
                conn.close()

    def _heartbeats(self, holder: list[psycopg.Connection[Any]]) -> None:
        conn: psycopg.Connection[Any] | None = None
        interval = max(0.2, self.lease_seconds / 3)
        next_rescue = 0.0
        delay = 0.2
        while not self._cold.is_set():
            self._beat_now.wait(interval)
            self._beat_now.clear()
            if self._exiting.is_set():
                return
            try:
                if conn is None or conn.closed:
                    for old in holder:
                        old.close()
                    holder.clear()
                    conn = self.queue.connect(autocommit=True)
                    holder.append(conn)
                with self._lock:
                    # Jobs already finished (not yet recorded) are left out: their finish
                    # may be deleting the same rows right now (a deadlock otherwise).
                    finishing = {f.job.id for f in self._finished}
                    held = {k: v for k, v in self._running.items() if k not in finishing}
                    done, self._done_since_beat = self._done_since_beat, 0
                rows = conn.execute(self.queue.statements.heartbeat, {
                    "worker_id": self.worker_id, "ids": list(held),
                    "lease_seconds": self.lease_seconds}).fetchall()
                if done:
                    conn.execute(self.queue.statements.worker_done_jobs,
                                 {"worker_id": self.worker_id, "count": done})
                alive = {row["id"]: row["cancel_requested"] for row in rows}
                for job_id, running in held.items():
                    if job_id not in alive:
                        with self._lock:
                            still_running = job_id in self._running and not any(
                                f.job.id == job_id for f in self._finished)
                        if still_running:
                            running.context.interrupt("lease lost (job rescued by another worker)")
                    elif alive[job_id]:
                        running.context.interrupt("cancelled")
                if time.monotonic() >= next_rescue:
                    self.queue.rescue_expired()
                    next_rescue = time.monotonic() + max(1.0, self.lease_seconds / 2)
                delay = 0.2
            except DATABASE_ERRORS as error:
                if not is_connection_error(error):
                    raise
                log.warning("heartbeat: database unreachable (%s); retrying",
                            mask_url(str(error).strip()), extra={"action": "db_unreachable"})
                conn = None
                time.sleep(delay)
                delay = min(RECONNECT_BACKOFF_MAX, delay * 2)

    def _listen_loop(self) -> None:
        channels = [f"{self.queue.schema}.{name}" for name in self.queues]
        cancel_channel = f"{self.queue.schema}.cancel"
        delay = 0.2
        while not self._stopping.is_set():
            try:
                with self.queue.connect(autocommit=True) as conn:
                    for channel in [*channels, cancel_channel]:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._wake.set()  # anything sent while we were not listening: look now
                    delay = 0.2
                    probe_at = time.monotonic() + LISTENER_PROBE_SECONDS
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.25):
                            if notice.channel == cancel_channel:
                                self._beat_now.set()
                            else:
                                self._wake.set()
                        if time.monotonic() > probe_at:
                            # an idle socket can die silently; a trivial query notices
                            conn.execute("SELECT 1")
                            probe_at = time.monotonic() + LISTENER_PROBE_SECONDS
            except DATABASE_ERRORS as error:
                if not is_connection_error(error):
                    raise
                log.warning("listener: database unreachable (%s); retrying",
                            mask_url(str(error).strip()), extra={"action": "db_unreachable"})
                self._stopping.wait(delay)
                delay = min(RECONNECT_BACKOFF_MAX, delay * 2)

    # -- main loop ------------------------------------------------------------------------

    def _idle_everywhere(self) -> bool:
        row = self._connection().execute(sql.SQL(
            "SELECT count(*) AS n FROM {}.jobs WHERE queue = ANY(%s) AND (state = 'running'"
            " OR run_at <= now() + %s * interval '1 second')").format(
                sql.Identifier(self.queue.schema)),
            (self.queues, BURST_HORIZON_SECONDS)).fetchone()
        return row is not None and row["n"] == 0

    def run(self) -> int:
        """Run until stopped (or idle, with burst). Returns 0, or 1 after a fatal error."""
        install = self.install_signals
        if install is None:
            install = threading.current_thread() is threading.main_thread()
        previous: dict[signal.Signals, Any] = {}
        if install:
            # First signal: warm stop; second: cold stop (see pgqueue.signals). A signal
            # already ignored stays ignored: a supervised worker ignores SIGINT, since the
            # supervisor relays a terminal's Ctrl-C as SIGTERM.
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    previous[signum] = signal.signal(signum, self._handle_signal)
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> int:
        self._register()
        log.info("worker %s started: queues=%s concurrency=%s isolation=%s", self.worker_id,
                 ",".join(self.queues), self.concurrency, self.isolation,
                 extra={"action": "worker_started"})
        for slot in self._slots:
            slot.thread = self._supervised(f"slot-{slot.index}",
                                           functools.partial(self._slot_loop, slot))
        self._threads = [self._supervised("heartbeat", self._heartbeat_loop),
                         self._supervised("listener", self._listen_loop)]
        delay = 0.2
        stop_deadline: float | None = None
        while True:
            try:
                # Cleared before looking, so a slot finishing from here on wakes the wait
                # below (clearing after the flush lost such wake-ups: a 5 s stall).
                self._wake.clear()
                if self._stopping.is_set():
                    self._flush()
                    if stop_deadline is None:
                        stop_deadline = time.monotonic() + self.shutdown_grace
                    if not self._busy() or self._cold.is_set() or time.monotonic() > stop_deadline:
                        break
                else:
                    free = self._free_slots()
                    if self._should_coalesce(free):
                        self._wake.wait(COALESCE_SECONDS)
                        continue
                    self._last_cycle = time.monotonic()
                    if self.max_jobs is not None:
                        free = max(0, min(free, self.max_jobs - self._started_jobs))
                    jobs = self._flush_and_claim(free)
                    for job in jobs:
                        self._dispatch(job)
                    if jobs:
                        continue
                    if self.max_jobs is not None and self._started_jobs >= self.max_jobs \
                            and not self._busy():
                        log.info("worker %s recycled after %s jobs", self.worker_id,
                                 self._started_jobs, extra={"action": "recycle"})
                        break
                    if free > 0 and self.burst and not self._busy() and self._idle_everywhere():
                        break
                delay = 0.2
                self._wake.wait(self._wait_seconds())
            except DATABASE_ERRORS as error:
                if not is_connection_error(error):
                    raise
                log.warning("worker %s: database unreachable (%s); reconnecting",
                            self.worker_id, mask_url(str(error).strip()),
                            extra={"action": "db_unreachable"})
                self._drop_connection()
                if self._stopping.wait(delay) and self._cold.is_set():
                    break
                delay = min(RECONNECT_BACKOFF_MAX, delay * 2)
        self._shutdown()
        return 1 if self._fatal else 0

    def _should_coalesce(self, free: int) -> bool:
        """With many slots and only a few free, wait briefly for more to free up, so one
        round trip records and claims a batch (at most COALESCE_SECONDS late)."""
        return (0 < free < self._coalesce_below and self._busy()
                and time.monotonic() - self._last_cycle < COALESCE_SECONDS)

    def _wait_seconds(self) -> float:
        if self._stopping.is_set():
            return 0.1
        if self.burst:  # others' running jobs may finish (or be rescued) without a NOTIFY
            return min(self.poll_interval, BURST_RECHECK_SECONDS)
        return self.poll_interval

    def _shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            unfinished = [job_id for job_id in self._running
                          if not any(f.job.id == job_id for f in self._finished)]
        for running in list(self._running.values()):
            if running.job.id in unfinished:
                running.context.interrupt("worker shutting down")
        for _ in self._slots:
            self._inbox.put(None)
        try:
            self._flush()
            conn = self._connection()
            if unfinished:
                released = conn.execute(self.queue.statements.release_jobs,
                                        {"ids": unfinished, "worker_id": self.worker_id}).fetchall()
                log.info("worker %s gave back %s unfinished jobs", self.worker_id,
                         len(released), extra={"action": "released"})
            conn.execute(self.queue.statements.stop_worker, {"worker_id": self.worker_id})
        except DATABASE_ERRORS as error:
            log.warning("worker %s: could not record shutdown (%s); leases will expire",
                        self.worker_id, mask_url(str(error).strip()),
                        extra={"action": "shutdown_unrecorded"})
        for slot in self._slots:
            if slot.thread is not None:
                slot.thread.join(2)
        self._exiting.set()
        self._beat_now.set()
        for thread in self._threads:
            thread.join(5)
        self._drop_connection()
        log.info("worker %s stopped: %s", self.worker_id, self.stats,
                 extra={"action": "worker_stopped"})
