"""The JobStore: every statement pgqueue runs, and the connections they run on.

Nothing else in pgqueue names a statement or opens a connection: the facade (`Queue`),
the worker and its helpers (`leases`, `notify`, `maintenance`), `groups` and `admin` all
ask the store. Each operation is one of the named statements of
`sql/pgqueue/queries.sql`, run through `pgqueue.db.query`, so psycopg errors are
translated at that one boundary.

Connections: short work (enqueueing, reads, admin) borrows from a small pool, one per
process; a worker holds its own dedicated connections (`connect()`), because a claim loop
must not wait behind an application's enqueues. Each names its role in
`application_name` (`pgqueue.connections`). With a pooler in front of the server,
`listen_dsn` reaches PostgreSQL itself: LISTEN and session advisory locks go there
(`connect(direct=True)`), and statements on the pooled `dsn` are never prepared
(PgBouncer in transaction mode before 1.21 cannot keep them). In a job child (process
isolation) a session is the child's one gated connection, closed when the job ends.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from pgqueue import connections
from pgqueue.claiming import CONCURRENCY_PARK_SECONDS
from pgqueue.db import (
    CONNECT_TIMEOUT,
    connect,
    decode_json_safely,
    describe,
    int_array,
    query,
    translate_errors,
    without_jit,
)
from pgqueue.enqueue import (
    DEFAULT_BATCH_SIZE,
    RowBatch,
    copy_rows,
    insert_batch,
    job_params,
    plan_batches,
    run_at_for,
)
from pgqueue.errors import DatabaseUnavailable, DuplicateJob
from pgqueue.jobs import ClaimedJob, storable
from pgqueue.sql import Statements

if TYPE_CHECKING:
    from pgqueue.tasks import JobSpec, Task

DEFAULT_POOL_SIZE = 4  # connections for enqueueing and reads; workers hold their own
NEVER_CONNECTED_CHECK = 0.2  # seconds between looks at a pool that has not connected yet

# A final state to record: (job id, attempt, state, error).
Final = tuple[int, int, str, str | None]
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
# A failed attempt to retry: (job id, attempt, delay in seconds, error).
Retry = tuple[int, int, float, str | None]

# A job of a task this worker does not know is given back (a rolling upgrade: a newer
# worker will know it) after 15 s, then 30, 60, 120, 240: about eight minutes in all,
# then it fails.
UNKNOWN_TASK_DELAY = 15.0
MAX_UNKNOWN_RETURNS = 5
_stores: weakref.WeakSet[JobStore] = weakref.WeakSet()
_inherited_pools: list[ConnectionPool] = []


def _after_fork_in_child() -> None:
    """A forked child must never use, nor close, its parent's pooled connections: closing
    would send the server a Terminate on the parent's sockets. Keep them unreferenced by
    the stores and alive until the child exits."""
    for store in list(_stores):
        store._pool_lock = threading.Lock()  # a thread may have held it at the fork
        store._in_use = 0
        if store._pool is not None:
            _inherited_pools.append(store._pool)
            store._pool = None
            store._pool_key = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _end_job() -> None:
    for store in list(_stores):
        store.end_job()


connections.on_job_end(_end_job)


def never_connected(stats: Mapping[str, int]) -> bool:
    """A pool (its `get_stats()`) that has tried to connect and failed every time: a
    wrong URL, or a server down since this process started."""
    return 0 < stats.get("connections_num", 0) <= stats.get("connections_errors", 0)


def wait_slice(deadline: float) -> float:
    """How long to wait on a pool before looking again whether it ever connected."""
    return max(0.01, min(NEVER_CONNECTED_CHECK, deadline - time.monotonic()))


def pool_busy(dsn: str, size: int, kind: str = "") -> DatabaseUnavailable:
    """The error when PostgreSQL accepts connections and a pool still has none to give."""
    return DatabaseUnavailable(
        f"no free connection to PostgreSQL at {describe(dsn)} within {CONNECT_TIMEOUT} s: "
        f"all {size} of this process's {kind}pooled connections are busy (pool_size)")


def _getconn(pool: ConnectionPool) -> psycopg.Connection[Any]:
    """`pool.getconn()`, but a pool that has never connected gives up as soon as its every
    attempt has failed: a command started with a wrong URL, or while PostgreSQL is down,
    says why in a moment, not after CONNECT_TIMEOUT. A pool that has connected before
    waits the whole timeout (it rides out a restart)."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return pool.getconn(timeout=wait_slice(deadline))
        except PoolTimeout:
            if time.monotonic() >= deadline or never_connected(pool.get_stats()):
                raise


