"""Fair order within a queue (issue 15): among equal priorities the claim takes the keys
(tags) in turn, weighted, work-conserving; priority still wins. Orders, never timings."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import Queue
from tests.support import fair_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fair(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    monkeypatch.setenv("PGQUEUE_APP_DSN", db_url)
    monkeypatch.setattr(fair_app.queue, "dsn", db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(fair_app.RUNS_DDL)
    yield fair_app.queue
    fair_app.queue.close()


def wait_until(condition: object, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def claim_tags(queue: Queue, count: int, limit: int = 1) -> list[str | None]:
    """The tags of the next `count` jobs, claimed `limit` at a time."""
    tags: list[str | None] = []
    with queue.store.connect(autocommit=True) as conn:
        while len(tags) < count:
            jobs = queue.store.claim(conn, worker_id=None, queues=["pages"], limit=limit,
                                     lease_seconds=60)
            assert jobs, f"nothing left after {tags}"
            tags.extend(job.tag for job in jobs)
    return tags


def test_keys_take_turns_among_equal_priorities(fair: Queue) -> None:
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(30)], tag="big")
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(3)], tag="b")
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(3)], tag="c")
    tags = claim_tags(fair, 12, limit=4)
    # big's first job was the queue's head when b and c came: they start right after it.
    assert tags[:10] == ["big", "big", "b", "c", "big", "b", "c", "big", "b", "c"]
    assert tags[10:] == ["big", "big"]  # work-conserving: big goes on alone


def test_a_weight_gives_a_key_more_turns(fair: Queue) -> None:
    fair.set_fair_weight("pages", "heavy", 2)
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(20)], tag="light")
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(20)], tag="heavy")
    tags = claim_tags(fair, 15, limit=5)[3:]  # past light's head start
    assert tags.count("heavy") == 8 and tags.count("light") == 4, tags
    fair.set_fair_weight("pages", "heavy", None)
    with pytest.raises(Exception, match="weight"):
        fair.set_fair_weight("pages", "heavy", 0)


def test_priority_wins_over_fairness_and_untagged_jobs_come_first(fair: Queue) -> None:
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(5)], tag="a")
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(5)], tag="b")
    fair_app.page.enqueue(n=0, tag="urgent", priority=5)
    fair_app.page.enqueue(n=0)
    tags = claim_tags(fair, 6, limit=6)
    assert tags[:2] == ["urgent", None]
    assert tags[2:] == ["a", "a", "b", "a"]  # b starts one step after a's head


def test_a_retried_job_keeps_its_turn(fair: Queue) -> None:
    """A job given back (a warm stop) or retried keeps its rank: it is not sent to the end."""
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(5)], tag="a")
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(5)], tag="b")
    with fair.store.connect(autocommit=True) as conn:
        [first] = fair.store.claim(conn, worker_id=None, queues=["pages"], limit=1,
                                   lease_seconds=60)
        conn.execute("UPDATE pgqueue.jobs SET state = 'queued', attempt = attempt - 1 "
                     "WHERE id = %s", (first.id,))
    assert claim_tags(fair, 3, limit=3) == ["a", "a", "b"]


def test_small_sites_finish_before_a_big_one_is_half_done(fair: Queue, db_url: str,
                                                          tmp_path: Path) -> None:
    """Issue 15's test: a site of 500 pages enqueued before 20 sites of 5 pages, two worker
    processes; then a high-priority site added mid-run runs before anything claimed after
    it was enqueued."""
    fair.enqueue_many(fair_app.page, [{"n": i} for i in range(500)], tag="big")
    for site in range(20):
        fair.enqueue_many(fair_app.page, [{"n": i} for i in range(5)], tag=f"small-{site}")
    logs = [(tmp_path / f"worker-{n}.log").open("wb") for n in range(2)]
    workers = [subprocess.Popen(
        [sys.executable, "-m", "tests.support.fair_app", db_url, "pages", "--concurrency", "2",
         "--poll", "0.5"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            def finished(tag: str) -> int:
                row = conn.execute("SELECT count(*) FROM pgqueue.job_history WHERE tag = %s "
                                   "AND state = 'succeeded'", (tag,)).fetchone()
                return int(row[0]) if row else 0
            wait_until(lambda: finished("big") >= 300, "the big site to pass 300 pages")
            fair.enqueue_many(fair_app.page, [{"n": i} for i in range(5)], tag="urgent",
                              priority=10)
            after = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            wait_until(lambda: finished("big") == 500 and finished("urgent") == 5,
                       "every page")
            half_done = conn.execute(
                "SELECT finished_at FROM pgqueue.job_history WHERE tag = 'big' "
                "ORDER BY finished_at, id OFFSET 249 LIMIT 1").fetchone()[0]
            late_small = conn.execute(
                "SELECT tag, max(finished_at) FROM pgqueue.job_history "
                "WHERE tag LIKE 'small-%%' GROUP BY tag HAVING max(finished_at) >= %s",
                (half_done,)).fetchall()
            small_done = conn.execute("SELECT count(*) FROM pgqueue.job_history "
                                      "WHERE tag LIKE 'small-%%' AND state = 'succeeded'"
                                      ).fetchone()[0]
            overtaken = conn.execute(
                "SELECT count(*) FROM pgqueue.job_history WHERE tag = 'big' "
                "AND started_at > %s AND started_at < (SELECT max(started_at) "
                "FROM pgqueue.job_history WHERE tag = 'urgent')", (after,)).fetchone()[0]
    finally:
        for proc in workers:
            proc.terminate()
        for proc in workers:
            proc.wait(60)
        for log in logs:
            log.close()
    assert small_done == 100
    assert late_small == [], f"small sites finished after the big one was half done: {late_small}"
    assert overtaken == 0, f"{overtaken} pages of the big site were claimed before the urgent site"


def _plan_nodes(plan: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "Node Type" in node:
                found.append(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


@pytest.mark.parametrize("queues", [["pages"], ["pages", "other"]])
def test_the_fair_claim_walks_the_index_in_order_over_a_big_backlog(
        fair: Queue, db_url: str, queues: list[str]) -> None:
    """Fair order and limits cost the claim no sort of the backlog: 40,000 queued jobs over
    1,000 tags, a limited task among them, and the walk is jobs_claim's, in order."""
    fair.set_limit("fetch", fair_app.fetch.limit)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO pgqueue.jobs (queue, task, args, tag, run_at)
            SELECT 'pages', CASE WHEN g % 10 = 0 THEN 'fetch' ELSE 'page' END,
                   jsonb_build_object('n', g, 'host', 'h' || (g % 7)), 'site-' || (g % 1000),
                   now() - interval '1 minute'
            FROM generate_series(1, 40000) g""")
        conn.execute("ANALYZE")
        params = {"queues": queues, "limit": 10, "worker_id": 1,
                  "lease_seconds": 30, "free": 10, "floor": None, "buffered": None,
                  "park_seconds": 15}
        plan = conn.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ")
                            + fair.statements.claim, params).fetchone()[0]
    nodes = _plan_nodes(plan)
    walks = [n for n in nodes if n.get("Relation Name") == "jobs" and "Index" in str(
        n.get("Node Type"))]
    assert any(n.get("Index Name") == "jobs_claim" for n in walks), plan
    assert not any(n.get("Node Type") == "Seq Scan" and n.get("Relation Name") == "jobs"
                   for n in nodes), plan
    # Sorts only of the few rows locked (LIMIT 10), never of the backlog.
    for node in nodes:
        if node.get("Node Type") == "Sort":
            assert float(str(node.get("Plan Rows"))) <= 1000, node
