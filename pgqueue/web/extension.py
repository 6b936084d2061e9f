"""What an extension (clerk's site pages, say) adds to the dashboard. See pgqueue.web."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from starlette.routing import BaseRoute


@dataclass(frozen=True)
class Extension:
    name: str
    nav: Sequence[tuple[str, str]]  # (label, path relative to the dashboard's root)
    routes: Sequence[BaseRoute]
    templates_dir: Path | None
    overview_panels: Sequence[str] = ()  # template names included on the overview page
    action_routes: Sequence[BaseRoute] = ()  # POST routes: not routed when read-only