def lock_key(purpose: str, schema: str) -> int:
    """The advisory lock of one duty in one schema (prune, maintenance)."""
    return zlib.crc32(f"pgqueue-{purpose}:{schema}".encode())


class JobStore:
    """The statements of one schema and the connections to one database."""

    def __init__(self, dsn: str, schema: str = "pgqueue", *,
                 pool_size: int = DEFAULT_POOL_SIZE, listen_dsn: str | None = None) -> None:
        self._dsn = dsn
        self._listen_dsn = listen_dsn
        self._job_conn: psycopg.Connection[Any] | None = None
        self.statements = Statements(schema)
        self.schema = self.statements.schema
        self.pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._pool_key: tuple[int, str] | None = None
        self._pool_lock = threading.Lock()  # two threads must not both build a pool
        # The last pooled session found PostgreSQL refusing: the next ones ask it directly
        # first, and fail at once with its reason while it still refuses (`_pool_session`).
        self._refusing = False
        self._in_use = 0  # pooled connections lent out now (busy, or a stale pool?)
        self.claims = 0  # claim round trips made by this process (tests and bench read it)
        self.wake_at: datetime | None = None  # the last claim's earliest parked job
        _stores.add(self)

    # -- connections ----------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        return self._dsn

    @dsn.setter
    def dsn(self, value: str) -> None:
        if value != self._dsn:
            self.close()  # the pool belongs to the old database
        self._dsn = value

    @property
    def listen_dsn(self) -> str:
        """PostgreSQL itself, for LISTEN and session locks: `dsn` unless a pooler is used."""
        return self._listen_dsn or self._dsn

    @property
    def pooled(self) -> bool:
        """A separate direct URL was given: `dsn` goes through a (transaction) pooler."""
        return self.listen_dsn != self._dsn

    def _options(self, role: str) -> dict[str, Any]:
        options: dict[str, Any] = {"application_name": role}
        if self.pooled:
            options["prepare_threshold"] = None  # a pooler may hand us another backend
        else:
            options["options"] = without_jit(self._dsn)
        return options

    def connect(self, *, autocommit: bool = False, role: str = connections.POOL,
                direct: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
        """A dedicated connection (workers hold their own), named `role`; `direct`: to
        PostgreSQL itself (LISTEN, session locks), past any pooler. See `session` for
        short work."""
        if direct:
            return connect(self.listen_dsn, autocommit=autocommit,
                           **{"application_name": role,
                              "options": without_jit(self.listen_dsn), **kwargs})
        return connect(self._dsn, autocommit=autocommit, **{**self._options(role), **kwargs})

    def _connection_pool(self) -> ConnectionPool:
        key = (os.getpid(), self._dsn)  # a forked process must not share its parent's sockets
        pool = self._pool
        if pool is not None and self._pool_key == key:
            return pool
        # Threads that race here wait, then find the first one's pool: a second pool would
        # be dropped unclosed (its connections leaked, a warning at its __del__).
        with self._pool_lock:
            if self._pool is None or self._pool_key != key:
                self._pool = ConnectionPool(
                    self._dsn, min_size=1, max_size=self.pool_size, open=True, name="pgqueue",
                    timeout=CONNECT_TIMEOUT, check=ConnectionPool.check_connection,
                    kwargs={"autocommit": True, "row_factory": dict_row,
                            "connect_timeout": CONNECT_TIMEOUT,
                            **self._options(connections.POOL)},
                    configure=decode_json_safely)
                self._pool_key = key
            return self._pool

    @contextlib.contextmanager
    def session(self, conn: psycopg.Connection[Any] | None = None, *, atomic: bool = True
                ) -> Iterator[psycopg.Connection[Any]]:
        """A connection for short work: the caller's (joining its transaction), or a pooled
        one. `atomic` wraps the work in a transaction (a savepoint inside the caller's);
        a single statement needs none, which saves two round trips."""
        if conn is None and connections.in_job_child():
            with self._job_session() as own:
                if atomic:
                    with own.transaction():
                        yield own
                else:
                    yield own
            return
        if conn is not None:
            if atomic:
                with conn.transaction():
                    yield conn
            else:
                yield conn
            return
        with self._pool_session() as pooled:
            if atomic:
                with pooled.transaction():
                    yield pooled
            else:
                yield pooled

    @contextlib.contextmanager
    def _pool_session(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, or DatabaseUnavailable saying why there is none.

        The pool waits up to CONNECT_TIMEOUT for a connection (riding out a server restart),
        or less if it has never connected (`_getconn`). When it gives up, one direct
        connect tells the causes apart: PostgreSQL refuses (its reason is the message); it
        accepts and every pooled connection is in use (busy); or it accepts and the pool is
        still backing off from an outage (its retries wait up to minutes): then a fresh
        pool serves. While the server refuses, each later session asks it directly first
        and fails at once: a dashboard polling a down database answers in milliseconds, not
        10 s a request.
        """
        pool, conn = self._borrow()
        with self._pool_lock:
            self._in_use += 1
        try:
            with conn:  # as ConnectionPool.connection(): commit or roll back, then give back
                yield conn
        finally:
            with self._pool_lock:
                self._in_use -= 1
            pool.putconn(conn)

    def _borrow(self) -> tuple[ConnectionPool, psycopg.Connection[Any]]:
        """A connection from the pool, and the pool (see `_pool_session`)."""
        if self.refusing:
            self.raise_if_refused()
        renewed = False
        for _ in range(3):
            pool = self._connection_pool()
            try:
                return pool, _getconn(pool)
            except PoolClosed:  # another thread renewed it while this one waited
                continue
            except PoolTimeout:
                self.raise_if_refused()
                if renewed or self._in_use >= self.pool_size:
                    break
                self._renew_pool(pool)
                renewed = True
        raise pool_busy(self._dsn, self.pool_size)

    @property
    def refusing(self) -> bool:
        """The last direct connect (`raise_if_refused`) was refused."""
        return self._refusing

    def raise_if_refused(self) -> None:
        """Connect directly once: DatabaseUnavailable with PostgreSQL's reason if it refuses
        (a pool's timeout does not say why); if it accepts after refusing, the pool (still
        backing off) is renewed."""
        try:
            connect(self._dsn, autocommit=True, **self._options(connections.POOL)).close()
        except DatabaseUnavailable:
            self._refusing = True
            raise
        if self._refusing:
            self._refusing = False
            if self._pool is not None:
                self._renew_pool(self._pool)

    def _renew_pool(self, stale: ConnectionPool) -> None:
        """Replace a pool that cannot connect to a server that accepts: a session waiting
        on it takes the new one (`_borrow`); those using its connections keep them until
        they give them back, then they close."""
        with self._pool_lock:
            if self._pool is stale:
                self._pool = None
                self._pool_key = None
        stale.close(timeout=0)

    @contextlib.contextmanager
    def transaction(self, conn: psycopg.Connection[Any] | None = None, *, atomic: bool = True
                    ) -> Iterator[psycopg.Connection[Any]]:
        """`session()` for pgqueue's own statements: psycopg errors translated, the commit's
        included. (`session()` itself leaves a caller's own SQL its psycopg errors.)"""
        with translate_errors(), self.session(conn, atomic=atomic) as db:
            yield db

    @contextlib.contextmanager
    def _job_session(self) -> Iterator[psycopg.Connection[Any]]:
        """A job child's connection: opened under one of its worker's job-connection slots
        by the outermost session, shared by nested ones, closed (the slot freed) when the
        outermost ends, so a job holds no slot between its sessions."""
        conn = self._job_conn
        if conn is not None and not conn.closed:
            yield conn  # nested: the outer session's
            return
        gate = connections.job_gate()
        if gate is not None:
            gate.acquire()
        try:
            self._job_conn = self.connect(autocommit=True, role=connections.JOB)
            yield self._job_conn
        finally:
            self.end_job()
            if gate is not None:
                gate.release()

    def end_job(self) -> None:
        """A job child's job ended: its connection goes (the slot is freed by the caller)."""
        conn, self._job_conn = self._job_conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def close(self) -> None:
        """Close the pooled connections of this process."""
        with self._pool_lock:
            if self._pool is not None and self._pool_key is not None \
                    and self._pool_key[0] == os.getpid():
                self._pool.close()
            self._pool = None
            self._pool_key = None

    def run(self, conn: psycopg.Connection[Any], name: str, params: Any = None
            ) -> psycopg.Cursor[dict[str, Any]]:
        """Run one named statement: the path every operation below takes."""
        return query(conn, getattr(self.statements, name), params)

    # -- enqueue --------------------------------------------------------------------------

    def enqueue(self, task: Task, args: dict[str, Any] | None = None, *,
                priority: int | None = None, run_at: datetime | None = None,
                delay: float | None = None, dedupe_key: str | None = None,
                tag: str | None = None, on_success: Sequence[JobSpec] | None = None,
                conn: psycopg.Connection[Any] | None = None) -> int:
        """Queue one job and return its id. A taken dedupe key raises DuplicateJob."""
        params = job_params(task, args or {}, priority=priority,
                            run_at=run_at_for(run_at, delay) if (run_at or delay) else None,
                            tag=tag, dedupe_key=dedupe_key, on_success=on_success)
        with self.transaction(conn, atomic=False) as db:
            row = self.run(db, "insert_job", params).fetchone()
            if row is None:
                assert dedupe_key is not None
                found = self.run(db, "find_dedupe", {"dedupe_key": dedupe_key}).fetchone()
                raise DuplicateJob(dedupe_key, found["id"] if found else None)
        return int(row["id"])

    def insert_rows(self, conn: psycopg.Connection[Any], task: Task,
                    args_list: Iterable[dict[str, Any]], *, priority: int | None,
                    run_at: datetime, group_id: int | None, tag: str | None,
                    dedupe_keys: Sequence[str | None] | None,
                    on_success: Sequence[JobSpec] | None,
                    batch_size: int = DEFAULT_BATCH_SIZE,
                    before_each: Any = None) -> list[int]:
        """Insert many jobs on `conn`, one statement (or COPY) per `batch_size` rows.
        `before_each(conn, count)` runs ahead of each batch (a group counts its members)."""
        ids: list[int] = []
        for batch in plan_batches(task, args_list, priority=priority, run_at=run_at,
                                  group_id=group_id, tag=tag, dedupe_keys=dedupe_keys,
                                  on_success=on_success, batch_size=batch_size):
            if before_each is not None:
                before_each(conn, len(batch))
            if isinstance(batch, RowBatch):
                ids.extend(insert_batch(conn, self.statements, batch))
            else:
                ids.extend(copy_rows(conn, self.statements, task, batch, priority=priority,
                                     run_at=run_at, group_id=group_id, tag=tag,
                                     on_success=on_success))
        return ids

    # -- a worker's statements ------------------------------------------------------------

    def register_worker(self, conn: psycopg.Connection[Any], *, host: str, pid: int,
                        queues: Sequence[str], concurrency: int, isolation: str) -> int:
        row = self.run(conn, "register_worker", {
            "host": host, "pid": pid, "queues": list(queues), "concurrency": concurrency,
            "metadata": Jsonb({"isolation": isolation})}).fetchone()
        assert row is not None
        return int(row["id"])

    def _claim(self, queues: Sequence[str], limit: int, worker_id: int | None,
               lease_seconds: float, free: int | None, floor: int | None,
               buffered: Sequence[str] | None) -> tuple[Any, dict[str, Any]]:
        """The best jobs across `queues` (priority first; one queue is the simple case)."""
        params = {"limit": limit, "worker_id": worker_id, "lease_seconds": lease_seconds,
                  "free": limit if free is None else free, "floor": floor,
                  "buffered": None if buffered is None else list(buffered),
                  "park_seconds": CONCURRENCY_PARK_SECONDS}
        return self.statements.claim, {**params, "queues": list(queues)}

    def claim(self, conn: psycopg.Connection[Any], *, worker_id: int | None,
              queues: Sequence[str], limit: int, lease_seconds: float) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs to this worker (attempt counted now)."""
        return self.finish_and_claim(conn, [], [], worker_id=worker_id, queues=queues,
                                     limit=limit, lease_seconds=lease_seconds)

    def finish_and_claim(self, conn: psycopg.Connection[Any], finals: Sequence[Final],
                         retries: Sequence[Retry], *, worker_id: int | None,
                         queues: Sequence[str], limit: int, lease_seconds: float,
                         free: int | None = None, floor: int | None = None,
                         buffered: Sequence[str] | None = None,
                         results: Mapping[int, str] | None = None) -> list[ClaimedJob]:
        """Record finished attempts (with `results`, see `finish`) and claim up to
        `limit` new jobs, best first.

        `free` of them (default: all) are for free slots; the rest wait in the worker's
        memory and are claimed only at the best priority found, at least `floor`, and
        from the `buffered` queues (default: any) (see `claim` in queries.sql): a backlog
        must not overtake a higher-priority run, nor long jobs be hoarded.

        With both to do, they share one transaction sent as one pipeline: one round trip
        and one commit (one WAL flush) instead of two. The records go first: the
        follow-ups a finish inserts (on_success chains, a completed group's) are then
        claimable by this same claim, so a run's next step is never queued behind jobs
        claimed a moment before it existed.
        """
        rows: list[dict[str, Any]] = []
        if limit > 0:
            self.claims += 1
        claim = self._claim(queues, limit, worker_id, lease_seconds, free, floor, buffered)
        with translate_errors():
            if finals or retries:
                with conn.pipeline(), conn.transaction():
                    self._record(conn, finals, retries, results)
                    cursor = (conn.cursor(row_factory=dict_row).execute(*claim)
                              if limit > 0 else None)
                if cursor is not None:
                    rows = cursor.fetchall()
            elif limit > 0:
                rows = conn.cursor(row_factory=dict_row).execute(*claim).fetchall()
        # A row without an id is no job: the earliest time a job parked by its limit may
        # start (see `claim`); the worker waits no longer than that.
        if limit > 0:  # a wake-up time still ahead is kept: another claim may not see it
            now = datetime.now(UTC)
            self.wake_at = min([row["run_at"] for row in rows if row["id"] is None]
                               + ([self.wake_at] if self.wake_at and self.wake_at > now
                                  else []), default=None)
        return [ClaimedJob.from_row(row) for row in rows if row["id"] is not None]

    def _record(self, conn: psycopg.Connection[Any], finals: Sequence[Final],
                retries: Sequence[Retry], results: Mapping[int, str] | None = None) -> None:
        returned = [f for f in finals if f[2] == "returned"]
        if returned:  # tasks this worker does not know: given back, or failed at last
            finals = [f for f in finals if f[2] != "returned"] + self.give_back_unknown(
                conn, returned)
        if finals:
            self.finish(conn, finals, from_state="running", results=results)
        if retries:
            self.run(conn, "requeue_attempts", {
                "outcome": "failed",
                "ids": [r[0] for r in retries], "attempts": [r[1] for r in retries],
                "delays": [r[2] for r in retries], "errors": [storable(r[3]) for r in retries]})

    def give_back_unknown(self, conn: psycopg.Connection[Any], returned: Sequence[Final]
                          ) -> list[Final]:
        """Queue jobs whose task the worker does not know again, later, the attempt not
        counted; returns, as failed finals, those given back `MAX_UNKNOWN_RETURNS` times."""
        given = {row["id"] for row in self.run(conn, "give_back_unknown", {
            "ids": [f[0] for f in returned], "attempts": [f[1] for f in returned],
            "errors": [storable(f[3]) for f in returned], "delay": UNKNOWN_TASK_DELAY,
            "max_returns": MAX_UNKNOWN_RETURNS}).fetchall()}
        return [(f[0], f[1], "failed", f"{f[3]}; given back {MAX_UNKNOWN_RETURNS} times "
                 "and no worker that knows it claimed it: failed")
                for f in returned if f[0] not in given]

    def finish(self, conn: psycopg.Connection[Any], finals: Sequence[Final], *,
               from_state: str, results: Mapping[int, str] | None = None) -> int:
        """Move jobs to final states through `finish_jobs` (group counting included); a
        job no longer in `from_state` at the given attempt is left alone. `results`: the
        JSON text of succeeded jobs' return values, by job id. Waiters are woken."""
        if not finals:
            return 0
        states = [f[2] for f in finals]
        if not FINAL_STATES.issuperset(states):
            raise ValueError(f"not final states: {sorted(set(states) - FINAL_STATES)}")
        found = results or {}
        errors = [storable(f[3]) for f in finals]
        kept = [found.get(f[0]) for f in finals] if found else []
        # The arrays in PostgreSQL's text, joined at once: dumped element by element they
        # were a tenth of a worker's Python per job. All-NULL columns are sent as NULL
        # (unnest pads a shorter array with NULLs).
        cursor = self.run(conn, "finish_jobs", {
            "ids": int_array(f[0] for f in finals), "attempts": int_array(f[1] for f in finals),
            "states": "{" + ",".join(states) + "}",
            "errors": errors if any(e is not None for e in errors) else None,
            "results": kept if any(r is not None for r in kept) else None,
            "from_state": from_state})
        self.run(conn, "notify_waiters")
        row = cursor.fetchone()
        return int(row["finished"]) if row else 0

    def release(self, conn: psycopg.Connection[Any], *, worker_id: int | None,
                ids: Sequence[int], started: Sequence[int] = (),
                reason: str = "given back at a warm shutdown") -> int:
        """Give unfinished jobs back (a warm stop): queued again, the attempt not counted;
        those in `started` (a slot ran them) kept as a 'returned' attempt saying `reason`."""
        return len(self.run(conn, "release_jobs", {
            "ids": list(ids), "worker_id": worker_id, "started": int_array(started),
            "reason": reason}).fetchall())

    def heartbeat(self, conn: psycopg.Connection[Any], *, worker_id: int | None,
                  ids: Sequence[int], lease_seconds: float) -> dict[int, bool]:
        """Extend the leases of the jobs still held: {job id: cancel requested}."""
        rows = self.run(conn, "heartbeat", {"worker_id": worker_id, "ids": list(ids),
                                            "lease_seconds": lease_seconds}).fetchall()
        return {row["id"]: row["cancel_requested"] for row in rows}

    def count_done(self, conn: psycopg.Connection[Any], *, worker_id: int | None,
                   count: int) -> None:
        self.run(conn, "worker_done_jobs", {"worker_id": worker_id, "count": count})

    def stop_worker(self, conn: psycopg.Connection[Any], *, worker_id: int | None) -> None:
        self.run(conn, "stop_worker", {"worker_id": worker_id})

    def idle_everywhere(self, conn: psycopg.Connection[Any], queues: Sequence[str],
                        horizon: float) -> bool:
        """No job of these queues running, nor due within `horizon` seconds (burst mode)."""
        row = self.run(conn, "unfinished_soon", {"queues": list(queues), "horizon": horizon}
                       ).fetchone()
        return row is not None and row["n"] == 0

    # -- maintenance ----------------------------------------------------------------------

    def try_lock(self, conn: psycopg.Connection[Any], key: int) -> bool:
        """A session advisory lock, without waiting."""
        row = self.run(conn, "try_advisory_lock", {"key": key}).fetchone()
        return bool(row and row["locked"])

    def unlock(self, conn: psycopg.Connection[Any], key: int) -> None:
        self.run(conn, "advisory_unlock", {"key": key})
