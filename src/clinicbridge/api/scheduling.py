"""``/api/v1`` routes of the scheduling configuration and the availability search:
locations, providers (hours, exceptions, busy blocks), services, ``/availability``."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Annotated
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import APIRouter, Query, Response

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.tenancy import tenant_profile
from clinicbridge.core.validation import check_timezone
from clinicbridge.scheduling import availability, config, slot_cache
from clinicbridge.scheduling.availability import parse_instant
from clinicbridge.scheduling.models import BusyBlock, ScheduleException, Service, WorkingHours
from clinicbridge.scheduling.schemas import (
    AvailabilityOut,
    BusyBlockCreate,
    BusyBlockOut,
    ExceptionCreate,
    ExceptionOut,
    HoursIn,
    HoursInterval,
    HoursOut,
    LocationCreate,
    LocationOut,
    LocationUpdate,
    ProviderCreate,
    ProviderOut,
    ProviderUpdate,
    ServiceCreate,
    ServiceOut,
    ServiceUpdate,
    hhmm,
)

router = APIRouter(tags=["scheduling"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("schedule:read")]
Writer = Annotated[Ctx, require("schedule:write")]
MAX_RANGE = timedelta(days=62)
SLOTS = slot_cache.SlotCache()  # computed answers, reused while the schedule is unchanged
PROVIDER = "/providers/{provider_id}"


# --- locations --------------------------------------------------------------------------


@router.get("/locations", response_model=ListOut[LocationOut])
def list_locations(db: DB, ctx: Reader, page: Paging) -> ListOut[LocationOut]:
    with db.read() as session:
        result = config.list_locations(
            session, ctx, limit=page.limit, starting_after=page.starting_after
        )
        return ListOut.of(result, LocationOut.model_validate)


@router.post("/locations", status_code=201, response_model=LocationOut)
def create_location(body: LocationCreate, db: DB, ctx: Writer) -> LocationOut:
    with db.write() as session:
        return LocationOut.model_validate(config.create_location(session, ctx, body))


@router.get("/locations/{location_id}", response_model=LocationOut)
def get_location(location_id: str, db: DB, ctx: Reader) -> LocationOut:
    with db.read() as session:
        return LocationOut.model_validate(config.get_location(session, ctx, location_id))


@router.patch("/locations/{location_id}", response_model=LocationOut)
def update_location(location_id: str, body: LocationUpdate, db: DB, ctx: Writer) -> LocationOut:
    with db.write() as session:
        return LocationOut.model_validate(config.update_location(session, ctx, location_id, body))


# --- providers --------------------------------------------------------------------------


@router.get("/providers", response_model=ListOut[ProviderOut])
def list_providers(db: DB, ctx: Reader, page: Paging) -> ListOut[ProviderOut]:
    with db.read() as session:
        result = config.list_providers(
            session, ctx, limit=page.limit, starting_after=page.starting_after
        )
        return ListOut.of(result, ProviderOut.model_validate)


@router.post("/providers", status_code=201, response_model=ProviderOut)
def create_provider(body: ProviderCreate, db: DB, ctx: Writer) -> ProviderOut:
    with db.write() as session:
        return ProviderOut.model_validate(config.create_provider(session, ctx, body))


@router.get(PROVIDER, response_model=ProviderOut)
def get_provider(provider_id: str, db: DB, ctx: Reader) -> ProviderOut:
    with db.read() as session:
        return ProviderOut.model_validate(config.get_provider(session, ctx, provider_id))


@router.patch(PROVIDER, response_model=ProviderOut)
def update_provider(provider_id: str, body: ProviderUpdate, db: DB, ctx: Writer) -> ProviderOut:
    with db.write() as session:
        return ProviderOut.model_validate(config.update_provider(session, ctx, provider_id, body))


@router.get(PROVIDER + "/hours", response_model=HoursOut)
def get_hours(provider_id: str, db: DB, ctx: Reader) -> HoursOut:
    with db.read() as session:
        return _hours_out(config.get_hours(session, ctx, provider_id))


@router.put(PROVIDER + "/hours", response_model=HoursOut)
def set_hours(provider_id: str, body: HoursIn, db: DB, ctx: Writer) -> HoursOut:
    """Replace the provider's weekly hours (times of day in the provider's timezone)."""
    with db.write() as session:
        return _hours_out(config.set_hours(session, ctx, provider_id, body.intervals))


def _hours_out(rows: list[WorkingHours]) -> HoursOut:
    return HoursOut(
        data=[
            HoursInterval(
                weekday=r.weekday,
                start=hhmm(r.start_minute),
                end=hhmm(r.end_minute),
                location_id=r.location_id,
            )
            for r in rows
        ]
    )


@router.get(PROVIDER + "/exceptions", response_model=ListOut[ExceptionOut])
def list_exceptions(
    provider_id: str,
    db: DB,
    ctx: Reader,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to")] = None,
) -> ListOut[ExceptionOut]:
    with db.read() as session:
        rows = config.list_exceptions(
            session, ctx, provider_id, date_from=date_from, date_to=date_to
        )
        return ListOut[ExceptionOut](data=[_exception_out(r) for r in rows])


@router.post(PROVIDER + "/exceptions", status_code=201, response_model=ExceptionOut)
def create_exception(provider_id: str, body: ExceptionCreate, db: DB, ctx: Writer) -> ExceptionOut:
    with db.write() as session:
        return _exception_out(config.create_exception(session, ctx, provider_id, body))


@router.delete(PROVIDER + "/exceptions/{exception_id}", status_code=204)
def delete_exception(provider_id: str, exception_id: str, db: DB, ctx: Writer) -> Response:
    with db.write() as session:
        config.delete_exception(session, ctx, provider_id, exception_id)
    return Response(status_code=204)


def _exception_out(row: ScheduleException) -> ExceptionOut:
    return ExceptionOut(
        id=row.id,
        provider_id=row.provider_id,
        date=row.on_date,
        kind=row.kind,
        start=hhmm(row.start_minute) if row.start_minute is not None else None,
        end=hhmm(row.end_minute) if row.end_minute is not None else None,
        location_id=row.location_id,
        reason=row.reason,
        created_at=row.created_at,
    )


@router.get(PROVIDER + "/busy-blocks", response_model=ListOut[BusyBlockOut])
def list_busy_blocks(
    provider_id: str,
    db: DB,
    ctx: Reader,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> ListOut[BusyBlockOut]:
    """Blocks overlapping ``[from, to)``, by start time (at most 1000)."""
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise InvalidInputError.one(name, "needs a timezone offset")
    with db.read() as session:
        rows = config.list_busy_blocks(session, ctx, provider_id, start=start, end=end)
        return ListOut[BusyBlockOut](data=[_busy_out(r) for r in rows])


@router.post(PROVIDER + "/busy-blocks", status_code=201, response_model=BusyBlockOut)
def create_busy_block(provider_id: str, body: BusyBlockCreate, db: DB, ctx: Writer) -> BusyBlockOut:
    with db.write() as session:
        return _busy_out(config.create_busy_block(session, ctx, provider_id, body))


@router.delete(PROVIDER + "/busy-blocks/{block_id}", status_code=204)
def delete_busy_block(provider_id: str, block_id: str, db: DB, ctx: Writer) -> Response:
    with db.write() as session:
        config.delete_busy_block(session, ctx, provider_id, block_id)
    return Response(status_code=204)


def _busy_out(row: BusyBlock) -> BusyBlockOut:
    return BusyBlockOut(
        id=row.id,
        provider_id=row.provider_id,
        start=row.starts_at,
        end=row.ends_at,
        source=row.source,
        external_id=row.external_id,
        reason=row.reason,
        created_at=row.created_at,
    )


# --- services ---------------------------------------------------------------------------


@router.get("/services", response_model=ListOut[ServiceOut])
def list_services(db: DB, ctx: Reader, page: Paging) -> ListOut[ServiceOut]:
    with db.read() as session:
        result = config.list_services(
            session, ctx, limit=page.limit, starting_after=page.starting_after
        )
        providers = config.provider_ids_of(session, ctx.tenant_id, [s.id for s in result.items])
        return ListOut.of(result, lambda s: _service_out(s, providers[s.id]))


@router.post("/services", status_code=201, response_model=ServiceOut)
def create_service(body: ServiceCreate, db: DB, ctx: Writer) -> ServiceOut:
    with db.write() as session:
        service = config.create_service(session, ctx, body)
        return _service_out(
            service, config.provider_ids_of(session, ctx.tenant_id, [service.id])[service.id]
        )


@router.get("/services/{service_id}", response_model=ServiceOut)
def get_service(service_id: str, db: DB, ctx: Reader) -> ServiceOut:
    with db.read() as session:
        service = config.get_service(session, ctx, service_id)
        return _service_out(
            service, config.provider_ids_of(session, ctx.tenant_id, [service.id])[service.id]
        )


@router.patch("/services/{service_id}", response_model=ServiceOut)
def update_service(service_id: str, body: ServiceUpdate, db: DB, ctx: Writer) -> ServiceOut:
    with db.write() as session:
        service = config.update_service(session, ctx, service_id, body)
        return _service_out(
            service, config.provider_ids_of(session, ctx.tenant_id, [service.id])[service.id]
        )


def _service_out(service: Service, provider_ids: list[str]) -> ServiceOut:
    out = ServiceOut.model_validate(service)
    out.provider_ids = provider_ids
    return out


# --- availability -----------------------------------------------------------------------


_EPOCH = date(1970, 1, 1).toordinal()
_MINUTES = [f"{m // 60:02d}:{m % 60:02d}:00" for m in range(1440)]  # "HH:MM:SS" by minute


class _Iso:
    """ISO-8601 text of epoch seconds, as ``datetime.isoformat`` writes it: from a known
    UTC offset by arithmetic (date and offset text made once per day), else by the zone."""

    def __init__(self) -> None:
        self.days: dict[tuple[int, int], tuple[str, str]] = {}

    def at(self, ts: int, offset: int) -> str:
        local = ts + offset
        day = local // 86_400
        parts = self.days.get((day, offset))
        if parts is None:
            suffix = datetime.fromtimestamp(0, dt_timezone(timedelta(seconds=offset)))
            parts = self.days[day, offset] = (
                date.fromordinal(day + _EPOCH).isoformat() + "T",
                suffix.isoformat()[19:],  # "+HH:MM" (or "+HH:MM:SS")
            )
        second = local - day * 86_400
        if second % 60:
            clock = f"{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        else:
            clock = _MINUTES[second // 60]
        return parts[0] + clock + parts[1]

    @staticmethod
    def zoned(ts: int, zone: ZoneInfo) -> str:
        return datetime.fromtimestamp(ts, zone).isoformat()


def _slots_json(found: availability.Found, tz: str | None) -> bytes:
    """``{"data": [{"start", "end", "provider_id", "seats_left"}, ...]}`` written directly:
    no model or dict per slot; times in ``tz`` or else each provider's own zone."""
    iso = _Iso()
    length = found.length
    zones: dict[str, ZoneInfo] = {}
    own: dict[str, bool] = {}  # whether the engine's offsets (provider's zone) apply
    pids: dict[str, str] = {}
    items = []
    for start, seats, offset, pid in found.rows:
        quoted = pids.get(pid)
        if quoted is None:
            name = found.timezones[pid]
            quoted = pids[pid] = json.dumps(pid)
            zones[pid] = ZoneInfo(tz or name)
            own[pid] = tz is None or tz == name
        if offset is not None and own[pid]:
            a, b = iso.at(start, offset), iso.at(start + length, offset)
        else:
            zone = zones[pid]
            a, b = iso.zoned(start, zone), iso.zoned(start + length, zone)
        items.append(f'{{"start":"{a}","end":"{b}","provider_id":{quoted},"seats_left":{seats}}}')
    return ('{"data":[' + ",".join(items) + "]}").encode()


