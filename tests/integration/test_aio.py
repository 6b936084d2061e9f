"""AsyncQueue (pgqueue.aio) against a real PostgreSQL: enqueue from a coroutine without
blocking the loop, COPY of many jobs, groups, get_job, wait_async woken by LISTEN."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import (
    AsyncQueue,
    DatabaseUnavailable,
    DuplicateJob,
    JobFailed,
    JobNotFound,
    JobState,
    Queue,
    WaitTimeout,
    aio,
)
from tests.chaos.conftest import Fleet, scalar
from tests.support import worker_app
from tests.support.postgres import database_url


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    (tmp_path / "logs").mkdir()
    workers = Fleet(tmp_path / "logs")
    try:
        yield workers
    finally:
        workers.stop_all(timeout=5)


def test_enqueue_from_a_coroutine(app: Queue) -> None:
    async def main() -> tuple[int, int]:
        async with AsyncQueue(app) as aq:
            job_id = await aq.enqueue(worker_app.record, {"item": 7}, priority=3, tag="web")
            await aq.enqueue(worker_app.record, {"item": 8}, dedupe_key="k")
            with pytest.raises(DuplicateJob):
                await aq.enqueue(worker_app.record, {"item": 9}, dedupe_key="k")
            job = await aq.get_job(job_id)
            assert job.state is JobState.QUEUED
            assert (job.args, job.priority, job.tag) == ({"item": 7}, 3, "web")
            with pytest.raises(JobNotFound):
                await aq.get_job(job_id + 1000)
            return job_id, len(await aq.enqueue_many(worker_app.record,
                                                     [{"item": i} for i in range(5)],
                                                     dedupe_keys=["k", "a", "b", None, None]))
    job_id, inserted = asyncio.run(main())
    assert inserted == 4  # the taken key "k" skipped
    assert app.get_job(job_id).args == {"item": 7}  # the sync facade sees the same job


@pytest.mark.timeout(30)  # the pool's timeout is 60 s here: waiting it out fails the test
def test_a_refusing_server_is_an_error_with_its_reason(admin_url: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No such database: the async pool, which never connected, gives up at once with
    PostgreSQL's own reason; once the database exists, the same AsyncQueue works."""
    monkeypatch.setattr(aio, "CONNECT_TIMEOUT", 60)
    name = f"pgqueue_test_late_async_{os.getpid()}"
    queue = Queue(database_url(admin_url, name))

    async def main() -> None:
        async with AsyncQueue(queue) as aq:
            with pytest.raises(DatabaseUnavailable) as raised:
                await aq.get_job(1)
            assert f'database "{name}" does not exist' in str(raised.value), raised.value
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            async with aq.session() as conn:
                row = await (await conn.execute("SELECT current_database() AS db")).fetchone()
            assert row == {"db": name}
    try:
        asyncio.run(main())
    finally:
        queue.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_enqueue_many_by_copy_never_blocks_the_loop(app: Queue, db_url: str) -> None:
    """A ticker coroutine keeps ticking while 10,000 jobs are COPYed in."""
    async def main() -> tuple[list[int], int]:
        ticks = 0
        enqueuing = True

        async def ticker() -> None:
            nonlocal ticks
            while enqueuing:
                ticks += 1
                await asyncio.sleep(0)

        async with AsyncQueue(app) as aq:
            running = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            before = ticks
            ids = await aq.enqueue_many(worker_app.noop, [{"item": i} for i in range(10_000)])
            during = ticks - before
            enqueuing = False
            await running
        return ids, during
    ids, during = asyncio.run(main())
    assert len(ids) == len(set(ids)) == 10_000
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.jobs WHERE task = 'noop'") == 10_000
    assert scalar(db_url, "SELECT array_agg((args->>'item')::int ORDER BY id) = "
                          "array(SELECT generate_series(0, 9999)) FROM pgqueue.jobs") is True
    # 10,000 rows in chunks of 64 rows, the loop let run after each: the ticker ran then.
    assert during >= 100, f"the ticker ticked {during} times during the COPY"


def test_groups_from_a_coroutine(app: Queue) -> None:
    async def main() -> tuple[int, int]:
        async with AsyncQueue(app) as aq:
            async with aq.group("pages", on_complete=[worker_app.collect.spec(label="done")],
                                tag="site") as group:
                await group.enqueue(worker_app.record, item=1)
                await group.enqueue_many(worker_app.record, [{"item": i} for i in range(2, 302)])
            open_id = await aq.open_group("open")
            await aq.add_to_group(open_id, worker_app.record, [{"item": 1}, {"item": 2}])
            assert not await aq.seal_group(open_id)  # two members pending
            return group.id, open_id
    group_id, open_id = asyncio.run(main())
    progress = app.get_group(group_id)
    assert (progress.total, progress.pending, progress.sealed, progress.tag) == (301, 301, True, "site")
    assert (app.get_group(open_id).total, app.get_group(open_id).sealed) == (2, True)


def test_a_group_block_that_raises_keeps_nothing(app: Queue, db_url: str) -> None:
    async def main() -> None:
        async with AsyncQueue(app) as aq:
            with pytest.raises(RuntimeError):
                async with aq.group("broken") as group:
                    await group.enqueue_many(worker_app.record, [{"item": i} for i in range(300)])
                    raise RuntimeError("the handler failed")
    asyncio.run(main())
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.jobs") == 0
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.groups") == 0


def test_wait_async_is_woken_by_listen(app: Queue, db_url: str, fleet: Fleet,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback look comes only after an hour here: a result within the test's bound
    was delivered by the finish's NOTIFY."""
    monkeypatch.setattr(aio, "RECHECK_SECONDS", 3600.0)

    async def main() -> tuple[object, str]:
        async with AsyncQueue(app) as aq:
            ok = await aq.enqueue(worker_app.async_double, {"x": 21})
            bad = await aq.enqueue(worker_app.async_flaky, {"item": 1, "failures": 5})
            with pytest.raises(WaitTimeout):
                await aq.wait_async(ok, timeout=0.2)  # no worker yet
            fleet.start(db_url, "async")
            # No timeout of its own: only the NOTIFY can end these waits (bounded here).
            result = await asyncio.wait_for(aq.wait_async(ok), 90)
            with pytest.raises(JobFailed) as failed:
                await asyncio.wait_for(aq.wait_async(bad), 90)
            with pytest.raises(JobNotFound):
                await aq.wait_async(bad + 1000, timeout=5)
            assert await app.wait_async(ok, timeout=5) == result  # the Queue's own, finished
            return result, str(failed.value)
    result, error = asyncio.run(main())
    assert result == {"double": 42}
    assert "meant to fail" in error
    assert app.get_job(scalar(db_url, "SELECT min(id) FROM pgqueue.job_history")).result == {"double": 42}
