"""Hand-written SKIP LOCKED loops in psycopg: the floor and the ceiling of the comparison.

`raw` is the textbook loop, one job per transaction: lock the oldest queued row with
FOR UPDATE SKIP LOCKED, run it, delete it, commit. `raw_batched` claims 50 jobs through a
MATERIALIZED CTE in one statement, runs them, and deletes all 50 in one more; it
enqueues with COPY. Neither keeps history, retries, leases or heartbeats, so `raw_batched`
is a ceiling for any design that marks jobs done in PostgreSQL, not a rival design.
Both wake on LISTEN/NOTIFY; the enqueue sends one NOTIFY per transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from bench import probe
from bench.contenders.base import QUEUE, THROUGHPUT_TASK, Contender, Layout, Producer, count

CHANNEL = "raw_bench"
BATCH = 50
TASKS = {"noop": probe.noop, "stamp": probe.stamp}

SCHEMA = """
CREATE TABLE raw_jobs (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    task text NOT NULL,
    args jsonb NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    attempt integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_jobs_claim ON raw_jobs (queue, run_at, id) WHERE state = 'queued';
"""

INSERT_ONE = """
INSERT INTO raw_jobs (queue, task, args)
SELECT %s, %s, %s FROM (SELECT pg_notify('raw_bench', '')) AS notified
"""

INSERT_MANY = """
INSERT INTO raw_jobs (queue, task, args)
SELECT %s, %s, a FROM unnest(%s::jsonb[]) AS a, (SELECT pg_notify('raw_bench', '')) AS notified
"""

CLAIM_ONE = """
SELECT id, task, args FROM raw_jobs
WHERE state = 'queued' AND queue = %s AND run_at <= now()
ORDER BY run_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

CLAIM_BATCH = """
WITH claimed AS MATERIALIZED (
    SELECT id FROM raw_jobs
    WHERE state = 'queued' AND queue = %s AND run_at <= now()
    ORDER BY run_at, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE raw_jobs AS j SET state = 'running', attempt = j.attempt + 1
FROM claimed WHERE j.id = claimed.id
RETURNING j.id, j.task, j.args
"""


class RawProducer(Producer):
    def __init__(self, dsn: str, copy: bool) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.copy = copy

    def one(self, i: int, task: str = THROUGHPUT_TASK) -> None:
        self.conn.execute(INSERT_ONE, (QUEUE, task, Jsonb({"i": i})))

    def bulk(self, numbers: Sequence[int]) -> None:
        if not self.copy:
            self.conn.execute(INSERT_MANY, (QUEUE, THROUGHPUT_TASK,
                                            [Jsonb({"i": i}) for i in numbers]))
            return
        with self.conn.transaction():
            with self.conn.cursor().copy("COPY raw_jobs (queue, task, args) FROM STDIN") as copy:
                for i in numbers:
                    copy.write_row((QUEUE, THROUGHPUT_TASK, json.dumps({"i": i})))
            self.conn.execute("SELECT pg_notify('raw_bench', '')")

    def close(self) -> None:
        self.conn.close()


def _listener(dsn: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("LISTEN raw_bench")
    return conn


def _wait(listener: psycopg.Connection[Any]) -> None:
    for _ in listener.notifies(timeout=5.0, stop_after=1):
        pass


class RawSingle(Contender):
    name = "raw"
    label = "raw 1/txn"
    queue_table = "raw_jobs"
    tables = ("raw_jobs",)

    def version(self) -> str:
        return f"psycopg {psycopg.__version__}"

    def install(self, dsn: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)

    def producer(self, dsn: str) -> Producer:
        return RawProducer(dsn, copy=False)

    def pending(self, conn: psycopg.Connection[Any]) -> int:
        return count(conn, "SELECT count(*) FROM raw_jobs")

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        conn = psycopg.connect(dsn)
        listener = _listener(dsn)
        ready.wait()
        while True:
            with conn.transaction():
                row = conn.execute(CLAIM_ONE, (QUEUE,)).fetchone()
                if row is not None:
                    TASKS[row[1]](**row[2])
                    conn.execute("DELETE FROM raw_jobs WHERE id = %s", (row[0],))
            if row is not None:
                continue
            if burst:
                return
            _wait(listener)


class RawBatched(RawSingle):
    name = "raw_batched"
    label = "raw batch 50"

    def producer(self, dsn: str) -> Producer:
        return RawProducer(dsn, copy=True)

    def layout(self, processes: int, overrides: dict[str, Any] | None = None) -> Layout:
        return Layout(processes, {"batch": BATCH, **(overrides or {})})

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        batch = int(options.get("batch", BATCH))
        conn = psycopg.connect(dsn, autocommit=True)
        listener = _listener(dsn)
        ready.wait()
        while True:
            rows = conn.execute(CLAIM_BATCH, (QUEUE, batch)).fetchall()
            for _, task, args in rows:
                TASKS[task](**args)
            if rows:
                conn.execute("DELETE FROM raw_jobs WHERE id = ANY(%s)", ([r[0] for r in rows],))
                continue
            if burst:
                return
            _wait(listener)
