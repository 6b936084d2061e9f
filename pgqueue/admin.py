"""Operator actions: cancel, purge, retry failed jobs, list failures.

Each takes the `JobStore` and reports counts; `Queue` exposes them as methods. None touches
files. Rescue and pruning are maintenance, not operator actions: see `pgqueue.maintenance`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from pgqueue.store import Final, JobStore


@dataclass(frozen=True)
class CancelResult:
    cancelled: int  # queued jobs now cancelled
    signalled: int  # running jobs told to stop
    groups: int  # groups marked cancelled (their follow-ups will not run)


def _finish_queued(store: JobStore, conn: psycopg.Connection[Any], rows: list[dict[str, Any]],
                   error: str) -> int:
    finals: list[Final] = [(r["id"], r["attempt"], "cancelled", error) for r in rows]
    return store.finish(conn, finals, from_state="queued")


def _flag_running(store: JobStore, conn: psycopg.Connection[Any], *, tag: str | None = None,
                  queue: str | None = None, group_id: int | None = None,
                  ids: list[int] | None = None) -> int:
    flagged = store.run(conn, "request_cancel_running", {
        "tag": tag, "queue": queue, "group_id": group_id, "ids": ids or []}).fetchone()
    return len(flagged["ids"]) if flagged else 0


def cancel(store: JobStore, *, tag: str | None = None, group_id: int | None = None,
           ids: list[int] | None = None) -> CancelResult:
    """Cancel the queued jobs of a tag (a site), a group, or ids; stop their running ones."""
    if tag is None and group_id is None and not ids:
        raise ValueError("cancel needs a tag, a group id or job ids")
    with store.transaction() as conn:
        # Running jobs first: a worker's finish locks jobs, then their groups.
        signalled = _flag_running(store, conn, tag=tag, group_id=group_id, ids=ids)
        groups = 0
        if tag is not None:
            groups += len(store.run(conn, "cancel_groups_by_tag", {"tag": tag}).fetchall())
            queued = store.run(conn, "lock_queued_by_tag", {"tag": tag}).fetchall()
        elif group_id is not None:
            groups += len(store.run(conn, "cancel_group", {"id": group_id}).fetchall())
            queued = store.run(conn, "lock_queued_by_group", {"group_id": group_id}).fetchall()
        else:
            queued = store.run(conn, "lock_queued_by_ids", {"ids": ids}).fetchall()
        cancelled = _finish_queued(store, conn, queued, "cancelled by request")
    return CancelResult(cancelled, signalled, groups)


def purge_queue(store: JobStore, queue: str) -> CancelResult:
    """Cancel every queued job of a queue and stop its running ones."""
    with store.transaction() as conn:
        queued = store.run(conn, "lock_queued_by_queue", {"queue": queue}).fetchall()
        cancelled = _finish_queued(store, conn, queued, f"queue {queue} purged")
        signalled = _flag_running(store, conn, queue=queue)
    return CancelResult(cancelled, signalled, 0)


def retry_failed(store: JobStore, *, ids: list[int] | None = None, queue: str | None = None,
                 tag: str | None = None) -> int:
    """Put failed jobs back in the queue (fresh attempts). Returns how many."""
    with store.transaction() as conn:
        locked = store.run(conn, "lock_failed", {"ids": ids, "queue": queue, "tag": tag}
                           ).fetchall()
        if not locked:
            return 0
        moved = store.run(conn, "requeue_failed", {"ids": [r["id"] for r in locked]}).fetchall()
        for name in sorted({r["queue"] for r in moved}):
            store.run(conn, "notify_queue", {"queue": name})
    return len(moved)


def failed_jobs(store: JobStore, *, queue: str | None = None, tag: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Recent failures: final ones, and jobs waiting to retry after an error."""
    with store.transaction(atomic=False) as conn:
        return store.run(conn, "failed_jobs", {"queue": queue, "tag": tag, "limit": limit}
                         ).fetchall()


def job_counts(store: JobStore) -> dict[str, dict[str, int]]:
    """Jobs by queue and state ({queue: {state: jobs}}, states as in the queue_depth view:
    queued, scheduled, running, succeeded, failed, cancelled), from the counters kept by
    triggers (migration 0008): a few milliseconds whatever the history holds. For pages
    that poll (the dashboard) as much as for `clerk status` and /metrics."""
    counts: dict[str, dict[str, int]] = {}
    with store.transaction(atomic=False) as conn:
        for row in store.run(conn, "queue_depth").fetchall():
            counts.setdefault(row["queue"], {})[row["state"]] = int(row["jobs"])
    return counts


def finished_per_minute(store: JobStore, minutes: int = 60) -> list[dict[str, Any]]:
    """Jobs finished per minute over the last `minutes`, by queue and state, with their
    run seconds: rows {minute, queue, state, jobs, seconds} from the per-minute rollups."""
    with store.transaction(atomic=False) as conn:
        return store.run(conn, "finished_per_minute", {"minutes": minutes}).fetchall()
