"""`clerk doctor`: are the outside programs and the database there? Says how to fix what is not."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from clerk.config import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _binary(name: str, version_flag: str, fix: str) -> Check:
    path = shutil.which(name)
    if path is None:
        return Check(name, False, "not found on PATH", fix)
    try:
        out = subprocess.run([path, version_flag], capture_output=True, text=True, timeout=20)
        first = (out.stdout or out.stderr).strip().splitlines()
        return Check(name, True, f"{path} ({first[0] if first else 'version unknown'})")
    except (OSError, subprocess.TimeoutExpired) as error:
        return Check(name, False, f"{path} does not run: {error}", fix)


def run_checks(settings: Settings, dsn: str | None = None) -> list[Check]:
    checks = [
        _binary("tesseract", "--version", "apt-get install tesseract-ocr tesseract-ocr-eng "
                "(macOS: brew install tesseract)"),
        _binary("pdftoppm", "-v", "apt-get install poppler-utils (macOS: brew install poppler)"),
        _binary("pdftotext", "-v", "apt-get install poppler-utils (macOS: brew install poppler)"),
        _binary("pdfinfo", "-v", "apt-get install poppler-utils (macOS: brew install poppler)"),
    ]
    if settings.spacy_model:
        try:
            import spacy
            spacy.load(settings.spacy_model)
            checks.append(Check("spacy model", True, settings.spacy_model))
        except (ImportError, OSError) as error:
            checks.append(Check("spacy model", False, f"{settings.spacy_model}: {error}",
                                f"python -m spacy download {settings.spacy_model}, or unset "
                                "SPACY_MODEL to use the built-in rules only"))
    else:
        checks.append(Check("spacy model", True, "none configured: built-in civic rules"))
    if dsn is not None:
        from pgqueue.db import connect, describe
        from pgqueue.errors import DatabaseUnavailable
        try:
            with connect(dsn) as conn:
                version = conn.execute("SHOW server_version").fetchone()
            checks.append(Check("database", True,
                                f"{describe(dsn)} (PostgreSQL {version['server_version']})"))
        except DatabaseUnavailable as error:
            checks.append(Check("database", False, str(error),
                                "start PostgreSQL or fix DATABASE_URL; unset it to use the "
                                "embedded server"))
    return checks
