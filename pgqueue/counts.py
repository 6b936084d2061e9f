"""Counts that do not grow with history: the ledger, its fold, and the exact check.

Statement triggers on `job_history` (migration 0008) append what every statement finished
or deleted to `job_count_changes`, per queue and state (and, for finishes, per task and
minute). Live jobs are the backlog, counted from `jobs` itself: triggers on every claim,
heartbeat and finish there cost a quarter of the drain rate, and its size is not history.
Readers sum the folded counters and the ledger (`queue_depth`,
`task_counts`, `finished_per_minute` in queries.sql), so they are exact at any moment and
cost the same at 3M history rows as at none. The maintenance leader folds the ledger into
`job_counts`, `job_totals` and `job_rollups` every tick (`fold`), which keeps the ledger
short; nothing but the leader writes a counter row, so finishing workers never queue up
behind one hot row (they only append).

`exact_counts` / `verify` count the slow way, for tests and for an operator who doubts.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.store import JobStore

__all__ = ["ROLLUP_KEEP_SECONDS", "exact_counts", "fold", "verify"]

# Per-minute rollups are kept a week (the failures' retention); totals are kept for ever.
ROLLUP_KEEP_SECONDS = 7 * 24 * 3600


def fold(store: JobStore, conn: psycopg.Connection[Any] | None = None, *,
         rollups_older_than: float = ROLLUP_KEEP_SECONDS) -> dict[str, int]:
    """Fold the ledger into the counters (one statement) and drop old per-minute rollups."""
    with store.transaction(conn) as db:
        row = store.run(db, "fold_counts").fetchone()
        pruned = store.run(db, "prune_rollups", {"older_than": rollups_older_than}).rowcount
    assert row is not None
    return {"changes": int(row["changes"]), "counts": int(row["counts"]),
            "rollups": int(row["rollups"]), "rollups_pruned": pruned}


def _table(rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(row["queue"], row["state"]): int(row["jobs"]) for row in rows if row["jobs"]}


def exact_counts(store: JobStore) -> dict[tuple[str, str], int]:
    """Jobs by (queue, state) counted from the tables themselves (scans everything)."""
    with store.transaction(atomic=False) as db:
        return _table(store.run(db, "exact_counts").fetchall())


def verify(store: JobStore) -> dict[tuple[str, str], tuple[int, int]]:
    """Where the counters differ from a real count: {(queue, state): (counted, real)},
    empty when they agree (one statement, so one snapshot)."""
    with store.transaction(atomic=False) as db:
        rows = store.run(db, "verify_counts").fetchall()
    return {(row["queue"], row["state"]): (int(row["counted"]), int(row["real"]))
            for row in rows}
