"""`clerk doctor`: are the outside programs, the directories and the database there?
Says how to fix what is not. clerkd runs the same checks (without the database) at start."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

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


def _writable_dir(name: str, path: Path) -> Check:
    """The directory, or the nearest existing parent it would be created in, is writable."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = f"create {path} writable by this user, or set {name} to such a directory"
    if not existing.is_dir():
        return Check(name, False, f"{existing} is not a directory", fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(name, False, f"{existing} is not writable", fix)
    return Check(name, True, str(path) if existing == path else f"{path} (will be created)")


def _ocr_backend(settings: Settings) -> Check:
    from clerk.ocr import BACKENDS
    name = settings.default_ocr_backend
    if name not in BACKENDS:
        return Check("ocr backend", False, f"{name!r} is not a known backend",
                     f"set DEFAULT_OCR_BACKEND to one of {', '.join(sorted(BACKENDS))}")
    from clerk.ocr import engines_in_use  # which engines `name` means here (issue 17)
    return Check("ocr backend", True, f"{name} ({engines_in_use(name)})")


def _database_fix(message: str) -> str:
    """What to do about a failed connection, from PostgreSQL's own words."""
    if "password authentication failed" in message or "no password supplied" in message:
        return ("the password (or user) in DATABASE_URL is wrong: correct it, or set the "
                "role's password with ALTER ROLE ... PASSWORD")
    if "does not exist" in message:
        return "create that database or role (createdb / CREATE ROLE), or fix DATABASE_URL"
    return "start PostgreSQL or fix DATABASE_URL; unset it to use the embedded server"


def _migrations(settings: Settings, dsn: str) -> Check:
    from clerk import db as clerk_db
    from pgqueue.migrate import Migrator
    try:
        clerk_db.require_migrated(Migrator(dsn, settings.queue_schema),
                                  clerk_db.clerk_migrator(dsn))
    except clerk_db.NotMigrated as error:
        return Check("migrations", False, str(error).removesuffix(f": {clerk_db.UPGRADE_HINT}"),
                     "clerk db upgrade (as the database owner)")
    except psycopg.Error as error:
        return Check("migrations", False, clerk_db.explain_database_error(error, migrating=False),
                     "grant this role clerk's privileges (see sql/roles.sql)")
    return Check("migrations", True, "up to date")


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
    checks.append(_ocr_backend(settings))
    checks.append(_writable_dir("STORAGE_DIR", settings.storage_dir))
    checks.append(_writable_dir("DEPLOY_DIR", settings.deploy_dir))
    if dsn is not None:
        from pgqueue.db import connect, describe
        from pgqueue.errors import DatabaseUnavailable
        try:
            with connect(dsn) as conn:
                row = conn.execute("SHOW server_version").fetchone()
            version = row["server_version"] if row else "version unknown"
            checks.append(Check("database", True, f"{describe(dsn)} (PostgreSQL {version})"))
        except DatabaseUnavailable as error:
            checks.append(Check("database", False, str(error), _database_fix(str(error))))
        else:
            checks.append(_migrations(settings, dsn))
    return checks
