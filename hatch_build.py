"""Build hook of the `clerk` distribution (this pyproject.toml).

The clerk wheel holds clerk alone and depends on the `pgqueue-py` distribution of the same
version (built from packaging/pgqueue/), which holds the queue. That dependency is added
to the standard wheel only: an editable install (`pip install -e .`, what .ci/setup does)
puts this checkout on sys.path, so `pgqueue` is imported from here, and there is no
`pgqueue-py` to fetch from an index for a version not released yet.
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PGQUEUE_DISTRIBUTION = "pgqueue-py"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "standard":
            build_data["dependencies"].append(
                f"{PGQUEUE_DISTRIBUTION}=={self.metadata.version}")
