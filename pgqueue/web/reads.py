"""The dashboard's reads: the named statements of sql/pgqueue/web.sql, and the filter of the
jobs page. Expensive reads (the overview's) are cached for a few seconds per process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pgqueue import admin
from pgqueue.db import query
from pgqueue.sql import Statements, sql_root
from pgqueue.store import JobStore

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
STALE_SECONDS = 60  # a worker whose heartbeat is older is flagged (as active_workers does)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
CACHE_SECONDS = 2.0
THROUGHPUT_MINUTES = 60  # the overview's chart and its "last hour"
FINAL = ("succeeded", "failed", "cancelled")
MAX_ID = 2**63 - 1
SCAN_WINDOW = 100_000  # a filtered page looks at most at this many ids (~0.25 s at worst)
# A job page lists at most this many attempts, the latest (a job has max_attempts plus at
# most 5 rescues and 5 give-backs per run; only retries by hand, run after run, add more).
MAX_ATTEMPTS_SHOWN = 100

T = TypeVar("T")


class BadFilter(ValueError):
    """A filter value the jobs page cannot use (shown as a 400 with this message)."""


@dataclass(frozen=True)
class JobFilter:
    state: str | None = None
    queue: str | None = None
    task: str | None = None
    tag: str | None = None
    priority: int | None = None
    q: str | None = None  # text searched in the args
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before

    @classmethod
    def parse(cls, values: Any) -> JobFilter:
        """From query parameters or a form (blank fields are no filter)."""
        def text(name: str) -> str | None:
            value = values.get(name)
            return value.strip() or None if isinstance(value, str) else None

        state = text("state")
        if state is not None and state not in STATES:
            raise BadFilter(f"unknown state {state!r}: one of {', '.join(STATES)}")
        priority = text("priority")
        try:
            prio = int(priority) if priority is not None else None
        except ValueError:
            raise BadFilter(f"priority must be a whole number, not {priority!r}") from None
        return cls(state=state, queue=text("queue"), task=text("task"), tag=text("tag"),
                   priority=prio, q=text("q"), since=_time(text("since"), "since"),
                   until=_time(text("until"), "until"))

    def is_set(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def params(self) -> dict[str, Any]:
        search = None
        if self.q is not None:
            escaped = self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            search = f"%{escaped}%"
        return {"state": self.state, "queue": self.queue, "task": self.task, "tag": self.tag,
                "priority": self.priority, "search": search, "since": self.since,
                "until": self.until}

    def query(self) -> dict[str, str]:
        """As query parameters (for links and hidden form fields)."""
        out: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                out[field.name] = value.isoformat() if isinstance(value, datetime) else str(value)
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def without(self, **changes: Any) -> JobFilter:
        return replace(self, **changes)


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadFilter(f"{name} must be a date or time like 2026-12-07T10:00, "
                        f"not {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class JobsPage:
    rows: list[dict[str, Any]]
    edge: int | None  # the cursor to go on with in the page's direction; None: no more
    looked: dict[str, int] | None  # ids looked at, when the look window cut the page short


class Reads:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.statements = Statements(store.schema, sql_root() / "pgqueue" / "web.sql")
        self._cache: dict[str, tuple[float, Any]] = {}
        self.cache_seconds = CACHE_SECONDS  # how long the overview's counts are reused
        self.scan_window = SCAN_WINDOW  # ids a filtered jobs page looks at, at most
        self._lock = threading.Lock()

    def rows(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.store.transaction(atomic=False) as conn:
            return query(conn, getattr(self.statements, name), params).fetchall()

    def cached(self, key: str, make: Callable[[], T], seconds: float | None = None) -> T:
        """`make()`, or its result from less than `seconds` (default `cache_seconds`) ago;
        one maker at a time, so a burst of requests costs one read."""
        if seconds is None:
            seconds = self.cache_seconds
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < seconds:
                return hit[1]  # type: ignore[no-any-return]
            value = make()
            self._cache[key] = (time.monotonic(), value)
            return value

    def forget(self) -> None:
        """Drop the cached reads (an action changed what they count)."""
        with self._lock:
            self._cache.clear()

    # -- overview ---------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        return self.cached("overview", self._overview)

    def _overview(self) -> dict[str, Any]:
        """Depth from pgqueue's counters and rates from its per-minute rollups (migration
        0008: the same few milliseconds at any history size or throughput); the oldest
        runnable job and the workers from the live tables."""
        clock = self.rows("clock")[0]
        counts = admin.job_counts(self.store)
        per_minute = admin.finished_per_minute(self.store, THROUGHPUT_MINUTES)
        oldest = self.rows("oldest_runnable")
        hosts = self.rows("workers_by_host", {"stale_seconds": STALE_SECONDS})
        queues: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return queues.setdefault(name, {
                "queue": name, "queued": 0, "scheduled": 0, "running": 0,
                "succeeded_last_hour": 0, "failed_last_hour": 0, "cancelled_last_hour": 0,
                "oldest_runnable_age": None})

        for name, by_state in counts.items():
            live = {state: by_state.get(state, 0) for state in ("queued", "scheduled", "running")}
            if any(live.values()):
                entry(name).update(live)
        first = clock["minute"] - timedelta(minutes=THROUGHPUT_MINUTES - 1)
        series = [{"minute": first + timedelta(minutes=i), "succeeded": 0, "failed": 0,
                   "cancelled": 0} for i in range(THROUGHPUT_MINUTES)]
        for row in per_minute:
            index = int((row["minute"] - first).total_seconds() // 60)
            if 0 <= index < THROUGHPUT_MINUTES and row["state"] in FINAL:
                series[index][row["state"]] += int(row["jobs"])
                entry(row["queue"])[f"{row['state']}_last_hour"] += int(row["jobs"])
        for row in oldest:
            entry(row["queue"])["oldest_runnable_age"] = row["age"].total_seconds()
        ages = [q["oldest_runnable_age"] for q in queues.values()
                if q["oldest_runnable_age"] is not None]
        return {
            "at": clock["now"],
            "queues": [queues[name] for name in sorted(queues)],
            "throughput": series,
            "oldest_runnable_age": max(ages) if ages else None,
            "failures_last_hour": sum(q["failed_last_hour"] for q in queues.values()),
            "finished_last_hour": sum(q["succeeded_last_hour"] + q["failed_last_hour"]
                                      + q["cancelled_last_hour"] for q in queues.values()),
            "hosts": [{"host": h["host"], "workers": int(h["workers"]), "slots": int(h["slots"]),
                       "stale": int(h["stale"])} for h in hosts],
        }

    # -- jobs -------------------------------------------------------------------------------

    def jobs_page(self, flt: JobFilter, *, order: str, after: int | None, before: int | None,
                  limit: int) -> JobsPage:
        """One page in `order` ('newest' or 'oldest') past the cursor `after` (the last id
        shown), or the page before `before` (the first id shown).

        Keyset paging on the id, never OFFSET. With a filter, one request looks at no more
        than `scan_window` ids: a filter that matches few jobs of a long history gives a page
        cut short, whose cursor continues from where the look ended (bounded time per page,
        still no duplicate and no gap)."""
        newest = order == "newest"
        backwards = before is not None
        descending = newest != backwards
        bounds = self.rows("id_bounds")[0]
        low = int(bounds["min_id"] or 1) - 1  # every id is above this
        top = int(bounds["max_id"] or 0) + 1  # ... and below this
        start = before if backwards else after
        window = self.scan_window if flt.is_set() else MAX_ID
        if descending:
            hi = min(start, top) if start is not None else top
            lo = max(low, hi - window)
            more_beyond = lo > low
        else:
            lo = max(start, low) if start is not None else low
            hi = min(top, lo + window + 1) if window < MAX_ID else MAX_ID
            more_beyond = hi < top
        params = {**flt.params(), "limit": limit + 1, "lo": lo, "hi": hi}
        rows = self.rows("jobs_newest" if descending else "jobs_oldest", params)
        edge: int | None = None
        if len(rows) > limit:
            rows = rows[:limit]
            edge = int(rows[-1]["id"])
        elif more_beyond:
            edge = lo + 1 if descending else hi - 1  # where this look ended
        looked = None
        if window < MAX_ID and len(rows) < limit and edge is not None:
            looked = {"from": lo + 1, "to": hi - 1}
        if backwards:
            rows.reverse()
        return JobsPage(rows, edge, looked)

    def matching_ids(self, flt: JobFilter, states: list[str]) -> list[int]:
        return [int(r["id"]) for r in self.rows("matching_ids",
                                                 {**flt.params(), "states": states})]

    def filter_choices(self) -> dict[str, list[str]]:
        def make() -> dict[str, list[str]]:
            rows = self.rows("filter_choices")
            return {"queues": sorted({r["queue"] for r in rows}),
                    "tasks": sorted({r["task"] for r in rows})}
        return self.cached("filter_choices", make, seconds=10.0)

    # -- one job ----------------------------------------------------------------------------

    def attempts(self, job: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """The attempts of `job` (a row of the `job` statement), oldest first, and how many
        there are in all (more than listed past `MAX_ATTEMPTS_SHOWN`).

        Those that did not end the job come from `job_attempts` (migration 0009); the one
        that ended it, or that it is running, is the job's own row: nothing else records it,
        so a success writes no attempt row."""
        rows = self.rows("job_attempts", {"id": job["id"], "limit": MAX_ATTEMPTS_SHOWN})
        total = int(rows[0]["total"]) if rows else 0
        listed = [{key: value for key, value in row.items() if key != "total"}
                  for row in reversed(rows)]
        last = final_attempt(job)
        if last is not None:
            listed.append(last)
            total += 1
        first = total - len(listed) + 1
        for number, attempt in enumerate(listed, start=first):
            attempt["number"] = number
            ended, started = attempt["ended_at"], attempt["started_at"]
            attempt["seconds"] = ((ended - started).total_seconds()
                                  if ended is not None and started is not None else None)
        return listed, total


def final_attempt(job: dict[str, Any]) -> dict[str, Any] | None:
    """The attempt a job is running or that ended it, from the job's row; None when it has
    none: queued (its earlier attempts are all in job_attempts), or cancelled or failed
    before it ran (a queued job cancelled keeps the start and error of an attempt it no
    longer runs, and no worker; a follow-up recorded failed never started)."""
    state = job["state"]
    if job["started_at"] is None or state == "queued":
        return None
    if state == "cancelled" and job["worker_id"] is None:
        return None
    return {
        "attempt": job["attempt"],
        "outcome": state,
        "error": None if state in ("running", "succeeded") else job["last_error"],
        "worker_id": job["worker_id"],
        "worker_host": job["worker_host"],
        "worker_pid": job["worker_pid"],
        "started_at": job["started_at"],
        "ended_at": job["finished_at"],
    }
