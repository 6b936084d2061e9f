"""`clerk pause QUEUE` / `clerk resume QUEUE`, run as people run them, and shown by status."""

from __future__ import annotations

import json

from clerk.pipeline import Pipeline
from tests.acceptance.conftest import Cli


def test_pause_and_resume_a_queue_from_the_command_line(cli: Cli, pipeline: Pipeline) -> None:
    assert "ocr: paused" in cli("pause", "ocr", "--reason", "tesseract upgrade").output
    assert "was paused already" in cli("pause", "ocr").output
    assert pipeline.queue.paused_queues() == ["ocr"]
    text = cli("status").output
    assert "paused: ocr since" in text and "tesseract upgrade" in text
    [row] = json.loads(cli("status", "--json").output)["paused"]
    assert (row["queue"], row["reason"]) == ("ocr", "tesseract upgrade")
    assert "ocr: resumed" in cli("resume", "ocr").output
    assert "was not paused" in cli("resume", "ocr").output
    assert pipeline.queue.paused_queues() == []
    assert "paused:" not in cli("status").output
    bad = cli("pause", "no-such-queue", ok=False)
    assert "Invalid value" in bad.output and "Traceback" not in bad.output
