"""Availability from the database: loading the engine's input and searching providers.

The pure engine (``compute_slots``, ``slot_starts`` and their input types) lives in
``clinicbridge.scheduling.slots``. ``load_input`` reads that input for one provider and
one range; ``find_slots`` is the entry point voice and the public API use (bookings
load the input of the one start they take). ``search_slots`` answers epoch seconds and
UTC offsets (see ``slot_starts``) for callers that write many slots out (the
availability API), without building datetimes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
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
from clinicbridge.scheduling.slots import (
    AvailabilityInput,
    Claim,
    DateException,
    ServiceRules,
    Slot,
    WeeklyInterval,
    _ts,
    _utc,
    compute_slots,
    slot_starts,
)

__all__ = [
    "AvailabilityInput",
    "Found",
    "Reader",
    "ServiceRules",
    "Slot",
    "compute_slots",
    "eligible_providers",
    "find_slots",
    "load_input",
    "parse_instant",
    "provider_timezones",
    "search_slots",
    "slot_starts",
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
_HOURS = sa.select(
    WorkingHours.weekday,
    WorkingHours.start_minute,
    WorkingHours.end_minute,
    WorkingHours.location_id,
).where(WorkingHours.tenant_id == _P("tenant_id"), WorkingHours.provider_id == _P("provider_id"))
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


def parse_instant(name: str, raw: str, zone: Callable[[], ZoneInfo]) -> datetime:
    """ISO 8601 with an offset; a date, or a date-time without one, is read in ``zone()``
    (called only then: it may need a query). Bad text: InvalidInputError naming ``name``."""
    try:
        if len(raw) == 10:
            value = datetime.combine(date.fromisoformat(raw), time(0))
        else:
            value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInputError.one(
            name, "must be an ISO-8601 date or date-time, e.g. 2026-03-09T09:00-05:00"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=zone())


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


def free_providers_at(
    conn: Reader, tenant_id: str, service_id: str, start: datetime, end: datetime, now: datetime
) -> list[str]:
    """The eligible providers with a slot starting at ``start``, in the order "any" picks
    them: fewest bookings in ``[start's day as the caller reads it, end)`` first, ties
    by lowest id (the ranking of ``search_slots`` over the same range)."""
    if isinstance(conn, Session):
        conn = conn.connection()
    rules = _service_rules(conn, tenant_id, service_id)
    if rules is None:
        return []
    at = int(start.timestamp())
    ranked: list[tuple[int, str]] = []
    for pid, tz in eligible_providers(conn, tenant_id, service_id):
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        inp = load_input(conn, tenant_id, rules, pid, day, end, now, timezone=tz)
        if any(found == at for found, _seats, _offset in slot_starts(inp)):
            ranked.append((inp.bookings_in_range, pid))
    return [pid for _booked, pid in sorted(ranked)]


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
