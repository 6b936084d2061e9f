"""Job results (issue 19): a task's return value kept as JSON with its finished job, read by
`get_job`, waited for by `Queue.wait` (woken by NOTIFY, never polled), bounded in size,
pruned with its job, and read by a group's follow-up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue import JobFailed, JobNotFound, Queue, WaitTimeout, current_job, execution


@pytest.fixture
def q(db_url: str) -> Iterator[Queue]:
    queue = Queue(db_url)
    yield queue
    queue.close()


def waiter_rows(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue.job_waiters").fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_return_value_is_kept_with_the_finished_job(q: Queue, isolation: str) -> None:
    @q.task(name="add", queue="results")
    def add(a: int, b: int) -> dict[str, Any]:
        return {"sum": a + b, "terms": [a, b], "name": "sómething", "none": None}

    @q.task(name="nothing", queue="results")
    def nothing() -> None:
        return None

    job_id = q.enqueue(add, {"a": 2, "b": 3})
    empty_id = q.enqueue(nothing)
    assert q.get_job(job_id).result is None  # not finished: no result yet
    q.work(["results"], burst=True, isolation=isolation)
    expected = {"sum": 5, "terms": [2, 3], "name": "sómething", "none": None}
    assert q.get_job(job_id).result == expected
    assert q.wait(job_id, timeout=30) == expected  # finished already: no waiting
    assert q.get_job(empty_id).result is None and q.wait(empty_id, timeout=30) is None


def test_wait_is_woken_by_the_finish(q: Queue, db_url: str) -> None:
    """The waiter waits before the job runs; nothing but the finish's NOTIFY can wake it
    (the wait does not poll), so without it the wait times out and this fails."""
    gate = threading.Event()

    @q.task(name="slow", queue="results")
    def slow(n: int) -> int:
        assert gate.wait(60)
        return n * 10

    job_id = q.enqueue(slow, {"n": 4})
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(q.wait(job_id, timeout=60)))
    waiter.start()
    worker = threading.Thread(target=q.work, args=(["results"],),
                              kwargs={"burst": True, "install_signals": False})
    worker.start()
    # The waiter has registered before the job may finish.
    deadline = threading.Event()
    for _ in range(600):
        if waiter_rows(db_url) == 1:
            break
        deadline.wait(0.05)
    assert waiter_rows(db_url) == 1
    gate.set()
    worker.join(60)
    waiter.join(60)
    assert got == [40]
    assert waiter_rows(db_url) == 0  # its row went with the notification


def test_every_waiter_of_a_drain_is_woken(q: Queue) -> None:
    """Waiters racing with a worker that finishes jobs in batches: each gets its result
    (one registered while a finish is in flight must still see it)."""
    @q.task(name="square", queue="results")
    def square(n: int) -> int:
        return n * n

    ids = q.enqueue_many(square, [{"n": n} for n in range(60)])
    worker = threading.Thread(target=q.work, args=(["results"],),
                              kwargs={"burst": True, "concurrency": 4, "install_signals": False})
    worker.start()
    results = [q.wait(job_id, timeout=60) for job_id in ids]
    worker.join(60)
    assert results == [n * n for n in range(60)]


def test_wait_raises_the_recorded_error(q: Queue) -> None:
    @q.task(name="broken", queue="results", max_attempts=1)
    def broken() -> None:
        raise ValueError("the scanner caught fire")

    failing = q.enqueue(broken)
    never_run = q.enqueue(broken, run_at=None, delay=3600)
    q.cancel(ids=[never_run])
    q.work(["results"], burst=True)
    with pytest.raises(JobFailed) as failed:
        q.wait(failing, timeout=30)
    assert failed.value.state == "failed" and "the scanner caught fire" in str(failed.value)
    assert "Traceback" in (failed.value.error or "")
    with pytest.raises(JobFailed) as cancelled:
        q.wait(never_run, timeout=30)
    assert cancelled.value.state == "cancelled"
    with pytest.raises(JobNotFound):
        q.wait(10**12, timeout=5)


def test_a_retry_is_not_a_finish(q: Queue) -> None:
    @q.task(name="flaky", queue="results", max_attempts=2, retry_backoff=0)
    def flaky() -> str:
        job = current_job()
        assert job is not None
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return f"attempt {job.attempt}"

    job_id = q.enqueue(flaky)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(q.wait(job_id, timeout=60)))
    waiter.start()
    q.work(["results"], burst=True)
    waiter.join(60)
    assert got == ["attempt 2"]


def test_wait_times_out_and_leaves_no_waiter(q: Queue, db_url: str) -> None:
    @q.task(name="idle", queue="results")
    def idle() -> int:
        return 1

    job_id = q.enqueue(idle)
    with pytest.raises(WaitTimeout):
        q.wait(job_id, timeout=0.5)
    assert waiter_rows(db_url) == 0
    assert isinstance(WaitTimeout("x"), TimeoutError)


def test_results_that_cannot_be_kept_fail_their_job_not_the_worker(
        q: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not JSON, JSON with a NUL (jsonb refuses it), or larger than MAX_RESULT_BYTES: the
    job fails once (a retry would return the same), saying why; the jobs finished in the
    same batch keep their results."""
    monkeypatch.setattr(execution, "MAX_RESULT_BYTES", 1000)

    @q.task(name="returns", queue="results", max_attempts=3)
    def returns(kind: str) -> Any:
        return {"set": {1, 2}, "nan": float("nan"), "nul": "a\x00b", "big": "x" * 1001,
                "fits": "x" * 900, "escaped": "\\u0000"}[kind]

    kinds = ["set", "nan", "nul", "big", "fits", "escaped"]
    ids = dict(zip(kinds, q.enqueue_many(returns, [{"kind": k} for k in kinds]), strict=True))
    assert q.work(["results"], burst=True, concurrency=3) == 0
    for kind in ["set", "nan", "nul", "big"]:
        job = q.get_job(ids[kind])
        assert (job.state, job.attempt, job.result) == ("failed", 1, None), kind
        assert "return value" in (job.last_error or ""), job.last_error
    assert "1003 bytes" in (q.get_job(ids["big"]).last_error or "")  # with its quotes
    assert q.wait(ids["fits"], timeout=30) == "x" * 900
    assert q.wait(ids["escaped"], timeout=30) == "\\u0000"


