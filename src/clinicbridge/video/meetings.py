"""A meeting for each booking of a video service, following the booking's changes.

A change of a booking of a video service queues ``video.meetings`` in the change's own
transaction (``scheduling.events.on_change``); the job:

* booked or confirmed: creates the meeting with the clinic's video integration (the
  first enabled ``daily`` or ``zoom`` one), or moves it when the booking moved
  (``version`` newer than the meeting's);
* cancelled or expired: deletes it;
* held: nothing yet (a hold lasts minutes).

A provider outage never blocks the booking: the job retries with backoff, and the link
reaches the patient when it is ready (confirmation messages carry it if it is ready
when they are built; reminders, built later, do). Whenever a link is new (created, or
new tokens on a reschedule), the ``on_link`` hooks run in the same transaction: the
messaging package queues its follow-up there, so a patient whose confirmation went out
without the link gets it (``booking.video_link``). The links open the meeting, so they
are sealed in the vault and shown only to staff (``GET /api/v1/bookings/{id}/video``)
and to the patient in messages (``booking.video_url``).

A link and the messages that may carry it are serialized on the booking's row
(``lock_booking``): on PostgreSQL a confirmation built while the link is being stored
would otherwise read no link and commit after the follow-up job looked for it, and the
patient would never get the link. With the lock one of the two goes first: either the
confirmation carries the link, or the follow-up sees the confirmation without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import ExternalServiceError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.secrets import Secret
from clinicbridge.core.tenancy import get_scoped
from clinicbridge.db.engine import Database
from clinicbridge.integrations.connector import ConnectorContext
from clinicbridge.integrations.models import Integration
from clinicbridge.integrations.service import open_credentials
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.scheduling import events
from clinicbridge.scheduling.models import Booking, Service
from clinicbridge.vault.service import Vault
from clinicbridge.vault.shared import shared_vault
from clinicbridge.video import providers
from clinicbridge.video.models import VideoMeeting

log = logging.getLogger("clinicbridge.video")
KIND = "video.meetings"
CONNECTORS = ("daily", "zoom")
STANDING = ("booked", "confirmed")
GONE = ("cancelled", "expired")

# Tests point the providers at a fake (as messaging senders and calendars do).
_transport: httpx.BaseTransport | None = None

# Called with (session, meeting, booking) in the transaction that stored a new link.
LinkHook = Callable[[Session, VideoMeeting, Booking], None]
_link_hooks: list[LinkHook] = []


def on_link(hook: LinkHook) -> LinkHook:
    """Run ``hook`` whenever a meeting gets a new patient link (decorator)."""
    if hook not in _link_hooks:
        _link_hooks.append(hook)
    return hook


def configure(*, transport: httpx.BaseTransport | None = None) -> None:
    global _transport
    _transport = transport


def _context(vault: Vault, db: Database, row: Integration) -> ConnectorContext:
    return ConnectorContext(
        db=db,
        tenant_id=row.tenant_id,
        integration_id=row.id,
        credentials=open_credentials(vault, row),
        settings=dict(row.settings),
        transport=_transport,
    )


def video_integration(session: Session, tenant_id: str) -> Integration | None:
    return session.scalar(
        sa.select(Integration)
        .where(
            Integration.tenant_id == tenant_id,
            Integration.connector.in_(CONNECTORS),
            Integration.enabled.is_(True),
        )
        .order_by(Integration.id)
        .limit(1)
    )


def follow_booking(db: Database, vault: Vault, booking_id: str, now: datetime) -> str:
    """Bring the booking's meeting in line; returns what was done (for tests and logs)."""
    with db.read() as session:
        booking = session.get(Booking, booking_id)
        service = session.get(Service, booking.service_id) if booking is not None else None
        if booking is None or service is None or service.modality != "video":
            return "not_video"
        meeting = session.scalar(
            sa.select(VideoMeeting).where(VideoMeeting.booking_id == booking_id)
        )
        if meeting is not None and meeting.connector not in CONNECTORS:
            return "elsewhere"  # a Google Meet: it lives on the exported calendar event
        integration = (
            session.get(Integration, meeting.integration_id)
            if meeting is not None
            else video_integration(session, booking.tenant_id)
        )
        if integration is None:
            return "no_video_integration"
        conn = _context(vault, db, integration)
        topic = service.name
    if booking.status in GONE:
        if meeting is None or meeting.status == "deleted":
            return "nothing"
        (providers.daily_delete if integration.connector == "daily" else providers.zoom_delete)(
            conn, meeting.external_id
        )
        _save(
            db, vault, booking, integration.id, integration.connector, None, now, status="deleted"
        )
        return "deleted"
    if booking.status not in STANDING:
        return "nothing"
    if meeting is not None and meeting.status == "ready" and meeting.version >= booking.version:
        return "current"
    made: providers.Meeting | None  # None: a Zoom meeting moved, its links unchanged
    try:
        if integration.connector == "daily":
            made = providers.daily_meeting(conn, booking.id, booking.starts_at, booking.ends_at)
        else:
            existing = (
                meeting.external_id if meeting is not None and meeting.status == "ready" else None
            )
            made = providers.zoom_meeting(conn, existing, topic, booking.starts_at, booking.ends_at)
    except ExternalServiceError as exc:
        if exc.retryable:
            raise  # the job retries; the booking stands meanwhile
        _save(
            db, vault, booking, integration.id, integration.connector, None, now,
            status="failed", error=exc.detail,
        )  # fmt: skip
        return "failed"
    _save(db, vault, booking, integration.id, integration.connector, made, now, status="ready")
    return "moved" if meeting is not None else "created"


