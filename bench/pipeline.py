"""Pipeline figures (fetch → pages → OCR/extract fan-out → fan-in compile) on the clerk
pipeline: not written yet, because the pipeline is still being built.

What it should measure, once clerk.pipeline exists: meetings per minute through the whole
pipeline with no-op stage bodies (queue overhead alone), the fan-in delay (last page
finished → compile started), and the same with pgqueue's process isolation.
"""

from __future__ import annotations

from typing import Any


def pipeline_throughput(*_: Any, **__: Any) -> dict[str, Any]:
    raise NotImplementedError("pipeline figures wait for clerk.pipeline (see module docstring)")
