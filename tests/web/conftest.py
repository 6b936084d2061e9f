"""The dashboard against the real test PostgreSQL: a Queue with a few tasks, jobs made by
running them (a worker in burst mode), and an HTTP client of the app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from pgqueue import PermanentFailure, Queue
from pgqueue.web import create_app


def make_queue(dsn: str) -> Queue:
    queue = Queue(dsn)

    @queue.task(name="web.ok", queue="default")
    def ok(**args: Any) -> None:
        return None

    @queue.task(name="web.boom", queue="ocr", max_attempts=1)
    def boom(**args: Any) -> None:
        raise PermanentFailure(args.get("message", "boom"))

    return queue


@pytest.fixture
def wq(db_url: str) -> Iterator[Queue]:
    queue = make_queue(db_url)
    yield queue
    queue.close()


@pytest.fixture
def client(wq: Queue) -> Iterator[TestClient]:
    with TestClient(create_app(wq)) as c:
        yield c


@pytest.fixture
def ro_client(wq: Queue) -> Iterator[TestClient]:
    with TestClient(create_app(wq, read_only=True)) as c:
        yield c


def run_all(queue: Queue) -> None:
    """Run every runnable job now (a worker in this process, burst mode)."""
    queue.work(["default", "ocr"], burst=True, install_signals=False)


def csrf(client: TestClient, path: str = "/jobs") -> str:
    """The CSRF token of a page (its cookie is kept by the client)."""
    import re
    html = client.get(path).text
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)
