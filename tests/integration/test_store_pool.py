"""The store's connection pool: one per process, however many threads ask for it at once;
when it has no connection to give, an error that says why."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

import pgqueue.store
from pgqueue.errors import DatabaseUnavailable
from pgqueue.store import JobStore
from tests.support.postgres import database_url

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


def test_a_pool_with_every_connection_busy_says_so(db_url: str, monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    """The server accepts connections, this process's pool (1) is all in use: the error
    says busy and pool_size, not that PostgreSQL cannot be reached."""
    monkeypatch.setattr(pgqueue.store, "CONNECT_TIMEOUT", 1)
    store = JobStore(db_url, pool_size=1)
    try:
        with store.session(atomic=False), pytest.raises(DatabaseUnavailable) as raised, \
                store.session(atomic=False):
            pass
        assert "busy (pool_size)" in str(raised.value), raised.value
        assert "cannot connect" not in str(raised.value)
        with store.session(atomic=False) as conn:  # the held one came back
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        store.close()


@pytest.mark.timeout(30)  # the pool's timeout is 60 s here: waiting it out fails the test
def test_a_refusing_server_fails_each_session_at_once_with_its_reason_until_it_accepts(
        admin_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database does not exist yet: the first session gives up as soon as the pool's
    first attempt has failed (it never connected) and reports PostgreSQL's reason; later
    ones ask the server directly and fail without waiting on the pool; once the database
    exists, sessions work again."""
    monkeypatch.setattr(pgqueue.store, "CONNECT_TIMEOUT", 60)
    name = f"pgqueue_test_late_{os.getpid()}"
    store = JobStore(database_url(admin_url, name))
    waits: list[float] = []
    real_getconn = ConnectionPool.getconn

    def counted_getconn(pool: ConnectionPool, *args: Any, **kwargs: Any) -> Any:
        waits.append(time.monotonic())
        return real_getconn(pool, *args, **kwargs)

    monkeypatch.setattr(ConnectionPool, "getconn", counted_getconn)
    try:
        with pytest.raises(DatabaseUnavailable) as first, store.session():
            pass
        assert f'database "{name}" does not exist' in str(first.value), first.value
        asked = len(waits)
        assert asked >= 1
        for _ in range(3):
            with pytest.raises(DatabaseUnavailable) as later, store.session():
                pass
            assert str(later.value) == str(first.value)
        assert len(waits) == asked, "a session waited on the pool while the server refused"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        with store.session() as conn:
            assert conn.execute("SELECT current_database() AS db").fetchone() == {"db": name}
        assert len(waits) > asked  # it asked the pool again
    finally:
        store.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
