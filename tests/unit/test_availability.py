"""The pure availability engine: hours, grid, buffers, notice, advance, capacity, exceptions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from clinicbridge.scheduling.slots import (
    AvailabilityInput,
    Claim,
    DateException,
    ServiceRules,
    Slot,
    WeeklyInterval,
    compute_slots,
)

TORONTO = ZoneInfo("America/Toronto")
MONDAY = date(2026, 12, 7)  # winter: Toronto is UTC-5
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WEEKDAYS_9_TO_5 = tuple(WeeklyInterval(d, 9 * 60, 17 * 60) for d in range(5))


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=TORONTO)


def rules(**over: int) -> ServiceRules:
    fields = {"duration_minutes": 30, "slot_interval_minutes": 30, "max_advance_days": 365}
    fields.update(over)
    return ServiceRules(id="svc_a", **fields)


def slots_on(
    day: date = MONDAY,
    *,
    service: ServiceRules | None = None,
    hours: tuple[WeeklyInterval, ...] = WEEKDAYS_9_TO_5,
    now: datetime = NOW,
    **extra: object,
) -> list[Slot]:
    inp = AvailabilityInput(
        provider_id="prv_1",
        timezone="America/Toronto",
        service=service or rules(),
        start=local(day, 0),
        end=local(day + timedelta(days=1), 0),
        now=now,
        hours=hours,
        **extra,  # type: ignore[arg-type]
    )
    return compute_slots(inp)


def starts(slots: list[Slot]) -> list[str]:
    return [s.start.astimezone(TORONTO).strftime("%H:%M") for s in slots]


def test_a_working_day_gives_grid_slots_in_utc() -> None:
    slots = slots_on()
    assert len(slots) == 16
    assert slots[0] == Slot(
        datetime(2026, 12, 7, 14, 0, tzinfo=UTC),
        datetime(2026, 12, 7, 14, 30, tzinfo=UTC),
        "prv_1",
        1,
    )
    assert starts(slots)[-1] == "16:30"  # the last one still ends by 17:00
    assert all(s.start.tzinfo is not None and s.start.utcoffset() == timedelta(0) for s in slots)


def test_weekend_has_no_slots() -> None:
    assert slots_on(MONDAY - timedelta(days=1)) == []


def test_grid_is_aligned_to_the_working_interval_start() -> None:
    hours = (WeeklyInterval(0, 9 * 60 + 10, 10 * 60 + 30),)
    assert starts(slots_on(hours=hours, service=rules(slot_interval_minutes=15))) == [
        "09:10",
        "09:25",
        "09:40",
        "09:55",
    ]


def test_a_long_service_on_a_short_grid() -> None:
    hours = (WeeklyInterval(0, 9 * 60, 11 * 60),)
    service = rules(duration_minutes=60, slot_interval_minutes=20)
    assert starts(slots_on(hours=hours, service=service)) == ["09:00", "09:20", "09:40", "10:00"]


def test_claims_and_busy_blocks_take_their_time() -> None:
    claim = Claim(
        starts_at=local(MONDAY, 10),
        blocked_from=local(MONDAY, 10),
        blocked_until=local(MONDAY, 10, 30),
        service_id="svc_other",
    )
    busy = ((local(MONDAY, 13, 5), local(MONDAY, 13, 55)),)
    got = starts(slots_on(claims=(claim,), busy=busy))
    assert "10:00" not in got and "09:30" in got and "10:30" in got
    assert "13:00" not in got and "13:30" not in got
    assert "12:30" in got and "14:00" in got


def test_buffers_widen_what_must_be_free() -> None:
    claim = Claim(
        starts_at=local(MONDAY, 10),
        blocked_from=local(MONDAY, 10),
        blocked_until=local(MONDAY, 10, 30),
        service_id="svc_other",
    )
    got = starts(
        slots_on(service=rules(buffer_before_minutes=10, buffer_after_minutes=10), claims=(claim,))
    )
    # 09:30 needs [09:20, 10:10): hits the claim; 10:30 needs [10:20, 11:10): hits it too
    assert "09:00" in got and "09:30" not in got and "10:30" not in got and "11:00" in got


def test_touching_a_claim_is_fine() -> None:
    busy = ((local(MONDAY, 9, 30), local(MONDAY, 10)),)
    got = starts(slots_on(busy=busy))
    assert "09:00" in got and "10:00" in got and "09:30" not in got


def test_minimum_notice_and_maximum_advance() -> None:
    now = local(MONDAY, 10, 5).astimezone(UTC)
    got = starts(slots_on(now=now, service=rules(min_notice_minutes=120)))
    assert got[0] == "12:30"
    assert slots_on(now=now - timedelta(days=10), service=rules(max_advance_days=5)) == []
    # the advance limit cuts inside a day: only starts up to now + 1 day
    got = starts(
        slots_on(now=local(MONDAY - timedelta(days=1), 11), service=rules(max_advance_days=1))
    )
    assert got == ["09:00", "09:30", "10:00", "10:30", "11:00"]


def test_nothing_in_the_past() -> None:
    assert starts(slots_on(now=local(MONDAY, 16, 10).astimezone(UTC))) == ["16:30"]


def test_group_service_keeps_a_partly_taken_slot_with_seats_left() -> None:
    service = rules(capacity=4, duration_minutes=60, slot_interval_minutes=30)
    partly = Claim(
        starts_at=local(MONDAY, 10),
        blocked_from=local(MONDAY, 10),
        blocked_until=local(MONDAY, 11),
        service_id="svc_a",
        capacity=4,
        seats_taken=3,
    )
    slots = slots_on(service=service, claims=(partly,))
    by_start = {s.start.astimezone(TORONTO).strftime("%H:%M"): s.seats_left for s in slots}
    assert by_start["10:00"] == 1
    assert by_start["09:00"] == 4
    assert "09:30" not in by_start and "10:30" not in by_start  # overlap the group session
    full = Claim(
        starts_at=partly.starts_at,
        blocked_from=partly.blocked_from,
        blocked_until=partly.blocked_until,
        service_id="svc_a",
        capacity=4,
        seats_taken=4,
    )
    assert "10:00" not in starts(slots_on(service=service, claims=(full,)))


def test_another_service_at_the_same_start_blocks_a_group_slot() -> None:
    service = rules(capacity=4)
    other = Claim(
        starts_at=local(MONDAY, 10),
        blocked_from=local(MONDAY, 10),
        blocked_until=local(MONDAY, 10, 30),
        service_id="svc_b",
        capacity=4,
        seats_taken=1,
    )
    assert "10:00" not in starts(slots_on(service=service, claims=(other,)))


def test_all_day_time_off() -> None:
    off = (DateException(MONDAY, "time_off"),)
    assert slots_on(exceptions=off) == []
    assert len(slots_on(MONDAY + timedelta(days=1), exceptions=off)) == 16


def test_partial_time_off_and_extra_hours() -> None:
    exceptions = (
        DateException(MONDAY, "time_off", 12 * 60, 13 * 60 + 15),
        DateException(MONDAY, "extra_hours", 18 * 60, 19 * 60),
    )
    got = starts(slots_on(exceptions=exceptions))
    assert "11:30" in got and "12:00" not in got and "12:30" not in got and "13:00" not in got
    assert "13:30" in got
    assert got[-2:] == ["18:00", "18:30"]
    saturday = MONDAY + timedelta(days=5)
    extra = (DateException(saturday, "extra_hours", 10 * 60, 11 * 60),)
    assert starts(slots_on(saturday, exceptions=extra)) == ["10:00", "10:30"]


def test_extra_hours_overlapping_weekly_hours_do_not_double_slots() -> None:
    extra = (DateException(MONDAY, "extra_hours", 16 * 60, 18 * 60),)
    got = starts(slots_on(exceptions=extra))
    assert len(got) == len(set(got)) == 18


def test_range_is_start_inclusive_end_exclusive() -> None:
    inp = AvailabilityInput(
        provider_id="prv_1",
        timezone="America/Toronto",
        service=rules(),
        start=local(MONDAY, 10),
        end=local(MONDAY, 11),
        now=NOW,
        hours=WEEKDAYS_9_TO_5,
    )
    assert starts(compute_slots(inp)) == ["10:00", "10:30"]


def test_naive_datetimes_are_refused() -> None:
    inp = AvailabilityInput(
        provider_id="prv_1",
        timezone="America/Toronto",
        service=rules(),
        start=datetime(2026, 12, 7, 9),
        end=datetime(2026, 12, 8, 9),
        now=NOW,
        hours=WEEKDAYS_9_TO_5,
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_slots(inp)


def test_many_blockers_leave_only_the_gaps() -> None:
    # every other half hour busy, from 9:00: only the free half hours remain
    busy = tuple(
        (local(MONDAY, 9) + timedelta(hours=h), local(MONDAY, 9, 30) + timedelta(hours=h))
        for h in range(8)
    )
    assert starts(slots_on(busy=busy)) == [f"{h:02d}:30" for h in range(9, 17)]
