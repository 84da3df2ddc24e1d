"""What the voice tools need from a practice: services, slots, bookings, patients.

``PracticeBackend`` is that need as a protocol, in plain values, so that an outside
practice-management system can stand behind the same tools later. ``NativeBackend``
is ClinicBridge's own implementation on the scheduling and patients services, in
the caller's session and transaction.

Errors: the domain's own (``InvalidInputError``, ``NotFoundError``,
``ConflictError``) plus ``SlotTaken`` carrying the next open slots (``CalendarRefused``
when the provider's outside calendar has the time busy).

The fresh calendar check (``scheduling.prechecks``) makes outside calls, which must not
happen inside the tools' write transaction: a booking or a move that needs one raises
``PrecheckNeeded`` (the transaction is rolled back); ``voice.service.answer_tool_calls``
runs the check with no transaction open, records its verdict, and runs the tools again.
The scheduling services are imported where used, so that the voice routes load
with the scheduling models alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ClinicBridgeError, ConflictError
from clinicbridge.core.models import Tenant
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.patients import records as patient_records
from clinicbridge.patients import service as patients
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling.models import (
    ACTIVE_STATUSES,
    Booking,
    Provider,
    Service,
    ServiceProvider,
)

SOURCE = "voice"
PURPOSE = "voice"


@dataclass(frozen=True)
class ServiceInfo:
    id: str
    name: str
    duration_minutes: int
    modality: str
    provider_ids: tuple[str, ...]


@dataclass(frozen=True)
class ProviderInfo:
    id: str
    name: str


@dataclass(frozen=True)
class SlotInfo:
    start: datetime  # UTC
    end: datetime
    provider_id: str


@dataclass(frozen=True)
class BookingInfo:
    id: str
    status: str
    start: datetime
    end: datetime
    service_id: str
    provider_id: str
    patient_id: str
    confirmation_code: str


@dataclass(frozen=True)
class PatientInfo:
    id: str
    first_name: str
    last_name: str
    date_of_birth: date | None


@dataclass
class SlotTaken(Exception):
    """The slot is not (or no longer) free; ``next_slots`` are the nearest open ones."""

    next_slots: list[SlotInfo] = field(default_factory=list)


class CalendarRefused(SlotTaken):
    """The provider's outside calendar has this time busy (the fresh calendar check)."""


# (provider, start, booking moved) -> None when the fresh check passed, else its refusal
Verdicts = dict[tuple[str, datetime, str | None], ClinicBridgeError | None]


@dataclass
class PrecheckNeeded(Exception):
    """This time needs the fresh calendar check first, outside the transaction."""

    service_id: str
    provider_id: str
    start: datetime
    booking_id: str | None = None

    @property
    def key(self) -> tuple[str, datetime, str | None]:
        return (self.provider_id, self.start, self.booking_id)


class PracticeBackend(Protocol):
    def timezone(self) -> str: ...

    def services(self) -> list[ServiceInfo]: ...

    def providers(self) -> list[ProviderInfo]: ...

    def find_slots(
        self,
        *,
        service_id: str,
        provider_id: str | None,
        start: datetime,
        end: datetime,
        limit: int | None = None,
    ) -> list[SlotInfo]: ...

    def book(
        self, *, service_id: str, provider_id: str, start: datetime, patient_id: str
    ) -> BookingInfo: ...

    def patient_bookings(
        self, patient_id: str, *, confirmation_code: str | None = None
    ) -> list[BookingInfo]: ...

    def reschedule(self, booking_id: str, start: datetime) -> BookingInfo: ...

    def cancel(self, booking_id: str, reason: str) -> BookingInfo: ...

    def match_caller(
        self,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        date_of_birth: date | None = None,
        phone: str | None = None,
    ) -> PatientInfo | None: ...

    def find_or_create_patient(
        self,
        *,
        first_name: str,
        last_name: str,
        date_of_birth: date | None,
        phone: str | None = None,
        email: str | None = None,
    ) -> tuple[PatientInfo, bool]: ...

    def get_patient(self, patient_id: str) -> PatientInfo: ...

    def record_verification(self, patient_id: str) -> None: ...

    def add_note(self, patient_id: str, text: str) -> str: ...


def _patient(row: Patient) -> PatientInfo:
    return PatientInfo(row.id, row.first_name, row.last_name, row.date_of_birth)


def _booking(row: Booking) -> BookingInfo:
    return BookingInfo(
        id=row.id,
        status=row.status,
        start=row.starts_at,
        end=row.ends_at,
        service_id=row.service_id,
        provider_id=row.provider_id,
        patient_id=row.patient_id,
        confirmation_code=row.confirmation_code,
    )


