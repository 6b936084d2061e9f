"""Issue 23's pgqueue-side attacks, each reproduced against a real PostgreSQL and real
workers: bad follow-ups, NULs in errors, undecodable args, unknown tasks, frozen workers,
orphaned grandchildren, leases without a connection, retries that lose records."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgqueue import JobState, Queue
from pgqueue.errors import InvalidJobSpec
from pgqueue.tasks import JobSpec
from tests.support import worker_app
from tests.support.postgres import effects

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def scalar(db_url: str, statement: str, params: Any = None) -> Any:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(statement, params).fetchone()
        return row[0] if row else None


def claim_and_expire(app: Queue, db_url: str, queue: str) -> list[int]:
    """A worker that then vanished claimed every due job of `queue`; their leases ran out."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        worker_id = conn.execute(app.statements.register_worker, {
            "host": "vanished", "pid": 1, "queues": [queue], "concurrency": 1,
            "metadata": Jsonb({})}).fetchone()["id"]
        rows = conn.execute(
            "UPDATE pgqueue.jobs SET state = 'running', attempt = attempt + 1, worker_id = %s, "
            "started_at = now(), lease_until = now() - interval '1 s' "
            "WHERE queue = %s AND state = 'queued' AND run_at <= now() RETURNING id",
            (worker_id, queue)).fetchall()
    return [r["id"] for r in rows]


def run_worker(app: Queue, queues: list[str], **options: Any) -> tuple[Any, threading.Thread]:
    worker = app.worker(queues, install_signals=False, **options)
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    return worker, thread


