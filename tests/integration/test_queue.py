"""pgqueue against a real PostgreSQL: enqueue, claim, retry, dedupe, transactions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pgqueue import (
    DatabaseUnavailable,
    DuplicateJob,
    JobNotFound,
    JobState,
    Queue,
    SerializationError,
    current_job,
)
from pgqueue.enqueue import COPY_THRESHOLD
from tests.support import worker_app
from tests.support.postgres import effects


def test_enqueue_and_get_job(app: Queue) -> None:
    job_id = worker_app.record.enqueue(item=7, priority=3, tag="pleasanton")
    job = app.get_job(job_id)
    assert job.state is JobState.QUEUED
    assert job.args == {"item": 7}
    assert (job.priority, job.tag, job.attempt, job.max_attempts) == (3, "pleasanton", 0, 3)
    with pytest.raises(JobNotFound):
        app.get_job(job_id + 1000)


def test_args_that_are_not_json_insert_nothing(app: Queue, db_url: str) -> None:
    with pytest.raises(SerializationError, match="not JSON"):
        worker_app.record.enqueue(item=object())
    with pytest.raises(SerializationError):
        app.enqueue_many(worker_app.record, [{"item": 1}, {"item": float("nan")}])
    assert app.queue_depth() == []


def test_work_runs_each_of_10000_jobs_exactly_once(app: Queue, db_url: str) -> None:
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    @app.task(name="count", queue="bulk")
    def count(i: int) -> None:
        with lock:
            ran[i] += 1

    ids = app.enqueue_many(count, [{"i": i} for i in range(10_000)])
    assert len(ids) == len(set(ids)) == 10_000
    assert app.work(["bulk"], concurrency=4, burst=True) == 0
    assert len(ran) == 10_000 and set(ran.values()) == {1}
    depth = {(r["queue"], r["state"]): r["jobs"] for r in app.queue_depth()}
    assert depth == {("bulk", "succeeded"): 10_000}


def test_enqueue_inside_the_callers_transaction(app: Queue, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO orders VALUES (1)")
            kept = worker_app.record.enqueue(item=1, conn=conn)
        with pytest.raises(RuntimeError), conn.transaction():
            conn.execute("INSERT INTO orders VALUES (2)")
            lost = worker_app.record.enqueue(item=2, conn=conn)
            raise RuntimeError("the caller's work failed")
    assert app.get_job(kept).state is JobState.QUEUED
    with pytest.raises(JobNotFound):
        app.get_job(lost)


def test_dedupe_key_is_unique_among_live_jobs(app: Queue) -> None:
    first = worker_app.record.enqueue(item=1, dedupe_key="site:alameda")
    with pytest.raises(DuplicateJob) as raised:
        worker_app.record.enqueue(item=2, dedupe_key="site:alameda")
    assert raised.value.existing_id == first
    app.work(["work"], burst=True)
    again = worker_app.record.enqueue(item=3, dedupe_key="site:alameda")
    assert again != first
    ids = app.enqueue_many(
        worker_app.record, [{"item": 4}, {"item": 5}], dedupe_keys=["site:alameda", "site:other"]
    )
    assert len(ids) == 1


def test_priority_then_age_order(app: Queue, db_url: str) -> None:
    low = worker_app.record.enqueue(item=1)
    high = worker_app.record.enqueue(item=2, priority=10)
    later = worker_app.record.enqueue(item=3, delay=3600)
    app.work(["work"], concurrency=1, burst=True)
    assert [item for _, item, _ in effects(db_url)] == [2, 1]
    assert app.get_job(low).state is JobState.SUCCEEDED
    assert app.get_job(high).state is JobState.SUCCEEDED
    assert app.get_job(later).state is JobState.QUEUED  # not due yet


def test_failure_retries_with_backoff_then_fails_for_good(app: Queue) -> None:
    job_id = worker_app.fail_if.enqueue(item=1, fail=True)
    app.work(["work"], burst=True, poll_interval=0.05)
    job = app.get_job(job_id)
    assert job.state is JobState.FAILED
    assert job.attempt == 2
    assert "RuntimeError: item 1 is meant to fail" in (job.last_error or "")
    assert "Traceback" in (job.last_error or "")
    failures = app.failed_jobs(queue="work")
    assert [f["id"] for f in failures] == [job_id]


def test_retry_then_success(app: Queue) -> None:
    @app.task(name="flaky", queue="flaky", max_attempts=3, retry_backoff=0.01)
    def flaky() -> None:
        job = current_job()
        assert job is not None
        if job.attempt < 3:
            raise ConnectionError(f"transient, attempt {job.attempt}")

    job_id = flaky.enqueue()
    app.work(["flaky"], burst=True, poll_interval=0.05)
    job = app.get_job(job_id)
    assert (job.state, job.attempt) == (JobState.SUCCEEDED, 3)
    assert "transient, attempt 2" in (job.last_error or "")


def test_unknown_task_fails_clearly_and_the_worker_goes_on(
        app: Queue, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pgqueue.store.UNKNOWN_TASK_DELAY", 0.01)  # given back 5 times first
    with psycopg.connect(db_url, autocommit=True) as conn:
        unknown = conn.execute("SELECT pgqueue.add_job('work', 'no.such.task')").fetchone()[0]
    known = worker_app.record.enqueue(item=5)
    app.work(["work"], burst=True)
    job = app.get_job(unknown)
    assert job.state is JobState.FAILED and job.attempt == 1
    assert "no task named 'no.such.task'" in (job.last_error or "")
    assert app.get_job(known).state is JobState.SUCCEEDED


def test_timeout_kills_the_job_process_and_counts_an_attempt(app: Queue) -> None:
    @app.task(name="hang", queue="hang", timeout=1, max_attempts=2, retry_backoff=0.01)
    def hang() -> None:
        time.sleep(600)

    job_id = hang.enqueue()
    app.work(["hang"], burst=True, isolation="process", poll_interval=0.1)
    job = app.get_job(job_id)
    assert job.state is JobState.FAILED and job.attempt == 2
    assert "timed out after 1 s (worker process killed)" in (job.last_error or "")


def test_a_crashing_job_process_is_recorded_and_the_worker_lives(app: Queue, db_url: str) -> None:
    @app.task(name="segfault", queue="crash", max_attempts=1)
    def segfault() -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGSEGV)

    @app.task(name="fine", queue="crash")
    def fine() -> None:
        return None

    bad, good = segfault.enqueue(), fine.enqueue()
    app.work(["crash"], burst=True, isolation="process")
    assert "killed by signal 11 (SIGSEGV)" in (app.get_job(bad).last_error or "")
    assert app.get_job(bad).state is JobState.FAILED
    assert app.get_job(good).state is JobState.SUCCEEDED


class WakeSpy(threading.Event):
    """Stands in for a worker's wake-up event, to see when the worker is idle after its
    listener subscribed: the listener thread has woken the main loop (it does so once its
    LISTENs are in place, to look for jobs sent before), and the main loop has since
    cleared the event, looked, and gone back to waiting on it."""

    def __init__(self) -> None:
        super().__init__()
        self._count = threading.Lock()
        self.listener_wakes = 0
        self.waiting = 0

    def set(self) -> None:
        super().set()
        if "listen" in threading.current_thread().name:
            with self._count:
                self.listener_wakes += 1

    def wait(self, timeout: float | None = None) -> bool:
        with self._count:
            self.waiting += 1
        try:
            return super().wait(timeout)
        finally:
            with self._count:
                self.waiting -= 1

    def idle_after_listening(self) -> bool:
        with self._count:
            return self.listener_wakes > 0 and self.waiting > 0 and not self.is_set()


def enqueue_by(path: str) -> None:
    """One of the three enqueue paths, each of which must NOTIFY the queue."""
    if path == "single":
        worker_app.noop.enqueue(item=9)
    elif path == "many":  # one INSERT of a few rows
        worker_app.queue.enqueue_many(worker_app.noop, [{"item": 9}, {"item": 10}])
    else:  # COPY: COPY_THRESHOLD rows or more, without dedupe keys
        worker_app.queue.enqueue_many(worker_app.noop, [{"item": i} for i in range(COPY_THRESHOLD)])


def claimed(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return int(conn.execute("SELECT (SELECT count(*) FROM pgqueue.jobs WHERE state <> 'queued')"
                                " + (SELECT count(*) FROM pgqueue.job_history)").fetchone()[0])


@pytest.mark.parametrize("path", ["single", "many", "copy"])
def test_idle_worker_wakes_on_notify_not_on_the_poll(app: Queue, db_url: str, path: str) -> None:
    worker = app.worker(["work"], concurrency=1, poll_interval=3600)
    spy = WakeSpy()
    worker._wake = spy  # before run(): every wake-up of this worker goes through the spy
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not spy.idle_after_listening() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert spy.idle_after_listening(), "the worker never subscribed and went idle"
        enqueue_by(path)  # from now on, only a NOTIFY can wake it: the poll is an hour away
        deadline = time.monotonic() + 20
        while not claimed(db_url) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert claimed(db_url), f"the {path} enqueue did not wake the idle worker"
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_database_down_at_start_names_host_and_hides_password() -> None:
    queue = Queue("postgresql://clerk:s3cret-pw@127.0.0.1:1/clerk")
    with pytest.raises(DatabaseUnavailable) as raised:
        queue.migrate()
    message = str(raised.value)
    assert "127.0.0.1:1" in message
    assert "s3cret-pw" not in message


def test_claim_uses_the_partial_index_over_a_large_history(app: Queue, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt,
                max_attempts, run_at, created_at)
            SELECT g, 'work', 'record', '{}', 0, 'succeeded', 1, 3, now(), now()
            FROM generate_series(1000000, 1200000) g""")
        conn.execute("""
            INSERT INTO pgqueue.jobs (queue, task, state, run_at)
            SELECT CASE WHEN g % 2 = 0 THEN 'work' ELSE 'other' END, 'record', 'queued',
                   now() - interval '1 minute'
            FROM generate_series(1, 20000) g""")
        conn.execute("ANALYZE")
        plan = conn.execute(
            psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + app.statements.claim,
            {"queues": ["work"], "limit": 10, "worker_id": 1, "lease_seconds": 30, "free": 10,
             "floor": None, "buffered": None, "park_seconds": 15},
        ).fetchone()[0]
    assert "jobs_claim" in str(plan)
    assert "job_history" not in str(plan)


