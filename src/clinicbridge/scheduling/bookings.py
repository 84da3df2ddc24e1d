"""Bookings: create, hold, reschedule, cancel, confirm, no-show, complete.

A booking takes a seat on a ``time_claims`` row. The database refuses two active
claims of one provider that overlap (buffers included), so two requests racing
for one slot cannot both win, whatever Python checked before: the loser's insert
fails inside a savepoint and it answers 409 with the next free slots. Group
services (capacity > 1) add seats to one claim with a guarded ``UPDATE``.

Every change goes through ``events.record_change`` in the caller's transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ConflictError, InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling import availability
from clinicbridge.scheduling.events import record_change
from clinicbridge.scheduling.models import (
    ACTIVE_STATUSES,
    HOLD_STATUSES,
    Booking,
    BookingChange,
    Provider,
    ScheduleException,
    Service,
    ServiceProvider,
    TimeClaim,
)
from clinicbridge.scheduling.slots import Slot

ANY = "any"
SOURCES = ("api", "admin", "public", "voice")
# No 0/O, 1/I/L, 2/Z, 5/S, 8/B: a code read over the phone is not misheard.
CODE_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
MAX_HOLD_MINUTES = 60
NEXT_SLOTS = 5
NEXT_SLOTS_HORIZON = timedelta(days=14)
FIRST_LOOK = timedelta(days=1)
RELEASE_HOLDS_KIND = "scheduling.release_holds"
RELEASE_BATCH = 200


@dataclass(frozen=True)
class Seat:
    """The claim a booking sits on, and the exact times the engine gave the slot."""

    claim_id: str
    starts_at: datetime
    ends_at: datetime


_ZONES = "clinicbridge.provider_zones"  # session.info: provider timezones read in this session


def provider_zones(
    session: Session, tenant_id: str, provider_ids: Iterable[str]
) -> dict[str, ZoneInfo]:
    """Timezones of providers, from those this session already read when it could."""
    known: dict[str, str] = session.info.get(_ZONES, {})
    zones = {pid: known[pid] for pid in provider_ids if pid in known}
    missing = set(provider_ids) - zones.keys()
    if missing:
        zones.update(availability.provider_timezones(session.connection(), tenant_id, missing))
    return {pid: ZoneInfo(name) for pid, name in zones.items()}


# Built once: composing statements costs more than running these small ones.
_P = sa.bindparam
_SERVICE = sa.select(Service).where(Service.tenant_id == _P("tenant_id"), Service.id == _P("id"))
_PATIENT = sa.select(Patient.id).where(Patient.tenant_id == _P("tenant_id"), Patient.id == _P("id"))
_PROVIDER_TZ = (
    sa.select(Provider.timezone)
    .join(ServiceProvider, ServiceProvider.provider_id == Provider.id)
    .where(
        Provider.tenant_id == _P("tenant_id"),
        Provider.id == _P("provider_id"),
        Provider.is_active.is_(True),
        ServiceProvider.service_id == _P("service_id"),
    )
)
_CODE_TAKEN = sa.select(Booking.id).where(
    Booking.tenant_id == _P("tenant_id"), Booking.confirmation_code == _P("code")
)
_INSERT_CLAIM = cast(sa.Table, TimeClaim.__table__).insert()  # Core: the ORM's bulk path costs more
_OPEN_GROUP_CLAIM = sa.select(TimeClaim.id).where(
    TimeClaim.tenant_id == _P("tenant_id"),
    TimeClaim.provider_id == _P("provider_id"),
    TimeClaim.service_id == _P("service_id"),
    TimeClaim.starts_at == _P("starts_at", type_=TimeClaim.starts_at.type),
    TimeClaim.active.is_(True),
)


class SlotTakenError(ConflictError):
    """The time was taken (or became taken) before this booking could hold it."""

    type_slug = "slot-taken"
    title = "Slot taken"

    def __init__(self, next_slots: Sequence[Slot]) -> None:
        super().__init__(
            "This time is no longer available. Choose one of next_available, "
            "or search availability again."
        )
        self.next_slots = list(next_slots)
        self.next_available = self.next_slots[0] if self.next_slots else None

    def problem_extra(self) -> dict[str, object]:
        return {"next_available": [slot_view(s) for s in self.next_slots]}


class CancellationWindowError(ConflictError):
    type_slug = "cancellation-window"
    title = "Inside the cancellation window"


class BookingStateError(ConflictError):
    type_slug = "booking-state"
    title = "Not possible in this booking's state"


def slot_view(slot: Slot) -> dict[str, object]:
    return {
        "start": slot.start.isoformat(),
        "end": slot.end.isoformat(),
        "provider_id": slot.provider_id,
    }


def new_confirmation_code() -> str:
    """Six characters from an unambiguous alphabet, shown as ``K7Q-4MX``."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(6))
    return f"{chars[:3]}-{chars[3:]}"


