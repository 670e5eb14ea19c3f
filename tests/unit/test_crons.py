"""Cron schedules and timezones: checked by field, next runs follow the cron's timezone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from stores.errors import InvalidInputError
from stores.sql.crons import check_schedule, check_timezone, next_run_after


def test_schedule_and_timezone_are_checked_by_field() -> None:
    assert check_schedule(" */5 * * * * ") == "*/5 * * * *"
    for schedule in ("61 * * * *", "0 0 30 2 *", ""):
        with pytest.raises(InvalidInputError) as bad_schedule:
            check_schedule(schedule)
        assert bad_schedule.value.field == "schedule"
    assert check_timezone(None) == "UTC"
    with pytest.raises(InvalidInputError) as bad_zone:
        check_timezone("Mars/Olympus_Mons")
    assert bad_zone.value.field == "timezone"


def test_next_run_follows_the_cron_timezone_across_dst() -> None:
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC after the March DST change.
    winter = next_run_after(
        "0 9 * * *", "America/New_York", after=datetime(2026, 3, 7, 12, tzinfo=UTC)
    )
    summer = next_run_after(
        "0 9 * * *", "America/New_York", after=datetime(2026, 3, 8, 12, tzinfo=UTC)
    )
    assert winter == datetime(2026, 3, 7, 14, tzinfo=UTC)
    assert summer == datetime(2026, 3, 8, 13, tzinfo=UTC)
    seconds = next_run_after(
        "* * * * * */2", "UTC", after=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    )
    assert seconds == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
