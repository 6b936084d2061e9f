"""`clerk db upgrade --print`: the SQL of pgqueue's and clerk's pending migrations (the
script `pgqueue migrate --print` writes, per component), applied by another tool, leaves
the database as `clerk db upgrade` would."""

from __future__ import annotations

import psycopg

from tests.acceptance.conftest import Cli


def test_printed_migrations_applied_elsewhere(cli: Cli, empty_db_url: str,
                                              clerk_env: dict[str, str]) -> None:
    cli.env = {**clerk_env, "DATABASE_URL": empty_db_url}
    script = cli("db", "upgrade", "--print").output
    assert script.count("BEGIN;") == 2 and "-- pgqueue 0001_jobs" in script
    assert "-- clerk 0001_sites" in script
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(script.encode())
    assert cli("db", "upgrade").output.strip() == "already up to date"
    assert "(0 pending)" in cli("db", "current").output
    assert cli("db", "upgrade", "--print").output.count("INSERT INTO") == 0
