"""Connections per worker process, not per slot; and a pooler in front (issue 21).

- A process-isolated worker holds the same connections with 1 slot as with 16, while every
  slot runs a job that holds a session: the job children share the worker's
  `job_connections`, whatever the number of slots.
- Behind a real PgBouncer in transaction mode (`DATABASE_URL`), with `listen_dsn` straight
  to PostgreSQL: jobs are woken by NOTIFY (the safety-net poll is an hour away), every
  statement of the claim loop, the leases and the jobs goes through the pooler, often
  enough that a prepared statement would be run on a backend that never prepared it, and
  the LISTEN and the maintenance leader's session advisory lock are on direct backends.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import Queue
from tests.support.pgbouncer import BOUNCER_ROLE, PgBouncer

WORKER = """
import sys
from pgqueue import Queue
q = Queue(sys.argv[1])
@q.task(name="hold", queue="conn")
def hold(n):
    with q.session() as conn:  # a session held for a while, in every slot at once
        conn.execute("SELECT pg_sleep(0.4)")
sys.exit(q.work(["conn"], concurrency=int(sys.argv[2]), isolation="process",
                job_connections=int(sys.argv[3]), poll_interval=0.5, lease_seconds=10))
"""


PHASES = """
import sys, time
from pgqueue import Queue
q = Queue(sys.argv[1])
@q.task(name="phase", queue="phases")
def phase(n):
    with q.session() as conn:
        conn.execute("INSERT INTO phases (n, started) VALUES (%s, clock_timestamp())", (n,))
    time.sleep(1.0)  # the job's own work (Tesseract, say), outside any session
    with q.session() as conn:
        conn.execute("UPDATE phases SET ended = clock_timestamp() WHERE n = %s", (n,))
sys.exit(q.work(["phases"], concurrency=8, isolation="process", job_connections=1,
                burst=True, poll_interval=0.5, lease_seconds=10))
"""


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(url: str, statement: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(statement).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


def roles(url: str) -> Counter[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT application_name FROM pg_stat_activity"
                            " WHERE datname = current_database()"
                            " AND application_name LIKE 'pgqueue:%'").fetchall()
    return Counter(row[0] for row in rows)


def peak_connections(url: str, slots: int, job_connections: int) -> tuple[Counter[str], int]:
    """The most pgqueue connections seen while a worker of `slots` runs 3 jobs per slot,
    and the most jobs seen running at once."""
    process = subprocess.Popen([sys.executable, "-c", WORKER, url, str(slots),
                                str(job_connections)])
    try:
        wait_for(lambda: roles(url)["pgqueue:listen"] == 1, "the worker to listen")
        done = "SELECT count(*) FROM pgqueue.job_history WHERE state = 'succeeded'"
        before = scalar(url, done)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pgqueue.add_job('conn', 'hold', jsonb_build_object('n', g))"
                         " FROM generate_series(1, %s) g", (slots * 3,))
        peak: Counter[str] = Counter()
        running = 0
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            now = roles(url)
            if sum(now.values()) > sum(peak.values()):
                peak = now
            running = max(running, scalar(url, "SELECT count(*) FROM pgqueue.jobs"
                                               " WHERE state = 'running'"))
            if scalar(url, "SELECT count(*) FROM pgqueue.jobs") == 0:
                break
            time.sleep(0.02)
        assert scalar(url, done) - before == slots * 3
        return peak, running
    finally:
        process.terminate()
        process.wait(60)


def test_a_worker_holds_as_many_connections_with_16_slots_as_with_1(db_url: str) -> None:
    one, _ = peak_connections(db_url, 1, job_connections=1)
    sixteen, running = peak_connections(db_url, 16, job_connections=1)
    assert running >= 8  # the slots did run at once
    assert sixteen == one, (one, sixteen)
    assert one["pgqueue:job"] == 1 and one["pgqueue:work"] == 1
    # With the default share of two, the job children never hold more than two.
    shared, _ = peak_connections(db_url, 16, job_connections=2)
    assert shared["pgqueue:job"] <= 2 and sum(shared.values()) <= sum(one.values()) + 1


def test_job_children_hold_a_shared_connection_only_during_their_sessions(db_url: str) -> None:
    """One connection for 8 slots does not run their jobs one at a time: a job takes it
    for a session and gives it back, not for its whole run."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE phases (n int, started timestamptz, ended timestamptz)")
        conn.execute("SELECT pgqueue.add_job('phases', 'phase', jsonb_build_object('n', g))"
                     " FROM generate_series(1, 8) g")
    subprocess.run([sys.executable, "-c", PHASES, db_url], check=True, timeout=300)
    with psycopg.connect(db_url, autocommit=True) as conn:
        overlap = conn.execute("""
            SELECT max(c) FROM (SELECT (SELECT count(*) FROM phases b
                                        WHERE b.started <= a.started AND b.ended > a.started) c
                                FROM phases a) counts""").fetchone()
        ended = conn.execute("SELECT count(*) FROM phases WHERE ended IS NOT NULL").fetchone()
    assert ended == (8,)
    assert overlap is not None and overlap[0] >= 2, overlap  # 1: serialised on the slot


