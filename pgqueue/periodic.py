"""Periodic jobs: schedules kept in the database, their slots enqueued by the elected leader.

    @q.periodic(cron="0 3 * * *")                 # 03:00 UTC every day
    def nightly() -> None: ...

    @q.periodic(every=timedelta(seconds=30))      # slots aligned on the epoch: :00, :30
    def sweep() -> None: ...

    q.schedule("refresh:oakland", refresh_task, cron="17 42 3 * * *", args={"site": ...})

A schedule is a row of `{schema}.periodic` with its `next_run_at`. A declared schedule
(`@q.periodic`) is written there by every worker that knows it when its maintenance thread
starts (an upsert: a changed expression moves `next_run_at`, an unchanged one keeps it, so
a restart neither skips nor repeats a slot); `Queue.schedule` writes one at run time (clerk
does, one per site).

Who enqueues: only the maintenance leader (`pgqueue.maintenance`, one process per schema
holds its advisory lock). Each tick it runs `enqueue_due`: one transaction that locks the
due rows (FOR UPDATE SKIP LOCKED), inserts one job per due slot, and moves `next_run_at`
past now (an UPDATE guarded by the `next_run_at` it read). So a slot's job exists if and
only if its advance committed: never two (a second leader, cut off from the lock but still
connected, finds the row locked or already advanced), never none. Each job also carries the
dedupe key `pgqueue:periodic:<name>:<slot>`, refused while an earlier copy is live.

Missed slots: a slot that fell due less than `grace` seconds ago is on time and is
enqueued (a leader that woke late, or a failover, catches up slot by slot). Older slots
were missed (everything was down): `missed="run_once"` (the default) enqueues one job for
the latest of them, `missed="skip"` none; either way they are counted in `skipped`.

Cron expressions are read by cronsim (5 fields, or 6 with seconds first), in UTC. `every`
slots are multiples of the period since the Unix epoch, so every machine computes the same
slots without talking to the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from cronsim import CronSim, CronSimError
from psycopg.types.json import Jsonb

from pgqueue.errors import ConfigurationError, DatabaseError
from pgqueue.store import JobStore
from pgqueue.tasks import check_priority, dump_args

MISSED_POLICIES = ("run_once", "skip")
DEFAULT_GRACE_SECONDS = 60.0  # longer than a leader failover (one maintenance interval)
DUE_BATCH = 500  # schedules handled per transaction; the leader loops while more are due
MIN_EVERY_SECONDS = 1.0
KEY_PREFIX = "pgqueue:periodic:"
ONE_SECOND = timedelta(seconds=1)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def check_cron(expression: str) -> str:
    """The expression, if cronsim reads it (5 fields, or 6 with seconds first)."""
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except (CronSimError, TypeError, ValueError) as error:
        raise ConfigurationError(f"invalid cron expression {expression!r}: {error} "
                                 "(5 fields, or 6 with seconds first)") from None
    return expression


def every_seconds(every: timedelta | float) -> float:
    seconds = every.total_seconds() if isinstance(every, timedelta) else float(every)
    if not math.isfinite(seconds) or seconds < MIN_EVERY_SECONDS:
        raise ConfigurationError(f"every={every!r}: a period of at least "
                                 f"{MIN_EVERY_SECONDS:g} second is needed")
    return seconds


@dataclass(frozen=True)
class Schedule:
    """One periodic job: what to enqueue, and when (`cron` or `every`, not both)."""

    name: str
    task: str
    queue: str
    cron: str | None = None
    every: float | None = None
    args: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 3
    timeout: int | None = None
    tag: str | None = None
    missed: str = "run_once"
    grace: float = DEFAULT_GRACE_SECONDS

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ConfigurationError(f"schedule {self.name!r}: give cron= or every=, not both")
        if not self.name or len(self.name) > 200:
            raise ConfigurationError("a schedule name is 1 to 200 characters")
        if self.cron is not None:
            check_cron(self.cron)
        else:
            assert self.every is not None
            every_seconds(self.every)
        if self.missed not in MISSED_POLICIES:
            raise ConfigurationError(f"missed={self.missed!r}: one of {', '.join(MISSED_POLICIES)}")
        if not math.isfinite(self.grace) or self.grace < 0:
            raise ConfigurationError(f"grace={self.grace!r}: seconds, 0 or more")
        check_priority(self.priority, "schedule")
        dump_args(self.args)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Schedule:
        return cls(name=row["name"], task=row["task"], queue=row["queue"], cron=row["cron"],
                   every=row["every_seconds"], args=row["args"], priority=row["priority"],
                   max_attempts=row["max_attempts"], timeout=row["timeout_seconds"],
                   tag=row["tag"], missed=row["missed"], grace=row["grace_seconds"])

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment`."""
        moment = _utc(moment)
        if self.every is not None:
            step = self.every
            count = math.floor(moment.timestamp() / step) + 1
            return datetime.fromtimestamp(count * step, UTC)
        assert self.cron is not None
        return next(CronSim(self.cron, moment))

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last slot at or before `moment` (without walking the slots in between)."""
        moment = _utc(moment)
        if self.every is not None:
            step = self.every
            return datetime.fromtimestamp(math.floor(moment.timestamp() / step) * step, UTC)
        assert self.cron is not None
        return next(CronSim(self.cron, moment.replace(microsecond=0) + ONE_SECOND, reverse=True))

    def plan(self, due: datetime, now: datetime) -> Plan:
        """What a tick does with a schedule whose slot `due` has come: the slots to enqueue,
        how many missed ones it skips, and the next slot."""
        due, now = _utc(due), _utc(now)
        cutoff = now - timedelta(seconds=self.grace)
        slots: list[datetime] = []
        skipped = 0
        slot = due
        if due <= cutoff:  # missed while nothing ran: the policy decides, without walking
            latest_missed = self.latest_at_or_before(cutoff)
            skipped = self.count_between(due, latest_missed)
            if self.missed == "run_once":
                slots.append(latest_missed)
                skipped -= 1
            slot = self.next_after(latest_missed)
        while slot <= now:  # on time (within the grace): each one, in order
            slots.append(slot)
            slot = self.next_after(slot)
        return Plan(self.name, due, slots, skipped, slot)

    def count_between(self, first: datetime, last: datetime) -> int:
        """Slots from `first` to `last`, both included (both are slots); exact for `every`,
        a walk capped at 100,000 for cron (only a count shown to people)."""
        if last < first:
            return 0
        if self.every is not None:
            return round((last - first).total_seconds() / self.every) + 1
        count, slot = 1, first
        while slot < last and count < 100_000:
            slot = self.next_after(slot)
            count += 1
        return count

    def dedupe_key(self, slot: datetime) -> str:
        return f"{KEY_PREFIX}{self.name}:{_utc(slot).isoformat(timespec='seconds')}"

    def describe(self) -> str:
        return self.cron if self.cron is not None else f"every {self.every:g} s"


@dataclass
class Plan:
    """One schedule's part of a tick (`Schedule.plan`)."""

    name: str
    expected: datetime  # the next_run_at read: the advance is guarded by it
    slots: list[datetime]
    skipped: int
    next_run_at: datetime


