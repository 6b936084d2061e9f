"""The `directory` deployer: copy the database to DEPLOY_DIR/<site>.db atomically.

Datasette (or any static host) serving DEPLOY_DIR keeps reading the old file until the
rename; it never sees a partial copy. The copy goes to a uniquely named temporary file in
DEPLOY_DIR itself, because a rename is only atomic within one filesystem.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from clerk.config import Settings
from clerk.deploy import DeployError
from clerk.sites import contained_path, validate_subdomain


def target_path(site: str, settings: Settings) -> Path:
    """Where a site's database is deployed: DEPLOY_DIR/<site>.db."""
    return contained_path(settings.deploy_dir, f"{validate_subdomain(site)}.db")


def deploy(site: str, db_path: Path, settings: Settings) -> str:
    """Copy `db_path` to DEPLOY_DIR/<site>.db (temp, fsync, rename) and return that path."""
    target = target_path(site, settings)
    source = Path(db_path)
    if not source.is_file():
        raise DeployError(f"{site}: no database to deploy at {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(descriptor, "wb") as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes 0600; the web server must read it
        os.replace(temp, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as error:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise DeployError(f"{site}: could not deploy to {target}: {error}") from error
    return str(target)
