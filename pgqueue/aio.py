"""`AsyncQueue`: enqueue, groups, reads and waiting for results from a coroutine.

This module owns pgqueue's asyncio client side: psycopg's `AsyncConnection` and an
`AsyncConnectionPool`, so a FastAPI or aiohttp handler can enqueue, add to a group, read a
job and await its result without blocking its event loop. (Running `async def` tasks is the
worker's business: `pgqueue.aioloop`.)

It is built from a `Queue`, not from a DSN: one application, one task registry. Tasks are
registered once with `@q.task` (sync or `async def`), workers run them from that registry,
and `AsyncQueue(q)` enqueues the same `Task` objects with the same named statements of
`sql/pgqueue/queries.sql` (the queue's `Statements`, composed for its schema), the same
row formatting (`pgqueue.enqueue`), and the same result protocol (`pgqueue.results`). A
DSN-built AsyncQueue would need a second registry to keep in step with the first.

    aq = AsyncQueue(q)          # opens its pool in the running loop, on first use
    job_id = await aq.enqueue(fetch, {"url": url})
    result = await aq.wait_async(job_id, timeout=30)
    await aq.close()            # or: async with AsyncQueue(q) as aq: ...

Nothing here blocks the loop: statements are awaited, a COPY of many jobs yields to the
loop between its chunks, and `wait_async` sleeps on LISTEN (its own connection to
PostgreSQL itself, `listen_dsn`), checking the job once more after each `RECHECK_SECONDS`
without a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from pgqueue import connections, results
from pgqueue.db import (
    CONNECT_TIMEOUT,
    decode_json_safely,
    describe,
    remember_secrets,
    translate_errors,
    without_jit,
)
from pgqueue.enqueue import (
    COPY_ROWS_PER_WRITE,
    DEFAULT_BATCH_SIZE,
    RowBatch,
    batched_text,
    job_params,
    plan_batches,
    reserve_params,
    run_at_for,
    task_rows,
)
from pgqueue.errors import (
    DatabaseUnavailable,
    DuplicateJob,
    GroupExists,
    GroupSealed,
    JobNotFound,
    WaitTimeout,
)
from pgqueue.jobs import Job
from pgqueue.store import DEFAULT_POOL_SIZE, JobStore, never_connected, pool_busy, wait_slice
from pgqueue.tasks import JobSpec, Task, check_priority

AsyncConn = psycopg.AsyncConnection[Any]
RECHECK_SECONDS = 30.0  # wait_async looks at the job again after this long without a NOTIFY
POOL_ROLE = connections.POOL + "-async"


class HasRegistry(Protocol):
    """What AsyncQueue needs of a `Queue` (no pgqueue module imports the facade)."""

    store: JobStore
    tasks: dict[str, Task]


async def _getconn(pool: AsyncConnectionPool[AsyncConn]) -> AsyncConn:
    """`pool.getconn()`; a pool that has never connected gives up at once (see
    `pgqueue.store._getconn`)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return await pool.getconn(timeout=wait_slice(deadline))
        except PoolTimeout:
            if time.monotonic() >= deadline or never_connected(pool.get_stats()):
                raise


