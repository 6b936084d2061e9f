"""Pause and resume a queue from the dashboard: a worker in another process claims nothing
of the paused queue until the dashboard resumes it. No timings: the proof that the worker
passed over the paused queue is a job of another queue it ran afterwards, although the
paused queue's job was runnable first (the claim takes the oldest of equal priority)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from starlette.testclient import TestClient

from pgqueue import Queue
from tests.web.conftest import states, token

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import sys
from tests.web.conftest import make_queue
queue = make_queue(sys.argv[1])
sys.exit(queue.work(["default", "ocr"], concurrency=1, poll_interval=0.5))
"""


def wait_until(condition: object, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_pause_from_the_dashboard_stops_claims_by_a_worker_in_another_process(
        wq: Queue, web: TestClient, db_url: str, tmp_path: Path) -> None:
    wq.tasks["web.ok"].enqueue(n=0)
    assert 'action="/queues/default/pause"' in web.get("/").text

    answer = web.post("/queues/ocr/pause", data={"csrf_token": token(web, "/"), "next": "/",
                                                 "reason": "disk swap"})
    assert answer.status_code == 200 and "queue ocr paused" in answer.text
    again = web.post("/queues/ocr/pause", data={"csrf_token": token(web, "/")},
                     headers={"Accept": "application/json"})
    assert again.json()["paused"] is False
    assert wq.paused_queues() == ["ocr"]
    overview = web.get("/", params={"format": "json"}).json()
    assert overview["paused_queues"] == ["ocr"]
    assert [q["paused"] for q in overview["queues"] if q["queue"] == "ocr"] == [True]
    html = web.get("/").text
    assert 'action="/queues/ocr/resume"' in html and re.search(r'class="badge">paused<', html)

    held = wq.tasks["web.boom"].enqueue(message="held")  # runnable first, but paused
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen([sys.executable, "-c", WORKER, db_url], cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        for n in range(1, 4):
            later = wq.tasks["web.ok"].enqueue(n=n)
            wait_until(lambda j=later: states(wq)[j] == "succeeded",
                       "the worker to run the other queue's job")
            assert states(wq)[held] == "queued"
        answer = web.post("/queues/ocr/resume", data={"csrf_token": token(web, "/")},
                          headers={"Accept": "application/json"})
        assert answer.json()["resumed"] is True and wq.paused_queues() == []
        wait_until(lambda: states(wq)[held] == "failed", "the resumed queue's job to run")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()
    assert 'action="/queues/ocr/pause"' in web.get("/").text
