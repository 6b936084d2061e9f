"""PgQueuer: async QueueManager, `batch_size` jobs per dequeue, buffered status log.

The asyncpg driver is PgQueuer's primary one (its `pgq` CLI uses it); the psycopg async
driver is used only if asyncpg is missing. Tables are PgQueuer's default `durable` ones
(all LOGGED), the same durability as everyone else here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import psycopg

from bench import probe
from bench.contenders.base import THROUGHPUT_TASK, Contender, Layout, Producer, count

DEFAULT_BATCH_SIZE = 100  # `--tune`: 10 / 50 / 100 gave 2.9k / 4.7k / 5.6k jobs/s in one process


def driver_name() -> str:
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return "psycopg"
    return "asyncpg"


async def connect_driver(dsn: str) -> Any:
    if driver_name() == "asyncpg":
        import asyncpg
        from pgqueuer import AsyncpgDriver
        return AsyncpgDriver(await asyncpg.connect(dsn))
    from pgqueuer import PsycopgDriver
    return PsycopgDriver(await psycopg.AsyncConnection.connect(dsn, autocommit=True))


async def queries_for(dsn: str) -> Any:
    from pgqueuer import Queries
    return Queries(await connect_driver(dsn))


class PgQueuerProducer(Producer):
    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.queries = self.loop.run_until_complete(queries_for(dsn))

    def one(self, i: int, task: str = THROUGHPUT_TASK) -> None:
        self.loop.run_until_complete(self.queries.enqueue(task, str(i).encode()))

    def each(self, numbers: Sequence[int]) -> None:
        async def enqueue_all() -> None:
            for i in numbers:
                await self.queries.enqueue(THROUGHPUT_TASK, str(i).encode())
        self.loop.run_until_complete(enqueue_all())

    def bulk(self, numbers: Sequence[int]) -> None:
        n = len(numbers)
        self.loop.run_until_complete(self.queries.enqueue(
            [THROUGHPUT_TASK] * n, [str(i).encode() for i in numbers], [0] * n))

    def close(self) -> None:
        self.loop.close()


class PgQueuer(Contender):
    name = "pgqueuer"
    label = "PgQueuer"
    queue_table = "pgqueuer"
    tables = ("pgqueuer", "pgqueuer_log", "pgqueuer_statistics")

    def version(self) -> str:
        return f"{version('pgqueuer')} ({driver_name()})"

    def install(self, dsn: str) -> None:
        async def install() -> None:
            queries = await queries_for(dsn)
            await queries.install()
        asyncio.run(install())

    def producer(self, dsn: str) -> Producer:
        return PgQueuerProducer(dsn)

    def layout(self, processes: int, overrides: dict[str, Any] | None = None) -> Layout:
        return Layout(processes, {"batch_size": DEFAULT_BATCH_SIZE, **(overrides or {})})

    def best_layout(self) -> Layout:
        # 2 processes (one per core) of batch 50: PgQueuer's fastest drain on 2 cores.
        return self.layout(2, {"batch_size": 50})

    def pending(self, conn: psycopg.Connection[Any]) -> int:
        return count(conn, "SELECT count(*) FROM pgqueuer")

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        from pgqueuer import QueueManager
        from pgqueuer.domain.types import QueueExecutionMode

        async def run() -> None:
            qm = QueueManager(await queries_for(dsn))

            @qm.entrypoint("noop")
            async def noop(job: Any) -> None:
                probe.noop(int(job.payload))

            @qm.entrypoint("stamp")
            async def stamp(job: Any) -> None:
                probe.stamp(int(job.payload))

            ready.wait()
            await qm.run(batch_size=int(options.get("batch_size", DEFAULT_BATCH_SIZE)),
                         mode=QueueExecutionMode.drain if burst else QueueExecutionMode.continuous,
                         dequeue_timeout=timedelta(seconds=5))

        asyncio.run(run())
