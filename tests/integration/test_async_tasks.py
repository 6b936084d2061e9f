"""`async def` tasks in real worker processes (pgqueue.aioloop): results, timeouts that
cancel the coroutine, cancel requests, retries; sync and async jobs in one worker."""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import Backoff, JobState, Queue, maintenance
from tests.chaos.conftest import Fleet, scalar, wait_for
from tests.support import worker_app
from tests.support.postgres import effects


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    (tmp_path / "logs").mkdir()
    workers = Fleet(tmp_path / "logs")
    try:
        yield workers
    finally:
        workers.stop_all(timeout=5)


def _final(app: Queue, job_id: int, what: str, fleet: Fleet) -> JobState:
    def done() -> JobState | None:
        state = app.get_job(job_id).state
        return state if state.final else None
    result: JobState = wait_for(done, timeout=45, what=what, watch=fleet)
    return result


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_sync_and_async_jobs_share_one_worker(isolation: str, app: Queue, db_url: str,
                                              fleet: Fleet) -> None:
    sync_ids = app.enqueue_many(worker_app.record, [{"item": i} for i in range(1, 51)])
    async_ids = app.enqueue_many(worker_app.arecord, [{"item": i, "sleep": 0.01}
                                                      for i in range(101, 301)])
    fleet.start(db_url, "work,async", concurrency=2, isolation=isolation)
    wait_for(lambda: scalar(db_url, "SELECT count(*) FROM pgqueue.job_history "
                                    "WHERE state = 'succeeded'") == 250,
             timeout=120, what="250 jobs to succeed", watch=fleet)
    items = sorted(item for _, item, _ in effects(db_url))
    assert items == list(range(1, 51)) + list(range(101, 301))
    # The async jobs ran in the worker process itself, on its event loop thread (with
    # process isolation, the sync ones in its job children).
    worker_pid = scalar(db_url, "SELECT pid FROM pgqueue.workers")
    assert scalar(db_url, "SELECT array_agg(DISTINCT pid) FROM effects WHERE item > 100") == [worker_pid]
    assert app.get_job(async_ids[0]).state is JobState.SUCCEEDED
    assert app.get_job(sync_ids[0]).state is JobState.SUCCEEDED


def test_a_timeout_cancels_the_coroutine_and_fails_the_job(app: Queue, db_url: str,
                                                            fleet: Fleet) -> None:
    job_id = worker_app.async_sleeper.enqueue(item=7)  # timeout=1, one attempt
    fleet.start(db_url, "async")
    assert _final(app, job_id, "the sleeper to time out", fleet) is JobState.FAILED
    job = app.get_job(job_id)
    assert job.last_error is not None and job.last_error.startswith("timed out after 1 s")
    # The coroutine saw CancelledError (its except clause recorded 1_000_007), never woke.
    items = [item for _, item, _ in effects(db_url)]
    assert items == [-7, 1_000_007]


def test_cancel_stops_a_running_async_task(app: Queue, db_url: str, fleet: Fleet) -> None:
    sleeper = dataclasses.replace(worker_app.async_sleeper, timeout=None)
    job_id = sleeper.enqueue(item=3)
    fleet.start(db_url, "async")
    wait_for(lambda: -3 in [item for _, item, _ in effects(db_url)], timeout=60,
             what="the sleeper to start", watch=fleet)
    app.cancel(ids=[job_id])
    assert _final(app, job_id, "the cancelled job to finish", fleet) is JobState.CANCELLED
    assert [item for _, item, _ in effects(db_url)] == [-3, 1_000_003]


def test_a_failing_async_task_is_retried(app: Queue, db_url: str, fleet: Fleet) -> None:
    job_id = worker_app.async_flaky.enqueue(item=5, failures=2)
    fleet.start(db_url, "async")
    assert _final(app, job_id, "the flaky job to succeed", fleet) is JobState.SUCCEEDED
    assert [(item, attempt) for _, item, attempt in effects(db_url)] == [(-5, 1), (-5, 2), (5, 3)]
    assert app.get_job(job_id).attempt == 3


def test_a_warm_stop_lets_a_running_coroutine_finish(app: Queue, db_url: str,
                                                     fleet: Fleet) -> None:
    sleeper = dataclasses.replace(worker_app.async_sleeper, timeout=None)
    job_id = sleeper.enqueue(item=4, seconds=2.0)
    worker = fleet.start(db_url, "async", grace=60)
    wait_for(lambda: -4 in [item for _, item, _ in effects(db_url)], timeout=60,
             what="the sleeper to start", watch=fleet)
    fleet.kill(worker, signal.SIGTERM)
    assert worker.wait(60) == 0
    assert app.get_job(job_id).state is JobState.SUCCEEDED
    assert [item for _, item, _ in effects(db_url)] == [-4, 4]


