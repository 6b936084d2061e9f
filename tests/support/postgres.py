"""A real PostgreSQL for the tests: one cluster per session, one fresh database per test.

The cluster is started here (initdb + pg_ctl on 127.0.0.1, fsync off), unless
PGQUEUE_TEST_DATABASE_URL points at a server to use instead. A template database is
migrated once; each test gets `CREATE DATABASE ... TEMPLATE`, which takes milliseconds.
Names are checked to carry `test`, so no fixture can touch a real deployment's database.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue import Queue
from pgqueue.localserver import LocalServer

TEMPLATE = "pgqueue_test_template"
_counter = itertools.count()


@pytest.fixture(autouse=True)
def _no_real_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test can reach a configured deployment through the environment."""
    for name in list(os.environ):
        if name.startswith("CLERK_") or name == "DATABASE_URL":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalServer | None]:
    if os.environ.get("PGQUEUE_TEST_DATABASE_URL"):
        yield None
        return
    with LocalServer(settings={"fsync": "off", "synchronous_commit": "off",
                               "full_page_writes": "off"}) as server:
        yield server


@pytest.fixture(scope="session")
def admin_url(pg_server: LocalServer | None) -> str:
    if pg_server is None:
        return os.environ["PGQUEUE_TEST_DATABASE_URL"]
    return pg_server.url("postgres")


def database_url(admin: str, name: str) -> str:
    assert "test" in name, f"refusing to use database {name!r}: not a test database"
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    return make_conninfo(**params)


@pytest.fixture(scope="session")
def template_url(admin_url: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = database_url(admin_url, TEMPLATE)
    Queue(url).migrate()
    migrate_application(url)
    return url


def migrate_application(url: str) -> None:
    """The clerk application's own migrations, when the clerk package provides them."""
    try:
        from clerk.db import migrate_clerk
    except ImportError:
        return
    migrate_clerk(url)


@pytest.fixture
def empty_db_url(admin_url: str) -> Iterator[str]:
    """A new, empty (unmigrated) database."""
    name = f"pgqueue_test_empty_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_url(admin_url, name)
    _drop(admin_url, name)


@pytest.fixture
def db_url(admin_url: str, template_url: str) -> Iterator[str]:
    """A new database, migrated (a copy of the template)."""
    name = f"pgqueue_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(TEMPLATE)))
    yield database_url(admin_url, name)
    _drop(admin_url, name)


def _drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def queue(db_url: str) -> Iterator[Queue]:
    queue = Queue(db_url)
    yield queue
    queue.close()


@pytest.fixture
def app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    """The tests' pgqueue application (tests.support.worker_app) bound to a fresh database."""
    from tests.support import worker_app

    monkeypatch.setenv("PGQUEUE_APP_DSN", db_url)
    monkeypatch.setattr(worker_app.queue, "dsn", db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(worker_app.EFFECTS_DDL)
    yield worker_app.queue
    worker_app.queue.close()


def effects(db_url: str) -> list[tuple[int, int, int]]:
    """(job_id, item, attempt) of every recorded side effect."""
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT job_id, item, attempt FROM effects ORDER BY id").fetchall()
