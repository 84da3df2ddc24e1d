"""Availability across both DST changes in America/Toronto and Europe/London.

Working hours are wall-clock: 09:00 stays 09:00 when the offset changes; a wall time
that does not exist is skipped; a repeated one gives one slot, not two."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from clinicbridge.scheduling.slots import (
    AvailabilityInput,
    ServiceRules,
    Slot,
    WeeklyInterval,
    compute_slots,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SERVICE = ServiceRules(
    id="svc_a", duration_minutes=30, slot_interval_minutes=30, max_advance_days=400
)
EVERY_DAY = tuple(WeeklyInterval(d, 9 * 60, 17 * 60) for d in range(7))
NIGHTS = tuple(WeeklyInterval(d, 0, 4 * 60) for d in range(7))  # 00:00-04:00, across the change

# (zone, day of the change, hours before / after in UTC of 09:00 local, skipped, repeated)
CHANGES = {
    "toronto-spring": ("America/Toronto", date(2026, 3, 8), 14, 13),
    "toronto-fall": ("America/Toronto", date(2026, 11, 1), 13, 14),
    "london-spring": ("Europe/London", date(2026, 3, 29), 9, 8),
    "london-fall": ("Europe/London", date(2026, 10, 25), 8, 9),
}


def slots(zone: str, first: date, days: int, hours: tuple[WeeklyInterval, ...]) -> list[Slot]:
    tz = ZoneInfo(zone)
    start = datetime(first.year, first.month, first.day, tzinfo=tz)
    return compute_slots(
        AvailabilityInput(
            provider_id="prv_1",
            timezone=zone,
            service=SERVICE,
            start=start,
            end=start + timedelta(days=days),
            now=NOW,
            hours=hours,
        )
    )


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_nine_oclock_stays_nine_oclock(case: str) -> None:
    zone, change, utc_before, utc_after = CHANGES[case]
    tz = ZoneInfo(zone)
    found = slots(zone, change - timedelta(days=1), 3, EVERY_DAY)
    assert len(found) == 3 * 16
    firsts = [s for s in found if s.start.astimezone(tz).strftime("%H:%M") == "09:00"]
    assert [s.start.astimezone(UTC).hour for s in firsts] == [utc_before, utc_after, utc_after]
    for slot in found:
        local_start, local_end = slot.start.astimezone(tz), slot.end.astimezone(tz)
        assert "09:00" <= local_start.strftime("%H:%M") <= "16:30"
        assert local_end.strftime("%H:%M") <= "17:00"
        assert slot.end - slot.start == timedelta(minutes=30)


def local_starts(zone: str, found: list[Slot]) -> list[str]:
    tz = ZoneInfo(zone)
    return [s.start.astimezone(tz).strftime("%H:%M%z") for s in found]


def test_toronto_spring_gap_is_skipped() -> None:
    found = slots("America/Toronto", date(2026, 3, 8), 1, NIGHTS)
    assert local_starts("America/Toronto", found) == [
        "00:00-0500",
        "00:30-0500",
        "01:00-0500",
        "01:30-0500",
        "03:00-0400",
        "03:30-0400",
    ]
    # the 01:30 appointment lasts 30 real minutes and ends at 03:00 daylight time
    assert found[3].end.astimezone(ZoneInfo("America/Toronto")).strftime("%H:%M") == "03:00"


def test_toronto_fall_repeated_hour_is_not_doubled() -> None:
    found = slots("America/Toronto", date(2026, 11, 1), 1, NIGHTS)
    assert local_starts("America/Toronto", found) == [
        "00:00-0400",
        "00:30-0400",
        "01:00-0400",
        "01:30-0400",
        "02:00-0500",
        "02:30-0500",
        "03:00-0500",
        "03:30-0500",
    ]
    assert len({s.start for s in found}) == 8


def test_london_spring_gap_is_skipped() -> None:
    found = slots("Europe/London", date(2026, 3, 29), 1, NIGHTS)
    assert local_starts("Europe/London", found) == [
        "00:00+0000",
        "00:30+0000",
        "02:00+0100",
        "02:30+0100",
        "03:00+0100",
        "03:30+0100",
    ]


def test_london_fall_repeated_hour_is_not_doubled() -> None:
    found = slots("Europe/London", date(2026, 10, 25), 1, NIGHTS)
    assert local_starts("Europe/London", found) == [
        "00:00+0100",
        "00:30+0100",
        "01:00+0100",
        "01:30+0100",
        "02:00+0000",
        "02:30+0000",
        "03:00+0000",
        "03:30+0000",
    ]


def test_a_grid_that_does_not_divide_the_hour_skips_gap_times() -> None:
    service = ServiceRules(
        id="svc_c", duration_minutes=30, slot_interval_minutes=45, max_advance_days=400
    )
    tz = ZoneInfo("America/Toronto")
    start = datetime(2026, 3, 8, tzinfo=tz)
    found = compute_slots(
        AvailabilityInput(
            provider_id="prv_1",
            timezone="America/Toronto",
            service=service,
            start=start,
            end=start + timedelta(days=1),
            now=NOW,
            hours=NIGHTS,
        )
    )
    # 02:15 does not exist; it must not turn into 03:15 daylight time
    assert local_starts("America/Toronto", found) == [
        "00:00-0500",
        "00:45-0500",
        "01:30-0500",
        "03:00-0400",
    ]


def test_an_interval_ending_in_the_gap_ends_at_the_gap() -> None:
    # working 00:00-02:30 on the spring day: 02:30 does not exist; the day's work ends when
    # the clock jumps from 02:00 to 03:00, so the last slot is 01:30-03:00 (30 real minutes)
    hours = (WeeklyInterval(6, 0, 2 * 60 + 30),)
    found = slots("America/Toronto", date(2026, 3, 8), 1, hours)
    assert local_starts("America/Toronto", found)[-2:] == ["01:00-0500", "01:30-0500"]
    assert found[-1].end == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


def test_a_service_longer_than_the_fall_back_hour() -> None:
    service = ServiceRules(
        id="svc_b", duration_minutes=90, slot_interval_minutes=60, max_advance_days=400
    )
    tz = ZoneInfo("America/Toronto")
    start = datetime(2026, 11, 1, tzinfo=tz)
    found = compute_slots(
        AvailabilityInput(
            provider_id="prv_1",
            timezone="America/Toronto",
            service=service,
            start=start,
            end=start + timedelta(days=1),
            now=NOW,
            hours=NIGHTS,
        )
    )
    # 00:00-04:00 wall time is 5 real hours this night; 90 minutes real each
    assert local_starts("America/Toronto", found) == [
        "00:00-0400",
        "01:00-0400",
        "02:00-0500",
    ]
    assert all(s.end - s.start == timedelta(minutes=90) for s in found)