@pytest.fixture
def bouncer(admin_url: str, tmp_path: Path) -> Iterator[PgBouncer]:
    pooler = PgBouncer(admin_url, tmp_path / "pgbouncer", pool_size=3)
    yield pooler
    pooler.stop()


def backends(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("""
            SELECT a.pid, a.usename, a.application_name, a.query,
                   EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid
                           AND l.locktype = 'advisory' AND l.granted) AS holds_advisory
            FROM pg_stat_activity a
            WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()""").fetchall()


def test_behind_pgbouncer_in_transaction_mode_listen_goes_direct(
        db_url: str, bouncer: PgBouncer) -> None:
    pooled = bouncer.url(db_url)
    queue = Queue(pooled, listen_dsn=db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bumps (n int)")

    @queue.task(name="bump", queue="pooled")
    def bump(n: int) -> None:
        with queue.session() as conn:  # a job's own statements, through the pooler
            conn.execute("INSERT INTO bumps VALUES (%s)", (n,))

    worker = queue.worker(["pooled"], concurrency=2, poll_interval=3600, lease_seconds=2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        assert worker.listening.wait(60), "the listener never subscribed"
        wait_for(worker.maintenance.leader.is_set, "the worker to lead maintenance")
        total = 0
        for batch in range(12):  # each enqueue its own transaction, each with its NOTIFY
            wait_for(lambda: worker.slots.outstanding() == 0, "the worker to be idle")
            bump.enqueue(n=batch)
            total += 1
            # Only a NOTIFY can wake it now: its poll is an hour away.
            wait_for(lambda want=total: scalar(db_url, "SELECT count(*) FROM bumps") == want,
                     f"job {batch} to run, woken by its NOTIFY", timeout=30)
        seen = backends(db_url)
    finally:
        worker.stop()
        thread.join(30)
        queue.close()
    assert not thread.is_alive()
    assert worker.stats.succeeded == 12 and worker.stats.failed == 0
    assert worker.stats.claim_round_trips >= 12  # prepared after 5, had they been prepared
    listeners = [b for b in seen if b["query"].startswith("LISTEN")
                 or b["application_name"] == "pgqueue:listen"]
    assert listeners and all(b["usename"] != BOUNCER_ROLE for b in listeners), seen
    leaders = [b for b in seen if b["holds_advisory"]]
    assert leaders and all(b["usename"] != BOUNCER_ROLE for b in leaders), seen
    assert any(b["usename"] == BOUNCER_ROLE for b in seen), seen  # the rest: pooled
    assert not any(b["usename"] != BOUNCER_ROLE and b["application_name"] in
                   ("pgqueue:work", "pgqueue:lease", "pgqueue:pool") for b in seen), seen
