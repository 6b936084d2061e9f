"""clerk's tables in PostgreSQL (sites and documents), beside pgqueue's schema."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.db import connect, mask_url, query
from pgqueue.errors import ConfigurationError
from pgqueue.migrate import Migrator, discover
from pgqueue.sql import Statements, sql_root

CLERK_SCHEMA = "clerk"
UPGRADE_HINT = "run `clerk db upgrade` (as the owner)"


class NotMigrated(ConfigurationError):
    """The database lacks clerk's schema, or is behind this version of clerk."""


def statements() -> Statements:
    return _STATEMENTS


_STATEMENTS = Statements(CLERK_SCHEMA, sql_root() / "clerk" / "queries.sql")


def clerk_migrator(dsn: str) -> Migrator:
    return Migrator(dsn, CLERK_SCHEMA, component="clerk",
                    directory=sql_root() / "clerk" / "migrations")


def migrate_clerk(dsn: str) -> list[str]:
    return [f"{m.version:04d}_{m.name}" for m in clerk_migrator(dsn).upgrade()]


def require_migrated(*migrators: Migrator) -> None:
    """Raise NotMigrated unless every component is fully migrated. Reads only: a command
    that merely looks must not create schemas in the database it was pointed at."""
    behind = []
    applied_any = False
    for migrator in migrators:
        applied = {item.version for item in migrator.history()}  # one connection each
        applied_any = applied_any or bool(applied)
        pending = [m for m in discover(migrator.directory) if m.version not in applied]
        if pending:
            behind.append(f"{migrator.component} {len(pending)}")
    if not applied_any:
        raise NotMigrated(f"database not migrated: {UPGRADE_HINT}")
    if behind:
        raise NotMigrated(f"database schema is behind this clerk (pending migrations: "
                          f"{', '.join(behind)}): {UPGRADE_HINT}")


def explain_database_error(error: psycopg.Error, *, migrating: bool) -> str:
    """One line for a database error, password masked, with what to do when we know it."""
    lines = str(error).strip().splitlines()
    text = mask_url(lines[0] if lines else type(error).__name__)
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        if migrating:
            return f"database error: {text}: migrate as the owner (see sql/roles.sql)"
        return f"database error: {text}: grant this role clerk's privileges (see sql/roles.sql)"
    return f"database error: {text}"


def fetch_all(db: str | psycopg.Connection[Any], name: str,
              params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run a named statement on a connection (a pooled one, preferably) or a DSN."""
    if not isinstance(db, str):
        return query(db, getattr(_STATEMENTS, name), params).fetchall()
    with connect(db) as conn:
        return query(conn, getattr(_STATEMENTS, name), params).fetchall()


def fetch_one(db: str | psycopg.Connection[Any], name: str,
              params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    rows = fetch_all(db, name, params)
    return rows[0] if rows else None


def execute(conn: psycopg.Connection[Any], name: str, params: dict[str, Any] | None = None
            ) -> psycopg.Cursor[dict[str, Any]]:
    return query(conn, getattr(_STATEMENTS, name), params)


__all__ = ["CLERK_SCHEMA", "UPGRADE_HINT", "NotMigrated", "clerk_migrator", "execute",
           "explain_database_error", "fetch_all", "fetch_one", "migrate_clerk",
           "require_migrated", "statements"]