# --- reads ------------------------------------------------------------------------------


def get_booking(session: Session, ctx: Ctx, booking_id: str, *, lock: bool = False) -> Booking:
    stmt = scoped_select(Booking, ctx.tenant_id).where(Booking.id == booking_id)
    booking = session.scalars(stmt.with_for_update() if lock else stmt).first()
    if booking is None:
        raise NotFoundError("No such booking.")
    return booking


def get_booking_by_code(session: Session, ctx: Ctx, code: str) -> Booking:
    normalized = code.strip().upper().replace(" ", "")
    if len(normalized) == 6:
        normalized = f"{normalized[:3]}-{normalized[3:]}"
    stmt = scoped_select(Booking, ctx.tenant_id).where(Booking.confirmation_code == normalized)
    booking = session.scalars(stmt).first()
    if booking is None:
        raise NotFoundError("No booking with this confirmation code.")
    return booking


def list_bookings(
    session: Session,
    ctx: Ctx,
    *,
    limit: int,
    starting_after: str | None,
    provider_id: str | None = None,
    patient_id: str | None = None,
    status: str | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
) -> Page[Booking]:
    stmt = scoped_select(Booking, ctx.tenant_id)
    if provider_id is not None:
        stmt = stmt.where(Booking.provider_id == provider_id)
    if patient_id is not None:
        stmt = stmt.where(Booking.patient_id == patient_id)
    if status is not None:
        stmt = stmt.where(Booking.status == status)
    if start_from is not None:
        stmt = stmt.where(Booking.starts_at >= start_from)
    if start_to is not None:
        stmt = stmt.where(Booking.starts_at < start_to)
    return paginate(session, stmt, Booking.id, limit, starting_after)


def booking_history(session: Session, ctx: Ctx, booking_id: str) -> list[BookingChange]:
    booking = get_booking(session, ctx, booking_id)
    stmt = (
        scoped_select(BookingChange, ctx.tenant_id)
        .where(BookingChange.booking_id == booking.id)
        .order_by(BookingChange.at, BookingChange.id)
    )
    return list(session.scalars(stmt))


# --- create -----------------------------------------------------------------------------