def stop_worker(worker: Any, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(60)
    assert not thread.is_alive()


# -- 1. one bad follow-up stopped rescue for every queue ---------------------------------

def test_a_followup_out_of_range_is_refused_at_enqueue(app: Queue, db_url: str) -> None:
    too_high = worker_app.collect.spec(priority=40000)  # priority is a smallint
    with pytest.raises(InvalidJobSpec, match="priority 40000 is out of range"):
        with app.group("site:bad-followup", on_complete=[too_high]) as group:
            group.enqueue_many(worker_app.record, [{"item": 1}])
    with pytest.raises(InvalidJobSpec, match="priority 40000 is out of range"):
        worker_app.record.enqueue(item=1, on_success=[too_high])
    with pytest.raises(InvalidJobSpec, match="max_attempts"):
        worker_app.record.enqueue(item=1, on_success=[
            JobSpec(task="collect", queue="followup", max_attempts=0)])
    with pytest.raises(InvalidJobSpec, match="priority 40000"):
        worker_app.record.enqueue(item=1, priority=40000)
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.groups") == 0
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.jobs") == 0


def test_a_broken_fanin_fails_its_group_visibly_and_rescue_goes_on(app: Queue, db_url: str) -> None:
    # Group A: its one member's worker vanished on its last attempt, so the rescuer fails it
    # and fires the fan-in. Group B: its member runs and the worker's round trip fires it.
    # Both groups' follow-ups were made unusable through SQL, where Python checks nothing.
    with app.group("site:a", on_complete=[worker_app.collect.spec(label="a")]) as group_a:
        (member_a,) = group_a.enqueue_many(worker_app.fail_if, [{"item": 1, "record": False}])
    innocent = worker_app.record.enqueue(item=2)  # another job lost with the same worker
    lost = claim_and_expire(app, db_url, "work")
    assert sorted(lost) == sorted([member_a, innocent])
    with app.group("site:b", on_complete=[worker_app.collect.spec(label="b")]) as group_b:
        (member_b,) = group_b.enqueue_many(worker_app.fail_if, [{"item": 3, "record": False}])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.jobs SET max_attempts = 1 WHERE id = %s", (member_a,))
        conn.execute("UPDATE pgqueue.groups SET on_complete = "
                     "jsonb_set(on_complete, '{0,priority}', '40000')")
    worker, thread = run_worker(app, ["work", "followup"], lease_seconds=2, poll_interval=0.2)
    try:
        wait_for(lambda: app.get_job(innocent).state is JobState.SUCCEEDED
                 or not thread.is_alive(), "the innocent job's rescue and run")
        wait_for(lambda: app.get_group(group_b.id).completed_at is not None
                 or not thread.is_alive(), "group B's fan-in")
        assert thread.is_alive() and worker._fatal is None, worker._fatal
        # Rescue still works after both broken fan-ins: a new lost job comes back and runs.
        later = worker_app.record.enqueue(item=4, delay=3600)
        with psycopg.connect(db_url, autocommit=True) as conn:  # its worker vanished too
            conn.execute("UPDATE pgqueue.jobs SET state = 'running', attempt = 1, "
                         "lease_until = now() - interval '1 s' WHERE id = %s", (later,))
        wait_for(lambda: app.get_job(later).state is JobState.SUCCEEDED
                 or not thread.is_alive(), "the later job's rescue and run")
        assert app.get_job(later).rescues == 1
    finally:
        stop_worker(worker, thread)
    assert worker._fatal is None
    assert app.get_job(member_a).state is JobState.FAILED
    assert app.get_job(member_b).state is JobState.SUCCEEDED
    for group in (group_a, group_b):
        progress = app.get_group(group.id)
        assert progress.completed_at is not None and progress.pending == 0
        assert progress.error is not None and "out of range for type smallint" in progress.error
    failed = {f["id"]: f for f in app.failed_jobs(queue="followup")}
    assert len(failed) == 2  # each group's follow-up, recorded failed with the reason
    assert all("follow-up could not be enqueued" in f["last_error"] for f in failed.values())
    assert [item for _, item, _ in effects(db_url)] == [2, 4]  # no follow-up ran


# -- 6. a NUL in a job's error message crashed the worker on every attempt --------------

@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_a_nul_or_lone_surrogate_in_an_error_is_stored_sanitized(app: Queue, isolation: str) -> None:
    @app.task(name="nul_error", queue="nul", max_attempts=2, retry_backoff=0.01)
    def nul_error() -> None:
        raise RuntimeError("bad\x00byte and \udc80 here")

    @app.task(name="fine", queue="nul")
    def fine() -> None:
        return None

    bad, good = nul_error.enqueue(), fine.enqueue()
    assert app.work(["nul"], burst=True, isolation=isolation, poll_interval=0.05) == 0
    job = app.get_job(bad)
    assert (job.state, job.attempt, job.rescues) == (JobState.FAILED, 2, 0)
    assert "RuntimeError: bad\\x00byte and \ufffd here" in (job.last_error or "")
    assert app.get_job(good).state is JobState.SUCCEEDED


# -- 13. args nested 3,000 deep, enqueued from SQL, crashed the workers ------------------

@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_args_nested_too_deep_fail_that_job_alone(app: Queue, db_url: str, isolation: str) -> None:
    deep = "[" * 3000 + "]" * 3000
    with psycopg.connect(db_url, autocommit=True) as conn:
        bad = conn.execute("SELECT pgqueue.add_job('work', 'record', "
                           "jsonb_build_object('item', %s::jsonb))", (deep,)).fetchone()[0]
    innocent = app.enqueue_many(worker_app.record, [{"item": i} for i in range(1, 4)])
    assert app.work(["work"], concurrency=2, burst=True, isolation=isolation,
                    prefetch=10, poll_interval=0.05) == 0
    job = app.get_job(bad)
    assert (job.state, job.attempt, job.rescues) == (JobState.FAILED, 1, 0)
    assert job.last_error == "args could not be decoded: nesting too deep"
    assert all(app.get_job(i).state is JobState.SUCCEEDED for i in innocent)
    assert sorted(item for _, item, _ in effects(db_url)) == [1, 2, 3]
    failures = app.failed_jobs(queue="work")  # the listing does not raise either
    assert [f["id"] for f in failures] == [bad]


# -- 15. a task the worker did not know failed for good at attempt 1 ---------------------

def test_an_unknown_task_is_given_back_for_a_worker_that_knows_it(
        app: Queue, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 15 s in production; an hour here, so the burst worker below sees it given back once.
    monkeypatch.setattr("pgqueue.store.UNKNOWN_TASK_DELAY", 3600.0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = conn.execute("SELECT pgqueue.add_job('work', 'added.in.v2')").fetchone()[0]
    known = worker_app.record.enqueue(item=1)
    # An old worker (it knows `record` only) claims both, runs one, gives the other back.
    assert app.work(["work"], concurrency=2, burst=True) == 0
    job = app.get_job(job_id)
    assert (job.state, job.attempt) == (JobState.QUEUED, 0)
    assert "no task named 'added.in.v2'" in (job.last_error or "")
    assert scalar(db_url, "SELECT run_at > now() + interval '50 minutes' FROM pgqueue.jobs "
                  "WHERE id = %s", (job_id,))
    assert app.get_job(known).state is JobState.SUCCEEDED
    # The upgraded worker arrives and runs it: attempt 1, nothing lost.
    ran = []

    @app.task(name="added.in.v2", queue="work")
    def added() -> None:
        ran.append(1)

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.jobs SET run_at = now()")
    assert app.work(["work"], burst=True) == 0
    job = app.get_job(job_id)
    assert (job.state, job.attempt, ran) == (JobState.SUCCEEDED, 1, [1])


def test_an_unknown_task_fails_after_a_bounded_number_of_returns(
        app: Queue, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pgqueue.store.UNKNOWN_TASK_DELAY", 0.01)
    with psycopg.connect(db_url, autocommit=True) as conn:
        job_id = conn.execute("SELECT pgqueue.add_job('work', 'never.deployed')").fetchone()[0]
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    job = app.get_job(job_id)
    assert (job.state, job.attempt) == (JobState.FAILED, 1)
    assert "no task named 'never.deployed'" in (job.last_error or "")
    assert "given back 5 times" in (job.last_error or "")


# -- 2. a worker frozen past its lease re-claimed its own rescued job --------------------

def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for a reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_worker_process(db_url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PGQUEUE_APP_DSN": db_url, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.support.worker_app", db_url, *args],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_a_frozen_worker_does_not_rerun_its_rescued_job(app: Queue, db_url: str,
                                                         tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker_process(db_url, log, "work", "--concurrency", "2", "--lease", "2",
                                  "--poll", "0.2")
    try:
        job_id = worker_app.wait_for_gate.enqueue(item=1, gate=1000)
        wait_for(lambda: [e for e in effects(db_url) if e[1] == -1], "the job's start")
        os.kill(worker.pid, signal.SIGSTOP)  # frozen: no heartbeat, the job runs on after
        wait_for(lambda: scalar(db_url, "SELECT lease_until < now() FROM pgqueue.jobs "
                                "WHERE id = %s", (job_id,)), "the lease to run out")
        assert app.rescue_expired() == {"requeued": 1, "failed": 0}  # what maintenance does
        os.kill(worker.pid, signal.SIGCONT)
        # Its free slot re-claims the job (attempt 2) while attempt 1 still runs.
        wait_for(lambda: scalar(db_url, "SELECT attempt = 2 AND state = 'running' "
                                "FROM pgqueue.jobs WHERE id = %s", (job_id,)),
                 "the frozen worker to re-claim its rescued job")
        time.sleep(1.0)  # room for a wrong second run to start (it would record -1 again)
        with psycopg.connect(db_url, autocommit=True) as conn:  # attempt 1 may end now
            conn.execute("INSERT INTO effects (job_id, item) VALUES (NULL, 1000)")
        wait_for(lambda: app.get_job(job_id).state.final, "the job's end", timeout=120)
        assert worker.poll() is None, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGCONT)
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    job = app.get_job(job_id)
    assert job.state is JobState.SUCCEEDED, (job, log.read_text()[-3000:])
    # The job body ran once (one start, one end): the re-claimed attempt took the frozen
    # attempt's success instead of running the job a second time beside it.
    assert sorted(item for _, item, _ in effects(db_url)) == [-1, 1, 1000], log.read_text()[-3000:]
    assert "re-claimed (attempt 2) while attempt 1 still runs" in log.read_text()


# -- 8. a timeout killed the job's process and left its children running -----------------

def test_a_timeout_kills_the_jobs_whole_process_group(app: Queue, db_url: str) -> None:
    @app.task(name="spawns", queue="spawn", timeout=1, max_attempts=1)
    def spawns() -> None:
        child = subprocess.Popen(["sleep", "300"])  # as OCR starts pdftoppm
        worker_app._record(child.pid)
        time.sleep(600)

    job_id = spawns.enqueue()
    assert app.work(["spawn"], burst=True, isolation="process", poll_interval=0.1) == 0
    job = app.get_job(job_id)
    assert job.state is JobState.FAILED
    assert "timed out after 1 s (worker process killed)" in (job.last_error or "")
    (orphan,) = [item for _, item, _ in effects(db_url)]
    try:
        wait_for(lambda: not _alive(orphan), "the job's child to die with it", timeout=20)
    finally:
        if _alive(orphan):
            os.kill(orphan, signal.SIGKILL)


# -- retry_failed deleted a failed job's record when its dedupe key was taken ------------

def test_retry_keeps_a_failed_job_whose_dedupe_key_is_taken(app: Queue, db_url: str) -> None:
    failed = worker_app.fail_if.enqueue(item=1, fail=True, record=False, dedupe_key="site:k")
    other = worker_app.fail_if.enqueue(item=2, fail=True, record=False)
    assert app.work(["work"], burst=True, poll_interval=0.05) == 0
    assert app.get_job(failed).state is JobState.FAILED
    live = worker_app.record.enqueue(item=3, dedupe_key="site:k", delay=3600)  # the next run
    assert app.retry_failed(queue="work") == 1  # `other` only
    job = app.get_job(failed)  # still there, still failed, with its error
    assert job.state is JobState.FAILED and "meant to fail" in (job.last_error or "")
    assert [f["id"] for f in app.failed_jobs(queue="work") if f["final"]] == [failed]
    assert app.get_job(other).state is JobState.QUEUED
    assert app.get_job(live).state is JobState.QUEUED


# -- also seen: past the role's connection limit, no worker ever heartbeat ---------------

def test_leases_hold_when_connections_run_short(app: Queue, db_url: str) -> None:
    role = f"pgqueue_test_limited_{os.getpid()}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL(
            "CREATE ROLE {} LOGIN CONNECTION LIMIT 2").format(psycopg.sql.Identifier(role)))
        for grant in ("GRANT USAGE ON SCHEMA pgqueue TO {}",
                      "GRANT ALL ON ALL TABLES IN SCHEMA pgqueue TO {}",
                      "GRANT ALL ON ALL SEQUENCES IN SCHEMA pgqueue TO {}",
                      "GRANT ALL ON TABLE effects TO {}"):
            conn.execute(psycopg.sql.SQL(grant).format(psycopg.sql.Identifier(role)))
    limited = Queue(make_conninfo(db_url, user=role))
    started, release = threading.Event(), threading.Event()

    @limited.task(name="long", queue="long", max_attempts=3)
    def long() -> None:
        started.set()
        assert release.wait(60)

    job_id = app.enqueue(limited.get_task("long"))
    # Two connections for a worker that wants four (loop, leases, listener, maintenance).
    worker, thread = run_worker(limited, ["long"], lease_seconds=1.5, poll_interval=0.2)
    try:
        assert started.wait(60) or not thread.is_alive(), "the job never started"
        deadline = time.monotonic() + 6  # four leases long: only heartbeats keep the job
        while time.monotonic() < deadline:
            assert app.rescue_expired() == {"requeued": 0, "failed": 0}, "lease not extended"
            time.sleep(0.2)
        release.set()
        wait_for(lambda: app.get_job(job_id).state.final, "the job's end")
    finally:
        release.set()
        stop_worker(worker, thread)
        limited.close()
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(psycopg.sql.Identifier(role)))
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))
    job = app.get_job(job_id)
    assert (job.state, job.attempt, job.rescues) == (JobState.SUCCEEDED, 1, 0)