@dataclass
class Tick:
    """What one `enqueue_due` did."""

    enqueued: int = 0
    skipped: int = 0
    schedules: int = 0
    more: bool = False  # a full batch: call again
    keys: list[str] = field(default_factory=list)


def declare(store: JobStore, schedules: Iterable[Schedule],
            conn: psycopg.Connection[Any] | None = None) -> int:
    """Write schedules (insert, or update in place): one statement for all of them.

    A new schedule's first slot is the first after now (the database's clock); an
    existing one keeps its `next_run_at` unless its cron or period changed.
    """
    rows = list(schedules)
    if not rows:
        return 0
    with store.transaction(conn) as db:
        now = store.run(db, "periodic_now").fetchone()
        assert now is not None
        store.run(db, "periodic_upsert", {
            "names": [s.name for s in rows], "tasks": [s.task for s in rows],
            "queues": [s.queue for s in rows],
            "args": [Jsonb(s.args) for s in rows],
            "priorities": [s.priority for s in rows],
            "max_attempts": [s.max_attempts for s in rows],
            "timeouts": [s.timeout for s in rows], "tags": [s.tag for s in rows],
            "crons": [s.cron for s in rows], "everys": [s.every for s in rows],
            "missed": [s.missed for s in rows], "graces": [s.grace for s in rows],
            "next_run_ats": [s.next_after(now["now"]) for s in rows]})
    return len(rows)