def create_booking(
    session: Session,
    ctx: Ctx,
    *,
    service_id: str,
    provider_id: str,
    start: datetime,
    patient_id: str,
    source: str = "api",
    hold_minutes: int | None = None,
    pending_payment: bool = False,
) -> Booking:
    """Book ``start`` for a patient, or hold it for ``hold_minutes`` (released unless
    confirmed in time). ``provider_id="any"`` picks as the availability search does.
    ``pending_payment`` makes the hold a ``pending_payment`` one (payments confirms it).

    Bad input raises InvalidInputError naming the field; a taken time SlotTakenError."""
    if pending_payment and not hold_minutes:
        raise ValueError("a pending_payment booking needs hold_minutes")
    if source not in SOURCES:
        raise ValueError(f"unknown booking source {source!r}")
    if hold_minutes is not None and not 1 <= hold_minutes <= MAX_HOLD_MINUTES:
        raise InvalidInputError.one(
            "hold_minutes", f"must be between 1 and {MAX_HOLD_MINUTES} minutes"
        )
    service = _service(session, ctx, service_id)
    start = _check_start(ctx, start)
    _check_patient(session, ctx, patient_id)
    if provider_id == ANY:
        provider_id = _pick_provider(session, ctx, service, start)
    tz = _provider_tz(session, ctx, service, provider_id)
    claim, location_id = _take_seat(session, ctx, service, provider_id, tz, start)
    status = ("pending_payment" if pending_payment else "held") if hold_minutes else "booked"
    booking = Booking(
        id=new_id("bkg"),
        tenant_id=ctx.tenant_id,
        claim_id=claim.claim_id,
        service_id=service.id,
        provider_id=provider_id,
        location_id=location_id,
        patient_id=patient_id,
        status=status,
        starts_at=claim.starts_at,
        ends_at=claim.ends_at,
        confirmation_code=_unused_code(session, ctx.tenant_id),
        hold_expires_at=ctx.now + timedelta(minutes=hold_minutes) if hold_minutes else None,
        source=source,
        version=1,
        created_by=f"{ctx.actor_type}:{ctx.actor_id}",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(booking)
    record_change(session, ctx, booking, "held" if hold_minutes else "created", from_status=None)
    return booking


def _service(session: Session, ctx: Ctx, service_id: str) -> Service:
    service = session.scalars(_SERVICE, {"tenant_id": ctx.tenant_id, "id": service_id}).first()
    if service is None:
        raise InvalidInputError.one("service_id", "no such service", "not_found")
    if not service.is_active:
        raise InvalidInputError.one(
            "service_id", "this service is not offered any more", "inactive"
        )
    return service


def _check_start(ctx: Ctx, start: datetime) -> datetime:
    if start.tzinfo is None:
        raise InvalidInputError.one(
            "start", "needs a timezone offset (e.g. 2026-03-09T09:00-04:00)"
        )
    if start < ctx.now:
        raise InvalidInputError.one("start", "is in the past", "past")
    return start


def _check_patient(session: Session, ctx: Ctx, patient_id: str) -> None:
    found = session.scalar(_PATIENT, {"tenant_id": ctx.tenant_id, "id": patient_id})
    if found is None:
        raise InvalidInputError.one("patient_id", "no such patient", "not_found")


def _provider_tz(session: Session, ctx: Ctx, service: Service, provider_id: str) -> str:
    """The timezone of a provider who gives ``service``; InvalidInputError otherwise."""
    key = {"tenant_id": ctx.tenant_id, "provider_id": provider_id, "service_id": service.id}
    tz = session.scalar(_PROVIDER_TZ, key)
    if tz is not None:
        session.info.setdefault(_ZONES, {})[provider_id] = tz
        return tz
    exists = session.scalar(
        sa.select(Provider.id).where(
            Provider.tenant_id == ctx.tenant_id, Provider.id == provider_id
        )
    )
    if exists is None:
        raise InvalidInputError.one("provider_id", "no such provider", "not_found")
    raise InvalidInputError.one(
        "provider_id", "this provider does not give this service (or is inactive)", "not_eligible"
    )


def providers_at(
    session: Session, tenant_id: str, service_id: str, start: datetime, now: datetime
) -> list[str]:
    """The providers free at ``start``, in the order "any" picks them: fewest bookings
    that day first (as ``start``'s offset reads it; ties: lowest id), as a search of that
    day offers them."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return availability.free_providers_at(
        session, tenant_id, service_id, start, day + timedelta(days=1), now
    )


def _pick_provider(session: Session, ctx: Ctx, service: Service, start: datetime) -> str:
    """For "any": the free provider with the fewest bookings that day (as ``start``'s
    offset reads it; ties: lowest id), as a search of that day offers it."""
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    slots = availability.find_slots(
        session,
        ctx.tenant_id,
        service_id=service.id,
        provider_id=None,
        start=day,
        end=day + timedelta(days=1),
        now=ctx.now,
    )
    for slot in slots:
        if slot.start == start:
            return slot.provider_id
    eligible = availability.eligible_providers(session.connection(), ctx.tenant_id, service.id)
    if any(_on_grid(_load(session, ctx, service, pid, tz, start), start) for pid, tz in eligible):
        raise SlotTakenError(_next_slots(session, ctx, service, None, start))
    raise _not_bookable()


def _load(
    session: Session, ctx: Ctx, service: Service, provider_id: str, tz: str, start: datetime
) -> availability.AvailabilityInput:
    """What decides whether ``start`` is free: only the hours around it are read."""
    return availability.load_input(
        session, ctx.tenant_id, service, provider_id, start, start + timedelta(seconds=1),
        ctx.now, timezone=tz,
    )  # fmt: skip


def _slot_at(inp: availability.AvailabilityInput, start: datetime) -> Slot | None:
    return next((s for s in availability.compute_slots(inp) if s.start == start), None)


def _on_grid(inp: availability.AvailabilityInput, start: datetime) -> bool:
    """Whether ``start`` would be a slot if nothing were booked: tells "taken" (409)
    from "never bookable" (outside hours, notice or advance window: 422)."""
    return _slot_at(replace(inp, busy=(), claims=(), blocked=()), start) is not None


def _not_bookable() -> InvalidInputError:
    return InvalidInputError.one(
        "start",
        "is not a bookable time for this service and provider (outside working hours, "
        "too soon, too far ahead, or not on the service's slot grid)",
        "not_bookable",
    )


def _next_slots(
    session: Session, ctx: Ctx, service: Service, provider_id: str | None, after: datetime
) -> list[Slot]:
    """The next free slots, in each provider's timezone (as the caller will show them).
    The next day first: usually enough, and a fraction of the cost of two weeks."""
    since = max(after, ctx.now)
    slots: list[Slot] = []
    for begin, end in (
        (since, since + FIRST_LOOK),
        (since + FIRST_LOOK, since + NEXT_SLOTS_HORIZON),
    ):
        slots += availability.find_slots(
            session,
            ctx.tenant_id,
            service_id=service.id,
            provider_id=provider_id,
            start=begin,
            end=end,
            now=ctx.now,
            limit=NEXT_SLOTS - len(slots),
        )
        if len(slots) >= NEXT_SLOTS:
            break
    zones = availability.provider_timezones(
        session.connection(), ctx.tenant_id, {s.provider_id for s in slots}
    )
    return [
        replace(s, start=s.start.astimezone(tz), end=s.end.astimezone(tz))
        for s in slots
        for tz in [ZoneInfo(zones[s.provider_id])]
    ]


def _take_seat(
    session: Session, ctx: Ctx, service: Service, provider_id: str, tz: str, start: datetime
) -> tuple[Seat, str | None]:
    """A seat on the claim for ``start`` (joined for a group service, or new) and the
    location the provider works at then. The database has the last word on overlaps;
    losing there is SlotTakenError, as is losing here."""
    inp = _load(session, ctx, service, provider_id, tz, start)
    slot = _slot_at(inp, start)
    if slot is None:
        if _expire_due_holds(session, ctx.now, tenant_id=ctx.tenant_id, provider_id=provider_id):
            return _take_seat(session, ctx, service, provider_id, tz, start)  # once more
        if _on_grid(inp, start):
            raise SlotTakenError(_next_slots(session, ctx, service, provider_id, start))
        raise _not_bookable()
    location_id = _location_at(session, ctx.tenant_id, provider_id, ZoneInfo(tz), inp, start)
    joined = _join_group(session, ctx.tenant_id, service, provider_id, slot)
    if joined is not None:
        return joined, location_id
    claim_id = new_id("clm")
    claim = {
        "id": claim_id,
        "tenant_id": ctx.tenant_id,
        "provider_id": provider_id,
        "service_id": service.id,
        "starts_at": slot.start,
        "ends_at": slot.end,
        "blocked_from": slot.start - timedelta(minutes=service.buffer_before_minutes or 0),
        "blocked_until": slot.end + timedelta(minutes=service.buffer_after_minutes or 0),
        "capacity": service.capacity,
        "seats_taken": 1,
        "active": True,
    }
    try:
        with session.begin_nested():
            session.connection().execute(_INSERT_CLAIM, [claim])
    except IntegrityError:
        # Another booking took the time since the check above: the database refused.
        # For a group, that may be the claim we can join (committed, so visible now).
        joined = _join_group(session, ctx.tenant_id, service, provider_id, slot)
        if joined is not None:
            return joined, location_id
        raise SlotTakenError(_next_slots(session, ctx, service, provider_id, start)) from None
    return Seat(claim_id, slot.start, slot.end), location_id


def _join_group(
    session: Session, tenant_id: str, service: Service, provider_id: str, slot: Slot
) -> Seat | None:
    """One more seat on an open group claim at ``start``; the guarded UPDATE makes two
    racing requests for the last seat serialize on the row, so capacity holds. None when
    there is no open claim to join (or the service seats one)."""
    if service.capacity <= 1:
        return None
    key = {"tenant_id": tenant_id, "provider_id": provider_id, "service_id": service.id}
    claim_id = session.scalar(_OPEN_GROUP_CLAIM, {**key, "starts_at": slot.start})
    if claim_id is None:
        return None
    result = session.execute(
        sa.update(TimeClaim)
        .where(TimeClaim.id == claim_id, TimeClaim.seats_taken < TimeClaim.capacity)
        .values(seats_taken=TimeClaim.seats_taken + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None  # the last seat went meanwhile
    return Seat(claim_id, slot.start, slot.end)


def _release_seat(session: Session, claim_id: str) -> None:
    """Give a seat back; a claim with no seat taken stops blocking the time."""
    session.execute(
        sa.update(TimeClaim)
        .where(TimeClaim.id == claim_id, TimeClaim.seats_taken > 0)
        .values(
            seats_taken=TimeClaim.seats_taken - 1,
            active=sa.case((TimeClaim.seats_taken > 1, sa.true()), else_=sa.false()),
        )
        .execution_options(synchronize_session=False)
    )


def _unused_code(session: Session, tenant_id: str) -> str:
    for _ in range(10):
        code = new_confirmation_code()
        taken = session.scalar(_CODE_TAKEN, {"tenant_id": tenant_id, "code": code})
        if taken is None:
            return code
    raise RuntimeError("could not find an unused confirmation code")


def _location_at(
    session: Session,
    tenant_id: str,
    provider_id: str,
    tz: ZoneInfo,
    inp: availability.AvailabilityInput,
    start: datetime,
) -> str | None:
    """Where the provider works at ``start``: extra hours of that date first, then the
    weekly hours that contain it (already loaded with the slot check)."""
    local = start.astimezone(tz)
    minute = local.hour * 60 + local.minute
    if any(e.kind == "extra_hours" and e.on_date == local.date() for e in inp.exceptions):
        extra = session.scalar(
            sa.select(ScheduleException.location_id).where(
                ScheduleException.tenant_id == tenant_id,
                ScheduleException.provider_id == provider_id,
                ScheduleException.on_date == local.date(),
                ScheduleException.kind == "extra_hours",
                ScheduleException.start_minute <= minute,
                ScheduleException.end_minute > minute,
            )
        )
        if extra is not None:
            return extra
    weekday = local.weekday()
    return next(
        (
            h.location_id
            for h in inp.hours
            if h.weekday == weekday and h.start_minute <= minute < h.end_minute
        ),
        None,
    )


# --- changes ----------------------------------------------------------------------------


def reschedule_booking(
    session: Session,
    ctx: Ctx,
    booking_id: str,
    *,
    start: datetime,
    provider_id: str | None = None,
) -> Booking:
    """Move a booking (same id and code) to ``start``, optionally to another provider.
    The old time is kept if the new one cannot be had."""
    booking = _active(session, ctx, booking_id, "reschedule")
    start = _check_start(ctx, start)
    service = _service(session, ctx, booking.service_id)
    target = provider_id or booking.provider_id
    if target == ANY:
        target = _pick_provider(session, ctx, service, start)
    tz = _provider_tz(session, ctx, service, target)
    before = {"start": booking.starts_at, "provider_id": booking.provider_id}
    old_claim = booking.claim_id
    try:
        with session.begin_nested():
            # Free our own time first, so a move by 15 minutes does not collide with itself.
            _release_seat(session, old_claim)
            claim, location_id = _take_seat(session, ctx, service, target, tz, start)
    except SlotTakenError as exc:
        raise SlotTakenError([s for s in exc.next_slots if s.start != booking.starts_at]) from None
    from_status = booking.status
    booking.claim_id, booking.provider_id = claim.claim_id, target
    booking.starts_at, booking.ends_at = claim.starts_at, claim.ends_at
    booking.location_id = location_id
    _touch(booking, ctx)
    after = {"start": booking.starts_at, "provider_id": booking.provider_id}
    details = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    record_change(session, ctx, booking, "rescheduled", from_status=from_status, details=details)
    return booking


def cancel_booking(
    session: Session,
    ctx: Ctx,
    booking_id: str,
    *,
    reason: str,
    override_window: bool = False,
) -> Booking:
    """Cancel with a reason. Inside the service's cancellation window only the clinic
    (``override_window``) may cancel; an appointment that has started cannot be."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInputError.one("reason", "is required", "missing")
    if len(reason) > 500:
        raise InvalidInputError.one("reason", "must be at most 500 characters", "too_long")
    booking = _active(session, ctx, booking_id, "cancel")
    if booking.starts_at <= ctx.now:
        raise BookingStateError(
            "This appointment has started; mark it as no-show or completed instead."
        )
    window = session.scalar(
        sa.select(Service.cancellation_window_minutes).where(Service.id == booking.service_id)
    )
    if window and booking.starts_at - ctx.now < timedelta(minutes=window) and not override_window:
        raise CancellationWindowError(
            f"Cancellations less than {window} minutes before the appointment must be "
            "made by the clinic (override_window)."
        )
    return _finish(session, ctx, booking, "cancelled", "cancelled", reason=reason)


def confirm_booking(session: Session, ctx: Ctx, booking_id: str) -> Booking:
    booking = _active(session, ctx, booking_id, "confirm")
    if booking.hold_expires_at is not None and booking.hold_expires_at <= ctx.now:
        raise BookingStateError("This hold has expired and its slot was released; book again.")
    if booking.status == "confirmed":
        return booking  # confirming twice (a patient replying "C" again) is not an error
    from_status = booking.status
    booking.status, booking.hold_expires_at = "confirmed", None
    _touch(booking, ctx)
    record_change(session, ctx, booking, "confirmed", from_status=from_status)
    return booking


def mark_no_show(session: Session, ctx: Ctx, booking_id: str) -> Booking:
    return _after_start(session, ctx, booking_id, "no_show", "no_show")


def complete_booking(session: Session, ctx: Ctx, booking_id: str) -> Booking:
    return _after_start(session, ctx, booking_id, "completed", "completed")


def _after_start(session: Session, ctx: Ctx, booking_id: str, status: str, action: str) -> Booking:
    booking = _active(session, ctx, booking_id, action.replace("_", "-"))
    if booking.status in HOLD_STATUSES:
        raise BookingStateError("A held slot was never booked; confirm or cancel it.")
    if booking.starts_at > ctx.now:
        raise BookingStateError("This appointment has not started yet.")
    # The time stays claimed: it was used (or lost) and must not be offered again.
    from_status = booking.status
    booking.status = status
    _touch(booking, ctx)
    record_change(session, ctx, booking, action, from_status=from_status)
    return booking


def _active(session: Session, ctx: Ctx, booking_id: str, verb: str) -> Booking:
    booking = get_booking(session, ctx, booking_id, lock=True)
    if booking.status not in ACTIVE_STATUSES:
        raise BookingStateError(f"A {booking.status} booking cannot {verb}.".replace("_", "-"))
    return booking


def release_hold(session: Session, ctx: Ctx, booking_id: str, *, reason: str) -> Booking | None:
    """Let a hold go now (its payment failed or was cancelled): ``expired``, time freed.
    None when the booking is no longer a hold (confirmed, cancelled, expired already)."""
    booking = get_booking(session, ctx, booking_id, lock=True)
    if booking.status not in HOLD_STATUSES:
        return None
    return _finish(session, ctx, booking, "expired", "expired", reason=reason)


def _finish(
    session: Session, ctx: Ctx, booking: Booking, status: str, action: str, **details: Any
) -> Booking:
    """End a booking and give its time back."""
    from_status = booking.status
    _release_seat(session, booking.claim_id)
    booking.status = status
    if "reason" in details:
        booking.cancel_reason = details["reason"]
    booking.hold_expires_at = None
    _touch(booking, ctx)
    record_change(session, ctx, booking, action, from_status=from_status, details=details)
    return booking


def _touch(booking: Booking, ctx: Ctx) -> None:
    booking.version += 1
    booking.updated_at = ctx.now
    # flushed by record_change


# --- holds ------------------------------------------------------------------------------


def _expire_due_holds(
    session: Session,
    now: datetime,
    *,
    tenant_id: str | None = None,
    provider_id: str | None = None,
    limit: int = RELEASE_BATCH,
) -> int:
    """Expire holds whose time is up; returns how many. Also run before each booking of
    a provider, so an expired hold never blocks a slot until the periodic job runs."""
    due: list[Booking] = []
    for hold_status in HOLD_STATUSES:  # one status a query: each has its partial index
        stmt = sa.select(Booking).where(
            Booking.status == hold_status, Booking.hold_expires_at <= now
        )
        if tenant_id is not None:
            stmt = stmt.where(Booking.tenant_id == tenant_id)
        if provider_id is not None:
            stmt = stmt.where(Booking.provider_id == provider_id)
        # Locked rows are being expired by someone else right now: skip, never twice.
        stmt = stmt.order_by(Booking.hold_expires_at).limit(limit - len(due))
        due += session.scalars(stmt.with_for_update(skip_locked=True))
        if len(due) >= limit:
            break
    for booking in due:
        ctx = Ctx.system(booking.tenant_id, "hold_expiry", now)
        _finish(session, ctx, booking, "expired", "expired")
    return len(due)


@registry.handler(RELEASE_HOLDS_KIND, max_attempts=3)
def release_holds(job: JobContext) -> None:
    """Periodic: expire held slots whose time is up, in batches (idempotent)."""
    while True:
        with job.db.write() as session:
            if _expire_due_holds(session, job.now()) < RELEASE_BATCH:
                return


registry.periodic(
    PeriodicTask(name="release-booking-holds", cron="* * * * *", kind=RELEASE_HOLDS_KIND)
)
