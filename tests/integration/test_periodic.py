"""Periodic jobs on a real PostgreSQL: one job per slot across worker processes and
restarts, missed slots by policy, and schedules that survive a re-declaration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from pgqueue import Queue
from pgqueue.periodic import KEY_PREFIX, enqueue_due
from tests.support import periodic_app

TICK = "tests.tick"
WAIT = 120.0  # generous bound for events on a loaded machine


@pytest.fixture
def tick_db(db_url: str) -> Iterator[str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(periodic_app.RUNS_DDL)
    yield db_url


def _rows(db_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def _slots(db_url: str) -> list[dict[str, Any]]:
    """Every job the tick schedule enqueued (live or finished), with its slot and runs, in
    slot order. The slot is read from the dedupe key, which nothing rewrites (run_at moves
    when a job is retried)."""
    rows = _rows(db_url, """
        SELECT j.id, j.dedupe_key, j.run_at, j.state::text AS state,
               (SELECT count(*) FROM periodic_runs r WHERE r.job_id = j.id) AS runs
        FROM pgqueue.all_jobs j WHERE j.task = %s""", (TICK,))
    for row in rows:
        row["slot"] = datetime.fromisoformat(row["dedupe_key"].removeprefix(f"{KEY_PREFIX}{TICK}:"))
    return sorted(rows, key=lambda row: (row["slot"], row["id"]))


def _wait_until(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _start_workers(db_url: str, count: int = 3, env: dict[str, str] | None = None
                   ) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-m", "tests.support.periodic_app", db_url],
                             stderr=subprocess.DEVNULL, env=env) for _ in range(count)]


def _stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _slot_enqueued(db_url: str, slot: datetime) -> bool:
    return any(row["slot"] >= slot for row in _slots(db_url))


def _slot_ran(db_url: str, slot: datetime) -> bool:
    return any(row["slot"] >= slot and row["runs"] for row in _slots(db_url))


def _assert_one_job_per_consecutive_slot(db_url: str, first: datetime, last: datetime) -> None:
    rows = _slots(db_url)
    slots = [row["slot"] for row in rows]
    keys = [row["dedupe_key"] for row in rows]
    assert len(set(keys)) == len(keys), f"a slot enqueued twice: {keys}"
    assert len(set(slots)) == len(slots), f"a slot enqueued twice: {slots}"
    expected = [first + timedelta(seconds=2 * i) for i in range(10)]
    assert slots[:10] == expected, f"a slot lost or out of step: {slots}"
    assert len(slots) in (10, 11), slots  # 10 ± 1 in the 20 s (the next may have come)
    assert all(slot <= last + timedelta(seconds=2) for slot in slots)
    runs = [row["runs"] for row in rows]
    assert all(count <= 1 for count in runs), f"a slot ran twice: {runs}"
    assert sum(runs) in (10, 11), runs


def test_three_workers_enqueue_one_job_per_slot(tick_db: str) -> None:
    """3 worker processes, a job every 2 s for 20 s: 10 ± 1 runs, never two for a slot."""
    workers = _start_workers(tick_db)
    try:
        first = _wait_until("the first slot", lambda: _slots(tick_db))[0]["slot"]
        last = first + timedelta(seconds=18)
        _wait_until("the tenth slot to run", lambda: _slot_ran(tick_db, last))
    finally:
        _stop(workers)
    _assert_one_job_per_consecutive_slot(tick_db, first, last)


def test_restarting_every_worker_midway_neither_repeats_nor_loses_a_slot(tick_db: str) -> None:
    """All three workers stop after the fourth slot and stay down while a slot falls due;
    three new ones enqueue that slot once (caught up within the grace) and go on."""
    workers = _start_workers(tick_db)
    try:
        first = _wait_until("the first slot", lambda: _slots(tick_db))[0]["slot"]
        _wait_until("the fourth slot", lambda: _slot_enqueued(tick_db, first + timedelta(seconds=6)))
    finally:
        _stop(workers)
    down_since = max(row["slot"] for row in _slots(tick_db))
    # Nothing runs now: wait (on the database's clock) until a slot falls due while down.
    _wait_until("a slot to fall due while every worker is down", lambda: _rows(
        tick_db, "SELECT now() > %s AS passed", (down_since + timedelta(seconds=2.2),))[0]["passed"])
    assert max(row["slot"] for row in _slots(tick_db)) == down_since
    workers = _start_workers(tick_db)
    try:
        last = first + timedelta(seconds=18)
        _wait_until("the tenth slot to run", lambda: _slot_ran(tick_db, last))
    finally:
        _stop(workers)
    _assert_one_job_per_consecutive_slot(tick_db, first, last)


@pytest.mark.parametrize("missed", ["run_once", "skip"])
def test_slots_missed_while_everything_was_down_follow_the_policy(tick_db: str,
                                                                  missed: str) -> None:
    """The schedule's next slot fell due an hour ago and nothing ran since: a worker that
    starts enqueues one job for the missed slots (run_once) or none (skip), counts them as
    skipped, and enqueues the slots of the last `grace` (10 s) on time."""
    environment = {**os.environ, "TICK_MISSED": missed, "TICK_GRACE": "10"}
    with psycopg.connect(tick_db, autocommit=True) as conn:
        conn.execute("INSERT INTO pgqueue.periodic (name, task, queue, every_seconds, missed, "
                     "grace_seconds, next_run_at) VALUES (%s, %s, 'periodic', 2, %s, 10, "
                     "to_timestamp(floor(extract(epoch FROM now() - interval '1 hour') / 2) * 2))",
                     (TICK, TICK, missed))
    down_since = _rows(tick_db, "SELECT next_run_at FROM pgqueue.periodic")[0]["next_run_at"]
    workers = _start_workers(tick_db, 1, environment)
    try:
        _wait_until("the start-up tick", lambda: _slots(tick_db))
    finally:
        _stop(workers)
    tick_at = _rows(tick_db, "SELECT min(created_at) AS at FROM pgqueue.all_jobs")[0]["at"]
    cutoff = tick_at - timedelta(seconds=10)
    rows = _slots(tick_db)
    stale = [row["slot"] for row in rows if row["slot"] <= cutoff]
    latest_missed = datetime.fromtimestamp(cutoff.timestamp() // 2 * 2, UTC)
    assert stale == ([latest_missed] if missed == "run_once" else []), rows
    missed_slots = int((latest_missed - down_since).total_seconds()) // 2 + 1
    assert _rows(tick_db, "SELECT skipped FROM pgqueue.periodic")[0]["skipped"] == \
        missed_slots - len(stale)
    on_time = [row["slot"] for row in rows if row["slot"] > cutoff]
    assert on_time and on_time[0] == latest_missed + timedelta(seconds=2), rows
    keys = [row["dedupe_key"] for row in rows]
    assert len(set(keys)) == len(keys)


def test_concurrent_ticks_enqueue_each_slot_once(db_url: str) -> None:
    """Four schedulers at once (a leader cut off from its lock but still connected, say),
    over 30 rounds of a due slot: one job per slot, every time."""
    queue = Queue(db_url)
    try:
        task = queue.task(lambda: None, name="tests.nothing", queue="periodic")
        queue.schedule("race", task, every=3600)
        for round_number in range(30):
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("UPDATE pgqueue.periodic SET next_run_at = "
                             "to_timestamp(floor(extract(epoch FROM now()) / 3600) * 3600 "
                             "- 3600 * %s) WHERE name = 'race'", (round_number + 1,))
                # The previous round's job finished: only the schedule can stop a duplicate.
                conn.execute("DELETE FROM pgqueue.jobs")
            barrier = threading.Barrier(4)
            counts: list[int] = []

            def tick(barrier: threading.Barrier = barrier, counts: list[int] = counts) -> None:
                barrier.wait()
                counts.append(enqueue_due(queue.store).enqueued)
            threads = [threading.Thread(target=tick) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sum(counts) == 1, (round_number, counts)
            (job,) = _rows(db_url, "SELECT dedupe_key, run_at FROM pgqueue.jobs")
            slot = datetime.fromisoformat(job["dedupe_key"].removeprefix(f"{KEY_PREFIX}race:"))
            assert job["run_at"] == slot, job  # the job runs at its slot
    finally:
        queue.close()


def test_redeclaring_keeps_the_next_slot_and_a_changed_schedule_moves_it(db_url: str) -> None:
    queue = Queue(db_url)
    try:
        task = queue.task(lambda: None, name="tests.nightly", queue="periodic")
        queue.schedule("nightly", task, cron="0 3 * * *")
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE pgqueue.periodic SET next_run_at = next_run_at - interval '1 day'")
        before = queue.schedules(["nightly"])[0]["next_run_at"]
        queue.schedule("nightly", task, cron="0 3 * * *")  # a restart declares it again
        assert queue.schedules(["nightly"])[0]["next_run_at"] == before
        queue.schedule("nightly", task, cron="0 3 * * *", args={"a": 1})  # a new version
        assert queue.schedules(["nightly"])[0]["next_run_at"] == before
        queue.schedule("nightly", task, cron="30 4 * * *")
        moved = queue.schedules(["nightly"])[0]
        assert moved["next_run_at"] > before and moved["next_run_at"].minute == 30
        assert moved["schedule"] == "30 4 * * *"
        assert queue.unschedule("nightly") == 1
        assert queue.schedules() == []
        assert not [key for key in _rows(db_url, "SELECT dedupe_key FROM pgqueue.jobs")
                    if str(key["dedupe_key"]).startswith(KEY_PREFIX)]
    finally:
        queue.close()
