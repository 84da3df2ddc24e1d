"""``/api/v1/bookings``: book, hold, reschedule, cancel, confirm, no-show, complete.

Times are answered in the provider's timezone (ISO 8601 with offset). A taken slot
answers 409 ``slot-taken`` with ``next_available``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Annotated
from zoneinfo import ZoneInfo

import anyio
from fastapi import APIRouter, Path, Query, Request
from sqlalchemy.orm import Session

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.patients.service import find_or_create_patient
from clinicbridge.payments import checkout
from clinicbridge.payments.schemas import BookingPaymentOut
from clinicbridge.scheduling import bookings, prechecks
from clinicbridge.scheduling.booking_schemas import (
    BookingCancel,
    BookingChangeOut,
    BookingCreate,
    BookingOut,
    BookingReschedule,
    BookingStatusFilter,
)
from clinicbridge.scheduling.models import Booking

router = APIRouter(tags=["bookings"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("bookings:read")]
Writer = Annotated[Ctx, require("bookings:write")]
BookingId = Annotated[str, Path(max_length=64)]
ONE = "/bookings/{booking_id}"


def _timezones(session: Session, tenant_id: str, rows: Iterable[Booking]) -> dict[str, ZoneInfo]:
    return bookings.provider_zones(session, tenant_id, {row.provider_id for row in rows})


def _out(row: Booking, tz: ZoneInfo) -> BookingOut:
    return BookingOut(
        id=row.id,
        status=row.status,
        start=row.starts_at.astimezone(tz),
        end=row.ends_at.astimezone(tz),
        confirmation_code=row.confirmation_code,
        service_id=row.service_id,
        provider_id=row.provider_id,
        patient_id=row.patient_id,
        location_id=row.location_id,
        source=row.source,
        hold_expires_at=row.hold_expires_at,
        cancel_reason=row.cancel_reason,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _one(session: Session, row: Booking) -> BookingOut:
    return _out(row, _timezones(session, row.tenant_id, [row])[row.provider_id])


@router.post("/bookings", status_code=201, response_model=BookingOut)
async def create_booking(body: BookingCreate, request: Request, db: DB, ctx: Writer) -> BookingOut:
    """Book a slot for a patient (``patient_id``, or ``patient`` details matched to an
    existing record or created). ``hold_minutes`` holds it instead, until confirmed.

    ``"payment": "deposit"|"full"`` holds it as ``pending_payment`` and answers the
    ``payment`` to make (a PaymentIntent's ``client_secret``, or a ``checkout_url`` with
    ``"payment_method": "link"``); the signed ``payment_intent.succeeded`` confirms it.
    Stripe unreachable: 503 ``payment-provider-unavailable`` (the slot stays held; retry
    with ``POST /bookings/{id}/payment``)."""
    if body.patient is not None and not ctx.has("patients:write"):
        raise InvalidInputError.one(
            "patient",
            "creating patients needs the permission patients:write; send patient_id instead",
            "permission",
        )

    tenant_id, provider_id, service_id = ctx.tenant_id, body.provider_id, body.service_id
    if await db.run_read(lambda s: prechecks.needed(s, tenant_id, provider_id, service_id)):
        # outside calendars looked at afresh, in a thread, no transaction open; for
        # "any", the provider whose calendars were checked is the one booked
        chosen: str | None = await anyio.to_thread.run_sync(
            partial(
                prechecks.run, db, request.app.state.settings, tenant_id, service_id,
                provider_id, body.start, now=ctx.now,
            )
        )  # fmt: skip
        provider_id = chosen or provider_id

    def book(session: Session) -> BookingOut:
        patient_id = body.patient_id
        if body.patient is not None:
            patient, _ = find_or_create_patient(
                session, ctx, **body.patient.model_dump(), source="booking"
            )
            patient_id = patient.id
        assert patient_id is not None  # the schema requires one of the two
        paying = body.payment != "none"
        hold = body.hold_minutes
        if paying and hold is None:
            hold = checkout.hold_minutes(session, ctx.tenant_id, body.payment_method)
        row = bookings.create_booking(
            session,
            ctx,
            service_id=body.service_id,
            provider_id=provider_id,
            start=body.start,
            patient_id=patient_id,
            source="api" if ctx.actor_type == "api_key" else "admin",
            hold_minutes=hold,
            pending_payment=paying,
        )
        out = _one(session, row)
        if paying:  # in the booking's transaction: both or neither
            made = checkout.open_booking_payment(
                session, ctx, row, payment=body.payment, method=body.payment_method
            )
            out.payment = {"id": made.id}
        return out

    out = await db.run_write(book)
    if out.payment is None:
        return out
    # The booking and its payment are committed; Stripe is called with no transaction open.
    started = await anyio.to_thread.run_sync(
        checkout.start,
        db,
        request.app.state.settings,
        ctx.tenant_id,
        str(out.payment["id"]),
        ctx.now,
    )
    out.payment = payment_view(started)
    return out


def payment_view(started: checkout.Started) -> dict[str, object]:
    payment = started.payment
    return BookingPaymentOut(
        id=payment.id,
        status=payment.status,
        amount=payment.amount,
        currency=payment.currency,
        method=payment.method,
        stripe_payment_intent_id=payment.stripe_payment_intent_id,
        client_secret=started.client_secret,
        checkout_url=started.checkout_url,
        expires_at=payment.expires_at,
    ).model_dump(mode="json")


@router.post(ONE + "/payment", response_model=BookingPaymentOut)
def pay_booking(booking_id: BookingId, request: Request, db: DB, ctx: Writer) -> dict[str, object]:
    """(Re)start the payment of a ``pending_payment`` booking: after a 503, or to get the
    ``client_secret`` again. The same Stripe object comes back (same idempotency key).
    A cancelled or expired booking is a 409."""
    with db.read() as session:
        payment = checkout.payable(session, ctx, booking_id)
    return payment_view(
        checkout.start(db, request.app.state.settings, ctx.tenant_id, payment.id, ctx.now)
    )


@router.get("/bookings", response_model=ListOut[BookingOut])
def list_bookings(
    db: DB,
    ctx: Reader,
    page: Paging,
    provider_id: Annotated[str | None, Query(max_length=64)] = None,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    status: BookingStatusFilter | None = None,
    start_from: Annotated[datetime | None, Query(alias="from")] = None,
    start_to: Annotated[datetime | None, Query(alias="to")] = None,
) -> ListOut[BookingOut]:
    """Bookings by id; filter by provider, patient, status and start time."""
    for name, value in (("from", start_from), ("to", start_to)):
        if value is not None and value.tzinfo is None:
            raise InvalidInputError.one(name, "needs a timezone offset")
    with db.read() as session:
        found = bookings.list_bookings(
            session,
            ctx,
            limit=page.limit,
            starting_after=page.starting_after,
            provider_id=provider_id,
            patient_id=patient_id,
            status=status,
            start_from=start_from,
            start_to=start_to,
        )
        zones = _timezones(session, ctx.tenant_id, found.items)
        return ListOut.of(found, lambda row: _out(row, zones[row.provider_id]))


@router.get("/bookings/by-code/{code}", response_model=BookingOut)
def booking_by_code(
    code: Annotated[str, Path(min_length=6, max_length=16)], db: DB, ctx: Reader
) -> BookingOut:
    """The booking a patient reads out by its confirmation code."""
    with db.read() as session:
        return _one(session, bookings.get_booking_by_code(session, ctx, code))


@router.get(ONE, response_model=BookingOut)
def get_booking(booking_id: BookingId, db: DB, ctx: Reader) -> BookingOut:
    with db.read() as session:
        return _one(session, bookings.get_booking(session, ctx, booking_id))


@router.get(ONE + "/history", response_model=ListOut[BookingChangeOut])
def booking_history(booking_id: BookingId, db: DB, ctx: Reader) -> ListOut[BookingChangeOut]:
    """Every change of the booking, oldest first: who, when, from which status."""
    with db.read() as session:
        changes = bookings.booking_history(session, ctx, booking_id)
        return ListOut[BookingChangeOut](
            data=[BookingChangeOut.model_validate(c, from_attributes=True) for c in changes]
        )


@router.post(ONE + "/reschedule", response_model=BookingOut)
def reschedule_booking(
    booking_id: BookingId, body: BookingReschedule, request: Request, db: DB, ctx: Writer
) -> BookingOut:
    """Move the booking; the old time is kept if the new one is taken (409)."""
    with db.read() as session:
        current = bookings.get_booking(session, ctx, booking_id)
    prechecks.run(
        db, request.app.state.settings, ctx.tenant_id, current.service_id,
        body.provider_id or current.provider_id, body.start, booking_id=booking_id, now=ctx.now,
    )  # fmt: skip
    with db.write() as session:
        row = bookings.reschedule_booking(
            session, ctx, booking_id, start=body.start, provider_id=body.provider_id
        )
        return _one(session, row)


@router.post(ONE + "/cancel", response_model=BookingOut)
def cancel_booking(booking_id: BookingId, body: BookingCancel, db: DB, ctx: Writer) -> BookingOut:
    with db.write() as session:
        row = bookings.cancel_booking(
            session, ctx, booking_id, reason=body.reason, override_window=body.override_window
        )
        return _one(session, row)


@router.post(ONE + "/confirm", response_model=BookingOut)
def confirm_booking(booking_id: BookingId, db: DB, ctx: Writer) -> BookingOut:
    """Confirm a booking, or turn a hold into a booking before it expires."""
    with db.write() as session:
        return _one(session, bookings.confirm_booking(session, ctx, booking_id))


@router.post(ONE + "/no-show", response_model=BookingOut)
def mark_no_show(booking_id: BookingId, db: DB, ctx: Writer) -> BookingOut:
    with db.write() as session:
        return _one(session, bookings.mark_no_show(session, ctx, booking_id))


@router.post(ONE + "/complete", response_model=BookingOut)
def complete_booking(booking_id: BookingId, db: DB, ctx: Writer) -> BookingOut:
    with db.write() as session:
        return _one(session, bookings.complete_booking(session, ctx, booking_id))
