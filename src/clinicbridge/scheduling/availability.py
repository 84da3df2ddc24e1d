"""The availability engine: which start times a service can be booked at.

``compute_slots`` is pure (no database, no clock): it takes everything it needs in an
``AvailabilityInput`` and returns UTC slots. ``load_input`` reads that input for one
provider and one range; ``find_slots`` and ``slot_is_bookable`` are the entry points
the API, bookings and voice use.

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
``search_slots`` and ``slot_starts`` answer epoch seconds and UTC offsets for callers
that write many slots out (the availability API), without building datetimes.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from math import ceil
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from clinicbridge.core.errors import InvalidInputError
from clinicbridge.scheduling.models import (
    BusyBlock,
    Provider,
    ScheduleException,
    Service,
    ServiceProvider,
    TimeClaim,
    WorkingHours,
)

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


# --- pure engine ---------------------------------------------------------------------


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


# --- loading from the database ---------------------------------------------------------

Reader = Session | sa.Connection


_UNIXEPOCH = sqlite3.sqlite_version_info >= (3, 38)  # faster than strftime


class _Epoch(FunctionElement[int]):
    """A UTC timestamp column as integer epoch seconds, computed by the database: the
    loader then builds no datetime objects. Rounded down; ``_EpochUp`` rounds up (for
    the ends of ranges, so a fraction of a second is never lost)."""

    type = sa.BigInteger()
    inherit_cache = True
    up = False


class _EpochUp(_Epoch):
    inherit_cache = True
    up = True


@compiles(_Epoch, "sqlite")
def _epoch_sqlite(element: _Epoch, compiler: Any, **kw: Any) -> str:
    # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC); both functions drop the fraction
    col = compiler.process(element.clauses, **kw)
    floor = f"unixepoch({col})" if _UNIXEPOCH else f"CAST(strftime('%s', {col}) AS INTEGER)"
    return f"({floor} + (substr({col}, 21) > '000000'))" if element.up else floor


@compiles(_Epoch)
def _epoch_default(element: _Epoch, compiler: Any, **kw: Any) -> str:
    col = compiler.process(element.clauses, **kw)
    return f"CAST({'CEIL' if element.up else 'FLOOR'}(EXTRACT(EPOCH FROM {col})) AS BIGINT)"


_P = sa.bindparam
_HOURS = sa.select(WorkingHours.weekday, WorkingHours.start_minute, WorkingHours.end_minute).where(
    WorkingHours.tenant_id == _P("tenant_id"), WorkingHours.provider_id == _P("provider_id")
)
_EXCEPTIONS = sa.select(
    ScheduleException.on_date,
    ScheduleException.kind,
    ScheduleException.start_minute,
    ScheduleException.end_minute,
).where(
    ScheduleException.tenant_id == _P("tenant_id"),
    ScheduleException.provider_id == _P("provider_id"),
    ScheduleException.on_date >= _P("first_day"),
    ScheduleException.on_date <= _P("last_day"),
)
_BUSY = sa.select(_Epoch(BusyBlock.starts_at), _EpochUp(BusyBlock.ends_at)).where(
    BusyBlock.tenant_id == _P("tenant_id"),
    BusyBlock.provider_id == _P("provider_id"),
    BusyBlock.starts_at < _P("until", type_=BusyBlock.starts_at.type),
    BusyBlock.ends_at > _P("since", type_=BusyBlock.ends_at.type),
)
_CLAIMS = sa.select(
    _Epoch(TimeClaim.starts_at),
    _Epoch(TimeClaim.blocked_from),
    _EpochUp(TimeClaim.blocked_until),
    TimeClaim.service_id,
    TimeClaim.capacity,
    TimeClaim.seats_taken,
).where(
    TimeClaim.tenant_id == _P("tenant_id"),
    TimeClaim.provider_id == _P("provider_id"),
    TimeClaim.active.is_(True),
    TimeClaim.blocked_from < _P("until", type_=TimeClaim.blocked_from.type),
    TimeClaim.blocked_until > _P("since", type_=TimeClaim.blocked_until.type),
)
_PROVIDER_TZ = sa.select(Provider.timezone).where(
    Provider.tenant_id == _P("tenant_id"), Provider.id == _P("provider_id")
)
# Taken time of a service that seats one (no claim can be joined): busy blocks and claims
# in one statement, only what is compared; ranked, also the seats each claim takes in the
# range (to rank providers for "any").
_in_range = sa.and_(
    TimeClaim.starts_at >= _P("lo", type_=TimeClaim.starts_at.type),
    TimeClaim.starts_at < _P("hi", type_=TimeClaim.starts_at.type),
)


def _taken(ranked: bool) -> sa.CompoundSelect[*tuple[Any, ...]]:
    busy = sa.select(_Epoch(BusyBlock.starts_at), _EpochUp(BusyBlock.ends_at))
    claims = sa.select(_Epoch(TimeClaim.blocked_from), _EpochUp(TimeClaim.blocked_until))
    if ranked:
        busy = busy.add_columns(sa.literal(0))
        claims = claims.add_columns(sa.case((_in_range, TimeClaim.seats_taken), else_=0))
    return sa.union_all(
        busy.where(
            BusyBlock.tenant_id == _P("tenant_id"),
            BusyBlock.provider_id == _P("provider_id"),
            BusyBlock.starts_at < _P("until", type_=BusyBlock.starts_at.type),
            BusyBlock.ends_at > _P("since", type_=BusyBlock.ends_at.type),
        ),
        claims.where(
            TimeClaim.tenant_id == _P("tenant_id"),
            TimeClaim.provider_id == _P("provider_id"),
            TimeClaim.active.is_(True),
            TimeClaim.blocked_from < _P("until", type_=TimeClaim.blocked_from.type),
            TimeClaim.blocked_until > _P("since", type_=TimeClaim.blocked_until.type),
        ),
    )


_TAKEN_RANKED = _taken(True)
_TAKEN = _taken(False)


def load_input(
    session_or_connection: Reader,
    tenant_id: str,
    service: Service | ServiceRules,
    provider_id: str,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    timezone: str | None = None,
) -> AvailabilityInput:
    """Everything ``compute_slots`` needs for one provider and ``[start, end)``: three
    or four small selects, prepared once.

    Raises InvalidInputError (``provider_id``) when the provider is not this clinic's."""
    return _load_input(
        session_or_connection, tenant_id, service, provider_id, start, end, now, timezone, True
    )