def test_results_are_pruned_with_their_jobs(q: Queue) -> None:
    @q.task(name="keep", queue="results")
    def keep() -> list[int]:
        return [1, 2, 3]

    job_id = q.enqueue(keep)
    q.work(["results"], burst=True)
    assert q.get_job(job_id).result == [1, 2, 3]
    q.prune(succeeded_after=0)
    with pytest.raises(JobNotFound):
        q.get_job(job_id)


def test_a_groups_follow_up_reads_its_members_results(q: Queue) -> None:
    @q.task(name="page", queue="results")
    def page(n: int) -> dict[str, int]:
        return {"page": n, "words": n * 100}

    @q.task(name="book", queue="results")
    def book() -> int:
        job = current_job()
        assert job is not None and job.origin_group_id is not None
        members = q.group_results(job.origin_group_id)
        return sum(result["words"] for result in members.values())

    with q.group("book:1", on_complete=[book.spec()]) as group:
        members = group.enqueue_many(page, [{"n": n} for n in range(1, 6)])
    q.work(["results"], burst=True, concurrency=2)
    assert q.group_results(group.id) == {
        job_id: {"page": n, "words": n * 100} for n, job_id in zip(range(1, 6), members, strict=True)}
    with psycopg.connect(q.dsn) as conn:
        row = conn.execute("SELECT id FROM pgqueue.job_history WHERE origin_group_id = %s",
                           (group.id,)).fetchone()
    assert row is not None
    assert q.wait(row[0], timeout=30) == 1500