def remove(store: JobStore, names: Sequence[str],
           conn: psycopg.Connection[Any] | None = None) -> int:
    """Delete schedules by name (their jobs already enqueued stay); returns how many."""
    if not names:
        return 0
    with store.transaction(conn) as db:
        return store.run(db, "periodic_delete", {"names": list(names)}).rowcount


def listing(store: JobStore, names: Sequence[str] | None = None,
            conn: psycopg.Connection[Any] | None = None) -> list[dict[str, Any]]:
    """The schedules (`periodic_schedules` view), soonest first; `names` to pick some."""
    with store.transaction(conn, atomic=False) as db:
        return store.run(db, "periodic_list",
                         {"names": None if names is None else list(names)}).fetchall()


def summary(store: JobStore, prefix: str = "",
            conn: psycopg.Connection[Any] | None = None) -> dict[str, Any]:
    """How many schedules are named `prefix...`, and the soonest: one aggregate, whatever
    their number (clerk's status: one schedule per site)."""
    with store.transaction(conn, atomic=False) as db:
        row = store.run(db, "periodic_summary", {"prefix": prefix}).fetchone()
    assert row is not None
    return {"schedules": int(row["schedules"]), "next_name": row["next_name"],
            "next_run_at": row["next_run_at"]}


def enqueue_due(store: JobStore, conn: psycopg.Connection[Any] | None = None, *,
                batch: int = DUE_BATCH) -> Tick:
    """Enqueue the due slots of up to `batch` schedules and advance them, atomically."""
    tick = Tick()
    with store.transaction(conn) as db:
        rows = store.run(db, "periodic_due", {"limit": batch}).fetchall()
        if not rows:
            return tick
        tick.more = len(rows) == batch
        plans: list[tuple[Schedule, Plan]] = []
        for row in rows:
            schedule = Schedule.from_row(row)
            plans.append((schedule, schedule.plan(row["next_run_at"], row["now"])))
        jobs = [(schedule, slot) for schedule, plan in plans for slot in plan.slots]
        last_ids: dict[str, int] = {}
        if jobs:
            inserted = store.run(db, "periodic_insert_jobs", {
                "queues": [s.queue for s, _ in jobs], "tasks": [s.task for s, _ in jobs],
                "args": [Jsonb(s.args) for s, _ in jobs],
                "priorities": [s.priority for s, _ in jobs],
                "max_attempts": [s.max_attempts for s, _ in jobs],
                "run_ats": [slot for _, slot in jobs], "tags": [s.tag for s, _ in jobs],
                "dedupe_keys": [s.dedupe_key(slot) for s, slot in jobs],
                "timeouts": [s.timeout for s, _ in jobs]}).fetchall()
            by_key = {row["dedupe_key"]: row["id"] for row in inserted}
            tick.keys = sorted(by_key)
            tick.enqueued = len(by_key)
            for schedule, slot in jobs:
                job_id = by_key.get(schedule.dedupe_key(slot))
                if job_id is not None:
                    last_ids[schedule.name] = job_id
        advanced = store.run(db, "periodic_advance", {
            "names": [p.name for _, p in plans], "expected": [p.expected for _, p in plans],
            "next_run_ats": [p.next_run_at for _, p in plans],
            "last_slots": [max(p.slots) if p.slots else None for _, p in plans],
            "job_ids": [last_ids.get(p.name) for _, p in plans],
            "enqueued": [len(p.slots) for _, p in plans],
            "skipped": [p.skipped for _, p in plans]}).rowcount
        if advanced != len(plans):
            # Rows locked FOR UPDATE cannot move under us; if they did, enqueue nothing.
            raise DatabaseError(f"periodic: {len(plans) - advanced} schedules moved while "
                               "locked; the tick is rolled back")
        tick.schedules = len(plans)
        tick.skipped = sum(p.skipped for _, p in plans)
    return tick


def seconds_until_due(store: JobStore, conn: psycopg.Connection[Any] | None = None
                      ) -> float | None:
    """Seconds until the soonest schedule is due (0 if one is), or None with none."""
    with store.transaction(conn, atomic=False) as db:
        row = store.run(db, "periodic_next_due").fetchone()
    if row is None or row["seconds"] is None:
        return None
    return max(0.0, float(row["seconds"]))
