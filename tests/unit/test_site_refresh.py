"""Site refresh schedules without a database: keywords, crons, and the stagger."""

from __future__ import annotations

from collections import Counter

import pytest

from clerk.sites import InvalidRefresh, refresh_cron, validate_refresh


def test_a_thousand_daily_sites_are_spread_over_the_window() -> None:
    sites = [f"city-{n}.st" for n in range(1000)]
    crons = [refresh_cron(site, "daily") for site in sites]
    assert crons == [refresh_cron(site, "daily") for site in sites]  # stable
    times = []
    for cron in crons:
        assert cron is not None
        second, minute, hour, day, month, weekday = cron.split()
        assert (day, month, weekday) == ("*", "*", "*")
        times.append(int(hour) * 3600 + int(minute) * 60 + int(second))
    assert all(2 * 3600 <= t < 6 * 3600 for t in times)  # 02:00 to 06:00 UTC
    per_minute = Counter(t // 60 for t in times)
    assert max(per_minute.values()) <= 15  # about 4 a minute, never all at 03:00
    assert len(set(times)) > 950


def test_weekly_sites_are_spread_over_the_days() -> None:
    days = Counter(str(refresh_cron(f"town-{n}", "weekly")).split()[5] for n in range(700))
    assert sorted(days) == [str(day) for day in range(7)]
    assert min(days.values()) > 50


def test_keywords_crons_and_bad_values() -> None:
    assert refresh_cron("x", "off") is None
    assert refresh_cron("x", "*/5 * * * * *") == "*/5 * * * * *"
    assert validate_refresh(" Daily ") == "daily"
    assert validate_refresh("0  3 * * *") == "0 3 * * *"
    assert validate_refresh("default", allow_default=True) == "default"
    for bad in ("default", "hourly", "0 3 * *", "99 * * * *"):
        with pytest.raises(InvalidRefresh):
            validate_refresh(bad)
