"""The one database seam: connecting, running statements, translating psycopg errors,
masking passwords, and reporting an outage once.

Every statement pgqueue runs goes through `query()` (the `JobStore` calls it), inside
`translate_errors()`: a lost or refused connection becomes `DatabaseUnavailable` (one line,
no password), any other psycopg error `DatabaseError` with the original as its cause.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from pgqueue.errors import DatabaseError, DatabaseUnavailable
from pgqueue.jobs import UndecodableArgs

CONNECT_TIMEOUT = 10  # seconds; a down server is reported quickly, not after minutes

_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]*)(?=@)",
                              re.IGNORECASE)
_PASSWORD_KEYWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


# A password with an unencoded space or '/' is not a valid URL's: libpq's parse error quotes
# a piece of it ('unexpected spaces found in "pa ss"'), or parses it as a port and host.
# So the passwords of every DSN this process was given are remembered, leniently (up to
# the last '@'), with their pieces, and masked wherever they appear.
_LENIENT_URL_PASSWORD = re.compile(r"^\s*[a-z][a-z0-9+.-]*://[^:@]*:(?P<secret>.*)@",
                                   re.IGNORECASE | re.DOTALL)
_SECRET_SEPARATORS = re.compile(r"[\s/@?#:]+")
_MIN_SECRET_PIECE = 4
_secrets: set[str] = set()


def remember_secrets(conninfo: str) -> None:
    """Note the password of `conninfo` (and its pieces) so `mask_url` hides it anywhere,
    even in an error that quotes a fragment of an unparseable URL."""
    found = [m.group("secret") for m in [_LENIENT_URL_PASSWORD.match(conninfo)] if m]
    found += [m.group(2).strip("'") for m in _PASSWORD_KEYWORD.finditer(conninfo)]
    for secret in found:
        cuts = [0, len(secret)]
        for separator in _SECRET_SEPARATORS.finditer(secret):
            cuts += [separator.start(), separator.end()]
        cuts = sorted(set(cuts))
        for start in cuts:
            for end in cuts:
                piece = secret[start:end].strip()
                if len(piece) >= _MIN_SECRET_PIECE:
                    _secrets.add(piece)


def mask_url(text: str) -> str:
    """Replace passwords in connection URLs or keyword strings (anywhere in `text`) by ***,
    and every remembered password or piece of one (`remember_secrets`)."""
    text = _PASSWORD_IN_URL.sub(lambda m: m.group("head") + "***", text)
    text = _PASSWORD_KEYWORD.sub(lambda m: m.group(1) + "***", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def first_line(error: BaseException) -> str:
    """The first line of an error, without passwords: libpq's messages span several lines
    ("server closed the connection unexpectedly\\n\\tThis probably means...")."""
    text = str(error).strip()
    return mask_url(text.splitlines()[0] if text else type(error).__name__)


def describe(conninfo: str) -> str:
    """host:port/dbname for messages, without credentials."""
    remember_secrets(conninfo)
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return mask_url(conninfo)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return mask_url(f"{host}:{port}/{params.get('dbname', '')}")


def without_jit(conninfo: str) -> str:
    """The `options` for a session to PostgreSQL itself: the conninfo's own (or PGOPTIONS),
    plus `jit=off`. pgqueue's statements are short and indexed, and JIT compilation only
    slows them: over millions of history rows the estimates pass jit_above_cost, and a
    status read spent 1-2 s compiling. (Not through a pooler: PgBouncer refuses `options`.)"""
    given = conninfo_to_dict(conninfo).get("options") or os.environ.get("PGOPTIONS", "")
    return f"{given} -c jit=off".strip()


def connect(conninfo: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Connect, or raise DatabaseUnavailable naming host and port (never the password)."""
    remember_secrets(conninfo)
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
    try:
        conn = psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row, **kwargs)
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(
            f"cannot connect to PostgreSQL at {describe(conninfo)}: {first_line(error)}") from None
    decode_json_safely(conn)
    return conn


