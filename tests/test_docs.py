"""Docs, packaging and schema stay true: README's CLI reference, monitoring queries, the
public API, the schema snapshot, and the wheel (with its SQL) installing on its own."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg
import pytest

import pgqueue
from pgqueue.localserver import find_binary
from pgqueue.sql import parse_named

ROOT = Path(__file__).resolve().parent.parent


def test_readme_command_reference_is_current() -> None:
    result = subprocess.run([sys.executable, "-m", "cogapp", "--check", "README.md"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, "README is stale: run `.venv/bin/cog -r README.md`\n" + \
        result.stdout + result.stderr


def test_readme_opens_with_the_demo_and_the_tests() -> None:
    commands = re.findall(r"^bash \.ci/setup && (\S+ \S*)", (ROOT / "README.md").read_text(), re.M)
    assert commands[:2] == [".venv/bin/clerk demo", ".venv/bin/pytest "]
    assert ".venv/bin/pytest" in (ROOT / ".ci" / "run").read_text()


def test_public_api_is_pinned() -> None:
    assert pgqueue.__all__ == [
        "Backoff", "DatabaseUnavailable", "DuplicateJob", "GroupExists", "GroupSealed", "Job",
        "JobCancelled", "JobContext", "JobInterrupted", "JobNotFound", "JobSpec", "JobState",
        "JobTimeout", "PermanentFailure", "PgQueueError", "Queue", "SerializationError", "Task",
        "UnknownTask", "current_job"]
    for name in pgqueue.__all__:
        assert getattr(pgqueue, name) is not None


def test_monitoring_queries_run(db_url: str) -> None:
    text = (ROOT / "sql" / "monitoring.sql").read_text()
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", text).split(";") if s.strip()]
    assert len(statements) >= 8
    with psycopg.connect(db_url) as conn:
        for statement in statements:
            conn.execute(statement).fetchall()


def test_every_named_statement_parses(db_url: str) -> None:
    """Each statement of queries.sql is valid SQL against the migrated schema (PREPARE
    checks names and types without running it)."""
    from pgqueue.sql import Statements, sql_root
    statements = Statements("pgqueue")
    clerk = Statements("clerk", sql_root() / "clerk" / "queries.sql")
    names = parse_named((sql_root() / "pgqueue" / "queries.sql").read_text())
    assert set(names) == set(statements.names())
    with psycopg.connect(db_url) as conn:
        for source in (statements, clerk):
            for name in source.names():
                text = getattr(source, name).as_string(conn)
                if text.startswith("COPY"):
                    continue  # not preparable; exercised by every bulk enqueue
                text = re.sub(r"%\((\w+)\)s", "NULL", text)
                conn.execute(f"PREPARE check_{name} AS {text}")
                conn.execute(f"DEALLOCATE check_{name}")


def dump_schema(db_url: str) -> str:
    result = subprocess.run([find_binary("pg_dump"), "--schema-only", "--no-owner",
                             "--no-privileges", "--schema=pgqueue", "--schema=clerk", db_url],
                            capture_output=True, text=True, check=True)
    lines = [line for line in result.stdout.splitlines()
             if line and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config",
                                                      "\\restrict", "\\unrestrict"))]
    return "\n".join(lines) + "\n"


def test_schema_snapshot_matches_the_migrations(db_url: str) -> None:
    snapshot = ROOT / "sql" / "schema.snapshot.sql"
    current = dump_schema(db_url)
    if not snapshot.exists():
        pytest.fail(f"no snapshot: write it with the schema below\n{current}")
    assert current == snapshot.read_text(), (
        "the migrated schema changed: review the diff, then refresh sql/schema.snapshot.sql "
        "(python -c 'from tests.test_docs import refresh_snapshot; refresh_snapshot()')")


def test_wheel_ships_its_sql_and_migrates_on_its_own(tmp_path: Path, empty_db_url: str) -> None:
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                            "--outdir", str(tmp_path / "dist"), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("clerk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "pgqueue/sql/pgqueue/migrations/0001_jobs.sql" in names
    assert "pgqueue/sql/clerk/queries.sql" in names
    assert "clerk/service_templates/systemd/clerkd.service" in names
    assert "clerk/sample_site/index.html" in names
    site = tmp_path / "site"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import pgqueue, clerk.db;"
              "assert pgqueue.__file__.startswith(sys.argv[1]), pgqueue.__file__;"
              "print(pgqueue.Queue(sys.argv[2]).migrate(), clerk.db.migrate_clerk(sys.argv[2]))")
    run = subprocess.run([sys.executable, "-c", script, str(site), empty_db_url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "0001_jobs" in run.stdout and "0001_sites" in run.stdout


def refresh_snapshot() -> None:  # pragma: no cover - a maintainer's helper
    from pgqueue.localserver import LocalServer
    from tests.support.postgres import migrate_application
    with LocalServer() as server:
        url = server.url()
        pgqueue.Queue(url).migrate()
        migrate_application(url)
        (ROOT / "sql" / "schema.snapshot.sql").write_text(dump_schema(url))
