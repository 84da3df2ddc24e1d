"""Scheduling configuration: locations, providers, working hours, date exceptions,
busy blocks and services. Every change is audited in the caller's transaction.

Validation that needs the database (ids of this clinic, overlaps) raises
InvalidInputError naming the field, before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import FieldError, InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.scheduling.models import (
    BusyBlock,
    Location,
    Provider,
    ScheduleException,
    Service,
    ServiceProvider,
    WorkingHours,
)
from clinicbridge.scheduling.schemas import (
    BusyBlockCreate,
    ExceptionCreate,
    HoursInterval,
    LocationCreate,
    LocationUpdate,
    ProviderCreate,
    ProviderUpdate,
    ServiceCreate,
    ServiceUpdate,
    hhmm,
    minutes_of,
)

MAX_BUSY_BLOCKS = 1000  # one list answer; narrow the range for more


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def _audit_change(
    session: Session,
    ctx: Ctx,
    action: str,
    resource_type: str,
    resource_id: str,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    diff = diff_of(
        {k: _plain(v) for k, v in before.items()}, {k: _plain(v) for k, v in after.items()}
    )
    if diff or action.endswith((".create", ".delete")):
        record(session, ctx, action, resource_type, resource_id, diff=diff)


def _apply(
    session: Session, ctx: Ctx, row: Any, changes: dict[str, Any], action: str, kind: str
) -> None:
    before = {name: getattr(row, name) for name in changes}
    for name, value in changes.items():
        setattr(row, name, value)
    row.updated_at = ctx.now
    session.flush()
    _audit_change(session, ctx, action, kind, row.id, before, changes)


# --- locations --------------------------------------------------------------------------


def list_locations(
    session: Session, ctx: Ctx, *, limit: int, starting_after: str | None
) -> Page[Location]:
    return paginate(
        session, scoped_select(Location, ctx.tenant_id), Location.id, limit, starting_after
    )


def get_location(session: Session, ctx: Ctx, location_id: str) -> Location:
    return get_scoped(session, Location, ctx.tenant_id, id=location_id)


def create_location(session: Session, ctx: Ctx, data: LocationCreate) -> Location:
    fields = data.model_dump()
    location = Location(
        id=new_id("loc"), tenant_id=ctx.tenant_id, created_at=ctx.now, updated_at=ctx.now, **fields
    )
    session.add(location)
    session.flush()
    _audit_change(session, ctx, "location.create", "location", location.id, {}, fields)
    return location


def update_location(session: Session, ctx: Ctx, location_id: str, data: LocationUpdate) -> Location:
    location = get_location(session, ctx, location_id)
    _apply(session, ctx, location, _set_fields(data), "location.update", "location")
    return location


def _set_fields(data: LocationUpdate | ProviderUpdate | ServiceUpdate) -> dict[str, Any]:
    """The fields a PATCH sent; an explicit null clears only nullable fields."""
    changes = data.model_dump(exclude_unset=True)
    required = {"name", "timezone", "display_name", "is_active", "duration_minutes",
                "buffer_before_minutes", "buffer_after_minutes", "slot_interval_minutes",
                "min_notice_minutes", "max_advance_days", "cancellation_window_minutes",
                "capacity", "modality", "is_public"}  # fmt: skip
    nulls = [
        FieldError(k, "may not be null") for k, v in changes.items() if v is None and k in required
    ]
    if nulls:
        raise InvalidInputError(nulls)
    return changes


# --- providers --------------------------------------------------------------------------


def list_providers(
    session: Session, ctx: Ctx, *, limit: int, starting_after: str | None
) -> Page[Provider]:
    return paginate(
        session, scoped_select(Provider, ctx.tenant_id), Provider.id, limit, starting_after
    )


def get_provider(session: Session, ctx: Ctx, provider_id: str) -> Provider:
    return get_scoped(session, Provider, ctx.tenant_id, id=provider_id)


def create_provider(session: Session, ctx: Ctx, data: ProviderCreate) -> Provider:
    fields = data.model_dump()
    provider = Provider(
        id=new_id("prv"), tenant_id=ctx.tenant_id, created_at=ctx.now, updated_at=ctx.now, **fields
    )
    session.add(provider)
    session.flush()
    _audit_change(session, ctx, "provider.create", "provider", provider.id, {}, fields)
    return provider


def update_provider(session: Session, ctx: Ctx, provider_id: str, data: ProviderUpdate) -> Provider:
    provider = get_provider(session, ctx, provider_id)
    _apply(session, ctx, provider, _set_fields(data), "provider.update", "provider")
    return provider


def _check_locations(session: Session, ctx: Ctx, wanted: Sequence[tuple[str, str | None]]) -> None:
    """Each (field, location id) names a location of this clinic."""
    ids = {loc for _, loc in wanted if loc is not None}
    known = set(
        session.scalars(
            sa.select(Location.id).where(Location.tenant_id == ctx.tenant_id, Location.id.in_(ids))
        )
    )
    errors = [
        FieldError(name, "no such location", "not_found")
        for name, loc in wanted
        if loc is not None and loc not in known
    ]
    if errors:
        raise InvalidInputError(errors)


# --- working hours ----------------------------------------------------------------------


def get_hours(session: Session, ctx: Ctx, provider_id: str) -> list[WorkingHours]:
    get_provider(session, ctx, provider_id)
    stmt = scoped_select(WorkingHours, ctx.tenant_id).where(WorkingHours.provider_id == provider_id)
    return list(session.scalars(stmt.order_by(WorkingHours.weekday, WorkingHours.start_minute)))


def _hours_view(rows: Sequence[WorkingHours]) -> list[dict[str, Any]]:
    return [
        {
            "weekday": r.weekday,
            "start": hhmm(r.start_minute),
            "end": hhmm(r.end_minute),
            "location_id": r.location_id,
        }
        for r in rows
    ]


def set_hours(
    session: Session, ctx: Ctx, provider_id: str, intervals: Sequence[HoursInterval]
) -> list[WorkingHours]:
    """Replace a provider's weekly hours. Intervals of one weekday may touch, not overlap."""
    before = get_hours(session, ctx, provider_id)
    spans = [
        (iv.weekday, minutes_of(iv.start), minutes_of(iv.end), i) for i, iv in enumerate(intervals)
    ]
    errors = []
    for a, b in zip(sorted(spans), sorted(spans)[1:], strict=False):
        if a[0] == b[0] and b[1] < a[2]:
            errors.append(
                FieldError(
                    f"intervals.{b[3]}", f"overlaps intervals.{a[3]} on the same weekday", "overlap"
                )
            )
    if errors:
        raise InvalidInputError(errors)
    _check_locations(
        session,
        ctx,
        [(f"intervals.{i}.location_id", iv.location_id) for i, iv in enumerate(intervals)],
    )
    old_view = _hours_view(before)
    for row in before:
        session.delete(row)
    session.flush()
    rows = [
        WorkingHours(
            id=new_id("wkh"),
            tenant_id=ctx.tenant_id,
            provider_id=provider_id,
            location_id=iv.location_id,
            weekday=weekday,
            start_minute=start,
            end_minute=end,
        )
        for (weekday, start, end, _), iv in zip(spans, intervals, strict=True)
    ]
    session.add_all(rows)
    session.flush()
    rows.sort(key=lambda r: (r.weekday, r.start_minute))
    record(
        session,
        ctx,
        "provider.hours.replace",
        "provider",
        provider_id,
        diff=diff_of({"hours": old_view}, {"hours": _hours_view(rows)}),
    )
    return rows


