"""iCalendar for bookings: a secret, revocable feed per provider and an ``.ics``
attachment for confirmation messages, both built with the ``icalendar`` package.

A feed's token is shown once, when it is created; only its SHA-256 is stored, and a
feed is found by that hash, so neither a database dump nor a timing difference in
the lookup gives a usable token away. A feed shows the provider's active bookings
(booked, confirmed, and held until the hold expires) from 30 days back to a year
ahead, in UTC, one VEVENT per booking whose UID is the same as in the attachment,
so a calendar that has both keeps one event. Patient names appear only where the clinic allows it
(``tenants.calendar_patient_names``), and a fetch that shows them is audited as a
PHI read; otherwise a feed carries no patient data at all: no name, phone, e-mail,
date of birth, nor the confirmation code (which lets its holder act on a booking).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from icalendar import Calendar, Event, vCalAddress, vDuration, vText
from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record, record_system
from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling.models import (
    ACTIVE_STATUSES,
    Booking,
    IcalFeed,
    Location,
    Provider,
    Service,
)

PRODID = "-//ClinicBridge//Scheduling//EN"
CONTENT_TYPE = "text/calendar; charset=utf-8"
FEED_PAST = timedelta(days=30)
FEED_AHEAD = timedelta(days=365)
FEED_REFRESH = timedelta(minutes=15)  # REFRESH-INTERVAL / X-PUBLISHED-TTL
MAX_FEED_EVENTS = 5000
CANCELLED_STATUSES = frozenset({"cancelled", "expired"})
_STATUS = {
    "held": "TENTATIVE",
    "pending_payment": "TENTATIVE",
    "cancelled": "CANCELLED",
    "expired": "CANCELLED",
}
_MAX_TOKEN_LENGTH = 128  # token_urlsafe(32) is 43 characters
RESOURCE = "ical_feed"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def event_uid(booking_id: str) -> str:
    """The UID of a booking's VEVENT in every calendar ClinicBridge produces."""
    return f"{booking_id}@clinicbridge"


# --- managing feeds ---------------------------------------------------------------------


def create_feed(session: Session, ctx: Ctx, provider_id: str) -> tuple[IcalFeed, str]:
    """A new feed of this clinic's provider and its token (shown once, never stored)."""
    provider = get_scoped(session, Provider, ctx.tenant_id, id=provider_id)
    token = secrets.token_urlsafe(32)
    feed = IcalFeed(
        id=new_id("icf"),
        tenant_id=ctx.tenant_id,
        provider_id=provider.id,
        token_hash=token_hash(token),
        created_by=ctx.actor_id,
        created_at=ctx.now,
    )
    session.add(feed)
    session.flush()
    record(
        session,
        ctx,
        "ical_feed.create",
        RESOURCE,
        feed.id,
        diff=diff_of({}, {"provider_id": provider.id}),
    )
    return feed, token


def list_feeds(session: Session, ctx: Ctx, provider_id: str) -> list[IcalFeed]:
    """The provider's feeds, revoked ones included, oldest first."""
    provider = get_scoped(session, Provider, ctx.tenant_id, id=provider_id)
    stmt = (
        scoped_select(IcalFeed, ctx.tenant_id)
        .where(IcalFeed.provider_id == provider.id)
        .order_by(IcalFeed.created_at, IcalFeed.id)
    )
    return list(session.scalars(stmt))


def revoke_feed(session: Session, ctx: Ctx, provider_id: str, feed_id: str) -> IcalFeed:
    """Stop a feed from answering; revoking a revoked feed changes nothing."""
    provider = get_scoped(session, Provider, ctx.tenant_id, id=provider_id)
    feed = get_scoped(session, IcalFeed, ctx.tenant_id, id=feed_id, provider_id=provider.id)
    if feed.revoked_at is None:
        feed.revoked_at = ctx.now
        session.flush()
        record(
            session,
            ctx,
            "ical_feed.revoke",
            RESOURCE,
            feed.id,
            diff=diff_of({"revoked_at": None}, {"revoked_at": ctx.now.isoformat()}),
        )
    return feed


# --- the feed ---------------------------------------------------------------------------


def find_feed(session: Session, token: str) -> IcalFeed | None:
    """The live feed of ``token``, or None when it is unknown or revoked."""
    if not token or len(token) > _MAX_TOKEN_LENGTH:
        return None
    stmt = sa.select(IcalFeed).where(
        IcalFeed.token_hash == token_hash(token), IcalFeed.revoked_at.is_(None)
    )
    return session.scalars(stmt).first()