def _load_input(
    session_or_connection: Reader,
    tenant_id: str,
    service: Service | ServiceRules,
    provider_id: str,
    start: datetime,
    end: datetime,
    now: datetime,
    timezone: str | None,
    rank: bool,
) -> AvailabilityInput:
    """``load_input``; ``rank=False`` leaves ``bookings_in_range`` at 0 (one provider:
    nothing to rank) and reads a little less."""
    # Core statements on the session's connection: no ORM execution overhead
    conn = (
        session_or_connection.connection()
        if isinstance(session_or_connection, Session)
        else session_or_connection
    )
    rules = service if isinstance(service, ServiceRules) else ServiceRules.of(service)
    key = {"tenant_id": tenant_id, "provider_id": provider_id}
    if timezone is None:
        timezone = conn.execute(_PROVIDER_TZ, key).scalar()
        if timezone is None:
            raise InvalidInputError.one("provider_id", "no such provider", "not_found")
    tz = ZoneInfo(timezone)
    reach = timedelta(
        minutes=rules.duration_minutes + rules.buffer_before_minutes + rules.buffer_after_minutes
    )
    window = {**key, "since": start - reach, "until": end + reach}
    hours = [WeeklyInterval(*row) for row in conn.execute(_HOURS, key).all()]
    days = {
        "first_day": start.astimezone(tz).date() - timedelta(days=1),
        "last_day": end.astimezone(tz).date() + timedelta(days=1),
    }
    exceptions = [DateException(*row) for row in conn.execute(_EXCEPTIONS, {**key, **days}).all()]
    joinable: list[Claim] = []
    booked = 0
    if rules.capacity == 1 and rank:
        rows = conn.execute(_TAKEN_RANKED, {**window, "lo": start, "hi": end}).all()
        blocked: list[tuple[int, int]] = [(a, b) for a, b, _ in rows]
        booked = sum(seats for _, _, seats in rows)
    elif rules.capacity == 1:
        blocked = [(a, b) for a, b in conn.execute(_TAKEN, window).all()]
    else:
        blocked = [(a, b) for a, b in conn.execute(_BUSY, window).all()]
        lo, hi = _ts(start), _ts(end)
        for at, b_from, b_until, service_id, capacity, seats in conn.execute(_CLAIMS, window).all():
            if lo <= at < hi:
                booked += seats
            if service_id == rules.id and seats < capacity:
                joinable.append(
                    Claim(_utc(at), _utc(b_from), _utc(b_until), service_id, capacity, seats)
                )
            else:
                blocked.append((b_from, b_until))
    return AvailabilityInput(
        provider_id=provider_id,
        timezone=timezone,
        service=rules,
        start=start,
        end=end,
        now=now,
        hours=hours,
        exceptions=exceptions,
        claims=joinable,
        blocked=blocked,
        bookings_in_range=booked,
    )


