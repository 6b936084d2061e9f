"""Migrations: one upgrade at a time (an advisory lock), and applied files never change."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from pgqueue.errors import MigrationChecksumMismatch
from pgqueue.migrate import Migrator, discover


def test_an_upgrade_waits_for_the_migration_lock(empty_db_url: str) -> None:
    migrator = Migrator(empty_db_url, "pgqueue")
    outcome: list[object] = []

    def upgrade() -> None:
        try:
            outcome.append(migrator.upgrade())
        except BaseException as error:
            outcome.append(error)

    with psycopg.connect(empty_db_url, autocommit=True) as holder:
        # Another machine's upgrade holds the lock (session-level here; it conflicts with
        # the transaction-level lock the migrator takes on the same key).
        holder.execute("SELECT pg_advisory_lock(%s)", (migrator._lock_key(),))
        thread = threading.Thread(target=upgrade)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            waiting = 0
            while not waiting and thread.is_alive() and time.monotonic() < deadline:
                waiting = holder.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND objid::bigint = %s", (migrator._lock_key(),)).fetchone()[0]
                time.sleep(0.02)
            assert waiting == 1, f"the upgrade did not wait for the migration lock: {outcome}"
            assert holder.execute("SELECT to_regclass('pgqueue.jobs')").fetchone()[0] is None
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (migrator._lock_key(),))
            thread.join(60)
    (applied,) = outcome
    assert isinstance(applied, list)
    assert [m.version for m in applied] == [m.version for m in discover(migrator.directory)]


def test_an_edited_applied_migration_is_refused(empty_db_url: str, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    first = folder / "0001_things.sql"
    first.write_text("CREATE TABLE {schema}.things (id int);\n")
    migrator = Migrator(empty_db_url, "app_test", component="app", directory=folder)
    assert [m.name for m in migrator.upgrade()] == ["things"]
    assert migrator.upgrade() == []  # unchanged: nothing to do, nothing refused

    first.write_text("CREATE TABLE {schema}.things (id bigint);\n")  # edited after applying
    with pytest.raises(MigrationChecksumMismatch) as raised:
        migrator.upgrade()
    message = str(raised.value)
    assert str(first) in message and "changed after it was applied" in message
    assert "\n" not in message

    # Also when a new migration is pending: nothing of it is applied.
    (folder / "0002_more.sql").write_text("CREATE TABLE {schema}.more (id int);\n")
    with pytest.raises(MigrationChecksumMismatch):
        migrator.upgrade()
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('app_test.more')").fetchone()[0] is None

    first.write_text("CREATE TABLE {schema}.things (id int);\n")  # restored: upgrades again
    assert [m.name for m in migrator.upgrade()] == ["more"]
