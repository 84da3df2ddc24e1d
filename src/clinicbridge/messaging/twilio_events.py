"""What Twilio posts to an integration's webhook URL, once the inbox has verified the
``X-Twilio-Signature`` and stored the event (see ``webhooks.verifiers.twilio``):

* ``message.status`` (a ``MessageStatus``): the status of one of our messages moves
  forward (``messaging.status``), with Twilio's error code and price.
* ``message.inbound`` (a patient's SMS or WhatsApp reply, ``Body``/``From``/``To``):
  keywords, the whole message, any case, accents ignored, English and French:

  - STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, ARRET/ARRÊT: opted out of SMS
    (and of WhatsApp when the reply came by WhatsApp);
  - START, UNSTOP, DEBUT/DÉBUT: opted back in. Not YES: here YES confirms a booking;
  - HELP, AIDE: nothing (Twilio answers HELP itself);
  - C, YES, OUI, CONFIRM, CONFIRMER: the patient's next upcoming booking is confirmed;
  - R: the patient asked to reschedule their next booking: an open staff task
    (``booking.reschedule_request``) and the audit event ``booking.reschedule_requested``;
  - anything else (and C or R with no upcoming booking): a message for staff, who read
    and answer it in the patient's conversation (``messaging.conversations``).

  Every inbound message is recorded with what it was taken as, and published as the
  outbound event ``message.received`` (ids only, never the text). The patient is found
  by the ``From`` number among the clinic's patients' phone contacts; a message from an
  unknown number changes nothing but is still recorded (without a patient). Several
  patients sharing a phone all opt out/in; a confirmation goes to the soonest of their
  bookings, and the message joins that patient's conversation.

Handlers are idempotent: a replayed status callback adds a timeline entry and changes
nothing else; a replayed inbound message is known by its ``MessageSid`` and changes
nothing at all.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.registry import JobContext
from clinicbridge.messaging import conversations
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.status import apply_provider_status
from clinicbridge.messaging.twilio_sender import CONNECTOR, WHATSAPP_PREFIX, price_minor
from clinicbridge.patients.models import PatientContact
from clinicbridge.patients.records import latest_consent, record_consent
from clinicbridge.patients.service import RESOURCE as PATIENT
from clinicbridge.scheduling.bookings import BookingStateError, confirm_booking
from clinicbridge.scheduling.models import ACTIVE_STATUSES, Booking
from clinicbridge.tasks.service import raise_task
from clinicbridge.webhooks.outbound import publish

log = logging.getLogger("clinicbridge.messaging")

# Twilio's MessageStatus → ours (None: not about delivery, only the timeline would care).
STATUSES: dict[str, str | None] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
    "partially_delivered": None,
    "receiving": None,
    "received": None,
}

OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "arret"})
OPT_IN = frozenset({"start", "unstop", "debut"})
HELP = frozenset({"help", "aide"})
CONFIRM = frozenset({"c", "yes", "oui", "confirm", "confirmer"})
RESCHEDULE = frozenset({"r"})
ACTOR = "sms_reply"
RESCHEDULE_TASK = "booking.reschedule_request"


def keyword(body: object) -> str:
    """The reply as a keyword: trimmed, case-folded, accents and end punctuation dropped."""
    if not isinstance(body, str):
        return ""
    decomposed = unicodedata.normalize("NFKD", body.strip())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return bare.casefold().strip().rstrip(".!?").strip()


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if isinstance(value, list):  # a repeated form field
        value = value[0] if value else None
    return value.strip() if isinstance(value, str) else ""


@integrations.on(CONNECTOR, "message.status")
def on_status(event: StoredEvent, job: JobContext) -> None:
    payload = event.payload
    sid, raw = _text(payload, "MessageSid"), _text(payload, "MessageStatus").lower()
    status = STATUSES.get(raw)
    if not sid or status is None:
        return
    code = _text(payload, "ErrorCode")
    detail = f"Twilio {raw}" + (f" (error {code})" if code and code != "0" else "")
    cost_minor, currency = price_minor(payload.get("Price"), payload.get("PriceUnit"))
    with job.db.write() as session:
        # Only this integration's messages: a signed callback of one clinic's account
        # never touches another clinic's message.
        ours = session.scalar(
            sa.select(Message.id).where(
                Message.tenant_id == event.tenant_id,
                Message.integration_id == event.integration_id,
                Message.provider == CONNECTOR,
                Message.provider_message_id == sid,
            )
        )
        if ours is None:
            return
        apply_provider_status(
            session,
            provider=CONNECTOR,
            provider_message_id=sid,
            status=status,
            at=job.now(),
            detail=detail,
            cost_minor=cost_minor,
            cost_currency=currency,
        )


@integrations.on(CONNECTOR, "message.inbound")
def on_inbound(event: StoredEvent, job: JobContext) -> None:
    payload = event.payload
    sender = _text(payload, "From")
    body = _text(payload, "Body")
    sid = _text(payload, "MessageSid") or event.provider_event_id
    by_whatsapp = sender.lower().startswith(WHATSAPP_PREFIX)
    number = sender[len(WHATSAPP_PREFIX) :] if by_whatsapp else sender
    if not number:
        return
    with job.db.write() as session:
        if conversations.already_recorded(session, event.integration_id, sid):
            return  # a replay: everything below happened with the first delivery
        ctx = Ctx.system(event.tenant_id, ACTOR, job.now())
        patients = _patients(session, event.tenant_id, number)
        handled_as, booking_id = _act(session, ctx, patients, keyword(body), by_whatsapp)
        owner = _owner(session, ctx, patients, number)
        row = conversations.record_inbound(
            session,
            tenant_id=event.tenant_id,
            integration_id=event.integration_id,
            channel="whatsapp" if by_whatsapp else "sms",
            from_address=number,
            body=body,
            provider_message_id=sid,
            patient_id=owner,
            handled_as=handled_as,
            at=ctx.now,
            booking_id=booking_id,
        )
        if handled_as == "reschedule_request":
            raise_task(
                session,
                ctx,
                kind=RESCHEDULE_TASK,
                title="Patient asked by SMS to reschedule",
                source_type="inbound_message",
                source_id=row.id,
                patient_id=owner,
                booking_id=booking_id,
            )
        publish(
            session,
            tenant_id=event.tenant_id,
            event_type="message.received",
            data={
                "id": row.id,
                "patient_id": owner,
                "channel": row.channel,
                "handled_as": handled_as,
                "booking_id": booking_id,
            },
            now=ctx.now,
        )


def _act(
    session: Session, ctx: Ctx, patients: list[str], word: str, by_whatsapp: bool
) -> tuple[str, str | None]:
    """Apply a keyword reply: what the message was taken as, and the booking it acted on."""
    if word in HELP:
        return "help", None
    if word in OPT_OUT or word in OPT_IN:
        channels = ("sms", "whatsapp") if by_whatsapp else ("sms",)
        via = "whatsapp" if by_whatsapp else "sms"
        granted = word in OPT_IN
        for patient_id in patients:
            _consent(session, ctx, patient_id, channels, granted, f"{via} {word.upper()}")
        return ("opt_in" if granted else "opt_out"), None
    if (word not in CONFIRM and word not in RESCHEDULE) or not patients:
        return "conversation", None
    booking = _next_booking(session, ctx, patients)
    if booking is None:
        return "conversation", None  # nothing to confirm or move: staff will read it
    if word in RESCHEDULE:
        record(session, ctx, "booking.reschedule_requested", "booking", booking.id)
        return "reschedule_request", booking.id
    try:
        confirm_booking(session, ctx, booking.id)
    except BookingStateError:
        log.info("sms confirmation of a booking that cannot be confirmed")
        return "conversation", booking.id
    return "confirm", booking.id


def _owner(session: Session, ctx: Ctx, patients: list[str], number: str) -> str | None:
    """Whose conversation a message from ``number`` joins: the only patient with that
    number; of several (a family phone), the one with the soonest upcoming booking, else
    the one the clinic last wrote to at that number, else the first by id."""
    if len(patients) <= 1:
        return patients[0] if patients else None
    booking = _next_booking(session, ctx, patients)
    if booking is not None:
        return booking.patient_id
    recent = session.scalar(
        sa.select(Message.patient_id)
        .where(
            Message.tenant_id == ctx.tenant_id,
            Message.patient_id.in_(patients),
            Message.to_address == number,
        )
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
    return recent or patients[0]


def _patients(session: Session, tenant_id: str, number: str) -> list[str]:
    return sorted(
        set(
            session.scalars(
                sa.select(PatientContact.patient_id).where(
                    PatientContact.tenant_id == tenant_id,
                    PatientContact.kind == "phone",
                    PatientContact.value == number,
                )
            )
        )
    )


def _consent(
    session: Session,
    ctx: Ctx,
    patient_id: str,
    channels: tuple[str, ...],
    granted: bool,
    source: str,
) -> None:
    changed: dict[str, Any] = {}
    for channel in channels:
        old = latest_consent(session, ctx.tenant_id, patient_id, channel)
        if old is granted:
            continue  # already so (a replay, or STOP twice)
        record_consent(session, ctx, patient_id, channel, granted, source)
        changed[channel] = {"old": old, "new": granted}
    if changed:
        record(session, ctx, "patient.consent.update", PATIENT, patient_id, phi=True,
               diff=changed)  # fmt: skip


def _next_booking(session: Session, ctx: Ctx, patients: list[str]) -> Booking | None:
    return session.scalars(
        sa.select(Booking)
        .where(
            Booking.tenant_id == ctx.tenant_id,
            Booking.patient_id.in_(patients),
            Booking.status.in_(ACTIVE_STATUSES),
            Booking.starts_at > ctx.now,
        )
        .order_by(Booking.starts_at, Booking.id)
        .limit(1)
    ).first()