_RULE_COLUMNS = (
    Service.id,
    Service.duration_minutes,
    Service.slot_interval_minutes,
    Service.buffer_before_minutes,
    Service.buffer_after_minutes,
    Service.min_notice_minutes,
    Service.max_advance_days,
    Service.capacity,
)
_SERVICE = sa.select(Service.is_active, *_RULE_COLUMNS).where(
    Service.tenant_id == _P("tenant_id"), Service.id == _P("service_id")
)
_ELIGIBLE = (
    sa.select(Provider.id, Provider.timezone)
    .join(ServiceProvider, ServiceProvider.provider_id == Provider.id)
    .where(
        ServiceProvider.tenant_id == _P("tenant_id"),
        ServiceProvider.service_id == _P("service_id"),
        Provider.tenant_id == _P("tenant_id"),
        Provider.is_active.is_(True),
    )
    .order_by(Provider.id)
)


def _service_rules(conn: Reader, tenant_id: str, service_id: str) -> ServiceRules | None:
    """The service's rules; None if inactive. InvalidInputError if not this clinic's."""
    row = conn.execute(_SERVICE, {"tenant_id": tenant_id, "service_id": service_id}).first()
    if row is None:
        raise InvalidInputError.one("service_id", "no such service", "not_found")
    return ServiceRules(*row[1:]) if row[0] else None


def eligible_providers(conn: Reader, tenant_id: str, service_id: str) -> list[tuple[str, str]]:
    """(id, timezone) of the active providers who give a service, by id."""
    rows = conn.execute(_ELIGIBLE, {"tenant_id": tenant_id, "service_id": service_id})
    return [(pid, tz) for pid, tz in rows]


def provider_timezones(conn: Reader, tenant_id: str, provider_ids: Iterable[str]) -> dict[str, str]:
    """IANA timezone name per provider id (of this clinic)."""
    rows = conn.execute(
        sa.select(Provider.id, Provider.timezone).where(
            Provider.tenant_id == tenant_id, Provider.id.in_(list(provider_ids))
        )
    )
    return {pid: name for pid, name in rows}


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None:
        raise InvalidInputError.one(name, "needs a timezone offset (e.g. 2026-03-09T09:00-04:00)")
    return value


@dataclass(frozen=True)
class Found:
    """What a search found, for callers that format many slots without building datetimes:
    ``rows`` are ``(start, seats_left, offset, provider_id)`` sorted by start (epoch seconds;
    ``offset`` as in ``slot_starts``), ``timezones`` the IANA zone of each provider
    searched, ``length`` the slots' length in seconds."""

    rows: list[tuple[int, int, int | None, str]]
    timezones: dict[str, str]
    length: int

    def slots(self) -> list[Slot]:
        length = self.length
        return [
            Slot(_utc(start), _utc(start + length), pid, seats)
            for start, seats, _, pid in self.rows
        ]