def test_delayed_job_by_run_at(app: Queue) -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    job = app.get_job(worker_app.record.enqueue(item=1, run_at=when))
    assert abs((job.run_at - when).total_seconds()) < 1


def test_a_worker_of_several_queues_takes_the_highest_priority_across_them(
        app: Queue, db_url: str) -> None:
    order: list[str] = []

    @app.task(name="first_queue", queue="a")
    def in_a(name: str) -> None:
        order.append(name)

    @app.task(name="second_queue", queue="b")
    def in_b(name: str) -> None:
        order.append(name)

    in_a.enqueue(name="a-low")
    in_b.enqueue(name="b-high", priority=10)
    in_a.enqueue(name="a-mid", priority=5)
    app.work(["a", "b"], concurrency=1, burst=True)
    assert order == ["b-high", "a-mid", "a-low"]


def test_migrate_from_several_processes_at_once_applies_each_migration_once(
        empty_db_url: str) -> None:
    import json
    import subprocess
    import sys

    script = ("import json, sys; from pgqueue import Queue;"
              "print(json.dumps(Queue(sys.argv[1]).migrate()))")
    runs = [subprocess.Popen([sys.executable, "-c", script, empty_db_url],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    applied = [name for out, _ in outputs for name in json.loads(out)]
    assert sorted(applied) == sorted(set(applied))  # each applied by exactly one process
    queue = Queue(empty_db_url)
    history = queue.migrator().history()
    assert [m.version for m in history] == sorted({m.version for m in history})
    assert queue.migrate() == []


def test_prefetched_jobs_run_once_and_go_back_on_a_warm_stop(app: Queue, db_url: str) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.task(name="gate", queue="gate")
    def gate(i: int) -> None:
        started.set()
        assert release.wait(30)

    ids = app.enqueue_many(gate, [{"i": i} for i in range(6)])
    place_in_line = {i: app.get_job(i).run_at for i in ids}
    worker = app.worker(["gate"], concurrency=1, prefetch=5)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert started.wait(30)
    with psycopg.connect(db_url) as conn:  # one running, five leased in the inbox
        assert conn.execute("SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'"
                            ).fetchone() == (6,)
    worker.stop()
    release.set()
    thread.join(30)
    states = Counter(app.get_job(i).state for i in ids)
    assert states == {JobState.SUCCEEDED: 1, JobState.QUEUED: 5}
    given_back = [app.get_job(i) for i in ids if app.get_job(i).state is JobState.QUEUED]
    assert all(job.attempt == 0 for job in given_back)
    assert all(job.run_at == place_in_line[job.id] for job in given_back)  # keeps its place
    app.work(["gate"], concurrency=2, prefetch=10, burst=True)
    assert all(app.get_job(i).state is JobState.SUCCEEDED for i in ids)


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_job_process_dies_with_its_worker(app: Queue, db_url: str, tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PGQUEUE_APP_DSN": db_url, "PYTHONPATH": str(root)}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_app", db_url, "work", "--isolation", "process"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    child = 0
    try:
        worker_app.started_then_sleep.enqueue(item=1, sleep=600)
        deadline = time.monotonic() + 60
        while not child and time.monotonic() < deadline:  # the job records its pid, then sleeps
            with psycopg.connect(db_url) as conn:
                row = conn.execute("SELECT pid FROM effects WHERE item = -1").fetchone()
            child = row[0] if row else 0
            time.sleep(0.05)
        assert child and child != worker.pid, (tmp_path / "worker.log").read_text()
        os.kill(worker.pid, signal.SIGKILL)  # the worker only, not its process group
        worker.wait(30)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the job's process outlived its SIGKILLed worker"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)
        worker.wait(30)
        log.close()
