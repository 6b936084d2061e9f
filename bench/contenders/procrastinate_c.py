"""Procrastinate 3: async worker, one job fetched and finished per query, jobs kept as rows.

Jobs are `async def` tasks (Procrastinate runs sync tasks in a thread each, which only
adds cost for a no-op); `concurrency` coroutines share one worker process. Enqueueing
uses the async API (`defer_async`, `batch_defer_async`), Procrastinate's primary one.
The default `delete_jobs="never"` is kept: finished jobs stay in procrastinate_jobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import psycopg

from bench import probe
from bench.contenders.base import QUEUE, THROUGHPUT_TASK, Contender, Layout, Producer, count

DEFAULT_CONCURRENCY = 10


def make_app(dsn: str, pool_size: int = 2) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=dsn, min_size=1, max_size=pool_size))

    @app.task(name="noop", queue=QUEUE)
    async def noop(i: int) -> None:
        probe.noop(i)

    @app.task(name="stamp", queue=QUEUE)
    async def stamp(i: int) -> None:
        probe.stamp(i)

    return app


class ProcrastinateProducer(Producer):
    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = make_app(dsn)
        self.loop.run_until_complete(self.app.open_async())

    def one(self, i: int, task: str = THROUGHPUT_TASK) -> None:
        self.loop.run_until_complete(self.app.tasks[task].defer_async(i=i))

    def each(self, numbers: Sequence[int]) -> None:
        async def defer_all() -> None:
            task = self.app.tasks[THROUGHPUT_TASK]
            for i in numbers:
                await task.defer_async(i=i)
        self.loop.run_until_complete(defer_all())

    def bulk(self, numbers: Sequence[int]) -> None:
        task = self.app.tasks[THROUGHPUT_TASK]
        self.loop.run_until_complete(task.batch_defer_async(*({"i": i} for i in numbers)))

    def close(self) -> None:
        self.loop.run_until_complete(self.app.close_async())
        self.loop.close()


class Procrastinate(Contender):
    name = "procrastinate"
    label = "Procrastinate"
    queue_table = "procrastinate_jobs"
    tables = ("procrastinate_jobs", "procrastinate_events", "procrastinate_workers")

    def version(self) -> str:
        return version("procrastinate")

    def install(self, dsn: str) -> None:
        app = make_app(dsn)
        with app.open():
            app.schema_manager.apply_schema()

    def producer(self, dsn: str) -> Producer:
        return ProcrastinateProducer(dsn)

    def layout(self, processes: int, overrides: dict[str, Any] | None = None) -> Layout:
        return Layout(processes, {"concurrency": DEFAULT_CONCURRENCY, **(overrides or {})})

    def pending(self, conn: psycopg.Connection[Any]) -> int:
        return count(conn, "SELECT count(*) FROM procrastinate_jobs"
                           " WHERE status IN ('todo', 'doing')")

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        concurrency = int(options.get("concurrency", DEFAULT_CONCURRENCY))
        app = make_app(dsn, pool_size=concurrency + 3)  # + listener, heartbeat, spare

        async def run() -> None:
            async with app.open_async():
                ready.wait()
                await app.run_worker_async(queues=[QUEUE], concurrency=concurrency,
                                           wait=not burst, listen_notify=True)

        asyncio.run(run())
