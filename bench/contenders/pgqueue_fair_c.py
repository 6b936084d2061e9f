"""pgqueue with tagged jobs: the cost of fair order (issue 15). The same worker as
`pgqueue`; the producer enqueues through RowBatch (the bulk path, COPY for big batches),
each job tagged with one of `keys` tags (0: untagged, the plain claim order), so the
figures compare the fair-rank trigger at enqueue and the fair claim at drain with the
plain ones:

    python -m bench --contenders pgqueue_tags0,pgqueue_tags1,pgqueue_tags1000 \\
        --figures enqueue_bulk,drain_2x8
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.contenders.base import THROUGHPUT_TASK, Producer
from bench.contenders.pgqueue_c import PgQueue, make_queue


class TaggedProducer(Producer):
    def __init__(self, dsn: str, keys: int) -> None:
        self.q = make_queue(dsn)
        self.keys = keys
        self.conn = self.q.connect(autocommit=True)

    def one(self, i: int, task: str = THROUGHPUT_TASK) -> None:
        self.q.enqueue(self.q.tasks[task], {"i": i}, conn=self.conn,
                       tag=f"key-{i % self.keys}" if self.keys else None)

    def bulk(self, numbers: Sequence[int]) -> None:
        from pgqueue.enqueue import RowBatch, insert_batch
        task = self.q.tasks[THROUGHPUT_TASK]
        batch = RowBatch()
        now = datetime.now(UTC)
        for i in numbers:
            batch.add(task, {"i": i}, priority=None, run_at=now, group_id=None,
                      tag=f"key-{i % self.keys}" if self.keys else None, dedupe_key=None,
                      on_success=None)
        with self.conn.transaction():
            insert_batch(self.conn, self.q.statements, batch)

    def close(self) -> None:
        self.conn.close()


class PgQueueTagged(PgQueue):
    def __init__(self, keys: int) -> None:
        self.keys = keys
        self.name = f"pgqueue_tags{keys}"
        self.label = f"pgq {keys} tags" if keys else "pgq untagged"

    def producer(self, dsn: str) -> Producer:
        return TaggedProducer(dsn, self.keys)

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        PgQueue.work(dsn, options, burst, ready)