def feed_calendar(session: Session, token: str, now: datetime) -> bytes | None:
    """The feed of ``token`` as iCalendar bytes, or None when unknown or revoked.

    When the clinic shows patient names, the fetch is recorded as a PHI read
    (``ical_feed.read``), so ``session`` must then be a write session.
    """
    feed = find_feed(session, token)
    if feed is None:
        return None
    tenant = session.get(Tenant, feed.tenant_id)
    provider = session.get(Provider, feed.provider_id)
    if tenant is None or provider is None or provider.tenant_id != feed.tenant_id:
        return None
    names = bool(tenant.calendar_patient_names)
    rows = _feed_rows(session, feed, now, names=names)

    cal = _calendar()
    cal.add("x-wr-calname", vText(provider.display_name))
    cal.add("x-wr-caldesc", vText(f"{provider.display_name}: appointments at {tenant.name}"))
    cal.add("refresh-interval", FEED_REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", vDuration(FEED_REFRESH))
    patient_ids: set[str] = set()
    for booking, service_name, location_name, first, last in rows:
        summary = service_name
        if names and first is not None:
            summary = f"{service_name}: {_full_name(first, last)}"
            patient_ids.add(booking.patient_id)
        event = _event(booking, summary=summary, stamp=booking.updated_at)
        if location_name:
            event.add("location", location_name)
        cal.add_component(event)
    if names:
        record_system(
            session,
            feed.tenant_id,
            "ical_feed.read",
            RESOURCE,
            feed.id,
            now=now,
            actor_id=f"ical_feed:{feed.id}",
            phi=bool(patient_ids),
            diff={"provider_id": provider.id, "patients": len(patient_ids)},
        )
    return bytes(cal.to_ical())


_FeedRow = tuple[Booking, str, str | None, str | None, str | None]


def _feed_rows(session: Session, feed: IcalFeed, now: datetime, *, names: bool) -> list[_FeedRow]:
    """(booking, service name, location name, patient first and last name or None)."""
    patient_cols: Iterable[Any] = (
        (Patient.first_name, Patient.last_name)
        if names
        else (sa.null().label("first_name"), sa.null().label("last_name"))
    )
    stmt = (
        sa.select(Booking, Service.name, Location.name, *patient_cols)
        .join(Service, Service.id == Booking.service_id)
        .outerjoin(Location, Location.id == Booking.location_id)
        .where(
            Booking.tenant_id == feed.tenant_id,
            Booking.provider_id == feed.provider_id,
            Booking.status.in_(ACTIVE_STATUSES),
            sa.or_(Booking.hold_expires_at.is_(None), Booking.hold_expires_at > now),
            Booking.ends_at > now - FEED_PAST,
            Booking.starts_at < now + FEED_AHEAD,
        )
        .order_by(Booking.starts_at, Booking.id)
        .limit(MAX_FEED_EVENTS)
    )
    if names:
        stmt = stmt.outerjoin(Patient, Patient.id == Booking.patient_id)
    return [(r[0], r[1], r[2], r[3], r[4]) for r in session.execute(stmt)]


# --- the attachment ---------------------------------------------------------------------


def attachment_method(booking: Booking) -> str:
    """The iTIP method of ``booking``'s attachment: CANCEL once it no longer stands."""
    return "CANCEL" if booking.status in CANCELLED_STATUSES else "PUBLISH"


def ics_attachment(
    session: Session,
    booking: Booking,
    *,
    include_patient_name: bool = False,
    organizer_email: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """A one-event calendar for a message to the patient about ``booking``.

    METHOD:PUBLISH (the client adds or updates the event) while the booking stands,
    METHOD:CANCEL with STATUS:CANCELLED once it is cancelled or its hold expired;
    the UID and SEQUENCE let the client match both to the same event. The MIME type
    is ``text/calendar; charset=utf-8; method=`` plus ``attachment_method(booking)``.
    The organizer is ``organizer_email`` (the address the message is sent from)
    or else the provider's e-mail, and is left out when neither is known.
    """
    service = session.get(Service, booking.service_id)
    provider = session.get(Provider, booking.provider_id)
    location = session.get(Location, booking.location_id) if booking.location_id else None
    if service is None or provider is None:
        raise LookupError(f"booking {booking.id} has no service or provider")
    method = attachment_method(booking)
    summary = f"{service.name} with {provider.display_name}"
    lines = [
        f"Service: {service.name}",
        f"With: {provider.display_name}",
    ]
    if location is not None:
        lines.append(f"Location: {_place(location)}")
    if include_patient_name:
        patient = session.get(Patient, booking.patient_id)
        if patient is not None:
            lines.append(f"Patient: {_full_name(patient.first_name, patient.last_name)}")
    lines.append(f"Confirmation code: {booking.confirmation_code}")

    cal = _calendar()
    cal.add("method", method)
    event = _event(booking, summary=summary, stamp=now or booking.updated_at)
    event.add("description", "\n".join(lines))
    if location is not None:
        event.add("location", _place(location))
    email = organizer_email or provider.email
    if email:
        organizer = vCalAddress(f"mailto:{email}")
        organizer.params["CN"] = vText(provider.display_name)
        event.add("organizer", organizer)
    cal.add_component(event)
    return bytes(cal.to_ical())


# --- shared -----------------------------------------------------------------------------


def _calendar() -> Calendar:
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    return cal


def _event(booking: Booking, *, summary: str, stamp: datetime) -> Event:
    event = Event()
    event.add("uid", event_uid(booking.id))
    event.add("dtstamp", stamp)
    event.add("dtstart", booking.starts_at)
    event.add("dtend", booking.ends_at)
    event.add("summary", summary)
    event.add("sequence", booking.version)
    event.add("created", booking.created_at)
    event.add("last-modified", booking.updated_at)
    event.add("status", _STATUS.get(booking.status, "CONFIRMED"))
    event.add("transp", "OPAQUE")
    return event


def _full_name(first: str | None, last: str | None) -> str:
    return " ".join(part for part in (first, last) if part)


def _place(location: Location) -> str:
    """The location's name, then the text parts of its address."""
    parts = [location.name]
    if isinstance(location.address, dict):
        parts += [str(v) for v in location.address.values() if isinstance(v, str | int) and v]
    return ", ".join(parts)
