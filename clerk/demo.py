"""`clerk demo`: the whole pipeline on a bundled sample site, with no set-up.

Serves `clerk/sample_site/` (real agendas and minutes, one of them a scan) on 127.0.0.1,
adds it as the site `sample-city`, runs a fetch, every page's OCR, extraction, compile and
deploy with in-process workers until there is nothing left, then prints where the database
is and a full-text search on it.

The demo always runs on the embedded PostgreSQL, in a database of its own (`clerk_demo`),
whatever DATABASE_URL says: a demo must not add a site with a dead URL to a real
deployment, and its burst worker, which takes every queue's jobs, must find only the
demo's. Anything that fails for good (a page, a stage) is named, and the exit code is 1.
"""

from __future__ import annotations

import functools
import http.server
import logging
import os
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from clerk.compile import DATABASE_FILE
from clerk.config import QUEUES, Settings
from clerk.pipeline import Pipeline, build_pipeline
from clerk.sites import site_dir
from clerk.status import site_status
from pgqueue.embedded import embedded_url
from pgqueue.errors import PgQueueError

log = logging.getLogger("clerk.demo")

DEMO_SITE = "sample-city"
DEMO_DATABASE = "clerk_demo"
DEMO_QUERY = "council"
FAILURES_SHOWN = 1000  # the sample site has a few dozen pages: every failure fits

Echo = Callable[[str], None]


class DemoError(Exception):
    """The demo cannot run (an unwritable directory, no database): one line for the user."""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


class _QuietServer(http.server.ThreadingHTTPServer):
    """A client that hangs up mid-response (BrokenPipeError) is no news to the user:
    the fetch reports what it did not get. socketserver would print a traceback."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("demo HTTP: client %s went away: %s", client_address, sys.exc_info()[1])


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A static HTTP server on 127.0.0.1 (a free port) for `directory`; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="demo-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def sample_site_dir() -> Path:
    return Path(str(resources.files("clerk") / "sample_site"))


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def check_writable(directory: Path, setting: str) -> None:
    """Create `directory` and write a file in it, or raise DemoError naming the setting."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise DemoError(f"{setting} {directory} is not writable: "
                        f"{error.strerror or error}; set {setting} to a directory of yours"
                        ) from None


def run_demo(settings: Settings, *, workers: int | None = None, echo: Echo = print) -> int:
    """Run the demo; 0 when every stage succeeded, 1 when something failed (named in the
    output). Raises DemoError when it cannot start."""
    check_writable(settings.storage_dir, "STORAGE_DIR")
    check_writable(settings.deploy_dir, "DEPLOY_DIR")
    quieted = {name: logging.getLogger(name).level for name in ("pgqueue", "clerk")}
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        for name in quieted:
            logging.getLogger(name).setLevel(logging.WARNING)  # one line a job drowns the story
    try:
        return _run_quietly(settings, workers, echo)
    finally:
        for name, level in quieted.items():  # the demo may run inside a larger program
            logging.getLogger(name).setLevel(level)


def _run_quietly(settings: Settings, workers: int | None, echo: Echo) -> int:
    try:
        dsn = embedded_url(settings.embedded_dir, database=DEMO_DATABASE)
        pipeline = build_pipeline(settings, dsn)
    except PgQueueError as error:
        raise DemoError(str(error)) from None
    try:
        pipeline.migrate()
        return _run(pipeline, workers or default_workers(), echo)
    except PgQueueError as error:
        raise DemoError(str(error)) from None
    finally:
        pipeline.close()


def _run(pipeline: Pipeline, workers: int, echo: Echo) -> int:
    settings = pipeline.settings
    echo(f"database: embedded PostgreSQL in {settings.embedded_dir}, database {DEMO_DATABASE}"
         " (the demo's own: DATABASE_URL is not used)")
    echo(f"storage:  {settings.storage_dir}")
    # Leftovers of an interrupted demo would join this run; the database is the demo's own.
    pipeline.queue.cancel(tag=DEMO_SITE)
    with serve_directory(sample_site_dir()) as url:
        pipeline.allow_url(url)  # its own server on 127.0.0.1, refused by default (clerk.network)
        pipeline.fetch_all("add_site", {
            "subdomain": DEMO_SITE, "name": "Sample City", "source_url": url + "index.html",
            "source_kind": "index", "token": None})
        echo(f"serving the sample site at {url}index.html")
        result = pipeline.enqueue_site(DEMO_SITE, "high")
        # An interrupted demo's jobs still running (their leases not yet expired) are joined.
        first_job = 0 if result["joined"] else int(result["job_id"])
        echo("joined the run in progress" if result["joined"] else "enqueued a run")
        pipeline.queue.work(list(QUEUES), concurrency=workers, burst=True, poll_interval=0.5)
    for stage in site_status(pipeline, DEMO_SITE)["stages"]:
        echo(f"  {stage['stage']:<17} {stage['state']}")
    failures = [job for job in pipeline.queue.failed_jobs(tag=DEMO_SITE, limit=FAILURES_SHOWN)
                if job["final"] and job["id"] >= first_job]
    database = site_dir(settings.storage_dir, DEMO_SITE) / DATABASE_FILE
    deployed = Path(settings.deploy_dir) / f"{DEMO_SITE}.db"
    if failures:
        echo(f"\nthe run failed: {len(failures)} job(s) failed for good")
        for job in sorted(failures, key=lambda job: job["id"]):
            echo(f"  ✗ {_describe(job)}: {_error_line(job['last_error'])}")
        return 1
    if not database.is_file():
        echo(f"\nthe run failed: no meetings database was written ({database})")
        return 1
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
    beside = Path(sys.executable).with_name("sqlite-utils")  # installed with clerk
    search = str(beside) if beside.is_file() else "sqlite-utils"
    echo(f"\nexplore it: {search} search {database} agendas {DEMO_QUERY} -t")
    echo(f"        or: pip install datasette && datasette {database}")
    echo("the embedded PostgreSQL keeps running; stop it with: clerk db stop-embedded")
    return 0


def _describe(job: dict[str, Any]) -> str:
    """`page 3 of minutes Planning Commission 2024-02-01` for a page, else the stage."""
    args = job.get("args") or {}
    if "page" in args:
        return (f"page {args['page']} of {args.get('kind', '')} {args.get('meeting', '')} "
                f"{args.get('date', '')}").replace("  ", " ")
    return f"{job['queue']} ({job['task']})"


def _error_line(text: str | None) -> str:
    """The last line of a recorded error: the exception's message, not the traceback."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no error recorded"
