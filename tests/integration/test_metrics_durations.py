"""/metrics' job duration histogram, read from job_history at scrape time: real buckets,
a running total that never goes down, and a scrape that reads only what is new."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgqueue.queue
from pgqueue import Queue
from pgqueue.http import HealthServer, serve_health_and_metrics
from pgqueue.metrics import Metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def app(db_url: str) -> Iterator[Queue]:
    queue = Queue(db_url)
    yield queue
    queue.close()


@pytest.fixture
def server(app: Queue) -> Iterator[HealthServer]:
    metrics = Metrics(fetch=app.metrics_snapshot, queues=["ocr"])
    server = serve_health_and_metrics(health=lambda: {"status": "ok"}, registry=metrics.registry)
    yield server
    server.close()


def scrape(server: HealthServer) -> Samples:
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        body = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


def finished(db_url: str, task: str, seconds: list[float], *, state: str = "succeeded",
             ago: str = "0 seconds") -> None:
    """History rows as a worker leaves them: started `seconds` before they finished."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt,"
            " max_attempts, run_at, created_at, started_at, finished_at)"
            " SELECT nextval('pgqueue.jobs_id_seq'), 'ocr', %s, '{}', 0, %s::pgqueue.job_state,"
            "  1, 3, f, f, f - s * interval '1 second', f"
            " FROM unnest(%s::float8[]) AS s, LATERAL (SELECT now() - %s::interval AS f) AS t",
            (task, state, seconds, ago))


def bucket(found: Samples, le: str, task: str = "page") -> float:
    return found[("pgqueue_job_duration_seconds_bucket",
                  (("le", le), ("queue", "ocr"), ("task", task)))]


def test_durations_have_real_buckets_and_only_grow(
        app: Queue, server: HealthServer, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgqueue.queue, "DURATION_SETTLE_SECONDS", 0.0)  # no wait for commits
    finished(db_url, "page", [0.003, 0.5, 0.5, 45.0, 7200.0])
    finished(db_url, "page", [1.0], state="failed")  # failures are not run times
    finished(db_url, "page", [2.0], ago="3 hours")  # before the first scrape's window
    found = scrape(server)
    labels = (("queue", "ocr"), ("task", "page"))
    assert found[("pgqueue_job_duration_seconds_count", labels)] == 5
    assert found[("pgqueue_job_duration_seconds_sum", labels)] == pytest.approx(7246.003)
    assert bucket(found, "0.001") == 0
    assert bucket(found, "0.005") == 1
    assert bucket(found, "0.5") == 3  # le: a run time equal to the bound counts in
    assert bucket(found, "1.0") == 3
    assert bucket(found, "60.0") == 4
    assert bucket(found, "3600.0") == 4
    assert bucket(found, "+Inf") == 5
    assert sum(1 for name, _ in found if name == "pgqueue_job_duration_seconds_bucket") == 22

    # The next scrape adds only what finished since; nothing is counted twice, even after
    # the history is pruned (the counts are a running total, not a view of the table).
    again = scrape(server)
    assert again[("pgqueue_job_duration_seconds_count", labels)] == 5
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM pgqueue.job_history")
    finished(db_url, "page", [0.2])
    later = scrape(server)
    assert later[("pgqueue_job_duration_seconds_count", labels)] == 6
    assert bucket(later, "0.25") == 2 and bucket(later, "+Inf") == 6

    # And from a real worker's job.
    @app.task(name="work", queue="ocr")
    def work() -> None: ...

    work.enqueue()
    assert app.work(["ocr"], burst=True, install_signals=False) == 0
    last = scrape(server)
    assert last[("pgqueue_job_duration_seconds_count", (("queue", "ocr"), ("task", "work")))] == 1
    assert bucket(last, "+Inf", "work") == 1


def test_a_scrape_reads_recent_history_through_an_index(app: Queue, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt,
                max_attempts, run_at, created_at, started_at, finished_at)
            SELECT g, 'ocr', 'page', '{}', 0, 'succeeded', 1, 3, now(), now(),
                   now() - interval '2 days' - interval '1 minute',
                   now() - interval '2 days' + g * interval '1 millisecond'
            FROM generate_series(1, 200000) g""")
        conn.execute("ANALYZE pgqueue.job_history")
        params = app._durations.params(5.0)
        since = conn.execute("SELECT now() - interval '1 minute'").fetchone()[0]
        plan = json.dumps(conn.execute(
            psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ") + app.store.statements.durations_between,
            {**params, "since": since}).fetchone()[0])
    assert "job_history_prune" in plan, plan
    assert '"Seq Scan"' not in plan, plan