# --- date exceptions --------------------------------------------------------------------


def list_exceptions(
    session: Session,
    ctx: Ctx,
    provider_id: str,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
) -> list[ScheduleException]:
    get_provider(session, ctx, provider_id)
    stmt = scoped_select(ScheduleException, ctx.tenant_id).where(
        ScheduleException.provider_id == provider_id
    )
    if date_from is not None:
        stmt = stmt.where(ScheduleException.on_date >= date_from)
    if date_to is not None:
        stmt = stmt.where(ScheduleException.on_date <= date_to)
    order = (ScheduleException.on_date, ScheduleException.start_minute, ScheduleException.id)
    return list(session.scalars(stmt.order_by(*order)))


def _overlaps(a: tuple[int | None, int | None], b: tuple[int | None, int | None]) -> bool:
    if a[0] is None or a[1] is None or b[0] is None or b[1] is None:
        return True  # a whole day overlaps everything on that date
    return a[0] < b[1] and b[0] < a[1]


def create_exception(
    session: Session, ctx: Ctx, provider_id: str, data: ExceptionCreate
) -> ScheduleException:
    """Time off or extra hours on one date; may not overlap another exception of that date."""
    span = (
        minutes_of(data.start) if data.start else None,
        minutes_of(data.end) if data.end else None,
    )
    same_day = list_exceptions(session, ctx, provider_id, date_from=data.date, date_to=data.date)
    for other in same_day:
        if _overlaps(span, (other.start_minute, other.end_minute)):
            raise InvalidInputError.one(
                "date", f"overlaps exception {other.id} on this date", "overlap"
            )
    _check_locations(session, ctx, [("location_id", data.location_id)])
    exc = ScheduleException(
        id=new_id("sxc"),
        tenant_id=ctx.tenant_id,
        provider_id=provider_id,
        location_id=data.location_id,
        on_date=data.date,
        kind=data.kind,
        start_minute=span[0],
        end_minute=span[1],
        reason=data.reason,
        created_at=ctx.now,
    )
    session.add(exc)
    session.flush()
    after = data.model_dump(exclude={"reason"}) | {"provider_id": provider_id}
    _audit_change(
        session, ctx, "schedule_exception.create", "schedule_exception", exc.id, {}, after
    )
    return exc


