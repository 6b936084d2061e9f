"""Groups (fan-in), chains, cancellation, purge, retry, pruning and the monitoring views."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pgqueue import GroupExists, GroupSealed, JobState, PermanentFailure, Queue, current_job
from tests.support import worker_app
from tests.support.postgres import effects


def followups_run(db_url: str) -> int:
    """How many times the `collect` follow-up ran (it records item 0)."""
    return sum(1 for _, item, _ in effects(db_url) if item == 0)


def test_group_fires_its_followups_exactly_once(app: Queue, db_url: str) -> None:
    with app.group("site:a:run-1", tag="a",
                   on_complete=[worker_app.collect.spec(label="done")]) as group:
        group.enqueue_many(worker_app.record, [{"item": i} for i in range(1, 201)])
    progress = app.get_group(group.id)
    assert (progress.total, progress.pending, progress.sealed) == (200, 200, True)
    app.work(["work", "followup"], concurrency=4, burst=True)
    assert followups_run(db_url) == 1
    progress = app.get_group(group.id)
    assert (progress.done, progress.failed, progress.percent) == (200, 0, 100.0)
    assert progress.completed_at is not None


def test_empty_group_completes_at_once(app: Queue, db_url: str) -> None:
    with app.group("site:a:empty", on_complete=[worker_app.collect.spec()]) as group:
        pass
    assert app.get_group(group.id).completed_at is not None
    app.work(["work", "followup"], burst=True)
    assert followups_run(db_url) == 1


def test_failed_members_count_and_followups_see_them(app: Queue, db_url: str) -> None:
    seen: list[list[int]] = []

    @app.task(name="report", queue="followup")
    def report() -> None:
        job = current_job()
        assert job is not None and job.origin_group_id is not None
        seen.append([f["args"]["item"] for f in app.group_failures(job.origin_group_id)])

    with app.group("site:b:run-1", on_complete=[report.spec()]) as group:
        group.enqueue_many(worker_app.fail_if,
                           [{"item": i, "fail": i in (3, 7)} for i in range(10)])
    app.work(["work", "followup"], concurrency=2, burst=True, poll_interval=0.05)
    assert seen == [[3, 7]]
    progress = app.get_group(group.id)
    assert (progress.total, progress.done, progress.failed) == (10, 10, 2)


def test_open_group_cannot_complete_before_sealed(app: Queue, db_url: str) -> None:
    group_id = app.open_group("site:c:run-1", on_complete=[worker_app.collect.spec()])
    app.add_to_group(group_id, worker_app.record, [{"item": 1}])
    app.work(["work", "followup"], burst=True)
    assert followups_run(db_url) == 0  # its one member is done, but more may come
    app.add_to_group(group_id, worker_app.record, [{"item": 2}])
    assert app.seal_group(group_id) is False
    with pytest.raises(GroupSealed):
        app.add_to_group(group_id, worker_app.record, [{"item": 3}])
    app.work(["work", "followup"], burst=True)
    assert followups_run(db_url) == 1
    with pytest.raises(GroupExists), app.group("site:c:run-1"):
        pass


def test_a_crash_while_fanning_out_leaves_no_partial_group(app: Queue) -> None:
    with pytest.raises(RuntimeError), app.group("site:d:run-1") as group:
        group.enqueue_many(worker_app.record, [{"item": i} for i in range(50)])
        raise RuntimeError("fetch died half-way")
    assert app.queue_depth() == []
    with app.group("site:d:run-1") as group:  # the retry starts cleanly
        group.enqueue_many(worker_app.record, [{"item": 1}])
    assert app.get_group(group.id).total == 1


def claim_and_lose(app: Queue, db_url: str, queue: str) -> tuple[int, int, int]:
    """A worker claims the one job of `queue`, then its lease runs out and the rescuer
    requeues the job: (job id, the lost worker's id, the attempt it held)."""
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        worker_id = conn.execute(app.statements.register_worker, {
            "host": "lost-host", "pid": 1, "queues": [queue], "concurrency": 1,
            "metadata": Jsonb({})}).fetchone()["id"]
        (claimed,) = conn.execute(app.statements.claim, {
            "queues": [queue], "limit": 1, "worker_id": worker_id, "lease_seconds": 30,
            "free": 1, "floor": None, "buffered": None, "park_seconds": 15}).fetchall()
        conn.execute("UPDATE pgqueue.jobs SET lease_until = now() - interval '1 s'")
    assert app.rescue_expired() == {"requeued": 1, "failed": 0}
    return claimed["id"], worker_id, claimed["attempt"]


def stale_outcomes(app: Queue, db_url: str, job_id: int, worker_id: int, attempt: int
                   ) -> dict[str, int]:
    """What the lost worker sends when it wakes up, through the statements a worker records
    outcomes with: a final failure (finish_jobs), a failure to retry (requeue_attempts), a
    warm-shutdown give-back (release_jobs), and last a success (finish_jobs). Returns how
    many rows each changed, and how many attempts they recorded."""
    changed = {}
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        changed["fail"] = conn.execute(app.statements.finish_jobs, {
            "ids": [job_id], "attempts": [attempt], "states": ["failed"],
            "errors": ["stale failure"], "results": [None],
            "from_state": "running"}).fetchone()["finished"]
        changed["retry"] = len(conn.execute(app.statements.requeue_attempts, {
            "outcome": "failed", "ids": [job_id], "attempts": [attempt], "delays": [0.0],
            "errors": ["stale failure"]}).fetchall())
        changed["release"] = len(conn.execute(app.statements.release_jobs, {
            "ids": [job_id], "worker_id": worker_id, "started": [job_id],
            "reason": "stale give-back"}).fetchall())
        changed["finish"] = conn.execute(app.statements.finish_jobs, {
            "ids": [job_id], "attempts": [attempt], "states": ["succeeded"], "errors": [None],
            "results": [None], "from_state": "running"}).fetchone()["finished"]
        changed["recorded"] = conn.execute(  # attempts kept from these stale outcomes
            "SELECT count(*) AS n FROM pgqueue.job_attempts WHERE error LIKE 'stale%'"
        ).fetchone()["n"]
    return changed


def test_stale_outcomes_while_the_rerun_runs_change_nothing(app: Queue, db_url: str) -> None:
    gate, running = threading.Event(), threading.Event()

    @app.task(name="gated", queue="gated")
    def gated() -> None:
        running.set()  # attempt 2: held here until the test has sent the stale outcomes
        assert gate.wait(60)
        worker_app._record(1)

    with app.group("site:e:run-1", on_complete=[worker_app.collect.spec()]) as group:
        (job_id,) = group.enqueue_many(gated, [{}])
    job_id, lost_worker, attempt = claim_and_lose(app, db_url, "gated")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.jobs SET run_at = now()")  # no rescue backoff
    worker = app.worker(["gated", "followup"], poll_interval=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert running.wait(60), "the re-run never started"
        job = app.get_job(job_id)
        assert (job.state, job.attempt, job.rescues) == (JobState.RUNNING, 2, 1)
        assert stale_outcomes(app, db_url, job_id, lost_worker, attempt) == \
            {"fail": 0, "retry": 0, "release": 0, "finish": 0, "recorded": 0}
        assert app.rescue_expired() == {"requeued": 0, "failed": 0}  # its lease is live
        job = app.get_job(job_id)
        assert (job.state, job.attempt) == (JobState.RUNNING, 2)
        assert "stale" not in (job.last_error or "")
        progress = app.get_group(group.id)
        assert (progress.done, progress.pending, followups_run(db_url)) == (0, 1, 0)
        gate.set()
        deadline = time.monotonic() + 60
        while followups_run(db_url) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gate.set()
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    job = app.get_job(job_id)
    assert (job.state, job.attempt, job.rescues) == (JobState.SUCCEEDED, 2, 1)
    assert [item for _, item, _ in effects(db_url)] == [1, 0]  # the job once, its follow-up once
    progress = app.get_group(group.id)
    assert (progress.done, progress.pending) == (1, 0)


def test_stale_outcomes_while_the_rescued_job_waits_keep_only_its_success(app: Queue, db_url: str) -> None:
    with app.group("site:e:run-2", on_complete=[worker_app.collect.spec()]) as group:
        (job_id,) = group.enqueue_many(worker_app.record, [{"item": 1}])
    job_id, lost_worker, attempt = claim_and_lose(app, db_url, "work")
    before = app.get_job(job_id)
    assert (before.state, before.attempt) == (JobState.QUEUED, 1)  # same attempt, other state
    # Its failures and give-backs change nothing; its success, the work done, is kept
    # (issue 23: a frozen worker's completed attempt was discarded, and the job run again).
    assert stale_outcomes(app, db_url, job_id, lost_worker, attempt) == \
        {"fail": 0, "retry": 0, "release": 0, "finish": 1, "recorded": 0}
    job = app.get_job(job_id)
    assert (job.state, job.attempt, job.rescues) == (JobState.SUCCEEDED, 1, 1)
    assert app.get_group(group.id).pending == 0
    app.work(["work", "followup"], burst=True)
    assert [item for _, item, _ in effects(db_url)] == [0]  # the follow-up, once; no re-run


def test_followups_fire_on_the_first_completion_only(app: Queue, db_url: str) -> None:
    with app.group("site:e:run-3", on_complete=[worker_app.collect.spec()]) as group:
        group.enqueue_many(worker_app.record, [{"item": 1}])
    app.work(["work", "followup"], burst=True)
    assert followups_run(db_url) == 1
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Any later write of completed_at (a statement that sets it again) fires nothing.
        conn.execute("UPDATE pgqueue.groups SET completed_at = now() WHERE id = %s", (group.id,))
        queued = conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()[0]
    assert queued == 0
    app.work(["work", "followup"], burst=True)
    assert followups_run(db_url) == 1


def test_chain_runs_in_order_and_carries_priority_and_tag(app: Queue, db_url: str) -> None:
    order: list[str] = []

    @app.task(name="step", queue="chain")
    def step(name: str) -> None:
        job = current_job()
        assert job is not None
        order.append(f"{name}:{job.tag}")

    spec = step.spec(name="extract").then(step.spec(name="compile").then(step.spec(name="deploy")))
    first = app.enqueue(step, {"name": "fetch"}, priority=50, tag="pleasanton", on_success=[spec])
    app.work(["chain"], burst=True)
    assert order == ["fetch:pleasanton", "extract:pleasanton", "compile:pleasanton",
                     "deploy:pleasanton"]
    with psycopg.connect(db_url) as conn:
        priorities = conn.execute("SELECT DISTINCT priority FROM pgqueue.job_history").fetchall()
    assert priorities == [(50,)]
    assert app.get_job(first).state is JobState.SUCCEEDED


def test_a_failed_link_stops_the_chain(app: Queue, db_url: str) -> None:
    app.enqueue(worker_app.fail_if, {"item": 1, "fail": True},
                on_success=[worker_app.collect.spec()])
    app.work(["work", "followup"], burst=True, poll_interval=0.05)
    assert followups_run(db_url) == 0


def test_cancel_a_site_stops_queued_and_running_jobs(app: Queue, db_url: str) -> None:
    started = threading.Event()

    @app.task(name="long", queue="long")
    def long_task() -> None:
        started.set()
        job = current_job()
        assert job is not None
        for _ in range(600):
            job.check()
            time.sleep(0.05)

    with app.group("site:f:run-1", tag="f", on_complete=[worker_app.collect.spec()]) as group:
        group.enqueue(long_task)
        group.enqueue_many(worker_app.record, [{"item": i} for i in range(5)])
    other = worker_app.record.enqueue(item=99, tag="g")
    worker = app.worker(["long"], lease_seconds=1.0)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert started.wait(30)
        result = app.cancel(tag="f")
        assert (result.cancelled, result.signalled, result.groups) == (5, 1, 1)
        deadline = time.monotonic() + 30
        while app.get_group(group.id).pending and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop(cold=True)
        thread.join(30)
    assert not thread.is_alive()
    progress = app.get_group(group.id)
    assert (progress.pending, progress.cancelled) == (0, 6)
    app.work(["work", "followup"], burst=True)
    assert followups_run(db_url) == 0  # a cancelled site does not compile
    assert app.get_job(other).state is JobState.SUCCEEDED


def test_purge_queue_reports_counts(app: Queue) -> None:
    app.enqueue_many(worker_app.record, [{"item": i} for i in range(7)])
    result = app.purge_queue("work")
    assert (result.cancelled, result.signalled) == (7, 0)
    depth = {(r["queue"], r["state"]): r["jobs"] for r in app.queue_depth()}
    assert depth == {("work", "cancelled"): 7}


def test_retry_failed_by_id_queue_and_tag(app: Queue, db_url: str) -> None:
    ids = [app.enqueue(worker_app.fail_if, {"item": i, "fail": True}, tag=f"s{i % 2}")
           for i in range(4)]
    app.work(["work"], burst=True, poll_interval=0.05)
    assert all(app.get_job(i).state is JobState.FAILED for i in ids)
    assert app.retry_failed(ids=[ids[0]]) == 1
    assert app.get_job(ids[0]).state is JobState.QUEUED
    assert app.get_job(ids[0]).attempt == 0
    assert app.retry_failed(tag="s1") == 2
    assert app.retry_failed(queue="work") == 1
    assert app.retry_failed(queue="work") == 0


def test_prune_deletes_old_history_in_batches(app: Queue, db_url: str) -> None:
    app.enqueue_many(worker_app.noop, [{"item": i} for i in range(30)])
    bad = worker_app.fail_if.enqueue(item=1, fail=True)
    app.work(["work"], burst=True, poll_interval=0.05)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.job_history SET finished_at = now() - interval '2 days'")
    deleted = app.prune(batch=7)
    assert deleted is not None
    assert (deleted["succeeded"], deleted["failed"]) == (30, 0)  # failures are kept a week
    assert app.get_job(bad).state is JobState.FAILED


def test_monitoring_views(app: Queue, db_url: str) -> None:
    with app.group("site:h:run-1", tag="h") as group:
        group.enqueue_many(worker_app.fail_if, [{"item": i, "fail": i == 0} for i in range(4)])
    worker_app.record.enqueue(item=1, delay=3600)
    progress = app.get_group(group.id)
    assert (progress.total, progress.done, progress.percent) == (4, 0, 0.0)
    app.work(["work"], burst=True, poll_interval=0.05)
    depth = {(r["queue"], r["state"]): r["jobs"] for r in app.queue_depth()}
    assert depth == {("work", "scheduled"): 1, ("work", "succeeded"): 3, ("work", "failed"): 1}
    progress = app.get_group(group.id)
    assert (progress.done, progress.failed, progress.percent) == (4, 1, 100.0)
    with psycopg.connect(db_url) as conn:
        failures = conn.execute("SELECT task, final FROM pgqueue.recent_failures").fetchall()
        workers = conn.execute("SELECT count(*) FROM pgqueue.active_workers").fetchone()
    assert failures == [("fail_if", True)]
    assert workers == (0,)  # burst workers deregister when they stop


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(sizes=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=4),
       failing=st.sets(st.integers(min_value=0, max_value=11), max_size=6),
       lost=st.integers(min_value=0, max_value=20),
       duplicates=st.integers(min_value=1, max_value=3))
def test_property_followups_fire_once_per_group(
        admin_url: str, template_url: str, sizes: list[int], failing: set[int], lost: int,
        duplicates: int) -> None:
    """Random group sizes, random permanent failures, a lost worker's claims rescued, and
    its stale finishes sent, repeatedly, while those jobs wait to re-run and after."""
    import os

    from psycopg import sql

    from tests.support.postgres import database_url

    name = f"pgqueue_test_prop_{os.getpid()}_{next(_prop_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE pgqueue_test_template").format(
            sql.Identifier(name)))
    url = database_url(admin_url, name)
    queue = Queue(url)
    try:
        fired: list[int] = []

        @queue.task(name="member", queue="m", max_attempts=2)
        def member(i: int) -> None:
            if i in failing:
                raise PermanentFailure(f"member {i} fails")

        @queue.task(name="after", queue="f")
        def after(group: int) -> None:
            fired.append(group)

        for number, size in enumerate(sizes):
            with queue.group(f"g{number}", on_complete=[after.spec(group=number)]) as group:
                group.enqueue_many(member, [{"i": i} for i in range(size)])
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            worker_id = conn.execute(queue.statements.register_worker, {
                "host": "lost-host", "pid": 1, "queues": ["m"], "concurrency": 1,
                "metadata": Jsonb({})}).fetchone()["id"]
            stale = conn.execute(queue.statements.claim, {
                "queues": ["m"], "limit": lost, "worker_id": worker_id, "lease_seconds": 30,
                "free": lost, "floor": None, "buffered": None, "park_seconds": 15}
            ).fetchall()
            conn.execute("UPDATE pgqueue.jobs SET lease_until = now() - interval '1 s'"
                         " WHERE state = 'running'")
        assert queue.rescue_expired() == {"requeued": len(stale), "failed": 0}

        def send_stale_finishes(state: str) -> None:
            for _ in range(duplicates):
                with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                    result = conn.execute(queue.statements.finish_jobs, {
                        "ids": [r["id"] for r in stale], "attempts": [r["attempt"] for r in stale],
                        "states": [state] * len(stale), "errors": ["stale"] * len(stale),
                        "results": [None] * len(stale), "from_state": "running"}).fetchone()
                assert result["finished"] == 0

        # While the rescued jobs wait to re-run, a stale failure changes nothing (a stale
        # success would be kept: the rescued attempt's work was done; see
        # test_stale_outcomes_while_the_rescued_job_waits_keep_only_its_success).
        send_stale_finishes("failed")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE pgqueue.jobs SET run_at = now()")
        queue.work(["m", "f"], concurrency=3, burst=True)
        send_stale_finishes("succeeded")  # and after they ran, neither does a success
        send_stale_finishes("failed")
        queue.work(["m", "f"], burst=True)
        assert sorted(fired) == list(range(len(sizes)))
        for number, size in enumerate(sizes):
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT total, pending, failed FROM pgqueue.groups WHERE key = %s",
                                   (f"g{number}",)).fetchone()
            assert row == (size, 0, len([i for i in range(size) if i in failing]))
        with psycopg.connect(url) as conn:
            states = dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job_history"
                                       " WHERE queue = 'm' GROUP BY 1").fetchall())
        assert states.get("succeeded", 0) == sum(size for size in sizes) - sum(
            len([i for i in range(size) if i in failing]) for size in sizes)
    finally:
        queue.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


_prop_counter = iter(range(10**9))
