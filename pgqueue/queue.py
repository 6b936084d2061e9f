"""The Queue: pgqueue's public face. Tasks, enqueueing, groups, workers and admin."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from pgqueue import admin
from pgqueue.db import CONNECT_TIMEOUT, connect, describe, query
from pgqueue.enqueue import DEFAULT_BATCH_SIZE, RowBatch, batched, insert_batch, run_at_for
from pgqueue.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    DuplicateJob,
    JobNotFound,
    UnknownTask,
)
from pgqueue.groups import Group, GroupProgress, create_group
from pgqueue.jobs import Job
from pgqueue.migrate import Migrator
from pgqueue.retry import Backoff
from pgqueue.sql import Statements
from pgqueue.tasks import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, JobSpec, Task, dump_args

MAX_CHANNEL_BYTES = 63  # PostgreSQL's identifier limit
DEFAULT_POOL_SIZE = 4  # connections for enqueueing and reads; workers hold their own

_queues: weakref.WeakSet[Queue] = weakref.WeakSet()
_inherited_pools: list[ConnectionPool] = []


def _after_fork_in_child() -> None:
    """A forked child must never use, nor close, its parent's pooled connections: closing
    would send the server a Terminate on the parent's sockets. Keep them unreferenced by
    the queues and alive until the child exits."""
    for queue in list(_queues):
        if queue._pool is not None:
            _inherited_pools.append(queue._pool)
            queue._pool = None
            queue._pool_key = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class Queue:
    """A job queue in one PostgreSQL schema.

    `dsn=None` starts (or reuses) an embedded PostgreSQL in `embedded_dir`, so a new user
    needs no server set-up; it needs the `embedded` extra.
    """

    def __init__(self, dsn: str | None = None, *, schema: str = "pgqueue",
                 embedded_dir: str | None = None, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        if dsn is None:
            from pgqueue.embedded import embedded_url
            dsn = embedded_url(embedded_dir)
        self.dsn = dsn
        self.schema = schema
        self.statements = Statements(schema)
        self.tasks: dict[str, Task] = {}
        self.pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._pool_key: tuple[int, str] | None = None
        _queues.add(self)

    # -- schema ---------------------------------------------------------------------------

    def migrator(self) -> Migrator:
        return Migrator(self.dsn, self.schema)

    def migrate(self) -> list[str]:
        """Apply pending migrations; safe to run twice or from two processes at once."""
        return [f"{m.version:04d}_{m.name}" for m in self.migrator().upgrade()]

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A dedicated connection (workers hold their own); see `session` for short work."""
        return connect(self.dsn, autocommit=autocommit)

    def _connection_pool(self) -> ConnectionPool:
        # One pool per process and DSN: a forked worker must not share its parent's sockets.
        key = (os.getpid(), self.dsn)
        if self._pool is None or self._pool_key != key:
            if self._pool is not None and self._pool_key and self._pool_key[0] == key[0]:
                self._pool.close()  # the DSN changed: this process's old pool is done
            self._pool = ConnectionPool(
                self.dsn, min_size=1, max_size=self.pool_size, open=True, name="pgqueue",
                timeout=CONNECT_TIMEOUT, check=ConnectionPool.check_connection,
                kwargs={"autocommit": True, "row_factory": dict_row,
                        "connect_timeout": CONNECT_TIMEOUT})
            self._pool_key = key
        return self._pool

    @contextlib.contextmanager
    def session(self, conn: psycopg.Connection[Any] | None = None, *, atomic: bool = True
                ) -> Iterator[psycopg.Connection[Any]]:
        """A connection for short work: the caller's (joining its transaction), or a pooled
        one. `atomic` wraps the work in a transaction (a savepoint inside the caller's);
        a single statement needs none, which saves two round trips."""
        if conn is not None:
            if atomic:
                with conn.transaction():
                    yield conn
            else:
                yield conn
            return
        try:
            with self._connection_pool().connection() as pooled:
                if atomic:
                    with pooled.transaction():
                        yield pooled
                else:
                    yield pooled
        except PoolTimeout:
            raise DatabaseUnavailable(
                f"cannot connect to PostgreSQL at {describe(self.dsn)} "
                f"(no connection within {CONNECT_TIMEOUT} s)") from None

    def close(self) -> None:
        """Close the pooled connections (workers close their own)."""
        if self._pool is not None and self._pool_key == (os.getpid(), self.dsn):
            self._pool.close()
        self._pool = None
        self._pool_key = None

    # -- tasks ----------------------------------------------------------------------------

    def task(self, func: Callable[..., Any] | None = None, *, name: str | None = None,
             queue: str = DEFAULT_QUEUE, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
             timeout: int | None = None, retry_backoff: Backoff | float | None = None,
             priority: int = 0, retry_on: tuple[type[BaseException], ...] = (Exception,),
             ) -> Any:
        """Register a task: `@q.task(queue="ocr", max_attempts=3, timeout=600)`."""
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
            registered = Task(self, target, task_name, queue=queue, max_attempts=max_attempts,
                              timeout=timeout, retry_backoff=backoff, priority=priority,
                              retry_on=retry_on)
            functools.update_wrapper(registered, target)
            self.tasks[task_name] = registered
            return registered
        return register(func) if func is not None else register

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
        params = {
            "queue": task.queue, "task": task.name, "args": dump_args(args or {}),
            "priority": task.priority if priority is None else priority,
            "max_attempts": task.max_attempts,
            "run_at": run_at_for(run_at, delay) if (run_at is not None or delay) else None,
            "tag": tag, "dedupe_key": dedupe_key, "timeout": task.timeout,
            "on_success": json.dumps([s.to_json() for s in on_success]) if on_success else None}
        with self.session(conn, atomic=False) as db:
            row = query(db, self.statements.insert_job, params).fetchone()
            if row is None:
                assert dedupe_key is not None
                found = query(db, self.statements.find_dedupe, {"dedupe_key": dedupe_key}).fetchone()
                raise DuplicateJob(dedupe_key, found["id"] if found else None)
        return int(row["id"])

    def enqueue_many(self, task: Task, args_list: Iterable[dict[str, Any]], *,
                     priority: int | None = None, run_at: datetime | None = None,
                     delay: float | None = None, tag: str | None = None,
                     dedupe_keys: Sequence[str | None] | None = None,
                     on_success: Sequence[JobSpec] | None = None,
                     conn: psycopg.Connection[Any] | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE) -> list[int]:
        """Queue many jobs, one INSERT per `batch_size` rows, all in one transaction.

        Jobs whose dedupe key is taken are skipped: the ids returned are those inserted.
        """
        when = run_at_for(run_at, delay)
        ids: list[int] = []
        position = 0
        with self.session(conn) as db:
            for chunk in batched(args_list, batch_size):
                batch = RowBatch()
                for args in chunk:
                    key = dedupe_keys[position] if dedupe_keys is not None else None
                    position += 1
                    batch.add(task, args, priority=priority, run_at=when, group_id=None,
                              tag=tag, dedupe_key=key, on_success=on_success)
                ids.extend(insert_batch(db, self.statements, batch))
        return ids

    # -- groups ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def group(self, key: str, *, on_complete: Sequence[JobSpec] = (), tag: str | None = None,
              priority: int = 0, conn: psycopg.Connection[Any] | None = None) -> Iterator[Group]:
        """Create a group, add members, seal it on exit: all in one transaction.

        With `conn`, the group joins the caller's transaction (a fetch job creates the group
        of its pages atomically with its own bookkeeping). If the block raises, nothing of
        the group is kept.
        """
        with self.session(conn) as db:
            group = create_group(self, db, key, on_complete, tag, priority)
            yield group
            if not group.sealed:
                group.seal()

    def open_group(self, key: str, *, on_complete: Sequence[JobSpec] = (),
                   tag: str | None = None, priority: int = 0,
                   conn: psycopg.Connection[Any] | None = None) -> int:
        """Create a group that stays open across transactions; returns its id."""
        with self.session(conn) as db:
            return create_group(self, db, key, on_complete, tag, priority).id

    def add_to_group(self, group_id: int, task: Task, args_list: Iterable[dict[str, Any]], *,
                     conn: psycopg.Connection[Any] | None = None) -> list[int]:
        with self.session(conn) as db:
            row = query(db, self.statements.group_row, {"id": group_id}).fetchone()
            if row is None:
                raise JobNotFound(f"no group {group_id}")
            group = Group(self, db, group_id, row["key"], row["tag"], row["priority"])
            return group.enqueue_many(task, args_list)

    def seal_group(self, group_id: int, *, conn: psycopg.Connection[Any] | None = None) -> bool:
        with self.session(conn) as db:
            row = query(db, self.statements.seal_group, {"id": group_id}).fetchone()
            return bool(row and row["completed"])

    def get_group(self, group_id: int) -> GroupProgress:
        with self.session() as db:
            row = query(db, self.statements.group_by_id, {"id": group_id}).fetchone()
        if row is None:
            raise JobNotFound(f"no group {group_id}")
        return GroupProgress.from_row(row)

    def group_failures(self, group_id: int) -> list[dict[str, Any]]:
        """Members of a group that failed for good, with their errors."""
        with self.session() as db:
            return query(db, self.statements.group_failures, {"group_id": group_id}).fetchall()

    # -- reading --------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        with self.session() as db:
            row = query(db, self.statements.get_job, {"id": job_id}).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id} (never existed, or pruned)")
        return Job.from_row(row)

    def queue_depth(self) -> list[dict[str, Any]]:
        with self.session() as db:
            return query(db, self.statements.queue_depth).fetchall()

    def active_workers(self) -> list[dict[str, Any]]:
        with self.session() as db:
            return query(db, self.statements.active_workers).fetchall()

    def metrics_snapshot(self) -> dict[str, Any]:
        """What /metrics shows, read from the views at scrape time (see pgqueue.metrics)."""
        with self.session() as db:
            depth = query(db, self.statements.queue_depth).fetchall()
            workers = query(db, self.statements.active_workers).fetchall()
            finished = query(db, self.statements.task_counts).fetchall()
        alive: dict[str, int] = {}
        for worker in workers:
            for name in worker["queues"]:
                alive[name] = alive.get(name, 0) + 1
        return {
            "depth": [(r["queue"], r["state"], int(r["jobs"])) for r in depth],
            "workers": sorted(alive.items()),
            "finished": [(r["queue"], r["task"], r["state"], int(r["jobs"])) for r in finished],
            "durations": [(r["queue"], r["task"], {"sum": float(r["seconds"]), "count": int(r["jobs"])})
                          for r in finished if r["state"] == "succeeded"],
        }

    # -- work -----------------------------------------------------------------------------

    def worker(self, queues: Sequence[str] | None = None, **options: Any) -> Any:
        from pgqueue.worker import Worker
        names = list(queues) if queues else sorted({t.queue for t in self.tasks.values()})
        return Worker(self, names, **options)

    def work(self, queues: Sequence[str] | None = None, *, concurrency: int = 1,
             burst: bool = False, **options: Any) -> int:
        """Run a worker in this process until stopped (or, with burst, until idle)."""
        return int(self.worker(queues, concurrency=concurrency, burst=burst, **options).run())

    # -- admin ----------------------------------------------------------------------------

    cancel = admin.cancel
    purge_queue = admin.purge_queue
    retry_failed = admin.retry_failed
    failed_jobs = admin.failed_jobs
    prune = admin.prune
    rescue_expired = admin.rescue_expired
