"""Numbered, forward-only migrations, applied in order inside one transaction each.

A transaction-level advisory lock serialises concurrent upgrades (two machines starting at
once): the second waits, then finds the migrations already recorded and does nothing.

Each applied migration's SHA-256 is recorded. An applied migration whose file changed since
is refused (`MigrationChecksumMismatch`, one line naming the file): an edited migration
never reaches the databases that already ran the old text, so the schema would silently
depend on which version a database saw. Changes go in a new numbered file.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgqueue.db import connect
from pgqueue.errors import MigrationChecksumMismatch
from pgqueue.sql import compose, sql_root, validate_schema

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def discover(directory: Path) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return found


class Migrator:
    """Applies the migrations of one component (`pgqueue`, or an application's own)."""

    def __init__(self, conninfo: str, schema: str, component: str = "pgqueue",
                 directory: Path | None = None) -> None:
        self.conninfo = conninfo
        self.schema = validate_schema(schema)
        self.component = component
        self.directory = directory or sql_root() / component / "migrations"
        self._table = sql.Identifier(self.schema, "migrations")

    def _lock_key(self) -> int:
        # One advisory lock per schema and component; crc32 keeps it stable across runs.
        return zlib.crc32(f"pgqueue-migrate:{self.schema}:{self.component}".encode())

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (component text NOT NULL, version integer NOT NULL,"
            " name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        ).format(self._table))

    def history(self) -> list[AppliedMigration]:
        with connect(self.conninfo) as conn:
            exists = conn.execute("SELECT to_regclass(%s) AS t",
                                  (f"{self.schema}.migrations",)).fetchone()
            if not exists or exists["t"] is None:
                return []
            rows = conn.execute(sql.SQL(
                "SELECT version, name, checksum, applied_at FROM {} WHERE component = %s"
                " ORDER BY version").format(self._table), (self.component,)).fetchall()
        return [AppliedMigration(**row) for row in rows]

    def current(self) -> int | None:
        applied = self.history()
        return applied[-1].version if applied else None

    def pending(self) -> list[Migration]:
        done = {m.version for m in self.history()}
        return [m for m in discover(self.directory) if m.version not in done]

    def _verify(self, migration: Migration, stored: str) -> None:
        if stored != migration.checksum:
            raise MigrationChecksumMismatch(
                f"migration {migration.path} was changed after it was applied to schema"
                f" {self.schema!r} (recorded sha256 {stored[:12]}, file {migration.checksum[:12]});"
                " restore it and put the change in a new migration")

    def verify(self) -> None:
        """Raise MigrationChecksumMismatch if an applied migration's file has changed."""
        recorded = {m.version: m.checksum for m in self.history()}
        for migration in discover(self.directory):
            if migration.version in recorded:
                self._verify(migration, recorded[migration.version])

    def upgrade(self) -> list[Migration]:
        """Apply every pending migration; returns those applied by this call.

        First checks the applied ones against their files (read-only, so a role without
        CREATE can start workers), and again under the lock for each migration."""
        applied: list[Migration] = []
        self.verify()
        if not self.pending():
            return applied
        for migration in discover(self.directory):
            with connect(self.conninfo) as conn, conn.transaction():
                self._prepare(conn)
                seen = conn.execute(sql.SQL(
                    "SELECT checksum FROM {} WHERE component = %s AND version = %s"
                ).format(self._table), (self.component, migration.version)).fetchone()
                if seen is not None:
                    self._verify(migration, seen["checksum"])
                    continue
                conn.execute(compose(migration.path.read_text(), self.schema))
                conn.execute(sql.SQL(
                    "INSERT INTO {} (component, version, name, checksum) VALUES (%s, %s, %s, %s)"
                ).format(self._table), (self.component, migration.version, migration.name,
                                        migration.checksum))
                applied.append(migration)
        return applied
