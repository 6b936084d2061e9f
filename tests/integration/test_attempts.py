"""Every attempt of a job is kept (migration 0009, `job_attempts`): the statements that end an
attempt without ending its job record it (a failure retried, a rescue, a give-back, a failed
job retried by hand); a success writes nothing; pruning a job's history takes its attempts."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgqueue import JobState, Queue, current_job
from tests.support import worker_app


def attempts(db_url: str, job_id: int | None = None) -> list[dict[str, Any]]:
    """job_attempts rows (of one job, or all), in the order they were written."""
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT job_id, attempt, outcome, error, worker_id, started_at, ended_at"
            " FROM pgqueue.job_attempts WHERE %(id)s::bigint IS NULL OR job_id = %(id)s"
            " ORDER BY job_id, id", {"id": job_id}).fetchall()


def flaky(app: Queue, fails: int) -> Any:
    """A task whose first `fails` attempts raise an error naming the attempt."""
    @app.task(name=f"attempts.flaky{fails}", queue="work", max_attempts=3, retry_backoff=0.01)
    def task() -> str:
        job = current_job()
        assert job is not None
        if job.attempt <= fails:
            raise ValueError(f"page {job.attempt} unreadable")
        return "done"
    return task


def test_a_success_at_the_first_attempt_writes_no_attempt_row(app: Queue, db_url: str) -> None:
    ids = app.enqueue_many(worker_app.noop, [{"item": i} for i in range(20)])
    assert app.work(["work"], concurrency=4, burst=True, poll_interval=0.05) == 0
    assert {app.get_job(i).state for i in ids} == {JobState.SUCCEEDED}
    assert attempts(db_url) == []


def test_each_failed_attempt_is_kept_with_its_traceback_in_order(app: Queue, db_url: str) -> None:
    job_id = app.enqueue(flaky(app, fails=2))
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    job = app.get_job(job_id)
    assert (job.state, job.attempt, job.rescues) == (JobState.SUCCEEDED, 3, 0)  # no rescue
    rows = attempts(db_url, job_id)
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "failed"), (2, "failed")]
    for number, row in enumerate(rows, start=1):
        assert row["error"].startswith("Traceback (most recent call last)"), row["error"]
        assert f"ValueError: page {number} unreadable" in row["error"]
        assert row["worker_id"] is not None
        assert row["started_at"] is not None and row["started_at"] <= row["ended_at"]
    assert rows[0]["ended_at"] <= rows[1]["started_at"]


def claim_and_lose(app: Queue, db_url: str) -> tuple[int, int, int]:
    """A worker of host 'lost-host' claims the one job of 'work', then its lease runs out
    and the rescuer requeues it: (job id, the lost worker's id, the attempt it held)."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        worker_id = conn.execute(app.statements.register_worker, {
            "host": "lost-host", "pid": 1, "queues": ["work"], "concurrency": 1,
            "metadata": Jsonb({})}).fetchone()["id"]
        (claimed,) = conn.execute(app.statements.claim, {
            "queues": ["work"], "limit": 1, "worker_id": worker_id, "lease_seconds": 30,
            "free": 1, "floor": None, "buffered": None, "park_seconds": 15}).fetchall()
        conn.execute("UPDATE pgqueue.jobs SET lease_until = now() - interval '1 s'")
    assert app.rescue_expired() == {"requeued": 1, "failed": 0}
    return claimed["id"], worker_id, claimed["attempt"]