def record_meeting(
    db: Database,
    vault: Vault,
    booking: Booking,
    integration_id: str,
    connector: str,
    made: providers.Meeting | None,
    now: datetime,
) -> None:
    """For meetings made elsewhere (a Google Meet on the exported calendar event):
    ``made`` None means the meeting went with its event."""
    _save(db, vault, booking, integration_id, connector, made, now,
          status="ready" if made is not None else "deleted")  # fmt: skip


def _save(
    db: Database,
    vault: Vault,
    booking: Booking,
    integration_id: str,
    connector: str,
    made: providers.Meeting | None,
    now: datetime,
    *,
    status: str,
    error: str | None = None,
) -> None:
    with db.write() as session:
        lock_booking(session, booking.id)
        row = session.scalar(
            sa.select(VideoMeeting).where(VideoMeeting.booking_id == booking.id).with_for_update()
        )
        if row is None and made is None and status != "failed":
            return  # nothing was ever created: nothing to record
        meeting_id = row.id if row is not None else new_id("vmt")
        sealed = (
            vault.seal(
                session,
                booking.tenant_id,
                meeting_id,
                {"join_url": Secret(made.join_url), "host_url": Secret(made.host_url)},
            )
            if made is not None
            else None
        )
        if row is None:
            row = VideoMeeting(
                id=meeting_id,
                tenant_id=booking.tenant_id,
                booking_id=booking.id,
                integration_id=integration_id,
                connector=connector,
                external_id=made.external_id if made is not None else "",
                links=sealed or {},
                status=status,
                version=booking.version,
                starts_at=booking.starts_at,
                ends_at=booking.ends_at,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
        elif made is not None and sealed is not None:
            row.external_id, row.links = made.external_id, sealed
        if status == "deleted":
            row.links = {}
        row.status, row.version, row.last_error = status, booking.version, (error or None)
        row.starts_at, row.ends_at, row.updated_at = booking.starts_at, booking.ends_at, now
        if status == "ready" and made is not None:
            session.flush()
            for hook in _link_hooks:
                hook(session, row, booking)


def lock_booking(session: Session, booking_id: str) -> None:
    """Hold the booking's row until the transaction ends (a no-op on SQLite, whose
    writers are serialized already). Taken before the meeting row, always."""
    session.execute(sa.select(Booking.id).where(Booking.id == booking_id).with_for_update())


def links(session: Session, vault: Vault, booking_id: str) -> dict[str, str] | None:
    """The ready meeting's ``join_url`` and ``host_url``, or None. A message about to
    carry them for a video service's booking (the only kind that gets new links) calls
    ``lock_booking`` first."""
    row = session.scalar(sa.select(VideoMeeting).where(VideoMeeting.booking_id == booking_id))
    if row is None or row.status != "ready" or not row.links:
        return None
    opened = vault.open(row.tenant_id, row.id, row.links)
    return {name: value.reveal() for name, value in opened.items()}


def for_booking(session: Session, tenant_id: str, booking_id: str) -> VideoMeeting:
    get_scoped(session, Booking, tenant_id, id=booking_id)  # another clinic's: 404
    row = session.scalar(sa.select(VideoMeeting).where(VideoMeeting.booking_id == booking_id))
    if row is None:
        raise NotFoundError("This booking has no video meeting.")
    return row


@registry.handler(KIND)
def run(job: JobContext) -> None:
    if job.settings is None:
        raise RuntimeError("the video job needs the service settings (master key file)")
    vault = shared_vault(job.db, job.settings.master_key_file)
    follow_booking(job.db, vault, str(job.payload["booking_id"]), job.now())


@events.on_change
def queue_meeting(session: Session, ctx: Ctx, booking: Booking, action: str) -> None:
    """In the change's own transaction: queue the job only for a video service's booking
    (or one that has a meeting), so other bookings cost one lookup and no job."""
    service = session.get(Service, booking.service_id)
    if (service is None or service.modality != "video") and session.scalar(
        sa.select(VideoMeeting.id).where(VideoMeeting.booking_id == booking.id)
    ) is None:
        return
    enqueue(
        session,
        KIND,
        {"booking_id": booking.id, "action": action},
        now=ctx.now,
        tenant_id=booking.tenant_id,
        dedupe_key=f"{KIND}:{booking.id}:{booking.version}",
    )