class NativeBackend:
    """ClinicBridge's own scheduling and patients, in ``session`` as ``ctx``."""

    def __init__(self, session: Session, ctx: Ctx, verdicts: Verdicts | None = None) -> None:
        self.session, self.ctx = session, ctx
        self.verdicts: Verdicts = verdicts if verdicts is not None else {}
        self._timezone: str | None = None
        # Read once per request: a request's tool calls see one configuration.
        self._services: list[ServiceInfo] | None = None
        self._providers: list[ProviderInfo] | None = None

    def timezone(self) -> str:
        if self._timezone is None:
            tz = self.session.scalar(
                sa.select(Tenant.timezone).where(Tenant.id == self.ctx.tenant_id)
            )
            self._timezone = tz or "UTC"
        return self._timezone

    def services(self) -> list[ServiceInfo]:
        if self._services is None:
            stmt = scoped_select(Service, self.ctx.tenant_id).where(Service.is_active.is_(True))
            rows = list(self.session.scalars(stmt.order_by(Service.name, Service.id)))
            links = self.session.execute(
                sa.select(ServiceProvider.service_id, ServiceProvider.provider_id)
                .where(ServiceProvider.tenant_id == self.ctx.tenant_id)
                .order_by(ServiceProvider.provider_id)
            )
            eligible: dict[str, list[str]] = {}
            for service_id, provider_id in links:
                eligible.setdefault(service_id, []).append(provider_id)
            self._services = [
                ServiceInfo(
                    s.id, s.name, s.duration_minutes, s.modality, tuple(eligible.get(s.id, ()))
                )
                for s in rows
            ]
        return self._services

    def providers(self) -> list[ProviderInfo]:
        if self._providers is None:
            stmt = sa.select(Provider.id, Provider.display_name).where(
                Provider.tenant_id == self.ctx.tenant_id, Provider.is_active.is_(True)
            )
            rows = self.session.execute(stmt.order_by(Provider.display_name, Provider.id))
            self._providers = [ProviderInfo(pid, name) for pid, name in rows]
        return self._providers

    def find_slots(
        self,
        *,
        service_id: str,
        provider_id: str | None,
        start: datetime,
        end: datetime,
        limit: int | None = None,
    ) -> list[SlotInfo]:
        from clinicbridge.scheduling import availability

        slots = availability.find_slots(
            self.session,
            self.ctx.tenant_id,
            service_id=service_id,
            provider_id=provider_id,
            start=start,
            end=end,
            now=self.ctx.now,
            limit=limit,
        )
        return [SlotInfo(s.start, s.end, s.provider_id) for s in slots]

    def book(
        self, *, service_id: str, provider_id: str, start: datetime, patient_id: str
    ) -> BookingInfo:
        from clinicbridge.scheduling import bookings

        self._precheck(service_id, provider_id, start)
        try:
            row = bookings.create_booking(
                self.session,
                self.ctx,
                service_id=service_id,
                provider_id=provider_id,
                start=start,
                patient_id=patient_id,
                source=SOURCE,
            )
        except bookings.SlotTakenError as exc:
            raise SlotTaken(_next_slots(exc)) from None
        return _booking(row)

    def patient_bookings(
        self, patient_id: str, *, confirmation_code: str | None = None
    ) -> list[BookingInfo]:
        stmt = scoped_select(Booking, self.ctx.tenant_id).where(
            Booking.patient_id == patient_id,
            Booking.status.in_(ACTIVE_STATUSES),
            Booking.starts_at >= self.ctx.now,
        )
        if confirmation_code is not None:
            stmt = stmt.where(Booking.confirmation_code == confirmation_code)
        return [_booking(b) for b in self.session.scalars(stmt.order_by(Booking.starts_at))]

    def reschedule(self, booking_id: str, start: datetime) -> BookingInfo:
        from clinicbridge.scheduling import bookings

        current = self.session.scalar(
            scoped_select(Booking, self.ctx.tenant_id).where(Booking.id == booking_id)
        )
        if current is not None:  # otherwise the move answers "not found"
            self._precheck(current.service_id, current.provider_id, start, booking_id)
        try:
            row = bookings.reschedule_booking(self.session, self.ctx, booking_id, start=start)
        except bookings.SlotTakenError as exc:
            raise SlotTaken(_next_slots(exc)) from None
        return _booking(row)

    def _precheck(
        self, service_id: str, provider_id: str, start: datetime, booking_id: str | None = None
    ) -> None:
        from clinicbridge.scheduling import prechecks

        if not prechecks.needed(self.session, self.ctx.tenant_id, provider_id):
            return
        need = PrecheckNeeded(service_id, provider_id, start, booking_id)
        if need.key not in self.verdicts:
            raise need
        refusal = self.verdicts[need.key]
        if refusal is None:
            return
        if isinstance(refusal, ConflictError):
            raise CalendarRefused([])
        raise refusal

    def cancel(self, booking_id: str, reason: str) -> BookingInfo:
        from clinicbridge.scheduling import bookings

        row = bookings.cancel_booking(self.session, self.ctx, booking_id, reason=reason)
        return _booking(row)

    def match_caller(
        self,
        *,
        first_name: str | None = None,
        last_name: str | None = None,
        date_of_birth: date | None = None,
        phone: str | None = None,
    ) -> PatientInfo | None:
        found = patients.match_caller(
            self.session,
            self.ctx.tenant_id,
            first_name=first_name,
            last_name=last_name,
            date_of_birth=date_of_birth,
            phone=phone,
        )
        return _patient(found) if found is not None else None

    def find_or_create_patient(
        self,
        *,
        first_name: str,
        last_name: str,
        date_of_birth: date | None,
        phone: str | None = None,
        email: str | None = None,
    ) -> tuple[PatientInfo, bool]:
        row, created = patients.find_or_create_patient(
            self.session,
            self.ctx,
            first_name=first_name,
            last_name=last_name,
            date_of_birth=date_of_birth,
            phone=phone,
            email=email,
            source=SOURCE,
        )
        return _patient(row), created

    def get_patient(self, patient_id: str) -> PatientInfo:
        return _patient(patients.get_patient(self.session, self.ctx, patient_id, purpose=PURPOSE))

    def record_verification(self, patient_id: str) -> None:
        """A verified caller learns the record exists: a PHI access, audited."""
        patients.audit_reads(self.session, self.ctx, [patient_id], purpose="voice_verification")

    def add_note(self, patient_id: str, text: str) -> str:
        return patient_records.add_note(self.session, self.ctx, patient_id, text).id


def _next_slots(exc: ConflictError) -> list[SlotInfo]:
    found = getattr(exc, "next_slots", None) or getattr(exc, "next_available", None) or []
    return [SlotInfo(s.start, s.end, s.provider_id) for s in found]
