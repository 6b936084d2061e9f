"""Counts that do not grow with history (issue 21): queue_depth, task_counts and the
dashboard's counts read counters kept by statement triggers (migration 0008), never the
whole of job_history; and the counters are exact whatever writes the tables."""

from __future__ import annotations

import contextlib
import json
import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from pgqueue import Queue, admin, counts
from pgqueue.errors import DatabaseUnavailable, DuplicateJob
from pgqueue.maintenance import prune, rescue_expired
from pgqueue.retry import Backoff
from tests.support import worker_app

HISTORY_ROWS = 1_000_000


def _plan(conn: psycopg.Connection[Any], statement: Any, params: Any = None) -> str:
    return json.dumps(conn.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + statement,
                                   params).fetchone()[0])


def test_depth_and_metrics_read_no_history_at_a_million_rows(app: Queue, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt,
                max_attempts, run_at, created_at, started_at, finished_at)
            SELECT g, CASE WHEN g %% 3 = 0 THEN 'ocr' ELSE 'fetch' END, 'page', '{}', 0,
                   CASE WHEN g %% 100 = 0 THEN 'failed' ELSE 'succeeded' END::pgqueue.job_state,
                   1, 3, now(), now(), now() - interval '2 seconds',
                   now() - (g %% 1440) * interval '1 minute'
            FROM generate_series(1, %s) g""", (HISTORY_ROWS,))
        worker_app.record.enqueue(item=1)
        worker_app.record.enqueue(item=2, delay=3600)
        counts.fold(app.store)
        conn.execute("ANALYZE")
        statements = app.store.statements
        for name, params in (("queue_depth", None), ("task_counts", None),
                             ("finished_per_minute", {"minutes": 60})):
            plan = _plan(conn, getattr(statements, name), params)
            assert "job_history" not in plan, (name, plan)
    depth = admin.job_counts(app.store)
    assert depth["ocr"]["succeeded"] + depth["fetch"]["succeeded"] == HISTORY_ROWS * 99 // 100
    assert depth["work"] == {"queued": 1, "scheduled": 1}
    finished = app.metrics_snapshot()["finished"]
    assert sum(jobs for _queue, _task, _state, jobs in finished) == HISTORY_ROWS


def _backoff(task: str) -> Backoff:
    return Backoff(base=0.01, maximum=0.05)


def _random_step(app: Queue, rng: random.Random, step: int) -> None:
    """One operator or producer action, chosen at random."""
    choice = rng.randrange(9)
    tag = f"site-{rng.randrange(4)}"
    if choice == 0:
        worker_app.fail_if.enqueue(item=step, fail=rng.random() < 0.5, record=False)
    elif choice == 1:  # a batch big enough for the COPY path, some delayed
        app.enqueue_many(worker_app.fail_if, [{"item": i, "fail": i % 7 == 0, "record": False}
                                              for i in range(rng.choice((5, 600)))], tag=tag,
                         delay=rng.choice((None, 3600)))
    elif choice == 2:
        with app.group(f"g{step}", tag=tag,
                       on_complete=[worker_app.noop.spec(item=-1)]) as group:
            group.enqueue_many(worker_app.noop, [{"item": i} for i in range(rng.randrange(1, 20))])
    elif choice == 3:
        for _ in range(5):  # a cancel racing a worker's finish can deadlock (rolled back:
            try:            # the counters must not see it either); cancelling again is safe
                app.cancel(tag=tag)
                break
            except DatabaseUnavailable as error:
                assert "deadlock" in str(error)
    elif choice == 4:
        app.retry_failed()
    elif choice == 5:  # a worker lost: its jobs' leases run out, the rescuer takes them
        with app.store.transaction() as conn:
            app.store.claim(conn, worker_id=None, queues=["work"], limit=rng.randrange(1, 5),
                            lease_seconds=0.001)
        rescue_expired(app.store, _backoff)
    elif choice == 6:
        prune(app.store, succeeded_after=0, failed_after=rng.choice((0, 3600)),
              cancelled_after=0)
    elif choice == 7:
        counts.fold(app.store)
    else:
        with contextlib.suppress(DuplicateJob):
            worker_app.noop.enqueue(item=step, dedupe_key=f"d{rng.randrange(5)}",
                                    run_at=datetime.now(UTC) + timedelta(
                                        seconds=rng.choice((0, 3600))))


@pytest.mark.parametrize("seed", [21])
def test_counters_equal_a_real_count_after_a_random_concurrent_workload(
        app: Queue, seed: int) -> None:
    rng = random.Random(seed)
    stop = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while not stop.is_set():
                app.work(["work"], concurrency=4, burst=True, install_signals=False,
                         poll_interval=0.05)
                stop.wait(0.01)
        except BaseException as error:  # reported by the test
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(3)]
    for thread in workers:
        thread.start()
    try:
        for step in range(60):
            _random_step(app, rng, step)
            if step % 10 == 0:  # while workers claim, finish and retry beside it
                assert counts.verify(app.store) == {}
    finally:
        stop.set()
        for thread in workers:
            thread.join(60)
    assert not errors
    rescue_expired(app.store, _backoff)
    assert counts.verify(app.store) == {}
    counts.fold(app.store)
    assert counts.verify(app.store) == {}
    real = counts.exact_counts(app.store)
    live = {key: jobs for key, jobs in real.items() if key[1] in ("queued", "running")}
    depth = admin.job_counts(app.store)
    for (queue, state), jobs in real.items():
        shown = depth[queue].get(state, 0) + (depth[queue].get("scheduled", 0)
                                              if state == "queued" else 0)
        assert shown == jobs, (queue, state, depth)
    assert sum(live.values()) == sum(v for q in depth.values() for s, v in q.items()
                                     if s in ("queued", "scheduled", "running"))