def delete_exception(session: Session, ctx: Ctx, provider_id: str, exception_id: str) -> None:
    exc = get_scoped(
        session, ScheduleException, ctx.tenant_id, id=exception_id, provider_id=provider_id
    )
    session.delete(exc)
    session.flush()
    before = {"provider_id": provider_id, "date": exc.on_date, "kind": exc.kind}
    _audit_change(
        session, ctx, "schedule_exception.delete", "schedule_exception", exception_id, before, {}
    )


# --- busy blocks ------------------------------------------------------------------------


def list_busy_blocks(
    session: Session,
    ctx: Ctx,
    provider_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[BusyBlock]:
    """Blocks overlapping ``[start, end)`` (either bound optional), by start time."""
    get_provider(session, ctx, provider_id)
    stmt = scoped_select(BusyBlock, ctx.tenant_id).where(BusyBlock.provider_id == provider_id)
    if start is not None:
        stmt = stmt.where(BusyBlock.ends_at > start)
    if end is not None:
        stmt = stmt.where(BusyBlock.starts_at < end)
    stmt = stmt.order_by(BusyBlock.starts_at, BusyBlock.id).limit(MAX_BUSY_BLOCKS)
    return list(session.scalars(stmt))


def create_busy_block(
    session: Session, ctx: Ctx, provider_id: str, data: BusyBlockCreate
) -> BusyBlock:
    get_provider(session, ctx, provider_id)
    block = BusyBlock(
        id=new_id("bsy"),
        tenant_id=ctx.tenant_id,
        provider_id=provider_id,
        starts_at=data.start,
        ends_at=data.end,
        source="manual",
        reason=data.reason,
        created_at=ctx.now,
    )
    session.add(block)
    session.flush()
    after = {"provider_id": provider_id, "start": data.start, "end": data.end}
    _audit_change(session, ctx, "busy_block.create", "busy_block", block.id, {}, after)
    return block


def delete_busy_block(session: Session, ctx: Ctx, provider_id: str, block_id: str) -> None:
    block = get_scoped(session, BusyBlock, ctx.tenant_id, id=block_id, provider_id=provider_id)
    before = {"provider_id": provider_id, "start": block.starts_at, "end": block.ends_at}
    session.delete(block)
    session.flush()
    _audit_change(session, ctx, "busy_block.delete", "busy_block", block_id, before, {})


# --- services ---------------------------------------------------------------------------


def list_services(
    session: Session, ctx: Ctx, *, limit: int, starting_after: str | None
) -> Page[Service]:
    return paginate(
        session, scoped_select(Service, ctx.tenant_id), Service.id, limit, starting_after
    )


def get_service(session: Session, ctx: Ctx, service_id: str) -> Service:
    return get_scoped(session, Service, ctx.tenant_id, id=service_id)


def provider_ids_of(
    session: Session, tenant_id: str, service_ids: Sequence[str]
) -> dict[str, list[str]]:
    """Eligible provider ids per service id (sorted), one query for a whole page."""
    out: dict[str, list[str]] = {sid: [] for sid in service_ids}
    rows = session.execute(
        sa.select(ServiceProvider.service_id, ServiceProvider.provider_id)
        .where(ServiceProvider.tenant_id == tenant_id, ServiceProvider.service_id.in_(service_ids))
        .order_by(ServiceProvider.provider_id)
    )
    for service_id, provider_id in rows:
        out[service_id].append(provider_id)
    return out


def _check_providers(session: Session, ctx: Ctx, provider_ids: Sequence[str]) -> list[str]:
    known = set(
        session.scalars(
            sa.select(Provider.id).where(
                Provider.tenant_id == ctx.tenant_id, Provider.id.in_(provider_ids)
            )
        )
    )
    errors = [
        FieldError(f"provider_ids.{i}", "no such provider", "not_found")
        for i, pid in enumerate(provider_ids)
        if pid not in known
    ]
    if errors:
        raise InvalidInputError(errors)
    return sorted(set(provider_ids))


def _set_providers(session: Session, ctx: Ctx, service_id: str, provider_ids: list[str]) -> None:
    session.execute(
        sa.delete(ServiceProvider).where(
            ServiceProvider.tenant_id == ctx.tenant_id, ServiceProvider.service_id == service_id
        )
    )
    session.add_all(
        ServiceProvider(service_id=service_id, provider_id=pid, tenant_id=ctx.tenant_id)
        for pid in provider_ids
    )
    session.flush()


def create_service(session: Session, ctx: Ctx, data: ServiceCreate) -> Service:
    provider_ids = _check_providers(session, ctx, data.provider_ids)
    fields = data.model_dump(exclude={"provider_ids"})
    if fields["slot_interval_minutes"] is None:
        fields["slot_interval_minutes"] = data.duration_minutes
    service = Service(
        id=new_id("svc"), tenant_id=ctx.tenant_id, created_at=ctx.now, updated_at=ctx.now, **fields
    )
    session.add(service)
    session.flush()
    _set_providers(session, ctx, service.id, provider_ids)
    after = {k: v for k, v in fields.items() if k != "description"}
    _audit_change(
        session,
        ctx,
        "service.create",
        "service",
        service.id,
        {},
        after | {"provider_ids": provider_ids},
    )
    return service


def update_service(session: Session, ctx: Ctx, service_id: str, data: ServiceUpdate) -> Service:
    service = get_service(session, ctx, service_id)
    changes = _set_fields(data)
    new_providers = changes.pop("provider_ids", None)
    price = changes.get("price_minor", service.price_minor)
    if price is not None and changes.get("currency", service.currency) is None:
        raise InvalidInputError.one("currency", "a price needs a currency", "missing")
    if new_providers is not None:
        provider_ids = _check_providers(session, ctx, new_providers)
        old = provider_ids_of(session, ctx.tenant_id, [service_id])[service_id]
        _set_providers(session, ctx, service_id, provider_ids)
        if old != provider_ids:
            record(
                session,
                ctx,
                "service.update",
                "service",
                service_id,
                diff=diff_of({"provider_ids": old}, {"provider_ids": provider_ids}),
            )
    _apply(session, ctx, service, changes, "service.update", "service")
    return service
