"""pgqueue: thread slots in each worker process, batched finishes, NOTIFY from enqueue."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import psycopg

from bench import probe
from bench.contenders.base import QUEUE, THROUGHPUT_TASK, Contender, Layout, Producer, count

# Threads per worker process in the tuned figures (drain_1, drain_4, sustained). The claim
# batch is sized by the worker itself (pgqueue.claiming), so no prefetch is given.
DEFAULT_CONCURRENCY = 8


def make_queue(dsn: str) -> Any:
    from pgqueue import Queue
    q = Queue(dsn)
    q.task(probe.noop, name="noop", queue=QUEUE)
    q.task(probe.stamp, name="stamp", queue=QUEUE)
    return q


class PgQueueProducer(Producer):
    def __init__(self, dsn: str) -> None:
        self.q = make_queue(dsn)
        # The caller's own connection, as an application would pass it; without `conn`
        # every enqueue opens a connection of its own.
        self.conn = self.q.connect(autocommit=True)

    def one(self, i: int, task: str = THROUGHPUT_TASK) -> None:
        self.q.enqueue(self.q.tasks[task], {"i": i}, conn=self.conn)

    def bulk(self, numbers: Sequence[int]) -> None:
        self.q.enqueue_many(self.q.tasks[THROUGHPUT_TASK], [{"i": i} for i in numbers],
                            conn=self.conn)

    def close(self) -> None:
        self.conn.close()


class PgQueue(Contender):
    name = "pgqueue"
    label = "pgqueue"
    queue_table = "pgqueue.jobs"
    tables = ("pgqueue.jobs", "pgqueue.job_history", "pgqueue.workers", "pgqueue.groups")

    def version(self) -> str:
        import subprocess
        from pathlib import Path

        import pgqueue
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False,
                                cwd=Path(pgqueue.__file__).parent).stdout.strip()
        # pgqueue ships inside the `clerk` distribution for now
        return f"{getattr(pgqueue, '__version__', version('clerk'))} (git {commit or '?'})"

    def install(self, dsn: str) -> None:
        make_queue(dsn).migrate()

    def producer(self, dsn: str) -> Producer:
        return PgQueueProducer(dsn)

    def layout(self, processes: int, overrides: dict[str, Any] | None = None) -> Layout:
        return Layout(processes, {"concurrency": DEFAULT_CONCURRENCY, **(overrides or {})})

    def default_layout(self) -> Layout:
        # `q.work(queues=[...], concurrency=4)`: the README's first worker, no other option.
        return Layout(1, {"concurrency": 4})

    def layout_2x8(self) -> Layout:
        return Layout(2, {"concurrency": 8})

    def pending(self, conn: psycopg.Connection[Any]) -> int:
        return count(conn, "SELECT count(*) FROM pgqueue.jobs")

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        q = make_queue(dsn)
        worker = q.worker([QUEUE], burst=burst, **options)
        ready.wait()
        worker.run()
