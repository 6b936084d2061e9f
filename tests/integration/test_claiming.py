"""Adaptive claiming, with no option: short jobs in big batches, long jobs shared fairly.

Counts, never timings: how many jobs each worker process ran, how many claim round trips a
burst took.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg

from pgqueue import JobState, Queue, current_job
from pgqueue.claiming import MAX_BUFFER, ClaimSizer
from tests.support import worker_app

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_sizer_buffers_short_jobs_and_never_long_or_unknown_ones() -> None:
    sizer = ClaimSizer(concurrency=4)
    assert sizer.buffer() == 0  # nothing measured: free slots only, a burst of long jobs is safe
    sizer.observe_round_trip(0.002)
    sizer.observe_job("fast", 0.0001)
    assert sizer.buffer() == MAX_BUFFER
    sizer.observe_job("ocr", 1.0)  # the slowest queue served decides
    assert sizer.buffer() == 0
    capped = ClaimSizer(concurrency=4, prefetch=20)
    assert capped.buffer() == 20  # an explicit prefetch is used before anything is measured
    capped.observe_job("fast", 0.0001)
    assert capped.buffer() == 20
    assert ClaimSizer(concurrency=4, prefetch=0).buffer() == 0


def test_a_burst_of_short_jobs_is_claimed_in_batches(app: Queue) -> None:
    ran: Counter[int] = Counter()

    @app.task(name="tick", queue="burst")
    def tick(i: int) -> None:
        ran[i] += 1  # slots are threads of this process; Counter += is atomic enough here

    jobs = 20_000
    app.enqueue_many(tick, [{"i": i} for i in range(jobs)])
    worker = app.worker(["burst"], concurrency=4, burst=True)  # the defaults a user writes
    assert worker.run() == 0
    assert sum(ran.values()) == jobs and len(ran) == jobs
    # Claiming only for free slots takes a round trip per job or two (thousands here).
    assert worker.stats.claim_round_trips < jobs / 20, worker.stats
    depth = {(r["queue"], r["state"]): r["jobs"] for r in app.queue_depth()}
    assert depth == {("burst", "succeeded"): jobs}


def test_long_jobs_are_shared_between_two_worker_processes(app: Queue, db_url: str,
                                                           tmp_path: Path) -> None:
    """20 one-second jobs, two worker processes of 2 slots: neither hoards them."""
    logs = [(tmp_path / f"worker-{n}.log").open("wb") for n in range(2)]
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_app", db_url, "work", "--concurrency", "2",
         "--poll", "0.5", "--lease", "10"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        for log in logs]
    try:
        wait_until(lambda: len(app.active_workers()) == 2, "both workers to register")
        app.enqueue_many(worker_app.record, [{"item": i, "sleep": 1.0} for i in range(1, 21)])
        with psycopg.connect(db_url, autocommit=True) as conn:
            def done() -> int:
                row = conn.execute("SELECT count(*) FROM effects").fetchone()
                return int(row[0]) if row else 0
            wait_until(lambda: done() == 20, "the 20 jobs", timeout=180)
            per_process = dict(conn.execute(
                "SELECT pid, count(*) FROM effects GROUP BY pid").fetchall())
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(60)
        for log in logs:
            log.close()
    assert sorted(per_process.values()) and len(per_process) == 2, per_process
    assert all(6 <= n <= 14 for n in per_process.values()), per_process


def test_a_thread_job_past_its_timeout_fails_and_its_late_return_changes_nothing(
        app: Queue) -> None:
    returned = threading.Event()

    @app.task(name="overrun", queue="slow", timeout=1, max_attempts=1)
    def overrun() -> None:
        time.sleep(4)  # ignores its deadline: a thread cannot be killed
        returned.set()

    @app.task(name="quick", queue="slow")
    def quick() -> None:
        return None

    slow = overrun.enqueue()
    worker = app.worker(["slow"], concurrency=1, poll_interval=0.2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_until(lambda: app.get_job(slow).state is JobState.FAILED, "the timeout", 60)
        job = app.get_job(slow)
        assert "timed out after 1 s" in (job.last_error or ""), job.last_error
        assert job.attempt == 1
        # The slot was given a new thread: other jobs run while the old one still sleeps.
        first = quick.enqueue()
        wait_until(lambda: app.get_job(first).state is JobState.SUCCEEDED, "a quick job", 60)
        assert not returned.is_set()
        assert returned.wait(60)
        second = quick.enqueue()  # one more round trip after the late return
        wait_until(lambda: app.get_job(second).state is JobState.SUCCEEDED, "another job", 60)
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    job = app.get_job(slow)
    assert (job.state, job.attempt) == (JobState.FAILED, 1)
    assert worker.stats.timed_out == 1 and worker.stats.succeeded == 2


def test_check_raises_in_a_thread_job_past_its_timeout(app: Queue) -> None:
    stopped = threading.Event()

    @app.task(name="polite", queue="slow", timeout=1, max_attempts=1)
    def polite() -> None:
        job = current_job()
        assert job is not None
        try:
            for _ in range(600):
                job.check()
                time.sleep(0.05)
        finally:
            stopped.set()

    job_id = polite.enqueue()
    assert app.work(["slow"], burst=True) == 0
    assert stopped.wait(30)
    job = app.get_job(job_id)
    assert job.state is JobState.FAILED
    assert "timed out after 1 s" in (job.last_error or "")


def test_listening_is_an_event_a_test_can_wait_on(app: Queue, db_url: str) -> None:
    events: list[str] = []
    worker = app.worker(["work"], poll_interval=3600, on_event=lambda action, _: events.append(action))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert worker.listening.wait(30)
        assert "listening" in events
        worker_app.record.enqueue(item=9)  # only a NOTIFY can wake a worker polling hourly
        wait_until(lambda: worker.stats.succeeded == 1, "the job", 30)
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead, just not reaped yet


def test_a_sigkilled_process_worker_takes_its_job_children_with_it(app: Queue, db_url: str,
                                                                   tmp_path: Path) -> None:
    """Job children are forked by a slot host (never by the threaded worker); PR_SET_PDEATHSIG
    chains worker -> host -> child, so SIGKILL on the worker leaves no job running."""
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_app", db_url, "work", "--isolation",
         "process", "--poll", "0.5"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        worker_app.started_then_sleep.enqueue(item=1, sleep=600)
        with psycopg.connect(db_url, autocommit=True) as conn:
            def child() -> int | None:
                row = conn.execute("SELECT pid FROM effects WHERE item = -1").fetchone()
                return int(row[0]) if row else None
            wait_until(lambda: child() is not None, "the job to start")
            pid = child()
        assert pid is not None and pid != worker.pid
        host = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert host != worker.pid  # forked by the slot host, not by the worker
        assert int(Path(f"/proc/{host}/stat").read_text().rsplit(")", 1)[1].split()[1]) == worker.pid
        worker.kill()
        worker.wait(30)
        wait_until(lambda: not _alive(pid) and not _alive(host), "the job's processes to die", 30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        log.close()


def test_one_maintenance_leader_at_a_time_and_a_successor_when_it_stops(app: Queue) -> None:
    workers = [app.worker(["work"], lease_seconds=2.0, poll_interval=0.2) for _ in range(2)]
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: any(w.maintenance.leader.is_set() for w in workers), "a leader", 60)
        time.sleep(2.5)  # two more election rounds (lease/2 = 1 s): the other must not join
        leaders = [w for w in workers if w.maintenance.leader.is_set()]
        assert len(leaders) == 1
        (leader,) = leaders
        (other,) = [w for w in workers if w is not leader]
        leader.stop()
        threads[workers.index(leader)].join(60)
        wait_until(lambda: other.maintenance.leader.is_set(), "the successor", 60)
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(60)
    assert not any(thread.is_alive() for thread in threads)


def test_the_rescuer_decides_through_the_retry_policy(app: Queue, db_url: str) -> None:
    """A job whose worker died MAX_RESCUES times fails (a poison job); before that it is
    requeued after its task's backoff, like any failed attempt."""
    from pgqueue.retry import MAX_RESCUES

    job_id = worker_app.record.enqueue(item=1)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE pgqueue.jobs SET max_attempts = 100 WHERE id = %s", (job_id,))
        for rescue in range(1, MAX_RESCUES + 1):
            with app.store.connect(autocommit=True) as lost:  # a worker claims, then dies
                (claimed,) = app.store.claim(lost, worker_id=None, queues=["work"], limit=1,
                                             lease_seconds=30)
            conn.execute("UPDATE pgqueue.jobs SET lease_until = now() - interval '1 s'")
            outcome = app.rescue_expired()
            if rescue < MAX_RESCUES:
                assert outcome == {"requeued": 1, "failed": 0}
                job = app.get_job(job_id)
                assert (job.state, job.rescues) == (JobState.QUEUED, rescue)
                conn.execute("UPDATE pgqueue.jobs SET run_at = now()")
            else:
                assert outcome == {"requeued": 0, "failed": 1}
    job = app.get_job(job_id)
    assert job.state is JobState.FAILED and claimed.attempt == MAX_RESCUES
    assert f"rescued {MAX_RESCUES} times" in (job.last_error or "")


def test_process_isolation_forks_its_hosts_from_a_single_thread(app: Queue) -> None:
    """The enqueue pool (threads of its own) was in use; the worker closes it first, so its
    slot hosts are forked while the process runs one thread."""
    ids = app.enqueue_many(worker_app.noop, [{"item": i} for i in range(3)])
    assert threading.active_count() > 1  # the pool's threads: a naive fork would copy a mess
    worker = app.worker(["work"], concurrency=2, isolation="process", burst=True)
    assert worker.run() == 0
    assert worker.threads_at_fork == 1
    assert all(app.get_job(i).state is JobState.SUCCEEDED for i in ids)