@pytest.mark.parametrize("how", ["cancel", "warm_stop"])
def test_cancel_and_warm_stop_kill_the_jobs_process_group(app: Queue, db_url: str,
                                                          how: str) -> None:
    @app.task(name="spawns_long", queue="spawn", max_attempts=1)
    def spawns_long() -> None:
        child = subprocess.Popen(["sleep", "300"])
        worker_app._record(child.pid)
        time.sleep(600)

    job_id = spawns_long.enqueue()
    worker, thread = run_worker(app, ["spawn"], isolation="process", poll_interval=0.1,
                                shutdown_grace=0.5)
    orphan = 0
    try:
        orphan = wait_for(lambda: [e[1] for e in effects(db_url)], "the job's child")[0]
        if how == "cancel":
            assert app.cancel(ids=[job_id]).signalled == 1
            wait_for(lambda: app.get_job(job_id).state is JobState.CANCELLED, "the cancel")
        else:
            worker.stop()
            thread.join(60)
            assert app.get_job(job_id).state is JobState.QUEUED  # given back
        wait_for(lambda: not _alive(orphan), "the job's child to die with it", timeout=20)
    finally:
        stop_worker(worker, thread)
        if orphan and _alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_a_chain_link_that_cannot_be_inserted_is_recorded_failed(app: Queue, db_url: str) -> None:
    job_id = worker_app.record.enqueue(item=1, on_success=[worker_app.collect.spec()])
    with psycopg.connect(db_url, autocommit=True) as conn:  # through SQL: no Python checks
        conn.execute("UPDATE pgqueue.jobs SET on_success = "
                     "jsonb_set(on_success, '{0,priority}', '40000')")
    assert app.work(["work", "followup"], burst=True) == 0
    assert app.get_job(job_id).state is JobState.SUCCEEDED
    (failed,) = app.failed_jobs(queue="followup")
    assert failed["task"] == "collect"
    assert "follow-up could not be enqueued" in failed["last_error"]
    assert "out of range for type smallint" in failed["last_error"]


