"""The public booking flow of a clinic's website: services, availability, bookings.

Nothing here needs an API key, so nothing here answers patient data: the service
list and the slots carry no patient, and a booking answers only its confirmation
code and times — never the patient's id or details, nor whether the patient was
already known (a match and a new patient answer alike). A booking acts as the
clinic's ``system`` principal ``public_booking``.

Only active services marked ``is_public`` can be seen or booked; a private or
inactive service is "no such service", like one that does not exist.

``WindowLimiter`` caps requests per client IP: in-process (like the webhook
inbox's ``FailureLimiter``), bounded in memory, on the app's clock.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict, deque
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, EmailStr, Field
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import FieldError, InvalidInputError, NotFoundError
from clinicbridge.core.models import Tenant
from clinicbridge.core.schemas import Input
from clinicbridge.core.validation import check_slug, check_timezone
from clinicbridge.patients.schemas import BirthDate, PersonName, RawPhone
from clinicbridge.patients.service import find_or_create_patient
from clinicbridge.scheduling import availability, bookings
from clinicbridge.scheduling.availability import parse_instant
from clinicbridge.scheduling.models import Provider, Service, ServiceProvider
from clinicbridge.scheduling.slots import Slot

SOURCE = "public"
ACTOR_ID = "public_booking"
ROLE = "public_booking"
# What the website may do on the clinic's behalf: find or add a patient, book a slot.
PERMISSIONS = frozenset({"schedule:read", "patients:write", "bookings:write"})
MAX_RANGE = timedelta(days=31)
NOT_FOUND = "No resource at this address."  # the same words as any unknown URL

Id = Annotated[str, Field(min_length=1, max_length=32)]


class PublicPatient(Input):
    first_name: PersonName
    last_name: PersonName
    date_of_birth: BirthDate
    phone: RawPhone | None = None
    email: EmailStr | None = None


class PublicBookingIn(Input):
    """A booking from the website; anything else (status, patient_id, source) is refused."""

    service_id: Id
    provider_id: Id = Field(description='A provider id, or "any".')
    start: AwareDatetime
    patient: PublicPatient


# Answer shapes, for the API documentation (the routes write the JSON themselves).


class PublicProviderOut(BaseModel):
    id: str
    display_name: str


class PublicServiceOut(BaseModel):
    id: str
    name: str
    description: str | None
    duration_minutes: int
    modality: str
    price_minor: int | None
    currency: str | None
    providers: list[PublicProviderOut]


class PublicServicesOut(BaseModel):
    data: list[PublicServiceOut]


class PublicSlotOut(BaseModel):
    start: datetime
    end: datetime
    provider_id: str
    seats_left: int


class PublicSlotsOut(BaseModel):
    data: list[PublicSlotOut]


class PublicBookingOut(BaseModel):
    confirmation_code: str = Field(examples=["K7Q-4MX"])
    start: datetime
    end: datetime
    service_id: str
    provider_id: str
    status: str


# --- the clinic -------------------------------------------------------------------------


def public_clinic(session: Session, slug: str) -> Tenant:
    """The clinic with this slug; NotFoundError (saying nothing more) otherwise.

    Tenants have no active flag yet: every existing clinic is bookable."""
    try:
        check_slug(slug)
    except ValueError:
        raise NotFoundError(NOT_FOUND) from None
    tenant = session.scalar(sa.select(Tenant).where(Tenant.slug == slug))
    if tenant is None:
        raise NotFoundError(NOT_FOUND)
    return tenant


def public_ctx(tenant_id: str, now: datetime, request_id: str | None, ip: str | None) -> Ctx:
    return Ctx.system(
        tenant_id, ACTOR_ID, now, role=ROLE, permissions=PERMISSIONS, request_id=request_id, ip=ip
    )


# --- services ---------------------------------------------------------------------------


def public_service(session: Session, tenant_id: str, service_id: str) -> Service:
    """This clinic's active public service; InvalidInputError (``service_id``) otherwise."""
    service = session.scalar(
        sa.select(Service).where(
            Service.tenant_id == tenant_id,
            Service.id == service_id,
            Service.is_active.is_(True),
            Service.is_public.is_(True),
        )
    )
    if service is None:
        raise InvalidInputError.one("service_id", "no such service", "not_found")
    return service


