"""The outside attacks of issue 23, clerk side: each reproduces what was done and checks
that nothing is lost, no second run starts, and no secret or internal response leaks.

Everything is real: PostgreSQL, HTTP servers on 127.0.0.1, PDFs, Tesseract, the CLI.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clerk.compile import DATABASE_FILE
from clerk.config import Settings, load_settings
from clerk.pipeline import Pipeline
from pgqueue import PermanentFailure
from pgqueue.db import connect
from tests.acceptance.conftest import CitySite, Cli, history, pages, run_workers
from tests.support.pipeline import PdfFactory


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    event = threading.Event()
    deadline = 0.0
    while deadline < timeout:
        value = condition()
        if value:
            return value
        event.wait(0.05)
        deadline += 0.05
    raise AssertionError(f"timed out waiting for {what}")


def rows(db_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with connect(db_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def fetch_jobs(db_url: str, site: str) -> list[dict[str, Any]]:
    return rows(db_url, "SELECT id FROM pgqueue.all_jobs WHERE queue = 'fetch' AND tag = %s",
                (site,))


# ---------------------------------------------------------------- 16: one run per site


def test_enqueue_that_stalls_between_check_and_insert_starts_no_second_run(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, settings: Settings, db_url: str,
        make_pipeline: Callable[[Settings], Pipeline], monkeypatch: pytest.MonkeyPatch) -> None:
    """Enqueue A checks "no run in progress", then stalls before its insert; enqueue B
    starts a run and its fetch fans out (the fetch job, and its dedupe key, are gone);
    then A wakes up. A must join B's run, not start a second one."""
    city.add("a.pdf", "City Council Agenda 2024-03-05",
             pdf_factory.text_pdf("a.pdf", ["Agenda: the heron survey"]).read_bytes())
    cli("site", "add", "springfield", "--url", city.url)
    stalled, proceed = threading.Event(), threading.Event()
    first, second = make_pipeline(settings), make_pipeline(settings)
    real_enqueue = first.queue.enqueue

    def stalling_enqueue(*args: Any, **kwargs: Any) -> int:
        stalled.set()
        assert proceed.wait(120)
        return real_enqueue(*args, **kwargs)

    monkeypatch.setattr(first.queue, "enqueue", stalling_enqueue)
    results: dict[str, Any] = {}
    a = threading.Thread(target=lambda: results.update(a=first.enqueue_site("springfield")))
    a.start()
    assert stalled.wait(60)
    b = threading.Thread(target=lambda: results.update(b=second.enqueue_site("springfield")))
    b.start()

    def b_done_or_blocked() -> bool:
        waiting = rows(db_url, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return "b" in results or bool(waiting)

    wait_until(b_done_or_blocked, "enqueue B to finish or to wait for A")
    if "b" in results:  # B was not held back: let its fetch run and fan out
        assert not results["b"]["joined"]
        assert second.queue.work(["fetch"], burst=True, poll_interval=0.2,
                                 install_signals=False) == 0
    proceed.set()
    a.join(60)
    b.join(60)
    assert sorted(r["joined"] for r in results.values()) == [False, True]
    assert len(fetch_jobs(db_url, "springfield")) == 1
