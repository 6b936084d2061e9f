"""clerkd against a server of 40 connections (issue 21): 16 OCR slots run a site's pages
and leave room for the CLI; clerkd says at start what it will open against what the
server allows, and refuses to start when it alone would need more than that."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue.localserver import LocalServer
from tests.support.pipeline import LocalServer as HttpServer
from tests.support.pipeline import PdfFactory

VENV_BIN = Path(sys.executable).parent
MAX_CONNECTIONS = 40


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def small_server() -> Iterator[LocalServer]:
    with LocalServer(settings={"fsync": "off", "max_connections": str(MAX_CONNECTIONS),
                               "superuser_reserved_connections": "3"}) as server:
        yield server


@pytest.fixture
def env(small_server: LocalServer, tmp_path: Path) -> dict[str, str]:
    url = small_server.url("postgres")
    name = f"clerk_test_conn_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("CLERK_", "PGQUEUE_")) and key != "DATABASE_URL"}
    clean.update({"DATABASE_URL": small_server.url(name),
                  "CLERK_STORAGE_DIR": str(tmp_path / "sites"),
                  "CLERK_DEPLOY_DIR": str(tmp_path / "deploy"),
                  "CLERK_ENV_FILE": str(tmp_path / "none.env"), "CLERK_POLL_INTERVAL": "0.5",
                  "CLERK_LEASE_SECONDS": "10", "CLERK_ALLOW_PRIVATE_HOSTS": "127.0.0.1",
                  "CLERK_OCR_DPI": "100", "OCR_WORKERS": "16", "FETCH_WORKERS": "1",
                  "EXTRACTION_WORKERS": "1", "COMPILATION_WORKERS": "1",
                  "DEPLOY_WORKERS": "1"})
    return clean


def clerk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "clerk"), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def server_connections(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity"
                           " WHERE backend_type = 'client backend'").fetchone()
    assert row is not None
    return int(row[0]) - 1  # not this one


def test_sixteen_ocr_slots_run_within_40_connections_and_leave_room_for_the_cli(
        env: dict[str, str], http_server: HttpServer, pdf_factory: PdfFactory,
        tmp_path: Path) -> None:
    links = []
    for number in range(3):
        pdf = pdf_factory.text_pdf(f"minutes{number}.pdf", [
            f"Page {page} of meeting {number}. Motion by Councilmember Diaz, seconded by "
            "Councilmember Lee. Ayes: Diaz, Lee. Passed 2-0." for page in range(12)])
        http_server.static(f"/minutes{number}.pdf", pdf.read_bytes())
        links.append(f'<a href="/minutes{number}.pdf">City Council Minutes 2024-03-0{number + 1}</a>')
    http_server.static("/index.html", ("<html><body>" + "".join(links) + "</body></html>").encode(),
                       content_type="text/html")
    url = env["DATABASE_URL"]
    assert clerk(env, "db", "upgrade").returncode == 0
    added = clerk(env, "site", "add", "springfield", "--url", http_server.url("/index.html"))
    assert added.returncode == 0, added.stderr
    log = tmp_path / "clerkd.log"
    with log.open("w") as output:
        clerkd = subprocess.Popen([str(VENV_BIN / "clerkd")], env=env, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "connections: this clerkd opens at most" in log.read_text(),
                 "clerkd's start line")
        assert clerk(env, "enqueue", "springfield").returncode == 0
        most = 0
        statuses = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            most = max(most, server_connections(url))
            if statuses < 3:  # the CLI works while clerkd runs the site
                shown = clerk(env, "status")
                assert shown.returncode == 0, shown.stderr
                assert "connections:" in shown.stdout
                statuses += 1
            with psycopg.connect(url) as conn:
                done = conn.execute("SELECT count(*) FROM pgqueue.job_history WHERE"
                                    " task = 'clerk.deploy' AND state = 'succeeded'").fetchone()
            if done and done[0]:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the site never deployed: {log.read_text()[-3000:]}")
        with psycopg.connect(url) as conn:
            failed = conn.execute("SELECT count(*) FROM pgqueue.job_history"
                                  " WHERE state <> 'succeeded'").fetchone()
            pages = conn.execute("SELECT count(*) FROM pgqueue.job_history"
                                 " WHERE task = 'clerk.ocr_page'").fetchone()
            slots = conn.execute("SELECT concurrency FROM pgqueue.active_workers"
                                 " WHERE 'ocr' = ANY (queues)").fetchall()
        assert failed == (0,) and pages == (36,) and slots == [(16,)]
        # 16 OCR slots and four other queues, with the CLI beside: room to spare.
        assert 15 <= most <= MAX_CONNECTIONS - 3 - 5, most
    finally:
        clerkd.send_signal(signal.SIGTERM)
        clerkd.wait(90)
    text = log.read_text()
    assert "too many clients" not in text and "Traceback" not in text, text[-3000:]


def test_a_clerkd_that_could_never_fit_refuses_to_start_in_one_line(
        env: dict[str, str]) -> None:
    assert clerk(env, "db", "upgrade").returncode == 0
    greedy = {**env, "OCR_WORKERS": "40", "JOB_CONNECTIONS": "40", "CLERK_LOG_LEVEL": "WARNING"}
    result = subprocess.run([str(VENV_BIN / "clerkd")], env=greedy, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: connections: this clerkd opens at"
                                                   " most"), result.stderr
    assert f"max_connections {MAX_CONNECTIONS} - 3 reserved" in lines[0]
    assert "too many" in lines[0]


def test_a_clerkd_that_fits_only_without_the_connections_in_use_warns(
        small_server: LocalServer, env: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    from clerk.config import load_settings
    from clerk.daemon import connection_check, planned_connections
    from clerk.pipeline import build_pipeline

    settings = load_settings(None, env)
    total, _ = planned_connections(settings, metrics=False)
    assert total <= MAX_CONNECTIONS - 3  # 16 OCR slots and four queues fit alone
    pipeline = build_pipeline(settings, env["DATABASE_URL"])
    others = [psycopg.connect(small_server.url("postgres")) for _ in range(MAX_CONNECTIONS - 3 - total + 1)]
    try:
        line = connection_check(settings, pipeline, metrics=False)
    finally:
        for conn in others:
            conn.close()
        pipeline.close()
    assert line.startswith(f"connections: this clerkd opens at most {total}; the server allows 37")
    warned = [r for r in caplog.records if getattr(r, "action", "") == "connections_short"]
    assert len(warned) == 1 and "not enough left" in warned[0].getMessage()
