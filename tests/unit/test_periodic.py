"""Periodic schedules without a database: slots, catch-up within the grace, missed slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgqueue.errors import ConfigurationError
from pgqueue.periodic import Schedule

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def every(seconds: float, **options: object) -> Schedule:
    return Schedule(name="s", task="t", queue="q", every=seconds, **options)  # type: ignore[arg-type]


def test_every_slots_are_aligned_on_the_epoch_and_strictly_after() -> None:
    schedule = every(2)
    assert schedule.next_after(T0) == T0 + timedelta(seconds=2)
    assert schedule.next_after(T0 + timedelta(seconds=1.5)) == T0 + timedelta(seconds=2)
    assert schedule.latest_at_or_before(T0 + timedelta(seconds=3.9)) == T0 + timedelta(seconds=2)


def test_cron_with_a_seconds_field_and_the_five_field_form() -> None:
    seconds = Schedule(name="s", task="t", queue="q", cron="*/5 * * * * *")
    assert seconds.next_after(T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=5)
    assert seconds.latest_at_or_before(T0 + timedelta(seconds=5)) == T0 + timedelta(seconds=5)
    nightly = Schedule(name="s", task="t", queue="q", cron="0 3 * * *")
    assert nightly.next_after(T0) == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert nightly.latest_at_or_before(T0) == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def test_slots_within_the_grace_are_each_enqueued() -> None:
    plan = every(2).plan(T0, T0 + timedelta(seconds=5))  # a leader 5 s late
    assert plan.slots == [T0, T0 + timedelta(seconds=2), T0 + timedelta(seconds=4)]
    assert plan.skipped == 0
    assert plan.next_run_at == T0 + timedelta(seconds=6)


@pytest.mark.parametrize(("missed", "slots", "skipped"), [("run_once", 1, 60), ("skip", 0, 61)])
def test_missed_slots_follow_the_policy(missed: str, slots: int, skipped: int) -> None:
    hourly = every(3600, missed=missed, grace=60)
    now = T0 + timedelta(hours=60, minutes=30)  # down 60.5 h: slots T0 .. T0+60 h missed
    plan = hourly.plan(T0, now)
    assert len(plan.slots) == slots
    if slots:
        assert plan.slots == [T0 + timedelta(hours=60)]  # the latest missed slot
    assert plan.skipped == skipped
    assert plan.next_run_at == T0 + timedelta(hours=61)


def test_a_long_outage_of_a_seconds_schedule_is_planned_without_walking_it() -> None:
    plan = every(1, missed="run_once", grace=10).plan(T0, T0 + timedelta(days=30))
    assert len(plan.slots) == 11  # the latest missed one, then the 10 s of grace
    assert plan.skipped == 30 * 86400 - 10  # slots T0 .. now-10 s, but the one run


@pytest.mark.parametrize("options", [
    {"cron": "0 3 * *"}, {"cron": "61 * * * *"}, {"every": 0.5}, {},
    {"cron": "* * * * *", "every": 5}, {"every": 5, "missed": "later"},
])
def test_bad_schedules_are_refused_with_one_clear_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Schedule(name="s", task="t", queue="q", **options)  # type: ignore[arg-type]
