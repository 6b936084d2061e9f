"""A small pgqueue application for tests that run workers in real processes.

Tasks record their side effects in a table (`effects`), so a test can count how many
times each job really ran. Run a worker with:

    python -m tests.support.worker_app DSN QUEUE [--concurrency N] [--burst] [--isolation I]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

import psycopg

from pgqueue import Queue, current_job

queue = Queue(os.environ.get("PGQUEUE_APP_DSN", "postgresql:///unused"))

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS effects (
    id bigserial PRIMARY KEY, job_id bigint, item integer, attempt integer, pid integer,
    at timestamptz DEFAULT clock_timestamp())
"""


def _record(item: int) -> None:
    job = current_job()
    with psycopg.connect(os.environ["PGQUEUE_APP_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO effects (job_id, item, attempt, pid) VALUES (%s, %s, %s, %s)",
                     (job.id if job else None, item, job.attempt if job else None, os.getpid()))


@queue.task(name="record", queue="work", max_attempts=3, retry_backoff=0.05)
def record(item: int, sleep: float = 0.0) -> None:
    if sleep:
        time.sleep(sleep)
    _record(item)


@queue.task(name="started_then_sleep", queue="work", max_attempts=3, retry_backoff=0.05)
def started_then_sleep(item: int, sleep: float = 5.0) -> None:
    """Records a start marker (negative item) first, so a test knows the job is running."""
    _record(-item)
    time.sleep(sleep)
    _record(item)


@queue.task(name="wait_for_gate", queue="work", max_attempts=3, retry_backoff=0.05)
def wait_for_gate(item: int, gate: int) -> None:
    """Records a start marker (-item), waits until the test opens the gate (an effects row
    of item `gate`, written by the test), then records `item`: no timing in the test."""
    _record(-item)
    with psycopg.connect(os.environ["PGQUEUE_APP_DSN"], autocommit=True) as conn:
        while not conn.execute("SELECT 1 FROM effects WHERE item = %s AND job_id IS NULL",
                               (gate,)).fetchone():
            time.sleep(0.05)
    _record(item)


@queue.task(name="noop", queue="work", max_attempts=3, retry_backoff=0.05)
def noop(item: int = 0) -> None:
    return None


@queue.task(name="fail_if", queue="work", max_attempts=2, retry_backoff=0.01)
def fail_if(item: int, fail: bool = False, record: bool = True) -> None:
    if fail:
        raise RuntimeError(f"item {item} is meant to fail")
    if record:  # a connection per effect: leave it out where only job states matter
        _record(item)


@queue.task(name="collect", queue="followup", max_attempts=3, retry_backoff=0.05)
def collect(label: str = "") -> None:
    _record(0)


# -- async def tasks: run on the worker's event loop (pgqueue.aioloop) -------------------
# On a queue of their own: a worker of "work" alone claims for its thread slots only.

async def _arecord(item: int) -> None:
    job = current_job()
    async with await psycopg.AsyncConnection.connect(os.environ["PGQUEUE_APP_DSN"],
                                                     autocommit=True) as conn:
        await conn.execute("INSERT INTO effects (job_id, item, attempt, pid) "
                           "VALUES (%s, %s, %s, %s)",
                           (job.id if job else None, item, job.attempt if job else None,
                            os.getpid()))


@queue.task(name="arecord", queue="async", max_attempts=3, retry_backoff=0.05)
async def arecord(item: int, sleep: float = 0.0) -> None:
    """`record` as a coroutine."""
    if sleep:
        await asyncio.sleep(sleep)
    await _arecord(item)


@queue.task(name="async_sleeper", queue="async", max_attempts=1, timeout=1)
async def async_sleeper(item: int, seconds: float = 3600.0) -> None:
    """Records a start marker (-item), sleeps; records 1_000_000 + item if its coroutine is
    cancelled (it saw CancelledError), `item` if it ever wakes. Its timeout is 1 s."""
    await _arecord(-item)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await asyncio.shield(_arecord(1_000_000 + item))
        raise
    await _arecord(item)


@queue.task(name="async_flaky", queue="async", max_attempts=3, retry_backoff=0.05)
async def async_flaky(item: int, failures: int = 1) -> None:
    """Fails its first `failures` attempts (recording each), then records `item`."""
    job = current_job()
    assert job is not None
    if job.attempt <= failures:
        await _arecord(-item)
        raise RuntimeError(f"attempt {job.attempt} of item {item} is meant to fail")
    await _arecord(item)


@queue.task(name="async_double", queue="async", max_attempts=1)
async def async_double(x: int) -> dict[str, int]:
    """Returns a result: {"double": 2x}."""
    await asyncio.sleep(0)
    return {"double": 2 * x}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("queues")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--isolation", default="thread")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--grace", type=float, default=30.0)
    options = parser.parse_args(argv)
    os.environ["PGQUEUE_APP_DSN"] = options.dsn
    queue.dsn = options.dsn
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(message)s")
    return queue.work(options.queues.split(","), concurrency=options.concurrency,
                      burst=options.burst, isolation=options.isolation,
                      lease_seconds=options.lease, poll_interval=options.poll,
                      shutdown_grace=options.grace,
                      async_concurrency=int(os.environ.get("PGQUEUE_APP_ASYNC_CONCURRENCY", "100")))


if __name__ == "__main__":
    sys.exit(main())
