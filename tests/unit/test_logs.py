"""Log lines: JSON with a stable action field, passwords masked in both formats."""

from __future__ import annotations

import json
import logging

import pytest

from clerk.logs import configure


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_job_lines_carry_fields_and_never_a_password(log_format: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    configure(log_format, "INFO")
    try:
        logging.getLogger("pgqueue.worker").info(
            "job %s succeeded via %s", 7, "postgresql://clerk:hunter2@db:5432/clerk",
            extra={"action": "job_finished", "job_id": 7, "queue": "ocr", "tag": "alameda.ca",
                   "duration": 1.5})
    finally:
        logging.getLogger().handlers.clear()
    line = capsys.readouterr().err.strip()
    assert "hunter2" not in line
    assert "clerk:***@db" in line
    if log_format == "json":
        record = json.loads(line)
        assert (record["action"], record["job_id"], record["queue"], record["tag"]) == \
            ("job_finished", 7, "ocr", "alameda.ca")
        assert record["duration"] == 1.5 and record["level"] == "INFO"


def test_a_message_on_several_lines_is_one_text_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure("text", "INFO")
    try:
        logging.getLogger("pgqueue.worker").warning(
            "database unreachable: %s", "server closed the connection unexpectedly\n\t"
            "This probably means the server terminated abnormally\n")
    finally:
        logging.getLogger().handlers.clear()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("database unreachable: server closed the connection unexpectedly "
                         "This probably means the server terminated abnormally")


def test_escape_codes_from_a_site_do_not_reach_a_text_log(capsys: pytest.CaptureFixture[str]) -> None:
    configure("text", "INFO")
    try:
        logging.getLogger("clerk.fetch").warning(
            "link %s refused", "ftp://example.org/x.pdf\x1b[2J\x1b]0;owned\x07\x9b31m")
    finally:
        logging.getLogger().handlers.clear()
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "\x1b" not in line and "\x9b" not in line and "\x07" not in line
    assert line.endswith("link ftp://example.org/x.pdf refused")