class AsyncQueue:
    """The async face of one `Queue`: same tables, tasks and statements; see the module
    docstring. Every method takes an optional `conn` (an `AsyncConnection` of the caller,
    joining its transaction) like the sync facade's."""

    def __init__(self, queue: HasRegistry, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.store = queue.store
        self.tasks: Mapping[str, Task] = queue.tasks
        self.statements = self.store.statements
        self.schema = self.store.schema
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._in_use = 0  # pooled connections lent out now (busy, or a stale pool?)
        self._opening: asyncio.Lock | None = None

    # -- connections ----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncQueue:
        await self._connection_pool()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pool (it reopens if used again)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _connection_pool(self) -> AsyncConnectionPool[AsyncConn]:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                remember_secrets(self.store.dsn)
                options: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                           "connect_timeout": CONNECT_TIMEOUT,
                                           "application_name": POOL_ROLE}
                if self.store.pooled:
                    options["prepare_threshold"] = None  # a pooler may hand us another backend
                else:
                    options["options"] = without_jit(self.store.dsn)
                pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
                    self.store.dsn, min_size=1, max_size=self.pool_size, open=False,
                    name="pgqueue-async", timeout=CONNECT_TIMEOUT, kwargs=options,
                    configure=_configure, check=AsyncConnectionPool.check_connection)
                await pool.open()
                self._pool = pool
            return self._pool

    @contextlib.asynccontextmanager
    async def session(self, conn: AsyncConn | None = None, *, atomic: bool = True
                      ) -> AsyncIterator[AsyncConn]:
        """An async connection for short work: the caller's (joining its transaction), or a
        pooled one; `atomic` wraps the work in a transaction (a savepoint in the caller's).
        psycopg errors inside become pgqueue's (`pgqueue.db.translate_errors`)."""
        with translate_errors():
            if conn is not None:
                if atomic:
                    async with conn.transaction():
                        yield conn
                else:
                    yield conn
                return
            pool, pooled = await self._borrow()
            self._in_use += 1
            try:
                async with pooled:  # as AsyncConnectionPool.connection(), then given back
                    if atomic:
                        async with pooled.transaction():
                            yield pooled
                    else:
                        yield pooled
            finally:
                self._in_use -= 1
                await pool.putconn(pooled)

    async def _borrow(self) -> tuple[AsyncConnectionPool[AsyncConn], AsyncConn]:
        """A pooled connection and its pool, or DatabaseUnavailable saying why there is none,
        as `JobStore._borrow`: a pool that never connected gives up at once, PostgreSQL's
        reason comes from one direct connect, and a pool still backing off from an outage
        the server is over is renewed."""
        if self.store.refusing:
            await asyncio.to_thread(self.store.raise_if_refused)
        renewed = False
        for _ in range(3):
            pool = await self._connection_pool()
            try:
                return pool, await _getconn(pool)
            except PoolClosed:  # renewed by another task while this one waited
                continue
            except PoolTimeout:
                await asyncio.to_thread(self.store.raise_if_refused)
                if renewed or self._in_use >= self.pool_size:
                    break
                if self._pool is pool:
                    self._pool = None
                await pool.close(timeout=0)
                renewed = True
        raise pool_busy(self.store.dsn, self.pool_size, "async ")

    async def run(self, conn: AsyncConn, name: str, params: Any = None
                  ) -> psycopg.AsyncCursor[dict[str, Any]]:
        """Run one named statement of the queue's schema (dict rows)."""
        with translate_errors():
            return await conn.cursor(row_factory=dict_row).execute(
                getattr(self.statements, name), params)

    # -- enqueue --------------------------------------------------------------------------

    async def enqueue(self, task: Task, args: dict[str, Any] | None = None, *,
                      priority: int | None = None, run_at: datetime | None = None,
                      delay: float | None = None, dedupe_key: str | None = None,
                      tag: str | None = None, on_success: Sequence[JobSpec] | None = None,
                      conn: AsyncConn | None = None) -> int:
        """Queue one job and return its id. A taken dedupe key raises DuplicateJob."""
        params = job_params(task, args or {}, priority=priority,
                            run_at=run_at_for(run_at, delay) if (run_at or delay) else None,
                            tag=tag, dedupe_key=dedupe_key, on_success=on_success)
        async with self.session(conn, atomic=False) as db:
            row = await (await self.run(db, "insert_job", params)).fetchone()
            if row is None:
                assert dedupe_key is not None
                found = await (await self.run(db, "find_dedupe",
                                              {"dedupe_key": dedupe_key})).fetchone()
                raise DuplicateJob(dedupe_key, found["id"] if found else None)
        return int(row["id"])

    async def enqueue_many(self, task: Task, args_list: Iterable[dict[str, Any]], *,
                           priority: int | None = None, run_at: datetime | None = None,
                           delay: float | None = None, tag: str | None = None,
                           dedupe_keys: Sequence[str | None] | None = None,
                           on_success: Sequence[JobSpec] | None = None,
                           conn: AsyncConn | None = None,
                           batch_size: int = DEFAULT_BATCH_SIZE) -> list[int]:
        """Queue many jobs in one transaction: a COPY per `batch_size` rows (an INSERT for
        small batches or with dedupe keys, whose taken keys are skipped)."""
        async with self.session(conn) as db:
            return await self._insert_rows(db, task, args_list, priority=priority,
                                           run_at=run_at_for(run_at, delay), group_id=None,
                                           tag=tag, dedupe_keys=dedupe_keys,
                                           on_success=on_success, batch_size=batch_size)

    async def _insert_rows(self, db: AsyncConn, task: Task, args_list: Iterable[dict[str, Any]],
                           *, priority: int | None, run_at: datetime, group_id: int | None,
                           tag: str | None, dedupe_keys: Sequence[str | None] | None,
                           on_success: Sequence[JobSpec] | None,
                           batch_size: int = DEFAULT_BATCH_SIZE,
                           grow: AsyncGroup | None = None) -> list[int]:
        """`JobStore.insert_rows`, awaited: the same batches and rows."""
        ids: list[int] = []
        for batch in plan_batches(task, args_list, priority=priority, run_at=run_at,
                                  group_id=group_id, tag=tag, dedupe_keys=dedupe_keys,
                                  on_success=on_success, batch_size=batch_size):
            if grow is not None:
                await grow.count(db, len(batch))
            if isinstance(batch, RowBatch):
                row = await (await self.run(db, "insert_jobs", batch.params())).fetchone()
                assert row is not None
                ids.extend(row["ids"])
            else:
                ids.extend(await self._copy(db, task, batch, priority=priority, run_at=run_at,
                                            group_id=group_id, tag=tag, on_success=on_success))
            await asyncio.sleep(0)  # let the loop run between batches
        return ids

    async def _copy(self, db: AsyncConn, task: Task, chunk: list[dict[str, Any]], *,
                    priority: int | None, run_at: datetime, group_id: int | None,
                    tag: str | None, on_success: Sequence[JobSpec] | None) -> list[int]:
        reserved = await (await self.run(db, "reserve_job_ids", reserve_params(
            self.statements, len(chunk), [task.queue]))).fetchone()
        assert reserved is not None
        ids: list[int] = list(reserved["ids"])
        rows = task_rows(ids, task, chunk, priority=priority, run_at=run_at, group_id=group_id,
                         tag=tag, on_success=on_success)
        with translate_errors():
            async with db.cursor().copy(self.statements.copy_jobs) as copy:
                for text in batched_text(rows, COPY_ROWS_PER_WRITE):
                    await copy.write(text)
                    await asyncio.sleep(0)  # the loop runs between chunks: never blocked
        return ids

    # -- groups ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def group(self, key: str, *, on_complete: Sequence[JobSpec] = (),
                    tag: str | None = None, priority: int = 0,
                    conn: AsyncConn | None = None) -> AsyncIterator[AsyncGroup]:
        """Create a group, add members, seal it on exit: one transaction (nothing kept if
        the block raises), as `Queue.group`."""
        async with self.session(conn) as db:
            group = await self._create_group(db, key, on_complete, tag, priority)
            yield group
            if not group.sealed:
                await group.seal()

    async def open_group(self, key: str, *, on_complete: Sequence[JobSpec] = (),
                         tag: str | None = None, priority: int = 0,
                         conn: AsyncConn | None = None) -> int:
        """Create a group that stays open across transactions; returns its id."""
        async with self.session(conn) as db:
            return (await self._create_group(db, key, on_complete, tag, priority)).id

    async def add_to_group(self, group_id: int, task: Task, args_list: Iterable[dict[str, Any]],
                           *, conn: AsyncConn | None = None) -> list[int]:
        async with self.session(conn) as db:
            row = await (await self.run(db, "group_row", {"id": group_id})).fetchone()
            if row is None:
                raise JobNotFound(f"no group {group_id}")
            group = AsyncGroup(self, db, group_id, row["key"], row["tag"], row["priority"])
            return await group.enqueue_many(task, args_list)

    async def seal_group(self, group_id: int, *, conn: AsyncConn | None = None) -> bool:
        """No more members; True if the group completed at once (none pending)."""
        async with self.session(conn) as db:
            row = await (await self.run(db, "seal_group", {"id": group_id})).fetchone()
            return bool(row and row["completed"])

    async def _create_group(self, db: AsyncConn, key: str, on_complete: Sequence[JobSpec],
                            tag: str | None, priority: int) -> AsyncGroup:
        check_priority(priority, f"group {key!r}")
        specs = json.dumps([spec.to_json() for spec in on_complete])
        row = await (await self.run(db, "create_group", {
            "key": key, "tag": tag, "priority": priority, "on_complete": specs})).fetchone()
        if row is None:
            existing = await (await self.run(db, "find_group", {"key": key})).fetchone()
            assert existing is not None
            if existing["sealed"]:
                raise GroupExists(key, existing["id"])
            return AsyncGroup(self, db, existing["id"], key, tag, priority)
        return AsyncGroup(self, db, row["id"], key, tag, priority)

    # -- reading and waiting --------------------------------------------------------------

    async def get_job(self, job_id: int, *, conn: AsyncConn | None = None) -> Job:
        async with self.session(conn, atomic=False) as db:
            row = await (await self.run(db, "get_job", {"id": job_id})).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id} (never existed, or pruned)")
        return Job.from_row(row)

    async def wait_async(self, job_id: int, timeout: float | None = None) -> Any:
        """Wait for the job to finish without blocking the loop; return its result, or
        raise `JobFailed` with its recorded error (`WaitTimeout` after `timeout` seconds,
        `JobNotFound` if there is no such job). Woken by the finish's NOTIFY (the
        `pgqueue.results` protocol: LISTEN, a waiter row, then a look at the job)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        remember_secrets(self.store.listen_dsn)
        with translate_errors():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.store.listen_dsn, autocommit=True, row_factory=dict_row,
                    connect_timeout=CONNECT_TIMEOUT, application_name=results.WAIT)
            except psycopg.OperationalError as error:
                raise DatabaseUnavailable(f"cannot connect to PostgreSQL at "
                                          f"{describe(self.store.listen_dsn)}: "
                                          f"{str(error).strip().splitlines()[0]}") from None
            async with conn:
                decode_json_safely(cast("psycopg.Connection[Any]", conn))
                await conn.execute(sql.SQL("LISTEN {}").format(
                    sql.Identifier(results.finished_channel(self.schema))))
                registered = False
                try:
                    while True:
                        if not registered:
                            await self.run(conn, "add_waiter", {"id": job_id})
                            registered = True
                        # Waits for a finish in flight to commit, then finds no row.
                        if await (await self.run(conn, "unfinished_job",
                                                 {"id": job_id})).fetchone() is None:
                            await self.run(conn, "remove_waiter", {"id": job_id})
                            registered = False
                            return results.outcome(await self.get_job(job_id, conn=conn))
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise WaitTimeout(f"job {job_id} did not finish within {timeout} s")
                        wait = RECHECK_SECONDS if left is None else min(left, RECHECK_SECONDS)
                        woken = False
                        async for notice in conn.notifies(timeout=wait, stop_after=1):
                            woken = notice.payload == str(job_id)
                        if woken:
                            registered = False  # its row went with the notification
                finally:
                    if registered and not conn.closed:
                        await self.run(conn, "remove_waiter", {"id": job_id})

    wait = wait_async


class AsyncGroup:
    """An open group on one async connection (`AsyncQueue.group`): members added here are
    counted in the transaction that inserts them."""

    def __init__(self, queue: AsyncQueue, conn: AsyncConn, group_id: int, key: str,
                 tag: str | None, priority: int) -> None:
        self.queue = queue
        self.conn = conn
        self.id = group_id
        self.key = key
        self.tag = tag
        self.priority = priority
        self.sealed = False

    async def enqueue(self, task: Task, **kwargs: Any) -> int:
        return (await self.enqueue_many(task, [kwargs]))[0]

    async def enqueue_many(self, task: Task, args_list: Iterable[dict[str, Any]], *,
                           priority: int | None = None,
                           on_success: Sequence[JobSpec] | None = None) -> list[int]:
        if self.sealed:
            raise self._sealed()
        async with self.conn.transaction():
            return await self.queue._insert_rows(
                self.conn, task, args_list,
                priority=self.priority if priority is None else priority,
                run_at=run_at_for(None, None), group_id=self.id, tag=self.tag,
                dedupe_keys=None, on_success=on_success, grow=self)

    async def count(self, conn: AsyncConn, count: int) -> None:
        """Count the next batch of members, in the transaction that inserts them."""
        if await (await self.queue.run(conn, "grow_group", {"id": self.id, "count": count})
                  ).fetchone() is None:
            raise self._sealed()

    def _sealed(self) -> GroupSealed:
        return GroupSealed(f"group {self.key!r} is sealed; no members can be added")

    async def seal(self) -> bool:
        row = await (await self.queue.run(self.conn, "seal_group", {"id": self.id})).fetchone()
        self.sealed = True
        return bool(row and row["completed"])


async def _configure(conn: AsyncConn) -> None:
    decode_json_safely(cast("psycopg.Connection[Any]", conn))
