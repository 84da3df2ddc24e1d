"""Natural dates as callers say them, resolved in the clinic's timezone."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from clinicbridge.voice.dates import DateError, resolve_date, resolve_when

# Wednesday 5 March 2025, 10:00 in Toronto (EST, UTC-5).
NOW = datetime(2025, 3, 5, 15, 0, tzinfo=UTC)
TORONTO = "America/Toronto"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_tomorrow_at_3pm_is_an_instant_in_the_clinic_zone() -> None:
    when = resolve_when("tomorrow at 3pm", TORONTO, NOW)
    assert when.is_instant
    assert when.start == utc(2025, 3, 6, 20, 0)  # 15:00 EST


def test_the_same_words_mean_another_instant_in_another_zone() -> None:
    assert resolve_when("tomorrow at 3pm", "Europe/London", NOW).start == utc(2025, 3, 6, 15, 0)


def test_next_tuesday_morning_is_a_window() -> None:
    when = resolve_when("next Tuesday morning", TORONTO, NOW)
    assert not when.is_instant and when.daypart == "morning"
    assert (when.start, when.end) == (utc(2025, 3, 11, 12, 0), utc(2025, 3, 11, 16, 0))


def test_a_window_across_the_dst_change_keeps_wall_clock_hours() -> None:
    # Toronto moves to EDT on Sunday 9 March 2025: Monday's afternoon is 12:00-17:00 EDT.
    when = resolve_when("March 10 afternoon", TORONTO, NOW)
    assert (when.start, when.end) == (utc(2025, 3, 10, 16, 0), utc(2025, 3, 10, 21, 0))


def test_a_day_and_a_week() -> None:
    day = resolve_when("Friday", TORONTO, NOW)
    assert (day.start, day.end, day.precision) == (
        utc(2025, 3, 7, 5, 0),
        utc(2025, 3, 8, 5, 0),
        "day",
    )
    week = resolve_when("next week", TORONTO, NOW)
    assert week.precision == "week" and week.end > week.start


def test_bare_hour_and_ordinal_day() -> None:
    assert resolve_when("friday at 10", TORONTO, NOW).start == utc(2025, 3, 7, 15, 0)
    assert resolve_when("the 12th", TORONTO, NOW).start == utc(2025, 3, 12, 4, 0)
    # The 3rd has passed this month: the next month's.
    assert resolve_when("on the 3rd", TORONTO, NOW).start == utc(2025, 4, 3, 4, 0)


def test_iso_times_pass_through() -> None:
    assert resolve_when("2025-03-10T15:00:00-04:00", TORONTO, NOW).start == utc(2025, 3, 10, 19)
    assert resolve_when("2025-03-10T15:00", TORONTO, NOW).start == utc(2025, 3, 10, 19)


def test_a_time_in_the_dst_gap_is_refused() -> None:
    with pytest.raises(DateError, match=r"does not exist.*clocks change"):
        resolve_when("March 9 at 2:30am", TORONTO, NOW)
    with pytest.raises(DateError):
        resolve_when("2025-03-09T02:30", TORONTO, NOW)


def test_a_repeated_hour_takes_the_first() -> None:
    # 1:30 happens twice on 2 November 2025 in Toronto: EDT first (UTC-4).
    assert resolve_when("November 2 at 1:30am", TORONTO, NOW).start == utc(2025, 11, 2, 5, 30)


@pytest.mark.parametrize("spoken", ["February 30", "Feb 30 at 3pm", "2025-02-30T10:00"])
def test_impossible_dates_say_so(spoken: str) -> None:
    with pytest.raises(DateError, match="does not exist"):
        resolve_when(spoken, TORONTO, NOW)


@pytest.mark.parametrize("spoken", ["", "   ", "blah blah", "x" * 101])
def test_nonsense_asks_again(spoken: str) -> None:
    with pytest.raises(DateError):
        resolve_when(spoken, TORONTO, NOW)


@pytest.mark.parametrize(
    "spoken", ["1980-03-05", "1980-3-5", "March 5th 1980", "5 March 1980", "03/05/1980"]
)
def test_dates_of_birth(spoken: str) -> None:
    assert resolve_date(spoken) == date(1980, 3, 5)


@pytest.mark.parametrize("spoken", ["February 30 1980", "1980-02-30", "1980", "next week"])
def test_bad_dates_of_birth(spoken: str) -> None:
    with pytest.raises(DateError):
        resolve_date(spoken, field="date of birth")
