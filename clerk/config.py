"""Configuration from the environment and a `.env` file, every default and rule in one place.

Every setting is read as `CLERK_<NAME>` or the bare `<NAME>` (the names the design uses:
`DATABASE_URL`, `OCR_WORKERS`, ...). The process environment wins over the file,
whichever of the two names each source uses; within one source `CLERK_<NAME>` wins.

Each value is converted to the field's type and checked against its rule (`RULES`) here,
once, so a bad value is one line naming the setting (`LOG_LEVEL='verbose' is not one of
DEBUG, INFO, WARNING, ERROR`) at start, never a traceback from deep inside a worker.
Defaults are trusted; only what the user wrote is checked. A plain table of rules rather
than pydantic-settings: thirty-odd scalar settings, and `import clerk.config` stays cheap
for `clerk --help`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

QUEUES = ("fetch", "ocr", "extraction", "compilation", "deploy")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")

DEFAULT_STORAGE_DIR = "~/.local/share/clerk/sites"
DEFAULT_DEPLOY_DIR = "~/.local/share/clerk/deploy"
DEFAULT_EMBEDDED_DIR = "~/.local/share/clerk/postgres"
# python -m bench.ocr_accuracy: 300 dpi reads city documents no better at half the speed;
# 150 misses more words (3.5 % against 2.8 %) for 4 % less time.
DEFAULT_OCR_DPI = 200
DEFAULT_MAX_PDF_BYTES = 200 * 1024 * 1024
DEFAULT_CACHE_MAX_BYTES = 2 * 1024 * 1024 * 1024  # the PDFs a host keeps (clerk.blobs)
DEFAULT_HTTP_TIMEOUT = 30.0
DEFAULT_MAX_PAGE_PIXELS = 60_000_000  # about a 36 x 48 inch page at 150 dpi


class ConfigError(ValueError):
    """One or more settings are invalid. `problems` has one line per setting; `partial`
    holds the valid ones (the invalid ones at their defaults), so `clerk doctor` can go
    on checking the rest."""

    def __init__(self, problems: list[str], partial: Settings | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.partial = partial


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    # PostgreSQL itself when DATABASE_URL is a transaction pooler's (PgBouncer): LISTEN and
    # session advisory locks go here, everything else through the pooler.
    listen_database_url: str | None = None
    storage_dir: Path = field(default_factory=lambda: Path(DEFAULT_STORAGE_DIR).expanduser())
    deploy_dir: Path = field(default_factory=lambda: Path(DEFAULT_DEPLOY_DIR).expanduser())
    embedded_dir: Path = field(default_factory=lambda: Path(DEFAULT_EMBEDDED_DIR).expanduser())
    queue_schema: str = "pgqueue"
    default_ocr_backend: str = "tesseract"
    ocr_dpi: int = DEFAULT_OCR_DPI
    max_page_pixels: int = DEFAULT_MAX_PAGE_PIXELS
    max_pdf_bytes: int = DEFAULT_MAX_PDF_BYTES
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES  # this host's PDFs under STORAGE_DIR/.cache
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    download_deadline: float = 600.0  # one document, retries included: a slow drip ends
    allow_private_hosts: str = ""  # non-public addresses the fetcher may reach (clerk.network)
    max_pages_per_document: int = 2000  # a longer PDF is refused, not queued page by page
    max_pages_per_run: int = 20000  # pages one run of a site queues; the rest wait a run
    # Platform sources (Legistar, CivicPlus, PrimeGov): how far back a first run reaches,
    # how far ahead (agendas of coming meetings), and how far before the last successful
    # run a later run looks again (published files change for days after a meeting).
    source_history_days: int = 365
    source_lookahead_days: int = 60
    source_back_window_days: int = 14
    contact: str = ""  # an e-mail or URL for the User-Agent, so a city can reach the operator
    spacy_model: str | None = None
    deploy_backend: str = "directory"
    fetch_workers: int = 1
    # Politeness to a city's (or a platform's) web server, across every machine: at most
    # this many sites of one source host fetched at once, and started per minute (0: no
    # rate). Legistar and Granicus host hundreds of cities behind one host.
    fetch_per_host: int = 2
    fetch_rate_per_host: int = 30
    ocr_workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    extraction_workers: int = 1
    compilation_workers: int = 1
    deploy_workers: int = 1
    fetch_timeout: int = 1800
    ocr_timeout: int = 300
    extraction_timeout: int = 3600
    compilation_timeout: int = 1800
    deploy_timeout: int = 600
    max_jobs_per_worker: int = 500  # recycle a worker process to bound memory growth
    refresh: str = "off"  # a site's refresh unless it has its own: off, daily, weekly, cron
    job_connections: int = 2  # a queue's job processes share this many connections
    shutdown_grace: float = 30.0
    retry_backoff: float = 10.0  # seconds before a pipeline job's second attempt (doubling)
    lease_seconds: float = 30.0  # a dead worker's jobs come back after this
    poll_interval: float = 5.0  # the safety net under LISTEN/NOTIFY (PgBouncer drops LISTEN)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no health/metrics endpoint
    log_format: str = "text"
    log_level: str = "INFO"
    extra: dict[str, str] = field(default_factory=dict)

    def workers_for(self, queue: str) -> int:
        return int(getattr(self, f"{queue}_workers"))

    def timeout_for(self, queue: str) -> int:
        return int(getattr(self, f"{queue}_timeout"))

    @property
    def total_workers(self) -> int:
        return sum(self.workers_for(queue) for queue in QUEUES)


# -- rules: each takes the converted value and returns it (normalised) or raises ValueError
# with the end of the sentence "NAME='raw' ..." --------------------------------------------

Rule = Callable[[object], object]


def _at_least(low: float, *, strict: bool = False) -> Rule:
    def check(value: object) -> object:
        assert isinstance(value, int | float)
        if value < low or (strict and value == low):
            raise ValueError(f"must be {'>' if strict else '>='} {low:g}")
        return value
    return check


def _between(low: int, high: int, meaning: str = "") -> Rule:
    def check(value: object) -> object:
        assert isinstance(value, int)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}{meaning}")
        return value
    return check


def _one_of(choices: tuple[str, ...], *, upper: bool = False) -> Rule:
    def check(value: object) -> object:
        text = str(value).upper() if upper else str(value).lower()
        if text not in choices:
            raise ValueError(f"is not one of {', '.join(choices)}")
        return text
    return check


def _registered(what: str, registry: Callable[[], Mapping[str, object]]) -> Rule:
    def check(value: object) -> object:
        known = registry()
        if value not in known:
            raise ValueError(f"is not a known {what} ({', '.join(sorted(known))})")
        return value
    return check


def _ocr_backends() -> Mapping[str, object]:
    from clerk.ocr import BACKENDS  # imported only when the setting is given
    return BACKENDS


def _deployers() -> Mapping[str, object]:
    from clerk.deploy import DEPLOYERS
    return DEPLOYERS


def _refresh(value: object) -> object:
    from clerk.sites import InvalidRefresh, validate_refresh
    try:
        return validate_refresh(str(value))
    except InvalidRefresh:
        raise ValueError("is not off, daily, weekly, nor a cron expression (5 fields, or 6 "
                         "with seconds first; UTC)") from None


def _schema(value: object) -> object:
    from pgqueue.errors import ConfigurationError
    from pgqueue.sql import validate_schema
    try:
        return validate_schema(str(value))
    except ConfigurationError:
        raise ValueError("is not a schema name (lowercase letters, digits, underscores)") from None


def _conninfo(value: object) -> object:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from pgqueue.db import first_line, remember_secrets
    remember_secrets(str(value))  # masked in libpq's reason below, and in _shown
    try:
        conninfo_to_dict(str(value))
    except ProgrammingError as error:
        raise ValueError(f"is not a PostgreSQL connection string ({first_line(error)}): give "
                         "a URL like postgresql://user:password@host:5432/dbname (or libpq's "
                         "key=value settings)") from None
    return value


RULES: dict[str, Rule] = {
    "database_url": _conninfo,
    "listen_database_url": _conninfo,
    "queue_schema": _schema,
    "default_ocr_backend": _registered("OCR backend", _ocr_backends),
    "deploy_backend": _registered("deploy backend", _deployers),
    "ocr_dpi": _at_least(0, strict=True),
    "max_page_pixels": _at_least(0, strict=True),
    "max_pdf_bytes": _at_least(0, strict=True),
    "cache_max_bytes": _at_least(0),
    "http_timeout": _at_least(0, strict=True),
    "download_deadline": _at_least(0, strict=True),
    "source_history_days": _at_least(0),
    "source_lookahead_days": _at_least(0),
    "source_back_window_days": _at_least(0),
    **{f"{queue}_workers": _at_least(0) for queue in QUEUES},
    **{f"{queue}_timeout": _at_least(0, strict=True) for queue in QUEUES},
    "max_jobs_per_worker": _at_least(1),
    "fetch_per_host": _at_least(1),
    "fetch_rate_per_host": _at_least(0),
    "refresh": _refresh,
    "job_connections": _at_least(1),
    "shutdown_grace": _at_least(0),
    "retry_backoff": _at_least(0),
    "lease_seconds": _at_least(0, strict=True),
    "poll_interval": _at_least(0, strict=True),
    "metrics_port": _between(0, 65535, " (0 turns the endpoint off)"),
    "log_format": _one_of(LOG_FORMATS),
    "log_level": _one_of(LOG_LEVELS, upper=True),
}


def _convert(value: str, kind: object) -> object:
    text = value.strip()
    if kind in (int, "int"):
        return int(text)
    if kind in (float, "float"):
        number = float(text)
        if not math.isfinite(number):  # nan and inf parse, and break every comparison
            raise ValueError(text)
        return number
    if kind in (Path, "Path"):
        return Path(text).expanduser()
    return text


def _field_kind(item: Field[object]) -> str:
    kind = item.type
    return kind.split("|")[0].strip() if isinstance(kind, str) else getattr(kind, "__name__", "")


def _lookup(name: str, source: Mapping[str, str]) -> tuple[str, str] | None:
    """(the name used, its value) in one source, CLERK_ first; empty counts as unset."""
    for key in (f"CLERK_{name}", name):
        value = source.get(key)
        if value is not None and value != "":
            return key, value
    return None


def read_env_file(env_file: str | os.PathLike[str] | None, *, required: bool = False
                  ) -> dict[str, str]:
    """The settings in a .env file. A missing file is empty unless `required` (a file the
    user named: a typo must not fall back to other settings); a directory is an error."""
    if env_file is None:
        return {}
    path = Path(env_file)
    if path.is_dir():
        raise ConfigError([f"env file {path} is a directory, not a file"])
    if not path.exists():
        if required:
            raise ConfigError([f"env file {path} does not exist"])
        return {}
    from dotenv import dotenv_values
    try:
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"env file {path} cannot be read: {error}"]) from None


def _shown(name: str, raw: str) -> str:
    """A setting's value for a message: a connection string's password (even in a string
    too broken to parse) never appears."""
    if name not in ("database_url", "listen_database_url"):
        return repr(raw)
    from pgqueue.db import mask_url
    return mask_url(repr(raw))  # its password was remembered by _conninfo


def load_settings(env_file: str | os.PathLike[str] | None = ".env",
                  environ: Mapping[str, str] | None = None, *, file_wins: bool = False,
                  required: bool = False) -> Settings:
    """Read and check the settings; the process environment wins over the `.env` file.

    `file_wins` reverses that, for a reload (SIGHUP): under systemd the file was loaded into
    the environment at start (EnvironmentFile=), so only the file has the new values.
    `required`: the file was named by the user and must exist. Raises ConfigError.
    """
    from_file = read_env_file(env_file, required=required)
    from_env = os.environ if environ is None else environ
    sources = (from_file, from_env) if file_wins else (from_env, from_file)
    values: dict[str, object] = {}
    problems: list[str] = []
    for item in fields(Settings):
        if item.name == "extra":
            continue
        name = item.name.upper()
        found = _lookup(name, sources[0]) or _lookup(name, sources[1])
        if found is None:
            continue
        key, raw = found
        kind = _field_kind(item)
        try:
            value = _convert(raw, kind)
        except ValueError:
            problems.append(f"{key}={raw!r} is not a valid {'number' if kind == 'float' else kind}")
            continue
        rule = RULES.get(item.name)
        try:
            values[item.name] = value if rule is None else rule(value)
        except ValueError as error:
            problems.append(f"{key}={_shown(item.name, raw)} {error}")
    settings = Settings(**values)  # type: ignore[arg-type]
    if problems:
        raise ConfigError(problems, partial=settings)
    return settings
