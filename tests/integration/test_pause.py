"""Paused queues (issue 13): a paused queue is claimed by no worker on any machine until it
is resumed, and resuming wakes the workers. Real worker processes; no timings: the proof
that a worker looked at the paused queue is a job of another queue it claimed afterwards,
with the same claim statement."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg

from pgqueue import Queue
from tests.support import worker_app

ROOT = Path(__file__).resolve().parents[2]


def wait_until(condition: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _items(db_url: str) -> list[int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT item FROM effects ORDER BY id")]


def test_a_paused_queue_is_not_claimed_by_another_process_until_resumed(
        app: Queue, db_url: str, tmp_path: Path) -> None:
    assert app.pause("work", reason="maintenance window") is True
    assert app.pause("work") is False  # already paused; the reason is kept
    assert app.paused_queues() == ["work"]
    assert app.paused_details()[0]["reason"] == "maintenance window"
    app.enqueue_many(worker_app.record, [{"item": i} for i in range(1, 6)])
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.worker_app", db_url, "work,followup",
         "--concurrency", "2", "--poll", "300"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(app.active_workers()) == 1, "the worker to register")
        # Rounds of: a job in the other queue, claimed by the same statement that passes
        # over the paused one. After each, the paused jobs are still all queued.
        for round_number in range(3):
            worker_app.collect.enqueue(label=str(round_number))
            wait_until(lambda n=round_number: _items(db_url).count(0) == n + 1,
                       "the worker to claim the other queue's job")
            assert all(item == 0 for item in _items(db_url))
            depth = {(r["queue"], r["state"]): r["jobs"] for r in app.queue_depth()}
            assert depth[("work", "queued")] == 5, depth
        assert app.resume("work") is True
        assert app.resume("work") is False
        assert app.paused_queues() == []
        # The resume's NOTIFY wakes the worker: its safety-net poll (300 s) is longer
        # than this wait.
        wait_until(lambda: sorted(i for i in _items(db_url) if i) == [1, 2, 3, 4, 5],
                   "the resumed queue's jobs to run", timeout=100)
    finally:
        worker.terminate()
        worker.wait(60)
        log.close()


def test_a_paused_queue_is_skipped_by_the_single_queue_claim(app: Queue) -> None:
    app.enqueue_many(worker_app.record, [{"item": i} for i in range(3)])
    app.pause("work")
    with app.store.connect(autocommit=True) as conn:
        assert app.store.claim(conn, worker_id=None, queues=["work"], limit=10,
                               lease_seconds=30) == []
        app.resume("work")
        assert len(app.store.claim(conn, worker_id=None, queues=["work"], limit=10,
                                   lease_seconds=30)) == 3
