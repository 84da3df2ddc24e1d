"""The pure availability engine: which start times a service can be booked at.

``compute_slots`` is pure (no database, no clock): it takes everything it needs in an
``AvailabilityInput`` and returns UTC slots. Loading that input from the database and
searching across providers live in ``clinicbridge.scheduling.availability``.

Rules, in the provider's own timezone:

- Working hours and date exceptions are wall-clock minutes. Candidate starts lie on a
  grid of ``slot_interval`` minutes from the working interval's start. A wall time
  that does not exist (spring-forward gap) is skipped; a repeated one (fall-back) is
  taken once, at its first occurrence.
- The appointment ``[start, end)`` lies inside a working interval and outside any
  partial time off; ``[start - buffer_before, end + buffer_after)`` overlaps no busy
  block and no active time claim (claims already include their own buffers).
- A group service (capacity > 1) whose active claim has the same start and free seats
  stays bookable, with ``seats_left``.
- Starts are at least ``min_notice`` after now and at most ``max_advance_days`` ahead.

Internally instants are integer seconds since the epoch: the hot loop stays arithmetic.
Taken time is merged into sorted, disjoint intervals; on a plain day the free starts are
found by walking the gaps between them (whole runs of the grid at once), otherwise
(DST changes, partial time off, joinable group claims) start by start with ``bisect``.
``slot_starts`` answers epoch seconds and UTC offsets for callers that write many slots
out (the availability API), without building datetimes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from math import ceil
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from clinicbridge.scheduling.models import Service

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAY = 86_400


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime
    provider_id: str
    seats_left: int


@dataclass(frozen=True)
class ServiceRules:
    """The parts of a service that shape its slots."""

    id: str
    duration_minutes: int
    slot_interval_minutes: int
    buffer_before_minutes: int = 0
    buffer_after_minutes: int = 0
    min_notice_minutes: int = 0
    max_advance_days: int = 90
    capacity: int = 1

    @classmethod
    def of(cls, service: Service) -> ServiceRules:
        return cls(
            id=service.id,
            duration_minutes=service.duration_minutes,
            slot_interval_minutes=service.slot_interval_minutes,
            buffer_before_minutes=service.buffer_before_minutes or 0,
            buffer_after_minutes=service.buffer_after_minutes or 0,
            min_notice_minutes=service.min_notice_minutes or 0,
            max_advance_days=service.max_advance_days,
            capacity=service.capacity or 1,
        )


@dataclass(frozen=True)
class WeeklyInterval:
    weekday: int  # 0 = Monday
    start_minute: int
    end_minute: int
    location_id: str | None = field(default=None, compare=False)  # where: not what is free


@dataclass(frozen=True)
class DateException:
    on_date: date
    kind: str  # time_off | extra_hours
    start_minute: int | None = None  # None and None: the whole day (time_off)
    end_minute: int | None = None


@dataclass(frozen=True)
class Claim:
    """An active time claim as the engine sees it."""

    starts_at: datetime
    blocked_from: datetime
    blocked_until: datetime
    service_id: str
    capacity: int = 1
    seats_taken: int = 1


@dataclass(frozen=True)
class AvailabilityInput:
    provider_id: str
    timezone: str
    service: ServiceRules
    start: datetime  # range of slot starts, [start, end)
    end: datetime
    now: datetime
    hours: Sequence[WeeklyInterval] = ()
    exceptions: Sequence[DateException] = ()
    busy: Sequence[tuple[datetime, datetime]] = ()
    claims: Sequence[Claim] = ()
    # more taken time as epoch seconds [from, until): what load_input reads (busy blocks
    # and claims that cannot be joined), kept as integers because that is what is compared
    blocked: Sequence[tuple[int, int]] = ()
    bookings_in_range: int = field(default=0, compare=False)  # for provider_id=any


def _ts(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("availability needs timezone-aware datetimes")
    return int(value.timestamp())


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class _Blocks:
    """Disjoint sorted intervals; ``hits(a, b)`` is whether ``[a, b)`` overlaps one."""

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        starts: list[int] = []
        ends: list[int] = []
        for lo, hi in sorted(intervals):
            if ends and lo <= ends[-1]:
                if hi > ends[-1]:
                    ends[-1] = hi
            else:
                starts.append(lo)
                ends.append(hi)
        self.starts = starts
        self.ends = ends

    def hits(self, lo: int, hi: int) -> bool:
        i = bisect_left(self.starts, hi) - 1  # last interval starting before hi
        return i >= 0 and self.ends[i] > lo


class _GroupClaims:
    """Claims of this group service: joinable at their own start, blocking elsewhere.

    Active claims of one provider never overlap (the database guarantees it), so
    sorted by start they are sorted by end too."""

    def __init__(self, claims: Iterable[tuple[int, int, int, int]]) -> None:
        self.rows = sorted(claims)  # (blocked_from, blocked_until, starts_at, seats_left)
        self.froms = [r[0] for r in self.rows]
        self.seats = {r[2]: r[3] for r in self.rows}

    def hits(self, lo: int, hi: int, own_start: int) -> bool:
        i = bisect_left(self.froms, hi) - 1
        while i >= 0 and self.rows[i][1] > lo:
            if self.rows[i][2] != own_start:
                return True
            i -= 1
        return False


def _wall_epoch(day: date, minute: int) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * _DAY + minute * 60


@lru_cache(maxsize=4096)
def _offsets(tz: ZoneInfo, day: date, minute: int) -> tuple[int, int]:
    """UTC offsets (seconds) of a wall time at fold 0 and fold 1 (cached: the same days
    and working hours come back in every search)."""
    day, minute = (day + timedelta(days=1), 0) if minute >= 1440 else (day, minute)
    naive = datetime(day.year, day.month, day.day, minute // 60, minute % 60)
    off0 = tz.utcoffset(naive)
    off1 = tz.utcoffset(naive.replace(fold=1))
    assert off0 is not None and off1 is not None
    return int(off0.total_seconds()), int(off1.total_seconds())


def _instant(tz: ZoneInfo, day: date, minute: int) -> tuple[int, bool]:
    """(epoch seconds at the first occurrence, whether the wall time exists)."""
    off0, off1 = _offsets(tz, day, minute)
    return _wall_epoch(day, minute) - off0, off0 >= off1  # off0 < off1: a gap


def _bound(tz: ZoneInfo, day: date, minute: int, offsets: tuple[int, int]) -> int:
    """The first instant at which the wall clock reads ``minute`` or later: the first
    occurrence of a repeated time; for a time in a DST gap, the change itself."""
    off0, off1 = offsets
    wall = _wall_epoch(day, minute)
    if off0 >= off1:
        return wall - off0
    lo, hi = wall - off1, wall - off0  # the change lies between these two readings
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _utc(mid).astimezone(tz).utcoffset() == timedelta(seconds=off0):
            lo = mid
        else:
            hi = mid
    return hi


@lru_cache(maxsize=4096)
def _frame(tz: ZoneInfo, day: date, w_lo: int, w_hi: int) -> tuple[int, int, int | None]:
    """(first instant, end instant, UTC offset or None) of a working interval on one
    local date; the offset is None when a DST change may lie inside the interval."""
    off_lo, off_hi = _offsets(tz, day, w_lo), _offsets(tz, day, w_hi)
    i_lo, i_hi = _bound(tz, day, w_lo, off_lo), _bound(tz, day, w_hi, off_hi)
    same = off_lo[0] == off_lo[1] == off_hi[0] == off_hi[1]
    return i_lo, i_hi, off_lo[0] if same else None


def _grid(
    tz: ZoneInfo, day: date, w_lo: int, w_hi: int, step: int, duration: int, lo: int, hi: int
) -> tuple[Sequence[int], int | None]:
    """Starts (epoch seconds, ascending) on the wall-clock grid of one working interval whose
    appointment fits inside it, limited to ``[lo, hi]``; and the UTC offset of all of them
    (and of their ends) when it is one, else None.

    A start in a DST gap is skipped; a repeated wall time counts once."""
    i_lo, i_hi, offset = _frame(tz, day, w_lo, w_hi)
    last = min(hi, i_hi - duration)
    every = step * 60
    if offset is not None:  # no DST change inside: plain arithmetic
        first = i_lo + max(0, -(-(lo - i_lo) // every)) * every
        return range(first, last + 1, every), offset
    starts = []
    for minute in range(w_lo, w_hi, step):
        start, exists = _instant(tz, day, minute)
        if exists and start >= i_lo and lo <= start <= last:
            starts.append(start)
    return starts, None


def _free_starts(
    grid: range, duration: int, before: int, after: int, starts: list[int], ends: list[int]
) -> Iterator[range]:
    """The starts of ``grid`` whose ``[start - before, start + duration + after)`` overlaps
    none of the disjoint sorted intervals ``starts``/``ends``, as runs of the grid: a walk
    over the gaps between intervals, not a search per start."""
    if not grid:
        return
    every, last = grid.step, grid[-1]
    s, count = grid.start, len(starts)
    j = bisect_right(ends, s - before)  # the first interval that can touch s or later
    while s <= last:
        while j < count and ends[j] <= s - before:
            j += 1
        if j < count and starts[j] < s + duration + after:  # overlaps: skip past it
            s += -(-(ends[j] + before - s) // every) * every
            j += 1
            continue
        top = last if j == count else min(last, starts[j] - duration - after)
        run = range(s, top + 1, every)  # free up to the next interval
        if run:
            yield run
            s = run[-1] + every
        if j == count:
            return


def _day_intervals(
    day: date, weekly: dict[int, list[tuple[int, int]]], exceptions: Sequence[DateException]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]] | None:
    """(working intervals, partial time off) of one local date; None: the day is off."""
    working = list(weekly.get(day.weekday(), ()))
    off: list[tuple[int, int]] = []
    for exc in exceptions:
        if exc.start_minute is None or exc.end_minute is None:
            if exc.kind == "time_off":
                return None
            continue
        if exc.kind == "time_off":
            off.append((exc.start_minute, exc.end_minute))
        else:
            working.append((exc.start_minute, exc.end_minute))
    return working, off


def _off_bounds(tz: ZoneInfo, day: date, off: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Partial time off as instants (a DST change at either end: the wider interval)."""
    out = []
    for a, b in off:
        oa, ob = _offsets(tz, day, a), _offsets(tz, day, b)
        out.append((_wall_epoch(day, a) - max(oa), _wall_epoch(day, b) - min(ob)))
    return out


