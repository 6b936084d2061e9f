"""What a worker says when it stops: counts a person can read, not a dataclass repr."""

from __future__ import annotations

import logging

import pytest

from pgqueue import PermanentFailure, Queue
from pgqueue.worker import WorkerStats


def test_the_summary_names_only_the_outcomes_that_happened() -> None:
    assert WorkerStats().summary() == "0 jobs"
    assert WorkerStats(claimed=1, succeeded=1).summary() == "1 job (1 ok)"
    assert WorkerStats(claimed=9, succeeded=5, failed=2, retried=2, timed_out=1,
                       claim_round_trips=4).summary() == \
        "9 jobs (5 ok, 2 failed, 2 retried, 1 of them timed out)"


def test_the_stop_line_reads_as_counts(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    app = Queue(db_url)
    try:
        @app.task(name="job", queue="work")
        def job(ok: bool) -> None:
            if not ok:
                raise PermanentFailure("no")

        app.enqueue_many(job, [{"ok": True}, {"ok": True}, {"ok": False}])
        with caplog.at_level(logging.INFO, logger="pgqueue.worker"):
            worker = app.worker(["work"], burst=True, poll_interval=0.2, install_signals=False)
            assert worker.run() == 0
    finally:
        app.close()
    stopped = [r.getMessage() for r in caplog.records
               if getattr(r, "action", None) == "worker_stopped"]
    assert stopped == [f"worker {worker.worker_id} stopped: 3 jobs (2 ok, 1 failed)"]