_JSON = json.JSONDecoder()


def _loads_or_mark(data: str | bytes) -> Any:
    try:
        # Decoded first: json.loads of bytes sniffs the encoding, twice the cost on the
        # claim's path (one args document per job).
        return _JSON.decode(data.decode() if isinstance(data, bytes) else data)
    except RecursionError:
        return UndecodableArgs("nesting too deep")


def int_array(values: Iterable[int]) -> str:
    """A bigint[] or integer[] parameter in PostgreSQL's array text, '{1,2,3}': one join,
    where psycopg dumps a list element by element (5x the cost, on a finish of 450 jobs)."""
    return "{" + ",".join(map(str, values)) + "}"


def decode_json_safely(conn: psycopg.Connection[Any]) -> None:
    """JSON from this connection that Python cannot decode (nested thousands deep, as SQL's
    `add_job` accepts) comes back as an `UndecodableArgs` marker instead of raising
    RecursionError: one bad row must not fail a claim of many, nor a listing."""
    set_json_loads(_loads_or_mark, conn)


def is_connection_error(error: BaseException) -> bool:
    return isinstance(error, psycopg.OperationalError | DatabaseUnavailable | psycopg.InterfaceError)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """The boundary: psycopg errors raised inside become pgqueue's."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as error:
        if isinstance(error, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
            raise DatabaseError(first_line(error)) from error
        raise DatabaseUnavailable(f"database connection lost: {first_line(error)}") from None
    except psycopg.Error as error:
        raise DatabaseError(first_line(error)) from error


# What may be run: our composed named statements, or a literal (never text built from input).
Statement = sql.Composed | sql.SQL | LiteralString


def query(conn: psycopg.Connection[Any], statement: Statement, params: Any = None
          ) -> psycopg.Cursor[dict[str, Any]]:
    """Execute on any connection (a caller's may have another row factory); dict rows."""
    with translate_errors():
        return conn.cursor(row_factory=dict_row).execute(statement, params)


log = logging.getLogger("pgqueue.worker")

class Outage:
    """One worker's view of the database's reachability, shared by its threads, so an
    outage is logged once: a warning when the first thread loses the database (the first
    line of the error), and "database reachable again after N s" when one gets it back.

    A thread that held its connection through an outage fails once more on it after the
    database came back; such a failure (`opened_at` before the recovery) is no new outage.
    """

    def __init__(self, who: str) -> None:
        self.who = who
        self._lock = threading.Lock()
        self._since: float | None = None
        self._recovered_at = float("-inf")

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException, opened_at: float | None = None) -> None:
        """A thread lost the database; `opened_at`: when its connection was opened (None
        when the failure was the connect itself)."""
        with self._lock:
            stale = opened_at is not None and opened_at < self._recovered_at
            first = self._since is None and not stale
            if first:
                self._since = time.monotonic()
        if first:
            log.warning("%s: database unreachable (%s); retrying", self.who, first_line(error),
                        extra={"action": "db_unreachable"})
        else:
            log.debug("%s: database unreachable (%s)", self.who, first_line(error))

    def reached(self, opened_at: float | None) -> None:
        """A thread used the database; `opened_at`: when its connection was opened. One
        opened before the outage began may just not have been cut yet: no proof."""
        since = self._since
        if since is None or opened_at is None or opened_at < since:
            return  # the common case (nothing to report) without the lock
        now = time.monotonic()
        with self._lock:
            since, self._since, self._recovered_at = self._since, None, now
        if since is not None:
            log.info("%s: database reachable again after %.0f s", self.who, now - since,
                     extra={"action": "db_reachable"})


class _LostPipelineNoise(logging.Filter):
    """psycopg logs "error ignored terminating <Pipeline>: the connection is lost" when a
    pipelined round trip meets a dead server; the worker reports the outage itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("error ignored terminating <psycopg.Pipeline")


logging.getLogger("psycopg").addFilter(_LostPipelineNoise())
