"""A patient's conversation with the clinic: their SMS/WhatsApp replies and what the
clinic sent them on those channels, in time order; staff read it and answer.

Inbound messages are recorded by the Twilio webhook handler (``twilio_events``) in the
same transaction as what they caused (an opt-out, a confirmation, a staff task), once
per provider message id, so a replayed webhook changes nothing. Reading a conversation
shows message bodies, which are patient data: every read is audited (``phi``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.messaging.conversation_models import InboundMessage
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.service import queue_message
from clinicbridge.patients.models import Patient

CONVERSATION_CHANNELS = ("sms", "whatsapp")
# WhatsApp allows free-form replies only this long after the patient's last message.
WHATSAPP_SESSION = timedelta(hours=24)
MAX_ITEMS = 200


@dataclass(frozen=True)
class Item:
    """One message of a conversation, either way."""

    id: str
    direction: str  # inbound | outbound
    channel: str
    body: str
    at: datetime
    status: str | None = None  # outbound: the message's status
    handled_as: str | None = None  # inbound: what ClinicBridge made of it


@dataclass(frozen=True)
class Summary:
    patient_id: str
    last_inbound_at: datetime
    unread: int


def record_inbound(
    session: Session,
    *,
    tenant_id: str,
    integration_id: str,
    channel: str,
    from_address: str,
    body: str,
    provider_message_id: str,
    patient_id: str | None,
    handled_as: str,
    at: datetime,
    booking_id: str | None = None,
) -> InboundMessage:
    row = InboundMessage(
        id=new_id("inm"),
        tenant_id=tenant_id,
        integration_id=integration_id,
        channel=channel,
        patient_id=patient_id,
        from_address=from_address[:64],
        body=body,
        provider_message_id=provider_message_id,
        handled_as=handled_as,
        booking_id=booking_id,
        received_at=at,
        # Keywords are handled by ClinicBridge; only messages for staff wait to be read.
        read_at=None if handled_as in ("conversation", "reschedule_request") else at,
        read_by=None if handled_as in ("conversation", "reschedule_request") else "system",
    )
    session.add(row)
    session.flush()
    return row


def already_recorded(session: Session, integration_id: str, provider_message_id: str) -> bool:
    return (
        session.scalar(
            sa.select(InboundMessage.id).where(
                InboundMessage.integration_id == integration_id,
                InboundMessage.provider_message_id == provider_message_id,
            )
        )
        is not None
    )


def _patient(session: Session, ctx: Ctx, patient_id: str) -> Patient:
    return get_scoped(session, Patient, ctx.tenant_id, id=patient_id)


def conversation(session: Session, ctx: Ctx, patient_id: str, *, limit: int = 100) -> list[Item]:
    """The latest ``limit`` messages with the patient, oldest first; audited as a read."""
    patient = _patient(session, ctx, patient_id)
    inbound = session.scalars(
        scoped_select(InboundMessage, ctx.tenant_id)
        .where(InboundMessage.patient_id == patient.id)
        .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
        .limit(limit)
    ).all()
    outbound = session.scalars(
        scoped_select(Message, ctx.tenant_id)
        .where(Message.patient_id == patient.id, Message.channel.in_(CONVERSATION_CHANNELS))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(limit)
    ).all()
    items = [
        Item(m.id, "inbound", m.channel, m.body, m.received_at, handled_as=m.handled_as)
        for m in inbound
    ] + [Item(m.id, "outbound", m.channel, m.body, m.created_at, status=m.status) for m in outbound]
    items.sort(key=lambda i: (i.at, i.id))
    record(session, ctx, "conversation.read", "patient", patient.id, phi=True,
           diff={"items": min(len(items), limit)})  # fmt: skip
    return items[-limit:]


def list_conversations(
    session: Session,
    ctx: Ctx,
    *,
    limit: int,
    before: datetime | None = None,
    unread_only: bool = False,
) -> list[Summary]:
    """Patients who wrote to the clinic, most recent first, with how many of their
    messages no one has read yet. No bodies: a list shows no patient data."""
    last = sa.func.max(InboundMessage.received_at)
    unread = sa.func.sum(sa.case((InboundMessage.read_at.is_(None), 1), else_=0))
    stmt = (
        sa.select(InboundMessage.patient_id, last, unread)
        .where(InboundMessage.tenant_id == ctx.tenant_id, InboundMessage.patient_id.is_not(None))
        .group_by(InboundMessage.patient_id)
        .order_by(last.desc(), InboundMessage.patient_id)
        .limit(limit)
    )
    if before is not None:
        stmt = stmt.having(last < before)
    if unread_only:
        stmt = stmt.having(unread > 0)
    return [
        Summary(str(patient_id), at, int(count or 0))
        for patient_id, at, count in session.execute(stmt)
    ]


def mark_read(session: Session, ctx: Ctx, patient_id: str) -> int:
    """Mark the patient's unread messages read by the caller; returns how many."""
    patient = _patient(session, ctx, patient_id)
    result = session.execute(
        sa.update(InboundMessage)
        .where(
            InboundMessage.tenant_id == ctx.tenant_id,
            InboundMessage.patient_id == patient.id,
            InboundMessage.read_at.is_(None),
        )
        .values(read_at=ctx.now, read_by=f"{ctx.actor_type}:{ctx.actor_id}")
        .execution_options(synchronize_session=False)
    )
    count = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        record(session, ctx, "conversation.mark_read", "patient", patient.id,
               diff={"messages": count})  # fmt: skip
    return count


def reply(
    session: Session, ctx: Ctx, patient_id: str, *, body: str, channel: str | None = None
) -> Message:
    """Answer the patient on ``channel`` (default: the one they last wrote on, else SMS);
    marks their messages read. An opted-out patient's reply is recorded ``suppressed``."""
    patient = _patient(session, ctx, patient_id)
    text = body.strip()
    if not text:
        raise InvalidInputError.one("body", "must not be empty", "missing")
    latest = session.scalars(
        scoped_select(InboundMessage, ctx.tenant_id)
        .where(InboundMessage.patient_id == patient.id)
        .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
        .limit(1)
    ).first()
    channel = channel or (latest.channel if latest is not None else "sms")
    if channel not in CONVERSATION_CHANNELS:
        raise InvalidInputError.one("channel", "replies go by sms or whatsapp")
    if channel == "whatsapp":
        last_whatsapp = session.scalar(
            sa.select(sa.func.max(InboundMessage.received_at)).where(
                InboundMessage.tenant_id == ctx.tenant_id,
                InboundMessage.patient_id == patient.id,
                InboundMessage.channel == "whatsapp",
            )
        )
        if last_whatsapp is None or ctx.now - last_whatsapp > WHATSAPP_SESSION:
            raise InvalidInputError.one(
                "channel",
                "WhatsApp allows free-form replies only within 24 hours of the patient's "
                "last message; send an approved template instead",
                "whatsapp_window",
            )
    message = queue_message(session, ctx, patient_id=patient.id, channel=channel, body=text)
    mark_read(session, ctx, patient.id)
    return message
