"""Who runs next: paused queues, fair order across keys, and per-key limits.

All three are enforced by the claim statement itself (`claim` in
sql/pgqueue/queries.sql; the tables are migration 0005), so they hold across every
worker on every machine, with no coordinator:

- **Pause**: a queue in `paused_queues` is claimed by nobody until resumed; resuming
  sends the queue's NOTIFY, so idle workers claim at once.
- **Fairness**: a tagged job gets a `fair_rank` when inserted (start-time fair queueing:
  one step of 1/weight after the later of the queue's virtual time and its key's last
  queued rank), and the claim takes jobs by (priority, fair_rank, run_at, id). Among equal
  priorities, keys (tags) take turns; a key with weight 2 gets two turns to another's one;
  no job waits while another could run. The cost is paid once per job at insert (a few
  index probes in a trigger), never by the claim, whose walk stays one ordered index scan.
- **Limits**: a `Limit` on a task bounds, per value of one job argument (the key: a host,
  a customer), how many of its jobs run at once and how many start per period. The claim
  asks `take_slots()` for the slots of each key its candidates need, under the key row's
  lock, so the bound is exact under races between machines. A holder's slot is freed
  lazily: a later claim sees its job no longer running that attempt (finished, retried,
  released, or rescued after its worker was killed: no finish path changes). A job refused
  a slot is *parked*: its run_at moves to when it may start (the next opening of the rate
  window, booked one gap after the last waiter), or for a full key up to
  `pgqueue.claiming.CONCURRENCY_PARK_SECONDS`, and a holder's end wakes one waiter at once (a trigger, with
  a NOTIFY). A parked job is never lost and never holds a worker slot.

Why the key is a job argument, not a function of the arguments: the claim runs in SQL on
whichever machine asks, so the key must be readable there; an argument also shows in the
job's row (`args`), and a job enqueued from SQL (`add_job`) is limited like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from pgqueue.errors import ConfigurationError
from pgqueue.store import JobStore
from pgqueue.tasks import Limit

MAX_WEIGHT = 1000.0


# -- pause ----------------------------------------------------------------------------------


def pause(store: JobStore, queue: str, reason: str | None = None,
          conn: psycopg.Connection[Any] | None = None) -> bool:
    """Stop every worker from claiming `queue`'s jobs (running ones finish). Returns False
    if it was paused already (its reason is then updated)."""
    with store.transaction(conn, atomic=False) as db:
        row = store.run(db, "pause_queue", {"queue": queue, "reason": reason}).fetchone()
    return bool(row and row["inserted"])


def resume(store: JobStore, queue: str, conn: psycopg.Connection[Any] | None = None) -> bool:
    """Let workers claim `queue` again, waking them (NOTIFY). False if it was not paused."""
    with store.transaction(conn, atomic=False) as db:
        row = store.run(db, "resume_queue", {"queue": queue}).fetchone()
    return row is not None


def paused(store: JobStore) -> list[dict[str, Any]]:
    """The paused queues: queue, reason, paused_at."""
    with store.transaction(atomic=False) as db:
        return store.run(db, "paused_queues").fetchall()


# -- fairness -------------------------------------------------------------------------------


def set_weight(store: JobStore, queue: str, key: str, weight: float | None) -> None:
    """A key's share of `queue` among equal priorities (default 1); None: back to 1. Applies
    to jobs enqueued from now on."""
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int | float)
                               or not 0 < weight <= MAX_WEIGHT):
        raise ConfigurationError(f"a fairness weight is a number above 0 and at most "
                                 f"{MAX_WEIGHT:g}, not {weight!r}")
    with store.transaction(atomic=False) as db:
        if weight is None:
            store.run(db, "fair_weight_delete", {"queue": queue, "key": key})
        else:
            store.run(db, "fair_weight_set", {"queue": queue, "key": key,
                                              "weight": float(weight)})


# -- limits ---------------------------------------------------------------------------------


def declare(store: JobStore, limits: Iterable[tuple[str, Limit | None]],
            conn: psycopg.Connection[Any] | None = None) -> int:
    """Write the limits of tasks (None: remove the task's limit); one statement each way."""
    rows = [(task, limit.check(task) if limit is not None else None) for task, limit in limits]
    kept = [(task, limit) for task, limit in rows if limit is not None]
    dropped = [task for task, limit in rows if limit is None]
    with store.transaction(conn) as db:
        if kept:
            store.run(db, "limits_upsert", {
                "tasks": [task for task, _ in kept],
                "key_args": [limit.key for _, limit in kept],
                "concurrencies": [limit.concurrency for _, limit in kept],
                "rates": [limit.rate for _, limit in kept],
                "pers": [float(limit.per) if limit.rate is not None else None
                         for _, limit in kept]})
        if dropped:
            store.run(db, "limits_delete", {"tasks": dropped})
    return len(rows)


def usage(store: JobStore, tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Each limited key in use: running, recent starts and parked jobs (`limit_usage`)."""
    with store.transaction(atomic=False) as db:
        return store.run(db, "limit_usage", {"tasks": None if tasks is None else list(tasks)}
                         ).fetchall()
