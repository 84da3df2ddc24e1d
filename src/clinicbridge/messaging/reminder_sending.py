"""Sending reminders: the job due at each reminder's time, and the fall-back to the next
channel when the provider reports that a reminder did not reach the patient.

The reminder job checks again that the reminder is still wanted (the booking still
stands, at the planned start, not started yet, reminders enabled), then queues the
message on the first of the rule's channels that can carry it: one the patient opted
out of, has no address for, or the clinic has no integration for is passed over.

When a reminder's message fails afterwards (the send job settles it ``failed``, or a
provider callback says ``undelivered``, ``failed``, ``bounced`` or ``dropped``; also
``suppressed``: an opt-out between queueing and sending), a fall-back job tries the
channels after that one, in the rule's order, with the same checks. Each reminder row
records the channel and message that carried it last and why earlier ones did not;
if none is left it ends ``failed``. Both jobs are idempotent: they act only on a row
still in the state they expect, and messages have dedupe keys.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.jobs import queue
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.messaging import service
from clinicbridge.messaging.booking_messages import job_vault, message_variables
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.reminder_models import BookingReminder
from clinicbridge.messaging.reminder_rules import Rules
from clinicbridge.messaging.reminders import REMINDED_STATUSES, REMINDER_KIND, TEMPLATE
from clinicbridge.messaging.service import integration_for, opted_out, queue_message, recipient
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling.models import Booking

log = logging.getLogger(__name__)

FALLBACK_KIND = "messaging.reminder_fallback"


def _skip(row: BookingReminder, reason: str, now: datetime, status: str = "skipped") -> None:
    row.status, row.reason, row.updated_at = status, reason[:500], now
    log.info(
        "reminder not sent",
        extra={"booking_id": row.booking_id, "offset": row.offset_minutes, "reason": reason},
    )


def unavailable(session: Session, tenant_id: str, patient_id: str, channel: str) -> str | None:
    """Why ``channel`` cannot carry a reminder to this patient now, or None if it can."""
    if opted_out(session, tenant_id, patient_id, channel):
        return "opted out"
    if recipient(session, tenant_id, patient_id, channel) is None:
        return "no address"
    if integration_for(session, tenant_id, channel) is None:
        return "no integration"
    return None


def _still_wanted(session: Session, row: BookingReminder, now: datetime) -> Booking | str:
    """The booking, if the reminder should still go out; else why not."""
    booking = session.get(Booking, row.booking_id)
    if booking is None or booking.status not in REMINDED_STATUSES:
        return f"booking is {booking.status if booking else 'gone'}"
    if booking.starts_at != row.starts_at:
        return "booking moved"
    if booking.starts_at <= now:
        return "appointment already started"
    return booking


def _deliver(
    session: Session,
    job: JobContext,
    row: BookingReminder,
    booking: Booking,
    channels: tuple[str, ...],
    why: list[str],
    *,
    fallback: bool = False,
) -> bool:
    """Queue the reminder on the first of ``channels`` that can carry it; False if none."""
    now = job.now()
    tenant = session.get(Tenant, booking.tenant_id)
    patient = session.get(Patient, booking.patient_id)
    assert tenant is not None and patient is not None
    variables: dict[str, Any] | None = None
    message_id = new_id("msg")  # the links in the reminder are bound to it
    for channel in channels:
        problem = unavailable(session, tenant.id, patient.id, channel)
        if problem is None:
            if variables is None:
                variables = message_variables(
                    session, job.settings, booking, tenant, patient, message_id=message_id,
                    vault=job_vault(job),
                )  # fmt: skip
            key = f"reminder:{booking.id}:{row.offset_minutes}:{booking.starts_at.isoformat()}"
            try:
                message = queue_message(
                    session,
                    Ctx.system(tenant.id, "reminders", now),
                    patient_id=patient.id,
                    channel=channel,
                    template=TEMPLATE,
                    variables=variables,
                    booking_id=booking.id,
                    dedupe_key=f"{key}:{channel}" if fallback else key,
                    message_id=message_id,
                )
            except InvalidInputError as exc:
                problem = exc.errors[0].message if exc.errors else str(exc)
            else:
                row.status, row.channel, row.message_id = "sent", channel, message.id
                row.reason = "; ".join(why)[:500] or None
                row.updated_at = now
                return True
        why.append(f"{channel}: {problem}")
    return False


@registry.handler(REMINDER_KIND, max_attempts=5)
def send_reminder(job: JobContext) -> None:
    """At the reminder's time: still wanted? then queue it on the first channel that works."""
    booking_id, offset = str(job.payload["booking_id"]), int(job.payload["offset"])
    planned_start = datetime.fromisoformat(str(job.payload["starts_at"]))
    now = job.now()
    with job.db.write() as session:
        row = session.scalars(
            sa.select(BookingReminder).where(
                BookingReminder.booking_id == booking_id,
                BookingReminder.offset_minutes == offset,
            )
        ).first()
        if row is None or row.status != "scheduled" or row.starts_at != planned_start:
            return  # cancelled, done already, or replaced by a reschedule: not this job's
        row.job_id = job.job_id
        booking = _still_wanted(session, row, now)
        if isinstance(booking, str):
            _skip(row, booking, now)
            return
        _, rule = Rules().get(session, booking.tenant_id, booking.service_id)
        if not rule.enabled:
            _skip(row, "reminders disabled", now)
            return
        why: list[str] = []
        if not _deliver(session, job, row, booking, rule.channels, why):
            _skip(row, "no channel: " + "; ".join(why), now)


@service.on_failure
def _reminder_failed(session: Session, message: Message, at: datetime) -> None:
    """A reminder's message did not reach the patient: try the next channel, in a job."""
    if message.kind != TEMPLATE or message.booking_id is None:
        return
    queue.enqueue(
        session,
        FALLBACK_KIND,
        {"message_id": message.id},
        now=at,
        tenant_id=message.tenant_id,
        dedupe_key=f"{FALLBACK_KIND}:{message.id}",
    )


@registry.handler(FALLBACK_KIND, max_attempts=5)
def fall_back(job: JobContext) -> None:
    """Queue a failed reminder again on the channels after the one that failed."""
    now = job.now()
    with job.db.write() as session:
        failed = session.get(Message, str(job.payload["message_id"]))
        if failed is None or failed.booking_id is None:
            return
        row = session.scalars(
            sa.select(BookingReminder).where(
                BookingReminder.booking_id == failed.booking_id,
                BookingReminder.message_id == failed.id,
                BookingReminder.status == "sent",
            )
        ).first()
        if row is None:
            return  # not a reminder's current message, or already moved on (a replay)
        why = [row.reason] if row.reason else []
        why.append(f"{failed.channel}: {failed.status}")
        booking = _still_wanted(session, row, now)
        if isinstance(booking, str):
            _skip(row, "; ".join([*why, f"not sent again: {booking}"]), now, "failed")
            return
        _, rule = Rules().get(session, booking.tenant_id, booking.service_id)
        after = rule.channels[rule.channels.index(failed.channel) + 1 :] if (
            failed.channel in rule.channels
        ) else ()  # fmt: skip
        if not _deliver(session, job, row, booking, after, why, fallback=True):
            _skip(row, "; ".join([*why, "no channel left"]), now, "failed")
