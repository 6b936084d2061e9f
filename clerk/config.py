"""Configuration from the environment and a `.env` file, every default named in one place.

Every setting is read from `CLERK_<NAME>` first, then the bare `<NAME>` (the names the
design uses: `DATABASE_URL`, `OCR_WORKERS`, ...), then the default below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import dotenv_values

QUEUES = ("fetch", "ocr", "extraction", "compilation", "deploy")

DEFAULT_STORAGE_DIR = "~/.local/share/clerk/sites"
DEFAULT_DEPLOY_DIR = "~/.local/share/clerk/deploy"
DEFAULT_EMBEDDED_DIR = "~/.local/share/clerk/postgres"
DEFAULT_OCR_DPI = 150  # as accurate as 300 dpi on council agendas, at half the time
DEFAULT_MAX_PDF_BYTES = 200 * 1024 * 1024
DEFAULT_HTTP_TIMEOUT = 30.0
DEFAULT_MAX_PAGE_PIXELS = 60_000_000  # about a 36 x 48 inch page at 150 dpi


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    storage_dir: Path = field(default_factory=lambda: Path(DEFAULT_STORAGE_DIR).expanduser())
    deploy_dir: Path = field(default_factory=lambda: Path(DEFAULT_DEPLOY_DIR).expanduser())
    embedded_dir: Path = field(default_factory=lambda: Path(DEFAULT_EMBEDDED_DIR).expanduser())
    queue_schema: str = "pgqueue"
    default_ocr_backend: str = "tesseract"
    ocr_dpi: int = DEFAULT_OCR_DPI
    max_page_pixels: int = DEFAULT_MAX_PAGE_PIXELS
    max_pdf_bytes: int = DEFAULT_MAX_PDF_BYTES
    http_timeout: float = DEFAULT_HTTP_TIMEOUT
    download_deadline: float = 600.0  # one document, retries included: a slow drip ends
    spacy_model: str | None = None
    deploy_backend: str = "directory"
    fetch_workers: int = 1
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


def _convert(value: str, kind: object) -> object:
    text = value.strip()
    if kind in (int, "int"):
        return int(text)
    if kind in (float, "float"):
        return float(text)
    if kind in (Path, "Path"):
        return Path(text).expanduser()
    return text


def load_settings(env_file: str | os.PathLike[str] | None = ".env",
                  environ: dict[str, str] | None = None, *, file_wins: bool = False) -> Settings:
    """Read settings; the process environment wins over the `.env` file.

    `file_wins` reverses that, for a reload (SIGHUP): under systemd the file was loaded into
    the environment at start (EnvironmentFile=), so only the file has the new values.
    """
    from_file: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    from_env = dict(os.environ if environ is None else environ)
    source = {**from_env, **from_file} if file_wins else {**from_file, **from_env}
    values: dict[str, object] = {}
    for item in fields(Settings):
        if item.name == "extra":
            continue
        name = item.name.upper()
        raw = source.get(f"CLERK_{name}", source.get(name))
        if raw is None or raw == "":
            continue
        kind = item.type.split("|")[0].strip() if isinstance(item.type, str) else item.type
        try:
            values[item.name] = _convert(raw, kind)
        except ValueError as error:
            raise ValueError(f"{name}={raw!r} is not a valid {kind}") from error
    return Settings(**values)  # type: ignore[arg-type]
