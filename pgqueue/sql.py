"""Named SQL statements, loaded from the `sql/` folder that ships inside the package.

Statements are composed once per schema with `psycopg.sql`, so the configurable schema
name is always an escaped identifier, and values are always bound parameters.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import LiteralString, cast

from psycopg import sql

from pgqueue.errors import ConfigurationError

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def sql_root() -> Path:
    """The `sql/` folder: inside the installed wheel, or at the top of a source checkout."""
    packaged = resources.files("pgqueue") / "sql"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "sql"


def validate_schema(schema: str) -> str:
    if not SCHEMA_PATTERN.fullmatch(schema):
        raise ConfigurationError(
            f"invalid schema name {schema!r}: use lowercase letters, digits and underscores")
    return schema


def compose(text: str, schema: str) -> sql.Composed:
    """Fill `{schema}` (identifier) and `{schema_name}` (literal) into a statement."""
    # Our own files, never input: the one place text becomes a LiteralString.
    return sql.SQL(cast("LiteralString", text)).format(  # type: ignore[redundant-cast]
        schema=sql.Identifier(schema), schema_name=sql.Literal(schema))


def parse_named(text: str) -> dict[str, str]:
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@functools.cache
def _raw_queries(path: str) -> dict[str, str]:
    return parse_named(Path(path).read_text())


class Statements:
    """Attribute access to the named statements of one file, composed for one schema."""

    def __init__(self, schema: str, path: Path | None = None) -> None:
        self.schema = validate_schema(schema)
        file = path or sql_root() / "pgqueue" / "queries.sql"
        self._composed = {name: compose(text, self.schema)
                          for name, text in _raw_queries(str(file)).items()}

    def __getattr__(self, name: str) -> sql.Composed:
        try:
            return self._composed[name]
        except KeyError:
            raise AttributeError(f"no SQL statement named {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._composed)
