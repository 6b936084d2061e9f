"""The store's connection pool: one per process, however many threads ask for it at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

import pgqueue.store
from pgqueue.store import JobStore

THREADS = 16


def test_threads_asking_at_once_share_one_pool(db_url: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    made: list[ConnectionPool] = []

    class CountedPool(ConnectionPool):
        """A real pool that counts itself; slow to build, as on a loaded machine."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            time.sleep(0.05)  # widens the window two unguarded threads would both enter
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pgqueue.store, "ConnectionPool", CountedPool)
    store = JobStore(db_url)
    barrier = threading.Barrier(THREADS)
    got: list[ConnectionPool] = []

    def ask() -> None:
        barrier.wait()
        got.append(store._connection_pool())

    threads = [threading.Thread(target=ask) for _ in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(got) == THREADS
        assert len(made) == 1, f"{len(made)} pools built, {len(made) - 1} leaked"
        assert all(pool is made[0] for pool in got)
        with store.session() as conn:  # and it works
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        store.close()
        for pool in made:  # the leaked ones too, or their __del__ warns
            pool.close()