def test_a_rescued_attempt_is_kept_and_a_late_failure_records_nothing(
        app: Queue, db_url: str) -> None:
    worker_app.noop.enqueue(item=1)
    job_id, lost_worker, attempt = claim_and_lose(app, db_url)
    (row,) = attempts(db_url, job_id)
    assert (row["attempt"], row["outcome"], row["worker_id"]) == (1, "rescued", lost_worker)
    assert row["error"] == "worker lost (lease expired) during attempt 1"
    assert row["started_at"] is not None
    # The lost worker wakes and reports a failure of the attempt it no longer holds.
    with psycopg.connect(db_url, autocommit=True) as conn:
        stale = conn.execute(app.statements.requeue_attempts, {
            "outcome": "failed", "ids": [job_id], "attempts": [attempt], "delays": [0.0],
            "errors": ["stale failure"]}).fetchall()
        conn.execute("UPDATE pgqueue.jobs SET run_at = now()")  # no rescue backoff
    assert stale == [] and len(attempts(db_url, job_id)) == 1
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    job = app.get_job(job_id)
    assert (job.state, job.attempt, job.rescues) == (JobState.SUCCEEDED, 2, 1)
    assert [r["outcome"] for r in attempts(db_url, job_id)] == ["rescued"]


def test_a_give_back_is_kept_as_returned(
        app: Queue, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pgqueue.store.UNKNOWN_TASK_DELAY", 3600.0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = conn.execute("SELECT pgqueue.add_job('work', 'attempts.v2')").fetchone()[0]
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    (row,) = attempts(db_url, job_id)
    assert (row["attempt"], row["outcome"]) == (1, "returned")
    assert "no task named 'attempts.v2'" in row["error"]
    assert app.get_job(job_id).attempt == 0  # not counted


def test_a_job_given_back_at_a_warm_shutdown_is_kept_as_returned_if_it_ran(
        app: Queue, db_url: str) -> None:
    """One job runs past the grace, five wait in the worker's inbox: all six go back, the
    one that ran leaves a 'returned' attempt (its worker, start, the grace), the rest none."""
    started = threading.Event()

    @app.task(name="attempts.stuck", queue="stuck")
    def stuck(i: int) -> None:
        started.set()
        current = current_job()
        assert current is not None
        while True:  # until the shutdown interrupts it (JobInterrupted)
            current.check()
            time.sleep(0.01)

    ids = app.enqueue_many(stuck, [{"i": i} for i in range(6)])
    worker = app.worker(["stuck"], concurrency=1, prefetch=5, shutdown_grace=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(30)
    worker.stop()
    thread.join(30)
    assert {app.get_job(i).state for i in ids} == {JobState.QUEUED}
    (row,) = attempts(db_url)
    assert row["job_id"] in ids and (row["attempt"], row["outcome"]) == (1, "returned")
    assert "warm shutdown" in row["error"] and "0.2 s grace" in row["error"], row["error"]
    assert row["worker_id"] == worker.worker_id
    assert row["started_at"] is not None and row["started_at"] <= row["ended_at"]
    assert app.get_job(row["job_id"]).attempt == 0  # still not counted


def test_a_failed_job_retried_by_hand_keeps_its_earlier_run(app: Queue, db_url: str) -> None:
    job_id = worker_app.fail_if.enqueue(item=1, fail=True, record=False)  # 2 attempts
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    assert [r["attempt"] for r in attempts(db_url, job_id)] == [1]  # the 2nd is the history row
    assert app.retry_failed(ids=[job_id]) == 1
    rows = attempts(db_url, job_id)
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "failed"), (2, "failed")]
    assert "item 1 is meant to fail" in rows[1]["error"]
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    assert app.get_job(job_id).state is JobState.FAILED
    assert [r["attempt"] for r in attempts(db_url, job_id)] == [1, 2, 1]


def test_pruning_a_jobs_history_deletes_its_attempts(app: Queue, db_url: str) -> None:
    task = flaky(app, fails=1)
    old = app.enqueue(task)
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    recent = app.enqueue(task)
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    assert {r["job_id"] for r in attempts(db_url)} == {old, recent}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.job_history SET finished_at = now() - interval '2 days'"
                     " WHERE id = %s", (old,))
    deleted = app.prune()
    assert deleted is not None and deleted["succeeded"] == 1
    assert {r["job_id"] for r in attempts(db_url)} == {recent}