def search_slots(
    conn: Reader,
    tenant_id: str,
    *,
    service_id: str,
    provider_id: str | None,
    start: datetime,
    end: datetime,
    now: datetime,
    limit: int | None = None,
) -> Found:
    """``find_slots`` on a connection (or session), answering ``Found``."""
    start, end = _aware("from", start), _aware("to", end)
    if isinstance(conn, Session):
        conn = conn.connection()
    rules = _service_rules(conn, tenant_id, service_id)
    length = (rules.duration_minutes if rules is not None else 0) * 60
    if rules is None:
        return Found([], {}, length)
    eligible = eligible_providers(conn, tenant_id, service_id)
    if provider_id is not None:
        chosen = [p for p in eligible if p[0] == provider_id]
        if not chosen:
            exists = conn.execute(
                sa.select(Provider.is_active).where(
                    Provider.tenant_id == tenant_id, Provider.id == provider_id
                )
            ).first()
            if exists is None:
                raise InvalidInputError.one("provider_id", "no such provider", "not_found")
            if not exists[0]:
                return Found([], {}, length)
            raise InvalidInputError.one(
                "provider_id", "this provider does not give this service", "not_eligible"
            )
        eligible = chosen
    rows: list[tuple[int, int, int | None, str]]
    if len(eligible) == 1:
        pid, tz = eligible[0]
        inp = _load_input(conn, tenant_id, rules, pid, start, end, now, tz, False)
        rows = [(at, seats, offset, pid) for at, seats, offset in slot_starts(inp)]
    else:
        per_start: dict[int, tuple[int, str, int, int | None]] = {}
        for pid, tz in eligible:
            inp = load_input(conn, tenant_id, rules, pid, start, end, now, timezone=tz)
            booked = inp.bookings_in_range
            for at, seats, offset in slot_starts(inp):
                best = per_start.get(at)
                if best is None or (booked, pid) < best[:2]:
                    per_start[at] = (booked, pid, seats, offset)
        rows = [(at, r[2], r[3], r[1]) for at, r in sorted(per_start.items())]
    if limit is not None:
        rows = rows[:limit]
    return Found(rows, dict(eligible), length)


def find_slots(
    session: Session,
    tenant_id: str,
    *,
    service_id: str,
    provider_id: str | None,
    start: datetime,
    end: datetime,
    now: datetime,
    limit: int | None = None,
) -> list[Slot]:
    """Bookable slots of a service in ``[start, end)``; ``provider_id=None`` means any.

    For "any", each start time goes to the free eligible provider with the fewest
    bookings in the range (ties: lowest id), so the choice is deterministic.
    Unknown service or provider, or a provider who does not give the service:
    InvalidInputError naming ``service_id`` / ``provider_id``."""
    return search_slots(
        session,
        tenant_id,
        service_id=service_id,
        provider_id=provider_id,
        start=start,
        end=end,
        now=now,
        limit=limit,
    ).slots()


def slot_is_bookable(
    session: Reader,
    tenant_id: str,
    *,
    service: Service,
    provider_id: str,
    start: datetime,
    now: datetime,
) -> Slot | None:
    """The slot starting exactly at ``start``, if it can be booked now; else None.

    Reads only the hours around ``start``. None also when the provider is inactive,
    not this clinic's, or does not give the service, or the service is inactive."""
    start = _aware("start", start)
    if not service.is_active or service.tenant_id != tenant_id:
        return None
    row = session.execute(
        sa.select(Provider.timezone)
        .join(ServiceProvider, ServiceProvider.provider_id == Provider.id)
        .where(
            Provider.tenant_id == tenant_id,
            Provider.id == provider_id,
            Provider.is_active.is_(True),
            ServiceProvider.service_id == service.id,
        )
    ).first()
    if row is None:
        return None
    inp = load_input(
        session,
        tenant_id,
        service,
        provider_id,
        start,
        start + timedelta(seconds=1),
        now,
        timezone=row[0],
    )
    for slot in compute_slots(inp):
        if slot.start == start:
            return slot
    return None
