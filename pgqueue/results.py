"""Job results: a task's return value, kept as JSON with its finished job, and waiting for
a job to finish.

The worker encodes what a task returns (`pgqueue.execution.succeeded`: JSON of at most
`MAX_RESULT_BYTES`, else the job fails, saying why, and is not retried) and `finish_jobs`
stores it in the job's `job_history` row, so a result lives and is pruned with its job.

`wait` is woken by LISTEN, never by polling: on its own connection to PostgreSQL itself
(`listen_dsn`) it LISTENs on '<schema>.finished', registers in `job_waiters`, then reads
the job. A finish notifies (payload: the job id) the waiters whose jobs have left `jobs`,
in the finishing transaction (`notify_waiters` in queries.sql says why none is missed),
so jobs nobody waits for cost a scan of an empty table per finish batch, no parameter.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from pgqueue.db import translate_errors
from pgqueue.errors import JobFailed, JobNotFound, WaitTimeout
from pgqueue.jobs import Job
from pgqueue.store import JobStore

FINISHED_CHANNEL = "finished"  # '<schema>.finished'
WAIT = "pgqueue:wait"  # the application_name of a waiter's connection


def finished_channel(schema: str) -> str:
    return f"{schema}.{FINISHED_CHANNEL}"


def get_job(store: JobStore, job_id: int) -> Job:
    with store.transaction(atomic=False) as db:
        row = store.run(db, "get_job", {"id": job_id}).fetchone()
    if row is None:
        raise JobNotFound(f"no job {job_id} (never existed, or pruned)")
    return Job.from_row(row)


def outcome(job: Job) -> Any:
    """A finished job's result, or its recorded error raised as `JobFailed`."""
    if job.state == "succeeded":
        return job.result
    raise JobFailed(job.id, str(job.state), job.last_error)


def wait(store: JobStore, job_id: int, timeout: float | None = None) -> Any:
    """Block until the job is finished; return its result or raise `JobFailed`
    (`WaitTimeout` after `timeout` seconds, `JobNotFound` if there is no such job)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with translate_errors(), store.connect(autocommit=True, role=WAIT, direct=True) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(finished_channel(store.schema))))
        registered = False
        try:
            while True:
                store.run(conn, "add_waiter", {"id": job_id})
                registered = True
                # Waits for a finish in flight to commit, then finds no row (see the SQL).
                if store.run(conn, "unfinished_job", {"id": job_id}).fetchone() is None:
                    registered = False  # the finish deleted it, or no job: one extra row
                    store.run(conn, "remove_waiter", {"id": job_id})
                    return outcome(get_job(store, job_id))
                wanted = str(job_id)
                while True:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise WaitTimeout(f"job {job_id} did not finish within {timeout} s")
                    woken = any(notice.payload == wanted
                                for notice in conn.notifies(timeout=left, stop_after=1))
                    if woken:
                        registered = False  # its row went with the notification
                        break
        finally:
            if registered and not conn.closed:
                store.run(conn, "remove_waiter", {"id": job_id})


def group_results(store: JobStore, group_id: int) -> dict[int, Any]:
    """The results of a group's succeeded members, by job id (a follow-up of the group
    reads them with `current_job().origin_group_id`)."""
    with store.transaction(atomic=False) as db:
        rows = store.run(db, "group_results", {"group_id": group_id}).fetchall()
    return {int(row["id"]): row["result"] for row in rows}
