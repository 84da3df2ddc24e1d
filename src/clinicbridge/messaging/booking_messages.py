"""Messages that booking changes send: confirmation, rescheduled, cancelled (e-mail).

Subscribed to booking changes (``scheduling.events``): each change enqueues this
job in its own transaction, and the job queues the message with a dedupe key of
that change, so a job run twice sends one e-mail. A clinic without an e-mail
integration, or a patient without an e-mail address, simply gets none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging.service import integration_for, queue_message, recipient
from clinicbridge.messaging.variables import booking_variables
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling import events, ical
from clinicbridge.scheduling.links import booking_links
from clinicbridge.scheduling.models import Booking, BookingChange, Location, Provider, Service
from clinicbridge.settings import Settings
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault
from clinicbridge.video.meetings import links as video_links
from clinicbridge.video.meetings import lock_booking

LISTENER_KIND = "messaging.booking_changed"
CHANNEL = "email"


def message_kind(action: str, from_status: str | None) -> str | None:
    """Which message a change sends, if any."""
    if action == "created":
        return "booking.confirmation"
    if action == "confirmed" and from_status in ("held", "pending_payment"):  # hold → booking
        return "booking.confirmation"
    return {"rescheduled": "booking.rescheduled", "cancelled": "booking.cancelled"}.get(action)


def _previous_start(session: Session, change_id: str) -> datetime | None:
    """The start before a reschedule, from the change's history row."""
    change = session.get(BookingChange, change_id)
    moved = (change.details or {}).get("start") if change is not None else None
    return datetime.fromisoformat(moved[0]) if moved else None


def message_variables(
    session: Session,
    settings: Settings | None,
    booking: Booking,
    tenant: Tenant,
    patient: Patient,
    *,
    previous_start: datetime | None = None,
    message_id: str | None = None,
    vault: Vault | None = None,
) -> dict[str, Any]:
    """The ``booking.*`` template variables of a booking, with its signed links (bound
    to ``message_id``, the message they will travel in, when given) and, given the vault,
    the patient's video link once the visit's meeting is ready."""
    service = session.get(Service, booking.service_id)
    provider = session.get(Provider, booking.provider_id)
    location = session.get(Location, booking.location_id) if booking.location_id else None
    assert service is not None and provider is not None
    links = {"confirm_url": "", "cancel_url": ""}
    if settings is not None:
        links = booking_links(
            settings, booking.id, expires_at=booking.starts_at, message_id=message_id
        )
    return booking_variables(
        language=patient.preferred_language,
        clinic_default_language=tenant.default_language,
        timezone=tenant.timezone,
        clinic_name=tenant.name,
        clinic_phone=(location.phone if location is not None else None) or "",
        patient_first_name=patient.first_name,
        start=booking.starts_at,
        service=service.name,
        provider=provider.display_name,
        location=location.name if location is not None else "",
        confirmation_code=booking.confirmation_code,
        confirm_url=links["confirm_url"],
        cancel_url=links["cancel_url"],
        previous_start=previous_start,
        video_url=_video_url(session, vault, booking.id, video=service.modality == "video"),
    )


def _video_url(
    session: Session, vault: Vault | None, booking_id: str, *, video: bool
) -> str | None:
    if vault is None:
        return None
    if video:  # only a video service's booking gets new links: the message and one, in turn
        lock_booking(session, booking_id)
    found = video_links(session, vault, booking_id)
    return found["join_url"] if found else None


@registry.handler(LISTENER_KIND, max_attempts=5)
def on_booking_changed(job: JobContext) -> None:
    kind = message_kind(str(job.payload["action"]), job.payload.get("from_status"))
    if kind is None:
        return
    with job.db.write() as session:
        booking = session.get(Booking, str(job.payload["booking_id"]))
        if booking is None:
            return
        tenant = session.get(Tenant, booking.tenant_id)
        patient = session.get(Patient, booking.patient_id)
        assert tenant is not None and patient is not None
        if integration_for(session, tenant.id, CHANNEL) is None:
            return
        if recipient(session, tenant.id, patient.id, CHANNEL) is None:
            return
        ctx = Ctx.system(tenant.id, "booking_messages", job.now())
        method = ical.attachment_method(booking)
        attachment = {
            "filename": "appointment.ics",
            "content": ical.ics_attachment(session, booking).decode(),
            "content_type": f"text/calendar; charset=utf-8; method={method}",
        }
        message_id = new_id("msg")
        queue_message(
            session,
            ctx,
            patient_id=patient.id,
            channel=CHANNEL,
            template=kind,
            variables=message_variables(
                session,
                job.settings,
                booking,
                tenant,
                patient,
                previous_start=_previous_start(session, str(job.payload["change_id"])),
                message_id=message_id,
                vault=job_vault(job),
            ),
            booking_id=booking.id,
            dedupe_key=f"booking:{job.payload['change_id']}:{CHANNEL}",
            attachments=[attachment],
            message_id=message_id,
        )


def job_vault(job: JobContext) -> Vault | None:
    if job.settings is None:
        return None
    return shared_vault(job.db, job.settings.master_key_file)


events.subscribe(LISTENER_KIND)
