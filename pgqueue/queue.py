"""The Queue: pgqueue's public face. A thin facade over the parts that do the work.

    Queue ── tasks (a registry)         pgqueue.tasks
          ├─ store (statements, pool)   pgqueue.store     enqueue, reads
          ├─ groups                     pgqueue.groups
          ├─ admin actions              pgqueue.admin
          ├─ maintenance                pgqueue.maintenance (rescue, prune, periodic)
          ├─ periodic jobs              pgqueue.periodic
          └─ workers                    pgqueue.worker

No pgqueue module imports this one (an import-linter contract keeps it so): they get the
store and the task registry they need, not the Queue.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from pgqueue import admin, limits, maintenance, results
from pgqueue import periodic as periodic_jobs
from pgqueue.admin import CancelResult
from pgqueue.aio import AsyncQueue
from pgqueue.aioloop import DEFAULT_ASYNC_CONCURRENCY
from pgqueue.connections import JOB_CONNECTIONS
from pgqueue.db import translate_errors
from pgqueue.enqueue import DEFAULT_BATCH_SIZE, run_at_for
from pgqueue.errors import ConfigurationError, JobNotFound, UnknownTask
from pgqueue.groups import Group, GroupProgress, create_group
from pgqueue.jobs import Job
from pgqueue.metrics import DurationTally
from pgqueue.migrate import Migrator
from pgqueue.retry import Backoff
from pgqueue.sql import Statements
from pgqueue.store import DEFAULT_POOL_SIZE, JobStore
from pgqueue.tasks import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, JobSpec, Limit, Task
from pgqueue.worker import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_SHUTDOWN_GRACE,
    Worker,
)

MAX_CHANNEL_BYTES = 63  # PostgreSQL's identifier limit
# /metrics counts a finished job's duration once this old: its finish has committed by then.
DURATION_SETTLE_SECONDS = 5.0


class Queue:
    """A job queue in one PostgreSQL schema.

    `dsn=None` starts (or reuses) an embedded PostgreSQL in `embedded_dir`, so a new user
    needs no server set-up; it needs the `embedded` extra.

    Behind a transaction pooler (PgBouncer), `dsn` is the pooler's and `listen_dsn`
    PostgreSQL's own: LISTEN and the session advisory locks (maintenance leader, prune)
    go there, everything else through the pooler, never as prepared statements.
    """

    def __init__(self, dsn: str | None = None, *, schema: str = "pgqueue",
                 embedded_dir: str | None = None, pool_size: int = DEFAULT_POOL_SIZE,
                 listen_dsn: str | None = None) -> None:
        if dsn is None:
            from pgqueue.embedded import embedded_url
            dsn = embedded_url(embedded_dir)
        self.store = JobStore(dsn, schema, pool_size=pool_size, listen_dsn=listen_dsn)
        self.schema = self.store.schema
        self.tasks: dict[str, Task] = {}
        # @q.periodic schedules: written to the database by this process's workers
        self.declared_schedules: dict[str, periodic_jobs.Schedule] = {}
        self._durations = DurationTally()  # /metrics' job durations, a running total

    @property
    def dsn(self) -> str:
        return self.store.dsn

    @dsn.setter
    def dsn(self, value: str) -> None:
        self.store.dsn = value

    @property
    def statements(self) -> Statements:
        """The named statements (clerk reads a few views through them)."""
        return self.store.statements

    # -- schema and connections -----------------------------------------------------------

    def migrator(self) -> Migrator:
        return Migrator(self.dsn, self.schema)

    def migrate(self) -> list[str]:
        """Apply pending migrations; safe to run twice or from two processes at once."""
        return [f"{m.version:04d}_{m.name}" for m in self.migrator().upgrade()]

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A dedicated connection (workers hold their own); see `session` for short work."""
        return self.store.connect(autocommit=autocommit)

    def session(self, conn: psycopg.Connection[Any] | None = None, *, atomic: bool = True
                ) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """A connection for short work: the caller's (joining its transaction), or a pooled
        one; see `JobStore.session`."""
        return self.store.session(conn, atomic=atomic)

    def close(self) -> None:
        """Close the pooled connections (workers close their own)."""
        self.store.close()

    # -- tasks ----------------------------------------------------------------------------

    def task(self, func: Callable[..., Any] | None = None, *, name: str | None = None,
             queue: str = DEFAULT_QUEUE, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             timeout: int | None = None, retry_backoff: Backoff | float | None = None,
             priority: int = 0, retry_on: tuple[type[BaseException], ...] = (Exception,),
             limit: Limit | None = None) -> Any:
        """Register a task: `@q.task(queue="ocr", max_attempts=3, timeout=600)`.

        `limit=Limit(key="host", concurrency=2, rate=1, per=1.0)` bounds its jobs per value
        of the job argument `key`, across every worker (see `pgqueue.limits`); the workers
        that know the task write it to the database when they are created."""
        channel = f"{self.schema}.{queue}"
        if not queue or len(channel.encode()) > MAX_CHANNEL_BYTES:
            raise ConfigurationError(
                f"queue name {queue!r} is empty or too long: '<schema>.<queue>' names its NOTIFY "
                f"channel, at most {MAX_CHANNEL_BYTES} bytes")

        def register(target: Callable[..., Any]) -> Task:
            backoff = (retry_backoff if isinstance(retry_backoff, Backoff)
                       else Backoff(base=float(retry_backoff)) if retry_backoff is not None
                       else Backoff())
            task_name = name or f"{target.__module__}.{target.__qualname__}"
            registered = Task(self.store, target, task_name, queue=queue,
                              max_attempts=max_attempts, timeout=timeout, retry_backoff=backoff,
                              priority=priority, retry_on=retry_on,
                              limit=None if limit is None else limit.check(task_name))
            functools.update_wrapper(registered, target)
            self.tasks[task_name] = registered
            return registered
        return register(func) if func is not None else register

    # -- periodic jobs --------------------------------------------------------------------

    def periodic(self, func: Callable[..., Any] | None = None, *, cron: str | None = None,
                 every: timedelta | float | None = None, name: str | None = None,
                 queue: str = DEFAULT_QUEUE, args: dict[str, Any] | None = None,
                 missed: str = "run_once", grace: float = periodic_jobs.DEFAULT_GRACE_SECONDS,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, timeout: int | None = None,
                 priority: int = 0, tag: str | None = None) -> Any:
        """Register a task that runs on a schedule: `@q.periodic(cron="0 3 * * *")`, or
        `every=timedelta(seconds=30)`. A cron may have 6 fields, seconds first; times are
        UTC. One job per slot, whatever the number of workers (see `pgqueue.periodic`);
        the schedule is written to the database when a worker of this process starts."""
        def register(target: Callable[..., Any]) -> Task:
            registered: Task = self.task(target, name=name, queue=queue,
                                         max_attempts=max_attempts, timeout=timeout,
                                         priority=priority)
            self.declared_schedules[registered.name] = periodic_jobs.Schedule(
                name=registered.name, task=registered.name, queue=queue, cron=cron,
                every=None if every is None else periodic_jobs.every_seconds(every),
                args=dict(args or {}), priority=priority, max_attempts=max_attempts,
                timeout=timeout, tag=tag, missed=missed, grace=grace)
            return registered
        return register(func) if func is not None else register

    def schedule(self, name: str, task: Task, *, cron: str | None = None,
                 every: timedelta | float | None = None, args: dict[str, Any] | None = None,
                 missed: str = "run_once", grace: float = periodic_jobs.DEFAULT_GRACE_SECONDS,
                 priority: int | None = None, tag: str | None = None,
                 conn: psycopg.Connection[Any] | None = None) -> None:
        """Write (or update) one schedule of a registered task now, by name: schedules
        made at run time (clerk keeps one per site). `unschedule` removes it."""
        self.schedule_many([periodic_jobs.Schedule(
            name=name, task=task.name, queue=task.queue, cron=cron,
            every=None if every is None else periodic_jobs.every_seconds(every),
            args=dict(args or {}), priority=task.priority if priority is None else priority,
            max_attempts=task.max_attempts, timeout=task.timeout, tag=tag, missed=missed,
            grace=grace)], conn=conn)

    def schedule_many(self, schedules: Iterable[periodic_jobs.Schedule], *,
                      conn: psycopg.Connection[Any] | None = None) -> int:
        """Write many schedules in one statement; returns how many were given."""
        return periodic_jobs.declare(self.store, schedules, conn)

    def unschedule(self, *names: str, conn: psycopg.Connection[Any] | None = None) -> int:
        """Remove schedules by name (jobs already enqueued stay); returns how many."""
        return periodic_jobs.remove(self.store, names, conn)

    def schedules(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The schedules with their next run and last job (`periodic_schedules` view)."""
        return periodic_jobs.listing(self.store, names)

    def enqueue_due(self) -> int:
        """Enqueue the due periodic slots now (the maintenance leader does this anyway);
        returns how many jobs were enqueued."""
        enqueued = 0
        while True:
            tick = periodic_jobs.enqueue_due(self.store)
            enqueued += tick.enqueued
            if not tick.more:
                return enqueued

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"no task named {name!r} is registered on this worker") from None

    # -- enqueue --------------------------------------------------------------------------

    def enqueue(self, task: Task, args: dict[str, Any] | None = None, *,
                priority: int | None = None, run_at: datetime | None = None,
                delay: float | None = None, dedupe_key: str | None = None,
                tag: str | None = None, on_success: Sequence[JobSpec] | None = None,
                conn: psycopg.Connection[Any] | None = None) -> int:
        """Queue one job and return its id. A taken dedupe key raises DuplicateJob."""
        return self.store.enqueue(task, args, priority=priority, run_at=run_at, delay=delay,
                                  dedupe_key=dedupe_key, tag=tag, on_success=on_success,
                                  conn=conn)

    def enqueue_many(self, task: Task, args_list: Iterable[dict[str, Any]], *,
                     priority: int | None = None, run_at: datetime | None = None,
                     delay: float | None = None, tag: str | None = None,
                     dedupe_keys: Sequence[str | None] | None = None,
                     on_success: Sequence[JobSpec] | None = None,
                     conn: psycopg.Connection[Any] | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> list[int]:
        """Queue many jobs, one INSERT (or COPY) per `batch_size` rows, all in one
        transaction. Jobs whose dedupe key is taken are skipped: the ids returned are
        those inserted."""
        with self.store.transaction(conn) as db:
            return self.store.insert_rows(
                db, task, args_list, priority=priority, run_at=run_at_for(run_at, delay),
                group_id=None, tag=tag, dedupe_keys=dedupe_keys, on_success=on_success,
                batch_size=batch_size)

    # -- groups ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def group(self, key: str, *, on_complete: Sequence[JobSpec] = (), tag: str | None = None,
              priority: int = 0, conn: psycopg.Connection[Any] | None = None) -> Iterator[Group]:
        """Create a group, add members, seal it on exit: all in one transaction.

        With `conn`, the group joins the caller's transaction (a fetch job creates the group
        of its pages atomically with its own bookkeeping). If the block raises, nothing of
        the group is kept.
        """
        with self.store.transaction(conn) as db:
            group = create_group(self.store, db, key, on_complete, tag, priority)
            yield group
            if not group.sealed:
                group.seal()

    def open_group(self, key: str, *, on_complete: Sequence[JobSpec] = (),
                   tag: str | None = None, priority: int = 0,
                   conn: psycopg.Connection[Any] | None = None) -> int:
        """Create a group that stays open across transactions; returns its id."""
        with self.store.transaction(conn) as db:
            return create_group(self.store, db, key, on_complete, tag, priority).id

    def add_to_group(self, group_id: int, task: Task, args_list: Iterable[dict[str, Any]], *,
                     conn: psycopg.Connection[Any] | None = None) -> list[int]:
        with self.store.transaction(conn) as db:
            row = self.store.run(db, "group_row", {"id": group_id}).fetchone()
            if row is None:
                raise JobNotFound(f"no group {group_id}")
            group = Group(self.store, db, group_id, row["key"], row["tag"], row["priority"])
            return group.enqueue_many(task, args_list)

    def seal_group(self, group_id: int, *, conn: psycopg.Connection[Any] | None = None) -> bool:
        with self.store.transaction(conn) as db:
            row = self.store.run(db, "seal_group", {"id": group_id}).fetchone()
            return bool(row and row["completed"])

    def get_group(self, group_id: int) -> GroupProgress:
        with self.store.transaction(atomic=False) as db:
            row = self.store.run(db, "group_by_id", {"id": group_id}).fetchone()
        if row is None:
            raise JobNotFound(f"no group {group_id}")
        return GroupProgress.from_row(row)

    def group_failures(self, group_id: int) -> list[dict[str, Any]]:
        """Members of a group that failed for good, with their errors."""
        with self.store.transaction(atomic=False) as db:
            return self.store.run(db, "group_failures", {"group_id": group_id}).fetchall()

    # -- reading --------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        with self.store.transaction(atomic=False) as db:
            row = self.store.run(db, "get_job", {"id": job_id}).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id} (never existed, or pruned)")
        return Job.from_row(row)

    def wait(self, job_id: int, timeout: float | None = None) -> Any:
        """Wait for a job to finish (woken by LISTEN/NOTIFY, not polling) and return its
        result: what its task returned, as JSON decodes it (None if it returned None).
        A failed or cancelled job raises `JobFailed` with its recorded error; `timeout`
        seconds without a finish raise `WaitTimeout`. A retry is not a finish: a job that
        fails and will run again is still waited for. Uses a connection of its own."""
        return results.wait(self.store, job_id, timeout)

    async def wait_async(self, job_id: int, timeout: float | None = None) -> Any:
        """`wait` for a coroutine: the event loop runs on while it waits (LISTEN on an
        async connection of its own; see `AsyncQueue.wait_async`)."""
        return await AsyncQueue(self).wait_async(job_id, timeout)

    def aio(self, *, pool_size: int = DEFAULT_POOL_SIZE) -> AsyncQueue:
        """This queue for asyncio code: `async with q.aio() as aq: await aq.enqueue(...)`."""
        return AsyncQueue(self, pool_size=pool_size)

    def group_results(self, group_id: int) -> dict[int, Any]:
        """The results of a group's succeeded members, by job id. A follow-up of the
        group (`on_complete`) reads its own with `current_job().origin_group_id`."""
        return results.group_results(self.store, group_id)

    def queue_depth(self) -> list[dict[str, Any]]:
        with self.store.transaction(atomic=False) as db:
            return self.store.run(db, "queue_depth").fetchall()

    def connections(self) -> dict[str, Any]:
        """The server's limit and who holds its connections: `max_connections`, the
        reserved ones, and the connections in use by `application_name` (pgqueue's roles,
        clerk's, anyone's); asked of PostgreSQL itself (`listen_dsn`)."""
        with translate_errors(), self.store.connect(autocommit=True, direct=True,
                                                    role="pgqueue:admin") as conn:
            limits = self.store.run(conn, "connection_limits").fetchone()
            held = self.store.run(conn, "connections_by_role").fetchall()
        assert limits is not None
        return {"max_connections": int(limits["max_connections"]),
                "reserved": int(limits["reserved"]),
                "held": {row["role"]: int(row["connections"]) for row in held}}

    def active_workers(self) -> list[dict[str, Any]]:
        with self.store.transaction(atomic=False) as db:
            return self.store.run(db, "active_workers").fetchall()

    def metrics_snapshot(self) -> dict[str, Any]:
        """What /metrics shows, read from the views at scrape time (see pgqueue.metrics).
        Job durations are a running histogram: each call adds the jobs finished since the
        last (one scrape at a time, so none is counted twice)."""
        tally = self._durations
        with tally.lock, self.store.transaction() as db:
            depth = self.store.run(db, "queue_depth").fetchall()
            workers = self.store.run(db, "active_workers").fetchall()
            finished = self.store.run(db, "task_counts").fetchall()
            recent = self.store.run(db, "durations_between",
                                    tally.params(DURATION_SETTLE_SECONDS)).fetchall()
            for row in recent:
                if row["queue"] is not None:
                    tally.add(row["queue"], row["task"], int(row["bucket"]), int(row["jobs"]),
                              float(row["seconds"]))
            if recent:
                tally.since = recent[0]["until"]
            durations = tally.value()
        alive: dict[str, int] = {}
        for worker in workers:
            for name in worker["queues"]:
                alive[name] = alive.get(name, 0) + 1
        return {
            "depth": [(r["queue"], r["state"], int(r["jobs"])) for r in depth],
            "workers": sorted(alive.items()),
            "finished": [(r["queue"], r["task"], r["state"], int(r["jobs"])) for r in finished],
            "durations": durations,
        }

    # -- work -----------------------------------------------------------------------------

    def worker(self, queues: Sequence[str] | None = None, *, concurrency: int = 1,
               burst: bool = False, isolation: str = "thread",
               lease_seconds: float = DEFAULT_LEASE_SECONDS,
               poll_interval: float = DEFAULT_POLL_INTERVAL,
               shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
               max_jobs: int | None = None, max_jobs_per_child: int = 1000,
               prefetch: int | None = None, install_signals: bool | None = None,
               on_event: Callable[[str, dict[str, Any]], None] | None = None,
               job_connections: int = JOB_CONNECTIONS,
               async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY) -> Worker:
        """A worker over `queues` (default: every queue with a registered task); see
        `Worker` for the options. Call `.run()` on it, or use `work()`."""
        names = list(queues) if queues else sorted({t.queue for t in self.tasks.values()})
        limited = [(t.name, t.limit) for t in self.tasks.values()
                   if t.limit is not None and t.queue in names]
        if limited:  # before any claim of this worker: its claims enforce them
            limits.declare(self.store, limited)
        return Worker(self.store, self.tasks, names, concurrency=concurrency, burst=burst,
                      isolation=isolation, lease_seconds=lease_seconds,
                      poll_interval=poll_interval, shutdown_grace=shutdown_grace,
                      max_jobs=max_jobs, max_jobs_per_child=max_jobs_per_child,
                      prefetch=prefetch, install_signals=install_signals, on_event=on_event,
                      job_connections=job_connections,
                      schedules=list(self.declared_schedules.values()),
                      async_concurrency=async_concurrency)

    def work(self, queues: Sequence[str] | None = None, *, concurrency: int = 1,
             burst: bool = False, isolation: str = "thread",
             lease_seconds: float = DEFAULT_LEASE_SECONDS,
             poll_interval: float = DEFAULT_POLL_INTERVAL,
             shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
             max_jobs: int | None = None, max_jobs_per_child: int = 1000,
             prefetch: int | None = None, install_signals: bool | None = None,
             on_event: Callable[[str, dict[str, Any]], None] | None = None,
             job_connections: int = JOB_CONNECTIONS,
             async_concurrency: int = DEFAULT_ASYNC_CONCURRENCY) -> int:
        """Run a worker in this process until stopped (or, with burst, until idle);
        returns its exit status (0, or 1 after a fatal error)."""
        return self.worker(queues, concurrency=concurrency, burst=burst, isolation=isolation,
                           lease_seconds=lease_seconds, poll_interval=poll_interval,
                           shutdown_grace=shutdown_grace, max_jobs=max_jobs,
                           max_jobs_per_child=max_jobs_per_child, prefetch=prefetch,
                           install_signals=install_signals, on_event=on_event,
                           job_connections=job_connections,
                           async_concurrency=async_concurrency).run()

    # -- who runs next: pause, fairness, limits --------------------------------------------

    def pause(self, name: str, *, reason: str | None = None) -> bool:
        """Stop every worker on every machine from claiming queue `name` (running jobs
        finish; enqueueing goes on). False if it was paused already."""
        return limits.pause(self.store, name, reason)

    def resume(self, name: str) -> bool:
        """Let workers claim queue `name` again, waking them now. False if not paused."""
        return limits.resume(self.store, name)

    def paused_queues(self) -> list[str]:
        """The names of the paused queues (`paused_details` has reasons and times)."""
        return [row["queue"] for row in limits.paused(self.store)]

    def paused_details(self) -> list[dict[str, Any]]:
        """The paused queues with their reason and when they were paused."""
        return limits.paused(self.store)

    def set_fair_weight(self, queue: str, key: str, weight: float | None) -> None:
        """Key `key` (a tag) gets `weight` turns in `queue` for another key's one, among
        equal priorities, for jobs enqueued from now on (None: back to 1)."""
        limits.set_weight(self.store, queue, key, weight)

    def set_limit(self, task: Task | str, limit: Limit | None) -> None:
        """Write (None: remove) a task's limit now, whatever its workers declared."""
        name = task if isinstance(task, str) else task.name
        limits.declare(self.store, [(name, limit)])

    def limit_usage(self, tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Each limited key in use: its running jobs, recent starts and parked jobs."""
        return limits.usage(self.store, tasks)

    # -- admin and maintenance ------------------------------------------------------------

    def cancel(self, *, tag: str | None = None, group_id: int | None = None,
               ids: list[int] | None = None) -> CancelResult:
        """Cancel the queued jobs of a tag (a site), a group, or ids; stop their running ones."""
        return admin.cancel(self.store, tag=tag, group_id=group_id, ids=ids)

    def purge_queue(self, queue: str) -> CancelResult:
        """Cancel every queued job of a queue and stop its running ones."""
        return admin.purge_queue(self.store, queue)

    def retry_failed(self, *, ids: list[int] | None = None, queue: str | None = None,
                     tag: str | None = None) -> int:
        """Put failed jobs back in the queue (fresh attempts). Returns how many."""
        return admin.retry_failed(self.store, ids=ids, queue=queue, tag=tag)

    def failed_jobs(self, *, queue: str | None = None, tag: str | None = None,
                    limit: int = 100) -> list[dict[str, Any]]:
        """Recent failures: final ones, and jobs waiting to retry after an error."""
        return admin.failed_jobs(self.store, queue=queue, tag=tag, limit=limit)

    def rescue_expired(self) -> dict[str, int]:
        """Requeue (or fail) running jobs whose lease expired, now; a worker's elected
        maintenance leader does this every lease/2 seconds anyway."""
        return maintenance.rescue_expired(self.store, self._backoff)

    def prune(self, *, succeeded_after: float = maintenance.KEEP_SUCCEEDED_SECONDS,
              failed_after: float = maintenance.KEEP_FAILED_SECONDS,
              cancelled_after: float = maintenance.KEEP_CANCELLED_SECONDS,
              groups_after: float | None = None,
              batch: int = maintenance.PRUNE_BATCH) -> dict[str, int] | None:
        """Delete finished history older than its retention (None: another is pruning)."""
        return maintenance.prune(self.store, succeeded_after=succeeded_after,
                                 failed_after=failed_after, cancelled_after=cancelled_after,
                                 groups_after=groups_after, batch=batch)

    def _backoff(self, task_name: str) -> Backoff:
        task = self.tasks.get(task_name)
        return task.retry_backoff if task is not None else Backoff()
