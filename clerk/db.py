"""clerk's tables in PostgreSQL (sites and documents), beside pgqueue's schema."""

from __future__ import annotations

from typing import Any

import psycopg

from pgqueue.db import connect, query
from pgqueue.migrate import Migrator
from pgqueue.sql import Statements, sql_root

CLERK_SCHEMA = "clerk"


def statements() -> Statements:
    return _STATEMENTS


_STATEMENTS = Statements(CLERK_SCHEMA, sql_root() / "clerk" / "queries.sql")


def clerk_migrator(dsn: str) -> Migrator:
    return Migrator(dsn, CLERK_SCHEMA, component="clerk",
                    directory=sql_root() / "clerk" / "migrations")


def migrate_clerk(dsn: str) -> list[str]:
    return [f"{m.version:04d}_{m.name}" for m in clerk_migrator(dsn).upgrade()]


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


__all__ = ["CLERK_SCHEMA", "clerk_migrator", "execute", "fetch_all", "fetch_one",
           "migrate_clerk", "statements"]