@router.get("/availability", response_model=AvailabilityOut)
async def get_availability(
    db: DB,
    ctx: Reader,
    service_id: Annotated[str, Query(min_length=1, max_length=32)],
    start: Annotated[str, Query(alias="from", min_length=10, max_length=40)],
    end: Annotated[str, Query(alias="to", min_length=10, max_length=40)],
    provider_id: Annotated[str, Query(min_length=1, max_length=32)] = "any",
    tz: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int | None, Query(ge=1, le=5000)] = None,
) -> Response:
    """Bookable slots. ``provider_id=any`` picks among eligible providers. Times answer in
    ``tz`` (default: each slot's provider's timezone); ``from``/``to`` without an offset are
    read in ``tz`` (default: the clinic's timezone). At most 62 days per request."""
    if tz is not None:
        try:
            check_timezone(tz)
        except ValueError as exc:
            raise InvalidInputError.one("tz", str(exc), "timezone") from None

    def search(conn: sa.Connection) -> bytes:
        depends_on = slot_cache.stamp(conn, ctx.tenant_id, service_id)
        key = (ctx.tenant_id, service_id, provider_id, start, end, tz, limit,
               slot_cache.clock_bucket(ctx.now), depends_on)  # fmt: skip
        cached = SLOTS.get(key) if depends_on is not None else None
        if cached is not None:
            return cached
        body = _search(conn)
        if depends_on is not None:
            SLOTS.put(key, body)
        return body

    def _search(conn: sa.Connection) -> bytes:
        def zone() -> ZoneInfo:  # the clinic's zone is read only when needed
            return ZoneInfo(tz or tenant_profile(conn, ctx.tenant_id)["timezone"])

        lo, hi = parse_instant("from", start, zone), parse_instant("to", end, zone)
        if lo >= hi:
            raise InvalidInputError.one("to", "must be after from", "range")
        if hi - lo > MAX_RANGE:
            raise InvalidInputError.one("to", "the range may span at most 62 days", "range")
        found = availability.search_slots(
            conn,
            ctx.tenant_id,
            service_id=service_id,
            provider_id=None if provider_id == "any" else provider_id,
            start=lo,
            end=hi,
            now=ctx.now,
            limit=limit,
        )
        return _slots_json(found, tz)

    # a Core read, inline on SQLite and on a worker thread on PostgreSQL (run_read_core):
    # no thread hop per request and no ORM session
    body = await db.run_read_core(search)
    return Response(body, media_type="application/json")
