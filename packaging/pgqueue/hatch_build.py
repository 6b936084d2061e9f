"""Build hook of the pgqueue-py distribution: the files come from the checkout.

In the checkout, this project sits in packaging/pgqueue/ and the sources two levels up:
pgqueue/ (the package, its templates and vendored htmx) and sql/pgqueue/ (statements and
migrations, shipped inside the package as pgqueue/sql/pgqueue/, where pgqueue.sql looks
first). The long description is pgqueue/README.md (the metadata hook). The sdist carries
the sources at its top (pgqueue/, sql/pgqueue/), so a wheel built from an unpacked sdist
finds them there. Compiled files and caches are never shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface

SKIP_PARTS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def source_root(here: Path) -> Path:
    """Where pgqueue/ and sql/pgqueue/ are: the checkout, or this (sdist) directory."""
    if (here / "pgqueue" / "__init__.py").exists():
        return here
    checkout = here.parent.parent
    if (checkout / "pgqueue" / "__init__.py").exists():
        return checkout
    raise FileNotFoundError(f"no pgqueue/ sources next to {here} nor in {checkout}")


def shipped(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*")
                  if path.is_file() and not SKIP_PARTS & set(path.parts)
                  and path.suffix not in {".pyc", ".pyo"})


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        here = Path(self.root)
        root = source_root(here)
        wheel = self.target_name == "wheel"
        mapping: dict[str, str] = {}
        for path in shipped(root / "pgqueue"):
            mapping[str(path)] = str(path.relative_to(root))
        for path in shipped(root / "sql" / "pgqueue"):
            relative = path.relative_to(root)
            mapping[str(path)] = str(Path("pgqueue") / relative) if wheel else str(relative)
        build_data["force_include"].update(mapping)


class CustomMetadataHook(MetadataHookInterface):
    """project.readme: pgqueue/README.md, the library's own documentation."""

    def update(self, metadata: dict[str, Any]) -> None:
        readme = source_root(Path(self.root)) / "pgqueue" / "README.md"
        metadata["readme"] = {"content-type": "text/markdown", "text": readme.read_text()}