def test_a_frozen_workers_success_is_kept_while_its_rescued_job_waits(
        app: Queue, db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker_process(db_url, log, "work", "--concurrency", "2", "--lease", "2",
                                  "--poll", "0.2")
    try:
        job_id = worker_app.wait_for_gate.enqueue(item=1, gate=1000)
        wait_for(lambda: [e for e in effects(db_url) if e[1] == -1], "the job's start")
        os.kill(worker.pid, signal.SIGSTOP)
        wait_for(lambda: scalar(db_url, "SELECT lease_until < now() FROM pgqueue.jobs "
                                "WHERE id = %s", (job_id,)), "the lease to run out")
        assert app.rescue_expired() == {"requeued": 1, "failed": 0}
        with psycopg.connect(db_url, autocommit=True) as conn:  # its retry is a long way off
            conn.execute("UPDATE pgqueue.jobs SET run_at = now() + interval '1 hour'")
            os.kill(worker.pid, signal.SIGCONT)
            conn.execute("INSERT INTO effects (job_id, item) VALUES (NULL, 1000)")
        wait_for(lambda: app.get_job(job_id).state.final, "the frozen attempt's success")
        assert worker.poll() is None, log.read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGCONT)
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    job = app.get_job(job_id)
    assert (job.state, job.attempt, job.rescues) == (JobState.SUCCEEDED, 1, 1)
    assert sorted(item for _, item, _ in effects(db_url)) == [-1, 1, 1000]