def slot_starts(inp: AvailabilityInput) -> list[tuple[int, int, int | None]]:
    """What ``compute_slots`` finds, as ``(start, seats_left, offset)`` sorted by start:
    epoch seconds, and the provider's UTC offset (seconds) at the start and at the end of
    the slot when the engine knows it is one and the same (else None). For callers that
    format many slots: no datetime is built."""
    rules = inp.service
    tz = ZoneInfo(inp.timezone)
    now = _ts(inp.now)
    lo = max(_ts(inp.start), now + rules.min_notice_minutes * 60)
    hi = _ts(inp.end)  # exclusive
    last = now + rules.max_advance_days * _DAY  # inclusive
    if lo >= hi or lo > last:
        return []
    duration = rules.duration_minutes * 60
    step = rules.slot_interval_minutes
    before, after = rules.buffer_before_minutes * 60, rules.buffer_after_minutes * 60

    group = rules.capacity > 1
    # aware datetimes only (checked on the range above; database values are UTC-aware)
    plain = [(int(a.timestamp()), ceil(b.timestamp())) for a, b in inp.busy]
    plain.extend(inp.blocked)
    joinable: list[tuple[int, int, int, int]] = []
    for claim in inp.claims:
        span = (int(claim.blocked_from.timestamp()), ceil(claim.blocked_until.timestamp()))
        seats_left = claim.capacity - claim.seats_taken
        if group and claim.service_id == rules.id and seats_left > 0:
            joinable.append((*span, _ts(claim.starts_at), seats_left))
        else:
            plain.append(span)
    blocks = _Blocks(plain)
    groups = _GroupClaims(joinable)

    weekly: dict[int, list[tuple[int, int]]] = {}
    for wh in inp.hours:
        weekly.setdefault(wh.weekday, []).append((wh.start_minute, wh.end_minute))
    by_date: dict[date, list[DateException]] = {}
    for exc in inp.exceptions:
        by_date.setdefault(exc.on_date, []).append(exc)

    first_day = _utc(lo).astimezone(tz).date()
    last_day = _utc(min(hi - 1, last)).astimezone(tz).date()
    latest = min(hi - 1, last)
    # start -> (seats, offset). A start found twice (overlapping intervals, a repeated
    # hour) is one slot: what a slot is depends on its start only.
    found: dict[int, tuple[int, int | None]] = {}
    block_starts, block_ends = blocks.starts, blocks.ends
    one_day = timedelta(days=1)
    day = first_day
    while day <= last_day:
        plan = _day_intervals(day, weekly, by_date.get(day, ()))
        if plan is None:
            day += one_day
            continue
        working, off = plan
        day_off = _off_bounds(tz, day, off) if off else None
        for w_lo, w_hi in working:
            grid, offset = _grid(tz, day, w_lo, w_hi, step, duration, lo, latest)
            if isinstance(grid, range) and day_off is None and not joinable:
                # the common case: runs of free starts between blocks
                value = (rules.capacity, offset)
                for run in _free_starts(grid, duration, before, after, block_starts, block_ends):
                    found.update(dict.fromkeys(run, value))
                continue
            k, count = 0, len(grid)
            while k < count:
                start = grid[k]
                end = start + duration
                k += 1
                if start in found or (day_off and any(a < end and b > start for a, b in day_off)):
                    continue
                b_lo, b_hi = start - before, end + after
                i = bisect_left(block_starts, b_hi) - 1  # inlined _Blocks.hits: the hot path
                if i >= 0 and block_ends[i] > b_lo:
                    # every start before this block's end + buffer hits it too: jump past
                    k = bisect_left(grid, block_ends[i] + before, k)
                    continue
                if groups.hits(b_lo, b_hi, start):
                    continue
                found[start] = (groups.seats.get(start, rules.capacity), offset)
        day += one_day
    return [(start, seats, offset) for start, (seats, offset) in sorted(found.items())]


def compute_slots(inp: AvailabilityInput) -> list[Slot]:
    """Bookable slots of one provider for one service, sorted by start."""
    length = inp.service.duration_minutes * 60
    pid = inp.provider_id
    return [
        Slot(_utc(start), _utc(start + length), pid, seats) for start, seats, _ in slot_starts(inp)
    ]
