"""The `pgqueue` command (pgqueue.cli), run as a process against the test PostgreSQL:
migrate (and --print, applied by another tool), status, worker module:queue, retry,
cancel; one-line errors, and no password in any output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue import Queue

APP = '''
import os
from pgqueue import Queue, PermanentFailure

q = Queue(os.environ["DATABASE_URL"])

@q.task(name="double", queue="cli")
def double(n: int) -> int:
    return 2 * n

@q.task(name="refuse", queue="cli", max_attempts=1)
def refuse() -> None:
    raise PermanentFailure("refused")
'''


def with_password(url: str) -> str:
    """The same database, the URL carrying a password (the test server trusts local
    connections, so it is accepted and ignored): it must never be printed."""
    return make_conninfo(url, password="s3cr3t-pw")


def pgqueue(*args: str, url: str | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGQUEUE_SCHEMA")}
    if url is not None:
        env["DATABASE_URL"] = url
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run([sys.executable, "-m", "pgqueue", *args], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    assert "s3cr3t-pw" not in output, output
    assert "Traceback" not in output, output
    return result


def test_migrate_twice_then_status(empty_db_url: str) -> None:
    url = with_password(empty_db_url)
    first = pgqueue("migrate", url=url)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_jobs" in first.stdout and "0007_results" in first.stdout
    again = pgqueue("migrate", "--dsn", url)
    assert again.returncode == 0 and "already up to date" in again.stdout, again.stderr
    status = pgqueue("status", url=url)
    assert status.returncode == 0 and "(no jobs)" in status.stdout, status.stderr
    dbname = conninfo_to_dict(empty_db_url)["dbname"]
    assert dbname in status.stdout  # host:port/dbname, never the URL


def test_migrate_print_is_applied_by_another_tool(empty_db_url: str, tmp_path: Path) -> None:
    """The printed SQL, run by psql-like tooling, leaves the schema exactly as `pgqueue
    migrate` would: the queue works, and migrate has nothing left to do."""
    printed = pgqueue("migrate", "--print", "--schema", "jobs")
    assert printed.returncode == 0, printed.stderr
    script = printed.stdout
    assert script.startswith("BEGIN;") and script.rstrip().endswith("COMMIT;")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(script.encode())
    after = pgqueue("migrate", "--schema", "jobs", url=empty_db_url)
    assert "already up to date" in after.stdout, after.stdout + after.stderr
    assert pgqueue("migrate", "--print", "--schema", "jobs", url=empty_db_url).stdout.count(
        "INSERT INTO \"jobs\".migrations") == 0  # with a database: only what is pending
    q = Queue(empty_db_url, schema="jobs")
    try:
        @q.task(name="noop", queue="printed")
        def noop() -> int:
            return 7
        job_id = q.enqueue(noop)
        q.work(["printed"], burst=True)
        assert q.wait(job_id, timeout=30) == 7
    finally:
        q.close()


def test_worker_retry_and_cancel(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "jobs_app.py").write_text(APP)
    url = with_password(db_url)
    q = Queue(db_url)
    try:
        double = q.task(lambda n: 2 * n, name="double", queue="cli")
        refuse = q.task(lambda: None, name="refuse", queue="cli", max_attempts=1)
        ids = q.enqueue_many(double, [{"n": n} for n in range(5)])
        failing = q.enqueue(refuse)
        tagged = q.enqueue(double, {"n": 9}, tag="later", delay=3600)

        ran = pgqueue("worker", "jobs_app:q", "-q", "cli", "-c", "2", "--burst",
                      url=url, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert [q.get_job(i).result for i in ids] == [0, 2, 4, 6, 8]
        assert q.get_job(failing).state == "failed"
        assert str(q.get_job(tagged).state) == "queued"  # not due: burst left it

        status = pgqueue("status", "--json", url=url)
        data = json.loads(status.stdout)
        assert data["queues"]["cli"]["succeeded"] == 5 and data["queues"]["cli"]["failed"] == 1

        retried = pgqueue("retry", "--queue", "cli", url=url)
        assert retried.stdout.strip() == "1 job queued again", retried.stdout + retried.stderr
        assert q.get_job(failing).state == "queued"

        cancelled = pgqueue("cancel", "--tag", "later", url=url)
        assert cancelled.returncode == 0 and cancelled.stdout.startswith("cancelled 1 queued")
        assert q.get_job(tagged).state == "cancelled"
    finally:
        q.close()


@pytest.mark.parametrize(("args", "needle"), [
    (["status"], "cannot connect to PostgreSQL at 127.0.0.1:9/nowhere"),
    (["migrate"], "127.0.0.1:9/nowhere"),
    (["worker", "no_such_module:q"], "cannot import 'no_such_module'"),
    (["worker", "json:dumps"], "json:dumps is not a pgqueue.Queue"),
    (["worker", "json"], "expected module:queue_object"),
    (["migrate", "--schema", "Bad-Name"], "invalid schema name"),
    (["cancel"], "say which jobs"),
])
def test_errors_are_one_line(args: list[str], needle: str) -> None:
    url = "postgresql://someone:s3cr3t-pw@127.0.0.1:9/nowhere?connect_timeout=2"
    result = pgqueue(*args, url=url)
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr


def test_no_database_named() -> None:
    result = pgqueue("status")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: no database: pass --dsn URL or set DATABASE_URL"
