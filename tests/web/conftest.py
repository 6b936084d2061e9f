"""The dashboard against the real test PostgreSQL: a Queue with a few tasks, jobs made by
running them (a worker in burst mode), and an HTTP client of the app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from pgqueue import PermanentFailure, Queue
from pgqueue.web import create_app

TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
SCRIPT = "<script>alert(1)</script>"


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)

    @queue.task(name="web.ok", queue="default")
    def ok(**args: Any) -> None:
        return None

    @queue.task(name="web.boom", queue="ocr", max_attempts=1)
    def boom(**args: Any) -> None:
        raise PermanentFailure(args.get("message", "boom"))

    @queue.task(name="web.after", queue="default")
    def after(**args: Any) -> None:
        return None

    return queue


@pytest.fixture
def wq(db_url: str) -> Iterator[Queue]:
    queue = make_queue(db_url)
    yield queue
    queue.close()


@pytest.fixture
def web(wq: Queue) -> Iterator[TestClient]:
    with TestClient(create_app(wq)) as c:
        yield c


@pytest.fixture
def ro_web(wq: Queue) -> Iterator[TestClient]:
    with TestClient(create_app(wq, read_only=True)) as c:
        yield c


def run_all(queue: Queue, queues: tuple[str, ...] = ("default", "ocr")) -> None:
    """Run every runnable job now (a worker in this process, burst mode)."""
    queue.work(list(queues), burst=True, install_signals=False)


def token(client: TestClient, path: str = "/jobs") -> str:
    """The CSRF token of a page (its GET also sets the cookie the token is bound to)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = TOKEN.search(page.text)
    assert found, f"no CSRF field on {path}"
    return found.group(1)


def states(queue: Queue) -> dict[int, str]:
    with queue.session() as conn:
        rows = conn.execute(f"SELECT id, state::text FROM {queue.schema}.all_jobs").fetchall()
    return {int(r["id"]): str(r["state"]) for r in rows}