def test_past_the_grace_a_coroutine_is_cancelled_and_its_job_given_back(
        app: Queue, db_url: str, fleet: Fleet) -> None:
    sleeper = dataclasses.replace(worker_app.async_sleeper, timeout=None)
    job_id = sleeper.enqueue(item=6)
    worker = fleet.start(db_url, "async", grace=0.5)
    wait_for(lambda: -6 in [item for _, item, _ in effects(db_url)], timeout=60,
             what="the sleeper to start", watch=fleet)
    fleet.kill(worker, signal.SIGTERM)
    assert worker.wait(60) == 0
    job = app.get_job(job_id)
    assert job.state is JobState.QUEUED  # given back for another worker, not lost
    wait_for(lambda: 1_000_006 in [item for _, item, _ in effects(db_url)], timeout=30,
             what="the coroutine to see CancelledError")


ASYNC_APP = '''
import asyncio
import os
from pgqueue import Queue
q = Queue(os.environ["DATABASE_URL"])
running = peak = 0

@q.task(name="adouble", queue="acli")
async def adouble(n: int) -> dict:
    global running, peak
    running += 1
    peak = max(peak, running)
    await asyncio.sleep(0.2)
    running -= 1
    return {"double": 2 * n, "peak": peak}
'''


def test_the_pgqueue_command_runs_async_tasks_with_its_limit(db_url: str,
                                                            tmp_path: Path) -> None:
    from tests.integration.test_pgqueue_cli import pgqueue

    (tmp_path / "async_app.py").write_text(ASYNC_APP)
    q = Queue(db_url)
    try:
        adouble = q.task(lambda n: None, name="adouble", queue="acli")
        ids = q.enqueue_many(adouble, [{"n": n} for n in range(20)])
        ran = pgqueue("worker", "async_app:q", "-q", "acli", "--async-concurrency", "3",
                      "--burst", url=db_url, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        results = [q.get_job(i).result for i in ids]
    finally:
        q.close()
    assert [r["double"] for r in results] == [2 * n for n in range(20)]
    peak = max(r["peak"] for r in results)
    assert 2 <= peak <= 3, peak  # coroutines overlap, never more than --async-concurrency


def test_the_lease_keeper_keeps_a_long_coroutines_lease(app: Queue, db_url: str,
                                                         fleet: Fleet) -> None:
    """A 6 s coroutine under a 1.5 s lease: heartbeated like a sync job, never rescued."""
    job_id = worker_app.arecord.enqueue(item=8, sleep=6.0)
    fleet.start(db_url, "async", lease=1.5)
    assert _final(app, job_id, "the long coroutine to finish", fleet) is JobState.SUCCEEDED
    job = app.get_job(job_id)
    assert (job.attempt, job.rescues) == (1, 0)
    assert [(item, attempt) for _, item, attempt in effects(db_url)] == [(8, 1)]


def test_a_lost_lease_cancels_the_coroutine(app: Queue, db_url: str, fleet: Fleet) -> None:
    """The job is rescued from under its worker (its lease made to expire): the lease
    keeper's next beat finds it gone and the coroutine is cancelled, as a sync job in a
    killable process would be killed."""
    sleeper = dataclasses.replace(worker_app.async_sleeper, timeout=None, max_attempts=3)
    job_id = sleeper.enqueue(item=9)
    fleet.start(db_url, "async", lease=30)
    wait_for(lambda: -9 in [item for _, item, _ in effects(db_url)], timeout=60,
             what="the sleeper to start", watch=fleet)
    with psycopg.connect(db_url) as conn:  # one transaction: expire, rescue, and keep it
        conn.execute("UPDATE pgqueue.jobs SET lease_until = now() - interval '1 second' "
                     "WHERE id = %s", (job_id,))
        assert maintenance.rescue_expired(app.store, lambda task: Backoff(), conn)["requeued"] == 1
        # from this worker (a re-claim here would wait for the attempt it still runs)
        conn.execute("UPDATE pgqueue.jobs SET run_at = now() + interval '1 hour' "
                     "WHERE id = %s", (job_id,))
    wait_for(lambda: 1_000_009 in [item for _, item, _ in effects(db_url)], timeout=60,
             what="the first attempt's coroutine to be cancelled", watch=fleet)
