"""`clerk status` and `clerk enqueue --wait` with many sites (issue 21): status summarises
active sites beyond a screenful (counts by stage, the runs in flight longest, the failing
ones; `--all` lists them); --wait reads all its sites with one statement per tick and
sleeps on LISTEN between changes."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import psycopg
import pytest

from clerk.pipeline import Pipeline
from clerk.progress import Changes, Waiter, wait_for_runs
from pgqueue.db import connect
from tests.acceptance.conftest import Cli


def _sites(pipeline: Pipeline, db_url: str, count: int, prefix: str = "city") -> list[str]:
    """`count` sites, each with a run in flight (its fetch job queued)."""
    names = [f"{prefix}-{n:02d}" for n in range(count)]
    with connect(db_url, autocommit=True) as conn:
        for name in names:
            conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) VALUES "
                         "(%s, %s, %s)", (name, name.title(), f"https://{name}.example.org/"))
    for name in names:
        pipeline.queue.enqueue(pipeline.fetch_task, {"site": name}, tag=name)
    return names


def test_status_summarises_fifty_active_sites(pipeline: Pipeline, db_url: str,
                                              cli: Cli) -> None:
    names = _sites(pipeline, db_url, 50)
    with connect(db_url, autocommit=True) as conn:
        # Three runs started long ago; three fetches failed once and wait to retry.
        conn.execute("UPDATE pgqueue.jobs SET created_at = now() - interval '1 day' "
                     "+ (substr(tag, 6)::int) * interval '1 second' "
                     "WHERE tag = ANY(%s)", (names[40:43],))
        conn.execute("UPDATE pgqueue.jobs SET attempt = 1, last_error = 'HTTP 503 from the "
                     "city', run_at = now() + interval '1 hour' WHERE tag = ANY(%s)",
                     (names[10:13],))
    text = cli("status").output
    lines = text.splitlines()
    start = lines.index("active sites (50):")
    section = lines[start + 1:]
    assert section[0] == "  by stage: fetch 50"
    assert len(section) < 20, text  # not one line per site
    longest = [line.split()[0] for line in section[2:7]]
    assert longest[:3] == names[40:43], text
    assert "  failing (3):" in section
    failing = [line for line in section if "HTTP 503" in line]
    assert [line.split()[0] for line in failing] == names[10:13], text
    assert "fetch retrying: HTTP 503 from the city" in failing[0]

    listed = cli("status", "--all").output.splitlines()
    start = listed.index("active sites (50):")
    assert [line.split()[0] for line in listed[start + 1:]] == names


def _count_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement this thread sends through psycopg from now on (the pool checks a
    connection with an empty query: not counted)."""
    sent: list[str] = []
    me = threading.get_ident()
    original = psycopg.Cursor.execute

    def counting(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == me and str(query):  # not the pool's empty liveness probe
            sent.append(str(query)[:60])
        return original(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    return sent


@pytest.mark.parametrize("count", [2, 40])
def test_wait_reads_every_site_with_one_statement_per_tick(
        pipeline: Pipeline, db_url: str, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    names = _sites(pipeline, db_url, count)
    ticks: list[int] = []
    sent = _count_statements(monkeypatch)
    echoed: list[str] = []
    waiter = Waiter(echo=echoed.append, tty=False, write=echoed.append)
    observe = waiter.observe

    def observed(runs: list[dict[str, Any]]) -> None:
        ticks.append(len(sent))
        observe(runs)
        if len(ticks) == 3:  # the runs end: cancelled (a finish of every site's fetch)
            for name in names:
                pipeline.queue.cancel(tag=name)

    monkeypatch.setattr(waiter, "observe", observed)
    runs = wait_for_runs(pipeline, names, waiter, fallback_seconds=0.5)
    assert {run["state"] for run in runs} == {"cancelled"}
    per_tick = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    # One statement per tick for all the sites (the cancels of tick 3 are this thread's
    # too, and come before the next tick's read: leave that interval out).
    assert per_tick[:2] == [1, 1], (per_tick, sent[ticks[0]:ticks[1]])


def test_changes_wake_on_a_waited_sites_finish_and_not_on_another(
        pipeline: Pipeline, db_url: str) -> None:
    waited, other = _sites(pipeline, db_url, 2)
    with Changes(pipeline, [waited], queues=()) as changes:
        pipeline.queue.cancel(tag=other)  # a finish, of a site nobody waits for
        assert not changes.wait(1.0)
        pipeline.queue.cancel(tag=waited)
        assert changes.wait(60.0)  # woken by the notification, long before the timeout


def _seq_scans(plan: Any, table: str) -> list[str]:
    """The node types that read `table` without an index, anywhere in a JSON plan."""
    found: list[str] = []
    if isinstance(plan, dict):
        if plan.get("Relation Name") == table and plan.get("Node Type") == "Seq Scan":
            found.append(plan["Node Type"])
        for value in plan.values():
            found += _seq_scans(value, table)
    elif isinstance(plan, list):
        for value in plan:
            found += _seq_scans(value, table)
    return found


def test_status_reads_a_million_history_rows_through_indexes(pipeline: Pipeline,
                                                              db_url: str) -> None:
    from clerk.status import FETCH_QUEUE, PAGE_QUEUE, statements
    names = _sites(pipeline, db_url, 50)
    with connect(db_url, autocommit=True) as conn:
        conn.execute("""
            INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt,
                max_attempts, run_at, tag, created_at, started_at, finished_at)
            SELECT 10000000 + g, CASE WHEN g % 10 = 0 THEN 'fetch' ELSE 'ocr' END,
                   'clerk.ocr_page', '{}', 0, 'succeeded', 1, 3, now(),
                   'city-' || lpad((g % 3000)::text, 2, '0'), now(), now(), now()
            FROM generate_series(1, 1000000) g""")
        conn.execute("VACUUM ANALYZE")
        plan = conn.execute(
            psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ")
            + statements(pipeline.queue.schema)["site_runs"],
            {"sites": names, "fetch_queue": FETCH_QUEUE, "page_queue": PAGE_QUEUE}
        ).fetchone()["QUERY PLAN"]
        depth = conn.execute(psycopg.sql.SQL("EXPLAIN (FORMAT JSON) ")
                             + pipeline.queue.store.statements.queue_depth
                             ).fetchone()["QUERY PLAN"]
    assert "job_history" in str(plan)  # it does read the history: through its indexes
    assert _seq_scans(plan, "job_history") == [], plan
    assert "job_history" not in str(depth), depth
