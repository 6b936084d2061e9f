"""Deploy targets as plugins: put a compiled site database where it is served.

A deployer is a module with `deploy(site, db_path, settings) -> str` (the target it
wrote, for logs and job results), registered by name in `DEPLOYERS`;
`settings.deploy_backend` picks one. A Datasette Cloud or S3 target is one new module
and one line here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from clerk.config import Settings

DEPLOYERS: dict[str, str] = {"directory": "clerk.deploy.directory"}


class DeployError(Exception):
    """A deploy that failed; the message names the site and the target."""


class Deployer(Protocol):
    def deploy(self, site: str, db_path: Path, settings: Settings) -> str: ...


def get_deployer(name: str) -> Deployer:
    """The deploy plugin registered under `name`."""
    try:
        module_name = DEPLOYERS[name]
    except KeyError:
        known = ", ".join(sorted(DEPLOYERS))
        raise DeployError(f"unknown deploy backend {name!r}; known: {known}") from None
    return importlib.import_module(module_name)  # type: ignore[return-value]


def deploy(site: str, db_path: Path, settings: Settings) -> str:
    """Deploy with the backend named by `settings.deploy_backend`."""
    return get_deployer(settings.deploy_backend).deploy(site, db_path, settings)


__all__ = ["DEPLOYERS", "DeployError", "Deployer", "deploy", "get_deployer"]
