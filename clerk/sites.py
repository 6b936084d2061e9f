"""Sites: a city named by its subdomain, which becomes a path, so it is validated everywhere."""

from __future__ import annotations

import re
from pathlib import Path

# Lowercase labels of letters, digits and hyphens, joined by single dots
# (`alameda.ca`, `lenox.mi`); a label neither starts nor ends with a hyphen.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
SUBDOMAIN_PATTERN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_SUBDOMAIN_LENGTH = 253


class InvalidSubdomain(ValueError):
    """A subdomain that could not safely name a site or a directory."""


def validate_subdomain(subdomain: str) -> str:
    """Return the subdomain if it is safe to use as a name and a path, else raise."""
    if not isinstance(subdomain, str) or not subdomain:
        raise InvalidSubdomain("a subdomain is required")
    if len(subdomain) > MAX_SUBDOMAIN_LENGTH or not SUBDOMAIN_PATTERN.fullmatch(subdomain):
        raise InvalidSubdomain(
            f"invalid subdomain {subdomain!r}: use lowercase letters, digits and hyphens, "
            "in labels joined by single dots (e.g. 'pleasanton' or 'alameda.ca')"
        )
    return subdomain


def contained_path(root: Path, *parts: str) -> Path:
    """Join `parts` under `root` and refuse any result that leaves `root`."""
    base = root.resolve()
    candidate = base.joinpath(*parts).resolve()
    if candidate != base and base not in candidate.parents:
        raise ValueError(f"path {'/'.join(parts)!r} leaves {base}")
    return candidate


def site_dir(storage_dir: Path, subdomain: str) -> Path:
    return contained_path(storage_dir, validate_subdomain(subdomain))
