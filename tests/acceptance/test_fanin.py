"""Fan-in at scale, with real worker processes: 10,000 members, 4 workers, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from pgqueue import Queue
from tests.support import worker_app

MEMBERS = 10_000
WORKERS = 4


@pytest.fixture
def spawn(db_url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def start_worker(db_url: str, started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_app", db_url, "work,followup",
         "--concurrency", "8", "--burst", "--lease", "2", "--poll", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(process)
    return process


def scalar(db_url: str, statement: str) -> int:
    with psycopg.connect(db_url) as conn:
        return int(conn.execute(statement).fetchone()[0])


def make_group(app: Queue, failing: set[int]) -> int:
    with app.group("site:big:run-1", tag="big",
                   on_complete=[worker_app.collect.spec(label="compile")]) as group:
        group.enqueue_many(worker_app.fail_if,
                           [{"item": i, "fail": i in failing, "record": False}
                            for i in range(MEMBERS)])
    return group.id


def finish(db_url: str, processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        assert process.wait(240) in (0, -signal.SIGKILL)


def assert_exactly_once(app: Queue, db_url: str, group_id: int, failed: int) -> None:
    progress = app.get_group(group_id)
    assert (progress.total, progress.pending, progress.failed) == (MEMBERS, 0, failed)
    assert progress.completed_at is not None
    assert scalar(db_url, "SELECT count(*) FROM effects WHERE item = 0 AND job_id IN "
                          "(SELECT id FROM pgqueue.job_history WHERE task = 'collect')") == 1
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.jobs") == 0
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'fail_if'"
                          " AND state = 'succeeded'") == MEMBERS - failed


def test_ten_thousand_members_fire_once(app: Queue, db_url: str,
                                        spawn: list[subprocess.Popen[bytes]]) -> None:
    group_id = make_group(app, failing=set())
    finish(db_url, [start_worker(db_url, spawn) for _ in range(WORKERS)])
    assert_exactly_once(app, db_url, group_id, failed=0)


def test_members_that_fail_for_good_still_count(app: Queue, db_url: str,
                                                spawn: list[subprocess.Popen[bytes]]) -> None:
    failing = set(range(0, MEMBERS, 97))
    group_id = make_group(app, failing)
    finish(db_url, [start_worker(db_url, spawn) for _ in range(WORKERS)])
    assert_exactly_once(app, db_url, group_id, failed=len(failing))
    assert {f["args"]["item"] for f in app.group_failures(group_id)} == failing


def test_a_worker_sigkilled_midway_loses_nothing(app: Queue, db_url: str,
                                                 spawn: list[subprocess.Popen[bytes]]) -> None:
    group_id = make_group(app, failing=set())
    workers = [start_worker(db_url, spawn) for _ in range(WORKERS)]
    deadline = time.monotonic() + 120
    while scalar(db_url, "SELECT count(*) FROM pgqueue.job_history") < MEMBERS // 3:
        assert time.monotonic() < deadline, "the workers made no progress"
        time.sleep(0.05)
    os.kill(workers[0].pid, signal.SIGKILL)  # mid-way, holding up to 8 running jobs
    finish(db_url, workers)
    assert workers[0].returncode == -signal.SIGKILL
    assert_exactly_once(app, db_url, group_id, failed=0)
