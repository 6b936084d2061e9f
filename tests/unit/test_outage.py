"""An outage is one warning and one "reachable again" line per worker, one line each."""

from __future__ import annotations

import logging
import time

import psycopg
import pytest

from pgqueue.db import Outage

LOST = psycopg.OperationalError(
    "consuming input failed: server closed the connection unexpectedly\n"
    "\tThis probably means the server terminated abnormally\n"
    "\tbefore or while processing the request.")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


def test_one_warning_per_outage_from_any_number_of_threads(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pgqueue.worker")
    outage = Outage("worker 7")
    before = time.monotonic()
    for _ in range(5):  # main loop, leases, listener, maintenance, retries of each
        outage.failed(LOST, before)
    outage.reached(before)  # a connection from before the outage proves nothing
    assert outage.down
    outage.reached(time.monotonic())
    assert not outage.down
    (warning, back) = lines(caplog)
    assert warning == ("worker 7: database unreachable (consuming input failed: server closed "
                       "the connection unexpectedly); retrying")
    assert back.startswith("worker 7: database reachable again after ") and back.endswith(" s")
    assert all("\n" not in line for line in lines(caplog))


def test_a_stale_connection_failing_after_recovery_is_no_new_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    outage = Outage("worker 7")
    held_through = time.monotonic()
    outage.failed(LOST, None)
    outage.reached(time.monotonic())
    outage.failed(LOST, held_through)  # the leases thread's old connection, used later
    assert not outage.down
    outage.failed(LOST, time.monotonic())  # a connection opened since: a new outage
    assert outage.down
    assert [line.split(":")[1].strip() for line in lines(caplog)] == [
        "database unreachable (consuming input failed", "database reachable again after 0 s",
        "database unreachable (consuming input failed"]
