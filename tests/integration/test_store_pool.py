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


def settings_of(conn: Any) -> tuple[str, str]:
    return (conn.execute("SHOW jit").fetchone()["jit"],
            conn.execute("SHOW statement_timeout").fetchone()["statement_timeout"])


@pytest.mark.parametrize("given", ["dsn", "PGOPTIONS"])
def test_every_connection_runs_without_jit_and_keeps_the_users_options(
        db_url: str, given: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """JIT only slows pgqueue's short statements (1-2 s compiling a 5 ms one over a big
    history); the user's own session options (in the DSN, or PGOPTIONS) still apply."""
    if given == "dsn":
        store = JobStore(db_url + " options='-c statement_timeout=4321'")
    else:
        monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=4321")
        store = JobStore(db_url)
    try:
        with store.session(atomic=False) as pooled:
            assert settings_of(pooled) == ("off", "4321ms")
        for direct in (False, True):  # a worker's own connection; LISTEN and session locks
            with store.connect(autocommit=True, direct=direct) as own:
                assert settings_of(own) == ("off", "4321ms")
    finally:
        store.close()
