"""The one database seam: connecting, translating psycopg errors, masking passwords."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from pgqueue.errors import DatabaseUnavailable

CONNECT_TIMEOUT = 10  # seconds; a down server is reported quickly, not after minutes

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?=@)",
                              re.IGNORECASE)
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Replace passwords in connection URLs or keyword strings (anywhere in `text`) by ***."""
    text = _PASSWORD_IN_URL.sub(lambda m: m.group("head") + "***", text)
    return _PASSWORD_KEYWORD.sub(lambda m: m.group(1) + "***", text)


def describe(conninfo: str) -> str:
    """host:port/dbname for messages, without credentials."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return mask_url(conninfo)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname', '')}"


def connect(conninfo: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect, or raise DatabaseUnavailable naming host and port (never the password)."""
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row, **kwargs)
    except psycopg.OperationalError as error:
        reason = mask_url(str(error).strip().splitlines()[0] if str(error).strip() else "")
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {describe(conninfo)}: {reason}") from None


def is_connection_error(error: BaseException) -> bool:
    return isinstance(error, psycopg.OperationalError | DatabaseUnavailable | psycopg.InterfaceError)


def query(conn: psycopg.Connection[Any], statement: Any, params: Any = None
          ) -> psycopg.Cursor[dict[str, Any]]:
    """Execute on any connection (a caller's may have another row factory); dict rows."""
    return conn.cursor(row_factory=dict_row).execute(statement, params)