def list_services(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """Active public services, by name, each with its active providers (id and name only)."""
    services = session.scalars(
        sa.select(Service)
        .where(
            Service.tenant_id == tenant_id,
            Service.is_active.is_(True),
            Service.is_public.is_(True),
        )
        .order_by(Service.name, Service.id)
    ).all()
    providers: dict[str, list[dict[str, str]]] = {s.id: [] for s in services}
    if services:
        rows = session.execute(
            sa.select(ServiceProvider.service_id, Provider.id, Provider.display_name)
            .join(Provider, Provider.id == ServiceProvider.provider_id)
            .where(
                ServiceProvider.tenant_id == tenant_id,
                ServiceProvider.service_id.in_(list(providers)),
                Provider.tenant_id == tenant_id,
                Provider.is_active.is_(True),
            )
            .order_by(Provider.display_name, Provider.id)
        )
        for service_id, provider_id, name in rows:
            providers[service_id].append({"id": provider_id, "display_name": name})
    return [
        {
            "id": s.id,
            "name": s.name,
            "description": s.description,
            "duration_minutes": s.duration_minutes,
            "modality": s.modality,
            "price_minor": s.price_minor,
            "currency": s.currency,
            "providers": providers[s.id],
        }
        for s in services
    ]


# --- availability -----------------------------------------------------------------------


def _iso(slots: list[Slot], zones: dict[str, ZoneInfo], keys: tuple[str, ...]) -> list[Any]:
    out = []
    for s in slots:
        zone = zones[s.provider_id]
        item: dict[str, Any] = {
            "start": s.start.astimezone(zone).isoformat(),
            "end": s.end.astimezone(zone).isoformat(),
            "provider_id": s.provider_id,
            "seats_left": s.seats_left,
        }
        out.append({k: item[k] for k in keys})
    return out


def public_slots(
    session: Session,
    tenant: Tenant,
    *,
    service_id: str,
    provider_id: str,
    start: str,
    end: str,
    now: datetime,
    tz: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Bookable slots of a public service, answered in ``tz`` (default: each slot's
    provider's zone); at most 31 days. Bad input: InvalidInputError naming the field."""
    if tz is not None:
        try:
            check_timezone(tz)
        except ValueError as exc:
            raise InvalidInputError.one("tz", str(exc), "timezone") from None
    zone = ZoneInfo(tz or tenant.timezone)
    errors: list[FieldError] = []
    parsed: dict[str, datetime] = {}
    for name, raw in (("from", start), ("to", end)):
        try:
            parsed[name] = parse_instant(name, raw, lambda: zone)
        except InvalidInputError as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidInputError(errors)
    lo, hi = parsed["from"], parsed["to"]
    if lo >= hi:
        raise InvalidInputError.one("to", "must be after from", "range")
    if hi - lo > MAX_RANGE:
        raise InvalidInputError.one("to", "the range may span at most 31 days", "range")
    public_service(session, tenant.id, service_id)
    slots = availability.find_slots(
        session,
        tenant.id,
        service_id=service_id,
        provider_id=None if provider_id == "any" else provider_id,
        start=lo,
        end=hi,
        now=now,
        limit=limit,
    )
    if tz is not None:
        zones = dict.fromkeys({s.provider_id for s in slots}, ZoneInfo(tz))
    else:
        zones = bookings.provider_zones(session, tenant.id, {s.provider_id for s in slots})
    return _iso(slots, zones, ("start", "end", "provider_id", "seats_left"))


# --- bookings ---------------------------------------------------------------------------


def _patient_field(errors: list[FieldError]) -> InvalidInputError:
    return InvalidInputError([FieldError(f"patient.{e.field}", e.message, e.code) for e in errors])


def book(session: Session, ctx: Ctx, body: PublicBookingIn) -> dict[str, Any]:
    """Find or add the patient and book; answers the code, times, ids and status only.

    Raises InvalidInputError naming the field, or bookings.SlotTakenError; either way the
    caller's transaction must roll back (nothing is written)."""
    public_service(session, ctx.tenant_id, body.service_id)
    person = body.patient
    if person.phone is None and person.email is None:
        raise InvalidInputError.one("patient.phone", "give a phone number or an e-mail address")
    try:
        patient, _created = find_or_create_patient(
            session,
            ctx,
            first_name=person.first_name,
            last_name=person.last_name,
            date_of_birth=person.date_of_birth,
            phone=person.phone,
            email=str(person.email) if person.email is not None else None,
            source=SOURCE,
        )
    except InvalidInputError as exc:
        raise _patient_field(exc.errors) from None
    # A taken time raises bookings.SlotTakenError: its next_available holds times and
    # provider ids only, no patient data.
    booking = bookings.create_booking(
        session,
        ctx,
        service_id=body.service_id,
        provider_id=body.provider_id,
        start=body.start,
        patient_id=patient.id,
        source=SOURCE,
    )
    zones = bookings.provider_zones(session, ctx.tenant_id, {booking.provider_id})
    zone = zones[booking.provider_id]
    return {
        "confirmation_code": booking.confirmation_code,
        "start": booking.starts_at.astimezone(zone).isoformat(),
        "end": booking.ends_at.astimezone(zone).isoformat(),
        "service_id": booking.service_id,
        "provider_id": booking.provider_id,
        "status": booking.status,
    }


# --- rate limits ------------------------------------------------------------------------


def client_key(ip: str | None) -> str:
    """The client's address as a limiter key; IPv6 by /64 (one subscriber's prefix)."""
    if not ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)


class WindowLimiter:
    """At most ``limit`` requests per ``window`` seconds per key (a sliding window).

    In-process and bounded (the least recently seen keys are forgotten first). A
    refused request is not counted, so a client that waits gets through. Time is
    passed in (the app's clock), so tests can move it."""

    def __init__(self, limit: int, window: float, max_keys: int = 10_000) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be at least 1 and window positive")
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def hit(self, key: str, now: float) -> float | None:
        """Count a request; None when allowed, else the seconds until one will be."""
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(hits[0] + self.window - now, 1.0)
            hits.append(now)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
            return None
