"""Operator actions on a Queue: cancel, purge, retry failed jobs, rescue, prune.

Each is a method of `Queue` (bound there); each reports counts. None touches files.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue.retry import Backoff

if TYPE_CHECKING:
    from pgqueue.queue import Queue

# Retention (River's defaults): successes a day, failures a week, so people can look.
KEEP_SUCCEEDED_SECONDS = 24 * 3600
KEEP_FAILED_SECONDS = 7 * 24 * 3600
KEEP_CANCELLED_SECONDS = 24 * 3600
PRUNE_BATCH = 5000
# A job whose worker died this many times is a poison job (it kills its worker): fail it.
MAX_RESCUES = 5
RESCUE_BATCH = 1000


@dataclass(frozen=True)
class CancelResult:
    cancelled: int  # queued jobs now cancelled
    signalled: int  # running jobs told to stop
    groups: int  # groups marked cancelled (their follow-ups will not run)


def finish(conn: psycopg.Connection[Any], queue: Queue, rows: list[dict[str, Any]],
           state: str, error: str | None, from_state: str) -> int:
    """Move locked rows to a final state through `finish_jobs` (group counting included)."""
    if not rows:
        return 0
    result = conn.execute(queue.statements.finish_jobs, {
        "ids": [r["id"] for r in rows], "attempts": [r["attempt"] for r in rows],
        "states": [state] * len(rows), "errors": [error] * len(rows),
        "from_state": from_state}).fetchone()
    return int(result["finished"]) if result else 0


def cancel(self: Queue, *, tag: str | None = None, group_id: int | None = None,
           ids: list[int] | None = None) -> CancelResult:
    """Cancel the queued jobs of a tag (a site), a group, or ids; stop their running ones."""
    if tag is None and group_id is None and not ids:
        raise ValueError("cancel needs a tag, a group id or job ids")
    with self.session() as conn:
        groups = 0
        if tag is not None:
            groups += len(conn.execute(self.statements.cancel_groups_by_tag, {"tag": tag}).fetchall())
            queued = conn.execute(self.statements.lock_queued_by_tag, {"tag": tag}).fetchall()
        elif group_id is not None:
            groups += len(conn.execute(self.statements.cancel_group, {"id": group_id}).fetchall())
            queued = conn.execute(self.statements.lock_queued_by_group, {"group_id": group_id}).fetchall()
        else:
            queued = conn.execute(self.statements.lock_queued_by_ids, {"ids": ids}).fetchall()
        cancelled = finish(conn, self, queued, "cancelled", "cancelled by request", "queued")
        flagged = conn.execute(self.statements.request_cancel_running,
                               {"tag": tag, "queue": None, "group_id": group_id,
                                "ids": ids or []}).fetchone()
    return CancelResult(cancelled, len(flagged["ids"]) if flagged else 0, groups)


def purge_queue(self: Queue, queue: str) -> CancelResult:
    """Cancel every queued job of a queue and stop its running ones."""
    with self.session() as conn:
        queued = conn.execute(self.statements.lock_queued_by_queue, {"queue": queue}).fetchall()
        cancelled = finish(conn, self, queued, "cancelled", f"queue {queue} purged", "queued")
        flagged = conn.execute(self.statements.request_cancel_running,
                               {"tag": None, "queue": queue, "group_id": None, "ids": []}
                               ).fetchone()
    return CancelResult(cancelled, len(flagged["ids"]) if flagged else 0, 0)


def retry_failed(self: Queue, *, ids: list[int] | None = None, queue: str | None = None,
                 tag: str | None = None) -> int:
    """Put failed jobs back in the queue (fresh attempts). Returns how many."""
    with self.session() as conn:
        locked = conn.execute(self.statements.lock_failed,
                              {"ids": ids, "queue": queue, "tag": tag}).fetchall()
        if not locked:
            return 0
        moved = conn.execute(self.statements.requeue_failed,
                             {"ids": [r["id"] for r in locked]}).fetchall()
        for name in sorted({r["queue"] for r in moved}):
            conn.execute("SELECT pg_notify(%s, '')", (f"{self.schema}.{name}",))
    return len(moved)


def failed_jobs(self: Queue, *, queue: str | None = None, tag: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Recent failures: final ones, and jobs waiting to retry after an error."""
    with self.session(atomic=False) as conn:
        return conn.execute(self.statements.failed_jobs,
                            {"queue": queue, "tag": tag, "limit": limit}).fetchall()


def rescue_expired(self: Queue, backoff: Backoff | None = None) -> dict[str, int]:
    """Requeue running jobs whose lease expired (their worker died), or fail them.

    A rescued attempt counts as an attempt; a job rescued MAX_RESCUES times fails, since it
    is likely the job that kills its worker.
    """
    policy = backoff or Backoff(base=1.0, maximum=60.0)
    with self.session() as conn:
        expired = conn.execute(self.statements.expired_leases, {"limit": RESCUE_BATCH}).fetchall()
        give_up = [r for r in expired
                   if r["attempt"] >= r["max_attempts"] or r["rescues"] + 1 >= MAX_RESCUES]
        again = [r for r in expired if r not in give_up]
        failed = 0
        for row in give_up:  # errors differ per row, so one call each; rescues are rare
            failed += finish(conn, self, [row], "failed",
                             f"worker lost (lease expired) during attempt {row['attempt']} of "
                             f"{row['max_attempts']}, rescued {row['rescues'] + 1} times",
                             "running")
        requeued = 0
        if again:
            requeued = len(conn.execute(self.statements.requeue_rescued, {
                "ids": [r["id"] for r in again], "attempts": [r["attempt"] for r in again],
                "delays": [policy.delay(r["attempt"]) for r in again],
                "errors": [f"worker lost (lease expired) during attempt {r['attempt']}"
                           for r in again]}).fetchall())
        conn.execute(self.statements.stale_workers, {"stale_seconds": 120})
    return {"requeued": requeued, "failed": failed}


def prune(self: Queue, *, succeeded_after: float = KEEP_SUCCEEDED_SECONDS,
          failed_after: float = KEEP_FAILED_SECONDS,
          cancelled_after: float = KEEP_CANCELLED_SECONDS,
          groups_after: float | None = None, batch: int = PRUNE_BATCH) -> dict[str, int] | None:
    """Delete finished history older than its retention, in short batches.

    One machine at a time (an advisory lock); returns None if another is pruning.
    """
    lock = zlib.crc32(f"pgqueue-prune:{self.schema}".encode())
    deleted = {"succeeded": 0, "failed": 0, "cancelled": 0, "groups": 0, "workers": 0}
    with self.connect(autocommit=True) as conn:
        got = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (lock,)).fetchone()
        if not got or not got["ok"]:
            return None
        try:
            for state, age in (("succeeded", succeeded_after), ("failed", failed_after),
                               ("cancelled", cancelled_after)):
                while True:
                    count = conn.execute(self.statements.prune_history, {
                        "state": state, "older_than": age, "batch": batch}).rowcount
                    deleted[state] += count
                    if count < batch:
                        break
            group_age = failed_after if groups_after is None else groups_after
            while True:
                count = conn.execute(self.statements.prune_groups,
                                     {"older_than": group_age, "batch": batch}).rowcount
                deleted["groups"] += count
                if count < batch:
                    break
            deleted["workers"] = conn.execute(self.statements.prune_workers,
                                              {"older_than": failed_after}).rowcount
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (lock,))
    return deleted
