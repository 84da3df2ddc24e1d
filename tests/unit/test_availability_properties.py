"""Property tests of the availability engine (hypothesis).

For random weekly hours, claims, busy blocks and service rules, in zones with and
without DST and across DST changes:

- no slot, widened by its buffers, overlaps a claim or a busy block;
- every slot lies inside the provider's working hours in the provider's timezone;
- and the engine finds exactly what a slow, obvious oracle finds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from clinicbridge.scheduling.slots import (
    AvailabilityInput,
    Claim,
    ServiceRules,
    Slot,
    WeeklyInterval,
    compute_slots,
)

ZONES = ("America/Toronto", "Europe/London", "Asia/Kolkata", "Australia/Lord_Howe", "UTC")
# ranges start near a DST change in some zone (or not)
FIRST_DAYS = (
    date(2026, 3, 6),
    date(2026, 3, 27),
    date(2026, 4, 3),
    date(2026, 10, 23),
    date(2026, 10, 30),
    date(2026, 10, 2),
    date(2026, 7, 1),
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def weekly_hours(draw: st.DrawFn) -> tuple[WeeklyInterval, ...]:
    out = []
    if draw(st.booleans()):  # nights: the hours in which clocks change
        return tuple(WeeklyInterval(d, 0, 4 * 60) for d in range(7))
    for weekday in range(7):
        edges = sorted(draw(st.sets(st.integers(0, 96), max_size=4)))
        for lo, hi in zip(edges[::2], edges[1::2], strict=False):
            out.append(WeeklyInterval(weekday, lo * 15, hi * 15))
    return tuple(out)


@st.composite
def inputs(draw: st.DrawFn) -> AvailabilityInput:
    zone = draw(st.sampled_from(ZONES))
    first = draw(st.sampled_from(FIRST_DAYS))
    tz = ZoneInfo(zone)
    start = datetime(first.year, first.month, first.day, tzinfo=tz).astimezone(UTC)
    start += timedelta(minutes=draw(st.integers(0, 24 * 60)))
    end = start + timedelta(hours=draw(st.integers(1, 4 * 24)))
    service = ServiceRules(
        id="svc_a",
        duration_minutes=draw(st.sampled_from([5, 15, 30, 45, 60, 90])),
        slot_interval_minutes=draw(st.sampled_from([5, 10, 15, 20, 25, 30, 45, 60, 70])),
        buffer_before_minutes=draw(st.sampled_from([0, 0, 5, 10, 15])),
        buffer_after_minutes=draw(st.sampled_from([0, 0, 5, 10, 30])),
        min_notice_minutes=draw(st.sampled_from([0, 60])),
        max_advance_days=400,
    )

    def interval(max_minutes: int) -> tuple[datetime, datetime]:
        at = start + timedelta(minutes=draw(st.integers(-120, 5 * 24 * 60)))
        return at, at + timedelta(minutes=draw(st.integers(1, max_minutes)))

    busy = tuple(interval(240) for _ in range(draw(st.integers(0, 6))))
    claims = []
    for _ in range(draw(st.integers(0, 6))):
        lo, hi = interval(120)
        claims.append(Claim(starts_at=lo, blocked_from=lo, blocked_until=hi, service_id="svc_b"))
    now = NOW if draw(st.booleans()) else start + timedelta(minutes=draw(st.integers(0, 600)))
    return AvailabilityInput(
        provider_id="prv_1",
        timezone=zone,
        service=service,
        start=start,
        end=end,
        now=now,
        hours=draw(weekly_hours()),
        busy=busy,
        claims=tuple(claims),
    )


def oracle(inp: AvailabilityInput) -> list[Slot]:
    """Every wall-clock grid time of every day, checked one by one with zoneinfo."""
    tz = ZoneInfo(inp.timezone)
    rules = inp.service
    length = timedelta(minutes=rules.duration_minutes)
    blockers = list(inp.busy) + [(c.blocked_from, c.blocked_until) for c in inp.claims]
    earliest = max(inp.start, inp.now + timedelta(minutes=rules.min_notice_minutes))
    found: dict[datetime, Slot] = {}
    day = inp.start.astimezone(tz).date() - timedelta(days=1)
    while day <= inp.end.astimezone(tz).date():
        for wh in inp.hours:
            if wh.weekday != day.weekday():
                continue
            midnight = datetime(day.year, day.month, day.day)
            end_wall = midnight + timedelta(minutes=wh.end_minute)
            # the first instant at which the wall clock reads end_wall or later
            bound = end_wall.replace(tzinfo=tz).astimezone(UTC) - timedelta(hours=2)
            while bound.astimezone(tz).replace(tzinfo=None) < end_wall:
                bound += timedelta(minutes=1)
            for minute in range(wh.start_minute, wh.end_minute, rules.slot_interval_minutes):
                wall = midnight + timedelta(minutes=minute)
                start = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: first occurrence
                if start.astimezone(tz).replace(tzinfo=None) != wall:
                    continue  # does not exist (DST gap)
                end = start + length
                if end > bound:  # inside hours
                    continue
                if not (earliest <= start < inp.end):
                    continue
                lo = start - timedelta(minutes=rules.buffer_before_minutes)
                hi = end + timedelta(minutes=rules.buffer_after_minutes)
                if any(a < hi and b > lo for a, b in blockers):
                    continue
                found[start] = Slot(start, end, inp.provider_id, 1)
        day += timedelta(days=1)
    return [found[k] for k in sorted(found)]


@settings(max_examples=300, deadline=None)
@given(inputs())
def test_no_slot_overlaps_a_claim_or_busy_block_with_buffers(inp: AvailabilityInput) -> None:
    rules = inp.service
    for slot in compute_slots(inp):
        lo = slot.start - timedelta(minutes=rules.buffer_before_minutes)
        hi = slot.end + timedelta(minutes=rules.buffer_after_minutes)
        for a, b in [*inp.busy, *((c.blocked_from, c.blocked_until) for c in inp.claims)]:
            assert not (a < hi and b > lo), (slot, a, b)


@settings(max_examples=300, deadline=None)
@given(inputs())
def test_every_slot_is_inside_working_hours_in_the_providers_zone(
    inp: AvailabilityInput,
) -> None:
    tz = ZoneInfo(inp.timezone)
    slots = compute_slots(inp)
    assert [s.start for s in slots] == sorted({s.start for s in slots})  # sorted, no doubles
    for slot in slots:
        assert slot.end - slot.start == timedelta(minutes=inp.service.duration_minutes)
        assert inp.start <= slot.start < inp.end and slot.start >= inp.now
        local = slot.start.astimezone(tz)
        minute = local.hour * 60 + local.minute
        # The interval ends at an instant: on a spring-forward day a wall-clock end inside
        # the gap (02:00 in Toronto) is the moment the clock jumps, shown as 03:00 after it.
        assert any(
            wh.weekday == local.weekday()
            and wh.start_minute <= minute
            and slot.end <= _wall_instant(local.date(), wh.end_minute, tz)
            and (minute - wh.start_minute) % inp.service.slot_interval_minutes == 0
            for wh in inp.hours
        ), (slot, local)


def _wall_instant(day: date, minute: int, tz: ZoneInfo) -> datetime:
    """The instant of a wall-clock time (``24:00`` is the next midnight), read as
    ``zoneinfo`` reads one: a time in a gap with the offset from before the change."""
    if minute >= 1440:
        return datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz).astimezone(UTC)


@settings(max_examples=300, deadline=None)
@given(inputs())
def test_the_engine_agrees_with_a_slow_oracle(inp: AvailabilityInput) -> None:
    assert compute_slots(inp) == oracle(inp)
