"""A pgqueue application for the tests of fair order and per-key limits (issue 15), run in
real worker processes. Every job records when it started and ended, in the database's
clock, in `runs`; a test reads there who ran when, and how many of a key overlapped.

    python -m tests.support.fair_app DSN QUEUES [--concurrency N] [--lease S] [--poll S]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import psycopg

from pgqueue import Limit, Queue, current_job

queue = Queue(os.environ.get("PGQUEUE_APP_DSN", "postgresql:///unused"))

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id bigserial PRIMARY KEY, job_id bigint, task text, key text, pid integer,
    started_at timestamptz NOT NULL, ended_at timestamptz)
"""


def _start(key: str | None) -> int:
    job = current_job()
    with psycopg.connect(os.environ["PGQUEUE_APP_DSN"], autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO runs (job_id, task, key, pid, started_at) "
            "VALUES (%s, %s, %s, %s, clock_timestamp()) RETURNING id",
            (job.id if job else None, job.task if job else None, key, os.getpid())).fetchone()
    assert row is not None
    return int(row[0])


def _end(run: int) -> None:
    with psycopg.connect(os.environ["PGQUEUE_APP_DSN"], autocommit=True) as conn:
        conn.execute("UPDATE runs SET ended_at = clock_timestamp() WHERE id = %s", (run,))


@queue.task(name="page", queue="pages", max_attempts=3, retry_backoff=0.05)
def page(n: int, sleep: float = 0.01) -> None:
    """A page of a site (the job's tag): fairness is by tag."""
    run = _start(None)
    time.sleep(sleep)
    _end(run)


@queue.task(name="fetch", queue="fetch", max_attempts=3, retry_backoff=0.05,
            limit=Limit(key="host", concurrency=2))
def fetch(host: str, n: int, sleep: float = 0.05, first_attempt_sleep: float = 0.0) -> None:
    """At most 2 running per host, on every machine. `first_attempt_sleep`: the first
    attempt holds its slot that long (a test kills its worker meanwhile)."""
    run = _start(host)
    job = current_job()
    time.sleep(first_attempt_sleep if job is not None and job.attempt == 1
               and first_attempt_sleep else sleep)
    _end(run)


@queue.task(name="ping", queue="ping", max_attempts=3, retry_backoff=0.05,
            limit=Limit(key="host", rate=1, per=1.0))
def ping(host: str, n: int) -> None:
    """At most 1 start per second per host."""
    _end(_start(host))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("queues")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    options = parser.parse_args(argv)
    os.environ["PGQUEUE_APP_DSN"] = options.dsn
    queue.dsn = options.dsn
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(message)s")
    return queue.work(options.queues.split(","), concurrency=options.concurrency,
                      lease_seconds=options.lease, poll_interval=options.poll)


if __name__ == "__main__":
    sys.exit(main())
