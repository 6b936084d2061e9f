"""pgqueue with `async def` tasks: the worker's event loop runs them, `async_concurrency`
at once per process (pgqueue.aioloop); jobs enqueued from a coroutine through AsyncQueue
(pgqueue.aio: the async COPY for batches). Same tables, claim and finish as `pgqueue`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import psycopg

from bench import probe
from bench.contenders.base import QUEUE, THROUGHPUT_TASK, Layout, Producer
from bench.contenders.pgqueue_c import PgQueue

# Coroutines per worker process (the default of Queue.work); one thread slot stays for
# sync tasks, which these figures do not use.
ASYNC_CONCURRENCY = 100


async def anoop(i: int) -> None:
    """The throughput job, as a coroutine: nothing."""


async def astamp(i: int) -> None:
    probe.stamp(i)


def make_queue(dsn: str) -> Any:
    from pgqueue import Queue
    q = Queue(dsn)
    q.task(anoop, name="noop", queue=QUEUE)
    q.task(astamp, name="stamp", queue=QUEUE)
    return q


class PgQueueAsyncProducer(Producer):
    """Enqueues from a coroutine through one AsyncQueue, on the caller's own async
    connection, as the sync producer passes its own (a pooled one is checked with a round
    trip each time it is taken)."""

    def __init__(self, dsn: str) -> None:
        from pgqueue import AsyncQueue
        self.loop = asyncio.new_event_loop()
        self.q = make_queue(dsn)
        self.aq = AsyncQueue(self.q, pool_size=1)
        self.conn = self.loop.run_until_complete(
            psycopg.AsyncConnection.connect(dsn, autocommit=True))

    def one(self, i: int, task: str = THROUGHPUT_TASK) -> None:
        self.loop.run_until_complete(self.aq.enqueue(self.q.tasks[task], {"i": i},
                                                     conn=self.conn))

    def each(self, numbers: Sequence[int]) -> None:
        async def enqueue_all() -> None:
            for i in numbers:
                await self.aq.enqueue(self.q.tasks[THROUGHPUT_TASK], {"i": i}, conn=self.conn)
        self.loop.run_until_complete(enqueue_all())

    def bulk(self, numbers: Sequence[int]) -> None:
        self.loop.run_until_complete(self.aq.enqueue_many(
            self.q.tasks[THROUGHPUT_TASK], [{"i": i} for i in numbers], conn=self.conn))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.run_until_complete(self.aq.close())
        self.loop.close()
        self.q.close()


class PgQueueAsync(PgQueue):
    name = "pgqueue_async"
    label = "pgqueue async"

    def producer(self, dsn: str) -> Producer:
        return PgQueueAsyncProducer(dsn)

    def layout(self, processes: int, overrides: dict[str, Any] | None = None) -> Layout:
        return Layout(processes, {"concurrency": 1, "async_concurrency": ASYNC_CONCURRENCY,
                                  **(overrides or {})})

    def default_layout(self) -> Layout:
        # `q.work(queues=[...])` with async def tasks: one process, the default 100 coroutines.
        return Layout(1, {"concurrency": 1, "async_concurrency": ASYNC_CONCURRENCY})

    def layout_2x8(self) -> Layout:
        return self.layout(2)

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        q = make_queue(dsn)
        worker = q.worker([QUEUE], burst=burst, **options)
        ready.wait()
        worker.run()
