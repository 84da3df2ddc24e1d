"""Export: a provider's bookings become events in their connected calendars.

A booking change of a provider with a calendar connection (or of a booking exported
before) queues ``calendars.export`` in the change's own transaction
(``scheduling.events.on_change``; other clinics pay one indexed query and no job). The
job brings each calendar in line with the booking:

* booked, confirmed, no-show, completed: the event exists with the booking's times
  (created, or updated when the booking's ``version`` moved on: a reschedule);
* held: not yet (a hold lasts minutes; it is exported once confirmed);
* cancelled, expired, or moved to another provider: the event is deleted.

What the event shows: the service's name, the location, and "Booked through
ClinicBridge"; no patient data, unless the clinic's ``calendar_patient_names`` flag is on
(then the patient's name is added, and each write is audited as a PHI disclosure).
Never the confirmation code. Our events carry our marker (Google private property
``clinicbridge``, Graph ``transactionId`` ``clinicbridge:...``, iCalendar UID
``...@clinicbridge``) so the import never takes them for outside busy time.

Idempotent: ``calendar_exports`` keeps each (connection, booking)'s outside event id and
the version written; creates are safe to repeat (Google: our own event id; Graph: the
``transactionId``; CalDAV: PUT of our own resource name).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import icalendar
import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.calendars import caldav, conflicts, google, microsoft
from clinicbridge.calendars.calls import Authorized
from clinicbridge.calendars.errors import ReauthorizationRequired
from clinicbridge.calendars.models import CalendarConnection, CalendarExport
from clinicbridge.calendars.runtime import context
from clinicbridge.calendars.sync import SYNCABLE
from clinicbridge.calendars.tokens import TokenSource
from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling import events
from clinicbridge.scheduling.ical import event_uid
from clinicbridge.scheduling.models import Booking, Location, Service
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault
from clinicbridge.video.meetings import record_meeting, video_integration
from clinicbridge.video.providers import Meeting

log = logging.getLogger("clinicbridge.calendars")
EXPORT_KIND = "calendars.export"
SHOWN = ("booked", "confirmed", "no_show", "completed")
DESCRIPTION = "Booked through ClinicBridge."


@dataclass(frozen=True)
class Content:
    summary: str
    location: str | None
    start: datetime
    end: datetime
    version: int
    patient_named: bool
    meet: bool = False  # a video visit without Daily or Zoom: Google Meet on the event


def _content(db: Database, booking: Booking) -> Content:
    with db.read() as session:
        service = session.get(Service, booking.service_id)
        location = session.get(Location, booking.location_id) if booking.location_id else None
        tenant = session.get(Tenant, booking.tenant_id)
        summary = service.name if service is not None else "Appointment"
        named = bool(tenant is not None and tenant.calendar_patient_names)
        if named:
            patient = session.get(Patient, booking.patient_id)
            if patient is not None:
                summary = f"{summary}: {patient.first_name} {patient.last_name}".strip()
        meet = (
            service is not None
            and service.modality == "video"
            and video_integration(session, booking.tenant_id) is None
        )
    return Content(
        summary,
        location.name if location is not None else None,
        booking.starts_at,
        booking.ends_at,
        booking.version,
        named,
        meet,
    )


def booking_ics(booking: Booking, content: Content, now: datetime) -> bytes:
    """The CalDAV resource of a booking: our UID and marker, no METHOD (RFC 4791 4.1)."""
    cal = icalendar.Calendar()
    cal.add("prodid", "-//ClinicBridge//Calendar export//EN")
    cal.add("version", "2.0")
    event = icalendar.Event()
    event.add("uid", event_uid(booking.id))
    event.add("dtstamp", now)
    event.add("dtstart", content.start)
    event.add("dtend", content.end)
    event.add("summary", content.summary)
    event.add("description", DESCRIPTION)
    if content.location:
        event.add("location", content.location)
    event.add("sequence", content.version)
    event.add("transp", "OPAQUE")
    event.add("x-clinicbridge-booking", booking.id)
    cal.add_component(event)
    return bytes(cal.to_ical())


def export_booking(db: Database, vault: Vault, booking_id: str, now: datetime) -> int:
    """Bring every calendar in line with the booking; returns how many were written."""
    with db.read() as session:
        booking = session.get(Booking, booking_id)
        if booking is None:
            return 0
        exported = {
            e.connection_id: e
            for e in session.scalars(
                sa.select(CalendarExport).where(CalendarExport.booking_id == booking_id)
            )
        }
        current = session.scalars(
            sa.select(CalendarConnection).where(
                CalendarConnection.provider_id == booking.provider_id,
                CalendarConnection.export_bookings.is_(True),
                CalendarConnection.status.in_(SYNCABLE),
            )
        ).all()
        others = session.scalars(
            sa.select(CalendarConnection).where(
                CalendarConnection.id.in_([c for c in exported if c not in {x.id for x in current}])
            )
        ).all()
    content = _content(db, booking)
    written = 0
    for connection in [*current, *others]:
        mine = connection.provider_id == booking.provider_id and connection.export_bookings
        show = mine and booking.status in SHOWN
        previous = exported.get(connection.id)
        if (
            show
            and previous is not None
            and not previous.deleted
            and previous.version >= booking.version
        ):
            continue  # written already (a job run twice)
        if not show and (previous is None or previous.deleted):
            continue
        try:
            _write(db, vault, connection, booking, content, previous, show, now)
        except ReauthorizationRequired:
            continue  # the account needs a new authorization; the sync shows it
        written += 1
    return written


def _write(
    db: Database,
    vault: Vault,
    connection: CalendarConnection,
    booking: Booking,
    content: Content,
    previous: CalendarExport | None,
    show: bool,
    now: datetime,
) -> None:
    with db.read() as session:
        integration = session.get(Integration, connection.integration_id)
        if integration is None:
            return
        conn = context(db, vault, integration)
    external = previous.external_id if previous is not None and not previous.deleted else None
    if connection.connector == "caldav":
        with caldav.CalDavClient(conn) as client:
            if show:
                ics = booking_ics(booking, content, now)
                external = caldav.put_event(client, connection.calendar, f"{booking.id}.ics", ics)
            elif external:
                caldav.delete_event(client, external)
    else:
        assert connection.account_id is not None
        with Authorized(conn, TokenSource(db, vault), connection.account_id) as calls:
            external = _oauth_write(
                db, vault, calls, connection, booking, content, external, show, now
            )
    _remember(db, connection, booking, external or "", show, now, content.patient_named)


def _oauth_write(
    db: Database,
    vault: Vault,
    calls: Authorized,
    connection: CalendarConnection,
    booking: Booking,
    content: Content,
    external: str | None,
    show: bool,
    now: datetime,
) -> str | None:
    args = (content.summary, DESCRIPTION, content.location, content.start, content.end, booking.id)
    if connection.connector == "google_calendar":
        event_id = external or google.event_id_for(booking.id, connection.id)
        if show:
            body = google.event_body(*args)
            if content.meet:
                body["conferenceData"] = {
                    "createRequest": {
                        "requestId": f"{booking.id}-{connection.id}",
                        "conferenceSolutionKey": {"type": "hangoutsMeet"},
                    }
                }
            event_id, link = google.write_event(calls, connection.calendar, event_id, body)
            if link is not None:
                made = Meeting(event_id, link, link)  # Meet has one link for everyone
                record_meeting(
                    db, vault, booking, connection.integration_id, "google_meet", made, now
                )
            return event_id
        google.delete_event(calls, connection.calendar, event_id)
        if content.meet:
            record_meeting(db, vault, booking, connection.integration_id, "google_meet", None, now)
        return event_id
    body = microsoft.event_body(*args)
    if not show:
        if external:
            microsoft.delete_event(calls, external)
        return external
    if external and microsoft.update_event(calls, external, body):
        return external
    return microsoft.create_event(calls, connection.calendar, body)


def _remember(
    db: Database,
    connection: CalendarConnection,
    booking: Booking,
    external: str,
    show: bool,
    now: datetime,
    patient_named: bool,
) -> None:
    with db.write() as session:
        if session.get(CalendarConnection, connection.id) is None:
            return  # deleted meanwhile (its exports went with it)
        row = session.scalar(
            sa.select(CalendarExport).where(
                CalendarExport.connection_id == connection.id,
                CalendarExport.booking_id == booking.id,
            )
        )
        if row is None:
            row = CalendarExport(
                id=new_id("cex"),
                tenant_id=booking.tenant_id,
                connection_id=connection.id,
                booking_id=booking.id,
                created_at=now,
            )
            session.add(row)
        row.external_id, row.version, row.deleted, row.updated_at = (
            external,
            booking.version,
            not show,
            now,
        )
        if show and patient_named:
            record_system(
                session,
                booking.tenant_id,
                "calendar_export.write",
                "booking",
                booking.id,
                now=now,
                phi=True,
                diff={"connection_id": connection.id, "patient_name": True},
            )


@registry.handler(EXPORT_KIND)
def run_export(job: JobContext) -> None:
    if job.settings is None:
        raise RuntimeError("the calendar export job needs the service settings (master key)")
    vault = shared_vault(job.db, job.settings.master_key_file)
    booking_id = str(job.payload["booking_id"])
    export_booking(job.db, vault, booking_id, job.now())
    with job.db.read() as session:
        booking = session.get(Booking, booking_id)
    if booking is not None:  # a cancel or a move may end a conflict with an outside event
        conflicts.check_provider(job.db, booking.tenant_id, booking.provider_id, job.now())


@events.on_change
def queue_export(session: Session, ctx: Ctx, booking: Booking, action: str) -> None:
    """In the change's own transaction: queue the job only when a calendar is involved
    (the provider has a calendar connection: export, and conflicts to re-check; or this
    booking was exported before), so clinics without calendars pay one indexed query
    per change and no job."""
    involved = session.scalar(
        sa.select(CalendarConnection.id)
        .where(CalendarConnection.provider_id == booking.provider_id)
        .limit(1)
    ) or session.scalar(
        sa.select(CalendarExport.id).where(CalendarExport.booking_id == booking.id).limit(1)
    )
    if involved is None:
        return
    enqueue(
        session,
        EXPORT_KIND,
        {"booking_id": booking.id, "action": action},
        now=ctx.now,
        tenant_id=booking.tenant_id,
        dedupe_key=f"{EXPORT_KIND}:{booking.id}:{booking.version}",
    )
