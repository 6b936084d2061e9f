"""Logging: one line per event, text or JSON (`LOG_FORMAT=json`), passwords masked.

A message that spans lines (psycopg's "server closed the connection unexpectedly\n\tThis
probably means...") is folded onto one line in the text format, so journald and grep see
one event per line; JSON escapes newlines anyway. A traceback (log.exception) stays below
its line, as Python prints it. Escape sequences and control characters that a city web site
put in a link text or a reason phrase are dropped from text lines (`clerk.output.printable`),
so a log read in a terminal cannot be recoloured or cleared by a scraped string."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from clerk.output import printable
from pgqueue.db import mask_url

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class MaskingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        text = printable(super().formatMessage(record), multiline=True)
        if "\n" in text:
            text = " ".join(part.strip() for part in text.splitlines() if part.strip())
        return text

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the stable `action` field and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        data: dict[str, object] = {"time": moment.isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "pid": record.process,
                "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return mask_url(json.dumps(data, default=str))


def configure(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(MaskingFormatter(
            "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
