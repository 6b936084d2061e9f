"""Fixtures for the pipeline acceptance tests: a city web site, clerk's settings and CLI.

A `CitySite` is an index page of links to meeting PDFs, served by the `http_server`
fixture on 127.0.0.1; every PDF gets an ETag derived from its bytes, so changing a PDF
changes its ETag as a real web server would. `clerk_env` is the environment the CLI runs
with (the test database, storage and deploy directories in tmp_path, no .env file), and
`cli` runs the click CLI in-process with it.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from clerk.cli import main
from clerk.config import QUEUES, Settings, load_settings
from clerk.pipeline import Pipeline, build_pipeline
from pgqueue.db import connect
from tests.support.pipeline import LocalServer

REPO = Path(__file__).resolve().parents[2]
CLERK_BIN = REPO / ".venv" / "bin" / "clerk"


@dataclass
class CitySite:
    """One city's index page and the PDFs it links to, on the local HTTP server."""

    server: LocalServer
    name: str
    links: dict[str, str] = field(default_factory=dict)  # href -> link text
    extra_html: str = ""

    @property
    def index_path(self) -> str:
        return f"/{self.name}/index.html"

    @property
    def url(self) -> str:
        return self.server.url(self.index_path)

    def path(self, filename: str) -> str:
        return f"/{self.name}/{filename}"

    def add(self, filename: str, link_text: str, body: bytes, *,
            content_type: str = "application/pdf") -> str:
        """Publish a document (or replace it: its ETag changes with its bytes)."""
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        self.server.static(self.path(filename), body, content_type=content_type, etag=etag)
        return self.link(filename, link_text)

    def link(self, href: str, link_text: str) -> str:
        """A link on the index page, to anything (another scheme, a missing path...)."""
        self.links[href] = link_text
        self.publish()
        return href

    def publish(self) -> None:
        items = "\n".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>'
                          for href, text in self.links.items())
        body = (f"<!doctype html><html><body><h1>{self.name}</h1><ul>\n{items}\n</ul>"
                f"{self.extra_html}</body></html>").encode()
        self.server.static(self.index_path, body, content_type="text/html; charset=utf-8")

    def hits(self, filename: str) -> list[dict[str, str]]:
        """The request headers of every request the server saw for one document."""
        return [seen.headers for seen in self.server.requests if seen.path == self.path(filename)]


@pytest.fixture
def city(http_server: LocalServer) -> CitySite:
    site = CitySite(http_server, "springfield")
    site.publish()
    return site


@pytest.fixture
def clerk_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment a clerk command runs with in these tests."""
    return {
        "DATABASE_URL": db_url,
        "CLERK_STORAGE_DIR": str(tmp_path / "storage"),
        "CLERK_DEPLOY_DIR": str(tmp_path / "deploy"),
        "CLERK_EMBEDDED_DIR": str(tmp_path / "embedded"),
        "PGQUEUE_EMBEDDED_DIR": str(tmp_path / "embedded"),
        "CLERK_ENV_FILE": str(tmp_path / "no.env"),
        "CLERK_OCR_DPI": "150",
        "CLERK_HTTP_TIMEOUT": "2",
        "CLERK_LOG_LEVEL": "WARNING",
        "CLERK_RETRY_BACKOFF": "0.05",
        # The test sites are on 127.0.0.1, which clerk refuses to fetch by default.
        "CLERK_ALLOW_PRIVATE_HOSTS": "127.0.0.1",
    }


@pytest.fixture
def settings(clerk_env: dict[str, str]) -> Settings:
    return load_settings(None, clerk_env)


@pytest.fixture
def make_pipeline(db_url: str) -> Iterator[Callable[[Settings], Pipeline]]:
    """Pipelines bound to the test database, their connection pools closed at the end."""
    made: list[Pipeline] = []

    def make(settings: Settings) -> Pipeline:
        made.append(build_pipeline(settings, db_url))
        return made[-1]

    yield make
    for pipeline in made:
        pipeline.close()


@pytest.fixture
def pipeline(settings: Settings, make_pipeline: Callable[[Settings], Pipeline]) -> Pipeline:
    return make_pipeline(settings)


class Cli:
    """`clerk ...` in-process through CliRunner, with the test environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, ok: bool = True, input: str | None = None) -> Result:
        # The CLI points the root logger at its own stderr, which CliRunner closes after
        # the call: put pytest's handlers (caplog) back so later log lines are captured.
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            result = CliRunner().invoke(main, list(args), env=self.env, input=input,
                                        catch_exceptions=True)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"clerk {' '.join(args)} raised") from result.exception
        if ok:
            assert result.exit_code == 0, f"clerk {' '.join(args)}: {result.output}"
        else:
            assert result.exit_code != 0, f"clerk {' '.join(args)} succeeded: {result.output}"
            assert "Traceback" not in result.output
        return result


@pytest.fixture
def cli(clerk_env: dict[str, str]) -> Cli:
    return Cli(clerk_env)


def run_workers(pipeline: Pipeline, concurrency: int = 2) -> None:
    """Every queue, in this process, until there is nothing left to do."""
    code = pipeline.queue.work(list(QUEUES), concurrency=concurrency, burst=True,
                               poll_interval=0.2, install_signals=False)
    assert code == 0


def subprocess_env(clerk_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLERK_", "PGQUEUE_")) and k != "DATABASE_URL"}
    return {**env, **clerk_env}


def pages(database: Path, table: str) -> list[dict[str, Any]]:
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(
            f"SELECT * FROM [{table}] ORDER BY meeting, date, page")]


def search(database: Path, table: str, words: str) -> list[str]:
    """Ids of the pages whose text matches an FTS5 query."""
    with sqlite3.connect(database) as conn:
        return [row[0] for row in conn.execute(
            f"SELECT t.id FROM [{table}_fts] JOIN [{table}] t ON t.rowid = [{table}_fts].rowid"
            f" WHERE [{table}_fts] MATCH ? ORDER BY t.id", (words,))]


def history(db_url: str, schema: str = "pgqueue") -> list[dict[str, Any]]:
    """Every finished job, in the order it finished."""
    with connect(db_url) as conn:
        return conn.execute(
            f"SELECT id, queue, task, args, tag, state::text AS state, priority, last_error,"
            f" finished_at FROM {schema}.job_history ORDER BY finished_at, id").fetchall()
