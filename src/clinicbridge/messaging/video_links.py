"""The video link follow-up: a confirmation that went out before the visit's meeting
existed (the video provider was slow or down) is followed by ``booking.video_link``.

When a meeting gets a new patient link (``video.meetings.on_link``, in the transaction
that stores it), this queues ``messaging.video_link``. The job looks at the booking's
confirmation and reschedule messages: on each channel they went out on, if the latest
one does not carry the current link, the patient gets the link there. A patient who has
no such message yet gets none (the confirmation, built later, carries it). Idempotent:
one job and one message per (booking, link version, channel), however often it runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging.booking_messages import job_vault, message_variables
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.service import integration_for, queue_message, recipient
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling.models import Booking
from clinicbridge.video import meetings
from clinicbridge.video.models import VideoMeeting

KIND = "messaging.video_link"
TEMPLATE = "booking.video_link"
# The messages that tell the patient the time of the visit (and its link, when ready).
ANNOUNCING = ("booking.confirmation", "booking.rescheduled")
STANDING = ("booked", "confirmed")


@meetings.on_link
def queue_follow_up(session: Session, meeting: VideoMeeting, booking: Booking) -> None:
    enqueue(
        session,
        KIND,
        {"booking_id": booking.id, "version": meeting.version},
        now=meeting.updated_at,
        tenant_id=booking.tenant_id,
        dedupe_key=f"{KIND}:{booking.id}:{meeting.version}",
    )


def _latest_per_channel(session: Session, booking: Booking) -> dict[str, Message]:
    rows = session.scalars(
        sa.select(Message)
        .where(
            Message.tenant_id == booking.tenant_id,
            Message.booking_id == booking.id,
            Message.kind.in_(ANNOUNCING),
        )
        .order_by(Message.created_at, Message.id)
    ).all()
    return {row.channel: row for row in rows}  # the last one of each channel wins


def follow_up(job: JobContext) -> list[str]:
    """Queue the follow-ups that are due; returns their channels (for tests and logs)."""
    vault = job_vault(job)
    if vault is None:
        raise RuntimeError("the video link job needs the service settings (master key file)")
    version = int(job.payload["version"])
    queued: list[str] = []
    with job.db.write() as session:
        meetings.lock_booking(session, str(job.payload["booking_id"]))  # before the reads
        booking = session.get(Booking, str(job.payload["booking_id"]))
        if booking is None or booking.status not in STANDING:
            return queued
        found = meetings.links(session, vault, booking.id)
        if found is None:
            return queued  # deleted or failed meanwhile
        url = found["join_url"]
        tenant = session.get(Tenant, booking.tenant_id)
        patient = session.get(Patient, booking.patient_id)
        assert tenant is not None and patient is not None
        ctx = Ctx.system(tenant.id, "video_links", job.now())
        for channel, sent in _latest_per_channel(session, booking).items():
            if url in sent.body or url in (sent.html or ""):
                continue  # that message carried this link already
            if integration_for(session, tenant.id, channel) is None:
                continue
            if recipient(session, tenant.id, patient.id, channel, ctx.now) is None:
                continue
            message_id = new_id("msg")
            made = queue_message(
                session,
                ctx,
                patient_id=patient.id,
                channel=channel,
                template=TEMPLATE,
                variables=message_variables(
                    session,
                    job.settings,
                    booking,
                    tenant,
                    patient,
                    message_id=message_id,
                    vault=vault,
                ),
                booking_id=booking.id,
                dedupe_key=f"video_link:{booking.id}:{version}:{channel}",
                message_id=message_id,
            )
            if made.id == message_id:  # not the one a run before queued
                queued.append(channel)
    return queued


@registry.handler(KIND, max_attempts=5)
def run(job: JobContext) -> None:
    follow_up(job)
