"""Maintenance: the rescuer, the pruner and the stale-worker sweep, run by one elected
process at a time.

Every worker runs a `Maintenance` thread, but only the one holding the schema's
maintenance advisory lock (a session lock on its own connection) does the work; the others
try again every `interval`. When the leader dies its connection closes, the lock goes with
it, and another worker takes over within one interval. So that a leader cut off by the
network (its socket still open on the server) does not hold the lock for the kernel's
two-hour keepalive, its session asks the server to probe the link every few seconds.

The leader also enqueues the due slots of periodic jobs (`pgqueue.periodic`), waking for
the soonest one rather than waiting out the interval; every worker first writes the
schedules it declares (`@q.periodic`), so a schedule exists once any worker knowing it ran.

The rescuer decides through `pgqueue.retry.decide`, the rule that also decides a failed
attempt's fate, with the job's rescue count as an input: a job whose worker died too often
(`MAX_RESCUES`) is a poison job and fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from pgqueue.connections import MAINTENANCE
from pgqueue.counts import fold as fold_counts
from pgqueue.db import Outage, translate_errors
from pgqueue.errors import DatabaseError, DatabaseUnavailable
from pgqueue.periodic import Schedule, declare, enqueue_due, seconds_until_due
from pgqueue.retry import MAX_RESCUES, Backoff, decide
from pgqueue.store import Final, JobStore, lock_key

log = logging.getLogger("pgqueue.maintenance")

# Retention (River's defaults): successes a day, failures a week, so people can look.
KEEP_SUCCEEDED_SECONDS = 24 * 3600
KEEP_FAILED_SECONDS = 7 * 24 * 3600
KEEP_CANCELLED_SECONDS = 24 * 3600
PRUNE_BATCH = 5000
PRUNE_EVERY_SECONDS = 3600.0
RESCUE_BATCH = 1000
# A worker beats every lease/3 (10 s with the default 30 s lease): two minutes without a
# beat is a dozen missed beats, not a slow one; its row is marked stopped.
STALE_WORKER_SECONDS = 120
# The shortest wait for a periodic slot: a due slot is enqueued at once, then the leader
# sleeps until the next one (a slot is never enqueued before its time).
PERIODIC_MIN_WAIT = 0.05
# The server probes an idle leader's socket after 5 s, then every 2 s, 3 times: a leader
# cut off by the network loses the lock within about 11 s.
LEADER_KEEPALIVES = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
                     "tcp_keepalives_count": "3"}

BackoffFor = Callable[[str], Backoff]


def rescue_expired(store: JobStore, backoff_for: BackoffFor,
                   conn: psycopg.Connection[Any] | None = None) -> dict[str, int]:
    """Requeue running jobs whose lease expired (their worker died), or fail them.

    A rescued attempt counts as an attempt and as a rescue; `retry.decide` says which.
    """
    with store.transaction(conn) as db:
        expired = store.run(db, "expired_leases", {"limit": RESCUE_BATCH}).fetchall()
        give_up: list[Final] = []
        again: list[tuple[int, int, float, str]] = []
        for row in expired:
            rescues = row["rescues"] + 1
            decision = decide(row["attempt"], row["max_attempts"], backoff_for(row["task"]),
                              rescues=rescues, max_rescues=MAX_RESCUES)
            lost = f"worker lost (lease expired) during attempt {row['attempt']}"
            if decision.retry:
                again.append((row["id"], row["attempt"], decision.delay, lost))
            else:
                give_up.append((row["id"], row["attempt"], "failed",
                                f"{lost} of {row['max_attempts']}, rescued {rescues} times"))
        failed = store.finish(db, give_up, from_state="running")
        requeued = 0
        if again:
            requeued = len(store.run(db, "requeue_attempts", {
                "outcome": "rescued",
                "ids": [r[0] for r in again], "attempts": [r[1] for r in again],
                "delays": [r[2] for r in again], "errors": [r[3] for r in again]}).fetchall())
        store.run(db, "stale_workers", {"stale_seconds": STALE_WORKER_SECONDS})
    return {"requeued": requeued, "failed": failed}


def prune(store: JobStore, *, succeeded_after: float = KEEP_SUCCEEDED_SECONDS,
          failed_after: float = KEEP_FAILED_SECONDS,
          cancelled_after: float = KEEP_CANCELLED_SECONDS,
          groups_after: float | None = None, batch: int = PRUNE_BATCH) -> dict[str, int] | None:
    """Delete finished history older than its retention, in short batches.

    One machine at a time (an advisory lock); returns None if another is pruning.
    """
    key = lock_key("prune", store.schema)
    deleted = {"succeeded": 0, "failed": 0, "cancelled": 0, "groups": 0, "workers": 0}
    with translate_errors(), store.connect(autocommit=True, role=MAINTENANCE,
                                          direct=True) as conn:  # a session lock
        if not store.try_lock(conn, key):
            return None
        try:
            for state, age in (("succeeded", succeeded_after), ("failed", failed_after),
                               ("cancelled", cancelled_after)):
                while True:
                    count = store.run(conn, "prune_history", {
                        "state": state, "older_than": age, "batch": batch}).rowcount
                    deleted[state] += count
                    if count < batch:
                        break
            group_age = failed_after if groups_after is None else groups_after
            while True:
                count = store.run(conn, "prune_groups",
                                  {"older_than": group_age, "batch": batch}).rowcount
                deleted["groups"] += count
                if count < batch:
                    break
            deleted["workers"] = store.run(conn, "prune_workers",
                                           {"older_than": failed_after}).rowcount
        finally:
            store.unlock(conn, key)
    return deleted


class Maintenance:
    """The duties of the elected leader; `run()` is a worker's maintenance thread."""

    def __init__(self, store: JobStore, backoff_for: BackoffFor, *, interval: float,
                 stop: threading.Event, outage: Outage,
                 prune_every: float = PRUNE_EVERY_SECONDS,
                 schedules: Sequence[Schedule] = ()) -> None:
        self.store = store
        self.backoff_for = backoff_for
        self.interval = interval
        self.stop = stop
        self.outage = outage
        self.prune_every = prune_every
        self.leader = threading.Event()  # set while this process holds the lock
        self._key = lock_key("maintenance", store.schema)
        self.schedules = list(schedules)  # declared by this process's tasks (@q.periodic)
        self._declared = not self.schedules

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        opened: float | None = None
        next_prune = time.monotonic() + min(self.prune_every, 60.0)
        try:
            while not self.stop.is_set():
                wait = self.interval
                try:
                    if conn is None or conn.closed:
                        self.leader.clear()
                        conn = self._connect()
                        opened = time.monotonic()
                    if not self._declared:
                        declare(self.store, self.schedules, conn)
                        self._declared = True
                    if not self.leader.is_set() and self.store.try_lock(conn, self._key):
                        self.leader.set()
                        log.info("maintenance leader for schema %s", self.store.schema,
                                 extra={"action": "maintenance_leader"})
                    if self.leader.is_set():
                        rescued = rescue_expired(self.store, self.backoff_for, conn)
                        if any(rescued.values()):
                            log.warning("rescued jobs of lost workers: %s", rescued,
                                        extra={"action": "rescued", **rescued})
                        fold_counts(self.store, conn)  # the counting ledger (issue 21)
                        if time.monotonic() >= next_prune:
                            next_prune = time.monotonic() + self.prune_every
                            pruned = prune(self.store)
                            if pruned and any(pruned.values()):
                                log.info("pruned %s", pruned, extra={"action": "pruned"})
                        wait = self.run_periodic(conn)
                    self.outage.reached(opened)
                    if not self.leader.is_set():  # another leads: no idle connection held
                        self._close(conn)
                        conn = opened = None
                except DatabaseUnavailable as error:
                    self.outage.failed(error, opened)
                    self._close(conn)
                    conn = opened = None
                except DatabaseError as error:
                    # A statement refused (its transaction rolled back): logged, and tried
                    # again next interval. The rescuer of every queue must not die with it.
                    log.error("maintenance: %s; trying again in %.0f s", error, self.interval,
                              extra={"action": "maintenance_error"})
                self.stop.wait(wait)
        finally:
            self.leader.clear()
            self._close(conn)

    def run_periodic(self, conn: psycopg.Connection[Any]) -> float:
        """Enqueue the due periodic slots (a batch per transaction); return how long to
        wait: the interval, or less when a slot falls due sooner."""
        while True:
            tick = enqueue_due(self.store, conn)
            if tick.skipped:
                log.warning("periodic: %d missed slots skipped (nothing ran while they fell "
                            "due)", tick.skipped, extra={"action": "periodic_skipped"})
            if tick.enqueued:
                log.debug("periodic: enqueued %d jobs", tick.enqueued,
                         extra={"action": "periodic_enqueued", "jobs": tick.enqueued})
            if not tick.more or self.stop.is_set():
                break
        due = seconds_until_due(self.store, conn)
        if due is None:
            return self.interval
        return min(self.interval, max(PERIODIC_MIN_WAIT, due))

    def _connect(self) -> psycopg.Connection[Any]:
        conn = self.store.connect(autocommit=True, role=MAINTENANCE, direct=True,
                                  keepalives=1, keepalives_idle=5,
                                  keepalives_interval=2, keepalives_count=3)
        for name, value in LEADER_KEEPALIVES.items():
            self.store.run(conn, "set_setting", {"name": name, "value": value})
        return conn

    @staticmethod
    def _close(conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
