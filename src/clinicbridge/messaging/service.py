"""Queueing a message: recipient, opt-out, integration, rendering, one row and one job.

Everything happens in the caller's transaction, so a message exists exactly when
what asked for it committed (a booking, an API call). Booking and payment
messages are transactional: they go unless the patient opted out of the channel.
An opted-out recipient gets a ``suppressed`` row, never a send.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.service import record
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError, NotFoundError
from clinicbridge.core.ids import new_id
from clinicbridge.core.models import Tenant
from clinicbridge.core.pagination import Page, paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.integrations.models import Integration
from clinicbridge.jobs import queue
from clinicbridge.messaging import (
    email_api_senders,  # noqa: F401  (registers itself)
    push,
    smtp_sender,  # noqa: F401  (registers itself)
    twilio_sender,  # noqa: F401  (registers itself)
)
from clinicbridge.messaging.clinic_templates import resolve_template
from clinicbridge.messaging.kinds import KINDS
from clinicbridge.messaging.models import CHANNELS, Message, MessageEvent
from clinicbridge.messaging.providers import connectors_for
from clinicbridge.messaging.templates import TemplateRenderError
from clinicbridge.patients.models import Patient, PatientContact
from clinicbridge.patients.records import latest_consent

SEND_KIND = "messaging.send"
# A message that will not reach the patient (failed, undelivered, bounced, dropped,
# suppressed before sending): hooks run in the transaction that records it.
FAILURE_STATUSES = frozenset({"failed", "undelivered", "bounced", "dropped", "suppressed"})
FailureHook = Callable[[Session, Message, datetime], None]
_failure_hooks: list[FailureHook] = []
LITERAL = "literal"
_CONTACT_KIND = {"email": "email", "sms": "phone", "whatsapp": "phone"}


def opted_out(session: Session, tenant_id: str, patient_id: str, channel: str) -> bool:
    """Whether the patient's latest word on ``channel`` was no (STOP, a form, staff)."""
    return latest_consent(session, tenant_id, patient_id, channel) is False


def recipient(
    session: Session, tenant_id: str, patient_id: str, channel: str, now: datetime | None = None
) -> str | None:
    """The patient's primary address for ``channel`` (e-mail, or E.164 phone); for push,
    the ids of their newest active subscriptions, comma-separated."""
    if channel == "push":
        devices = push.active_devices(session, tenant_id, patient_id, now or datetime.now(UTC))
        return ",".join(devices) or None
    kind = _CONTACT_KIND.get(channel)
    if kind is None:
        return None
    return session.scalar(
        sa.select(PatientContact.value)
        .where(
            PatientContact.tenant_id == tenant_id,
            PatientContact.patient_id == patient_id,
            PatientContact.kind == kind,
        )
        .order_by(PatientContact.is_primary.desc(), PatientContact.id)
        .limit(1)
    )


def integration_for(session: Session, tenant_id: str, channel: str) -> Integration | None:
    """The clinic's enabled integration that carries ``channel`` (first by preference)."""
    keys = connectors_for(channel)
    if not keys:
        return None
    rows = session.scalars(
        scoped_select(Integration, tenant_id)
        .where(Integration.enabled.is_(True), Integration.connector.in_(keys))
        .order_by(Integration.created_at, Integration.id)
    ).all()
    return min(rows, key=lambda row: keys.index(row.connector), default=None)


def queue_message(
    session: Session,
    ctx: Ctx,
    *,
    patient_id: str,
    channel: str,
    template: str | None = None,
    variables: Mapping[str, Any] | None = None,
    subject: str | None = None,
    body: str | None = None,
    booking_id: str | None = None,
    dedupe_key: str | None = None,
    attachments: Sequence[dict[str, str]] = (),
    message_id: str | None = None,
) -> Message:
    """A message to a patient from a built-in template (``template`` + ``variables``) or
    literal ``subject``/``body``; sent by a job. The same ``dedupe_key`` answers the
    message already queued. ``message_id`` is the id to give it, when the caller needed
    it beforehand (links bound to the message). Bad input: InvalidInputError naming the
    field."""
    if channel not in CHANNELS:
        raise InvalidInputError.one("channel", f"must be one of {', '.join(CHANNELS)}")
    if (template is None) == (body is None):
        raise InvalidInputError.one("template", "give either template (with variables) or body")
    if template is not None and template not in KINDS:
        raise InvalidInputError.one("template", f"unknown message kind {template!r}")
    if dedupe_key is not None:
        existing = session.scalars(
            scoped_select(Message, ctx.tenant_id).where(Message.dedupe_key == dedupe_key)
        ).first()
        if existing is not None:
            return existing
    patient = session.scalars(
        scoped_select(Patient, ctx.tenant_id).where(Patient.id == patient_id)
    ).first()
    if patient is None:
        raise InvalidInputError.one("patient_id", "no such patient", "not_found")
    address = recipient(session, ctx.tenant_id, patient.id, channel, ctx.now)
    if address is None:
        raise InvalidInputError.one(
            "channel", f"the patient has no address for {channel}", "no_address"
        )
    integration = integration_for(session, ctx.tenant_id, channel)
    if integration is None:
        raise InvalidInputError.one(
            "channel", f"the clinic has no enabled integration that sends {channel}", "no_provider"
        )
    tenant = session.get(Tenant, ctx.tenant_id)
    assert tenant is not None
    language = patient.preferred_language or tenant.default_language
    html = None
    provider_template: dict[str, Any] | None = None
    if template is not None:
        found = resolve_template(
            session, ctx.tenant_id, template, channel,
            patient.preferred_language, tenant.default_language,
        )  # fmt: skip
        if found is None:
            raise InvalidInputError.one(
                "template", f"no template for {template} on {channel}; send subject and body"
            )
        language = found.language
        try:
            rendered = found.template.render(variables or {})
        except TemplateRenderError as exc:
            raise InvalidInputError.one("variables", exc.detail) from None
        subject, body, html = rendered.subject, rendered.text, rendered.html
        provider_template = found.provider_template(variables or {})
    assert body is not None
    if channel == "email" and not subject:
        raise InvalidInputError.one("subject", "an e-mail needs a subject")
    suppressed = opted_out(session, ctx.tenant_id, patient.id, channel)
    message = Message(
        id=message_id or new_id("msg"),
        tenant_id=ctx.tenant_id,
        patient_id=patient.id,
        booking_id=booking_id,
        channel=channel,
        integration_id=integration.id,
        provider=integration.connector,
        kind=template or LITERAL,
        language=language,
        to_address=address,
        subject=subject,
        body=body,
        html=html,
        attachments=list(attachments) or None,
        provider_template=provider_template,
        status="suppressed" if suppressed else "queued",
        dedupe_key=dedupe_key,
        created_by=f"{ctx.actor_type}:{ctx.actor_id}",
        created_at=ctx.now,
        updated_at=ctx.now,
    )
    session.add(message)
    session.flush()
    detail = f"the patient opted out of {channel}" if suppressed else None
    add_event(session, message, message.status, source="api", at=ctx, detail=detail)
    record(session, ctx, "message.create", "message", message.id,
           diff={"channel": channel, "kind": message.kind, "status": message.status})  # fmt: skip
    if not suppressed:
        queue.enqueue(
            session,
            SEND_KIND,
            {"message_id": message.id},
            now=ctx.now,
            tenant_id=ctx.tenant_id,
            dedupe_key=f"{SEND_KIND}:{message.id}",
        )
    return message


def on_failure(hook: FailureHook) -> FailureHook:
    """Run ``hook`` whenever a message first settles in a failure status (decorator)."""
    if hook not in _failure_hooks:
        _failure_hooks.append(hook)
    return hook


def failed(session: Session, message: Message, at: datetime) -> None:
    """Tell the hooks that ``message`` will not reach the patient."""
    for hook in _failure_hooks:
        hook(session, message, at)


def add_event(
    session: Session,
    message: Message,
    status: str,
    *,
    source: str,
    at: Ctx | Any,
    detail: str | None = None,
) -> None:
    """One step of the timeline; ``at`` is a Ctx or a datetime."""
    when = at.now if isinstance(at, Ctx) else at
    session.add(
        MessageEvent(
            id=new_id("mev"),
            tenant_id=message.tenant_id,
            message_id=message.id,
            status=status,
            detail=detail[:500] if detail else None,
            source=source,
            at=when,
        )
    )


def get_message(session: Session, ctx: Ctx, message_id: str) -> Message:
    found = session.scalars(
        scoped_select(Message, ctx.tenant_id).where(Message.id == message_id)
    ).first()
    if found is None:
        raise NotFoundError("No such message.")
    return found


def timeline(session: Session, message: Message) -> list[MessageEvent]:
    stmt = (
        sa.select(MessageEvent)
        .where(MessageEvent.message_id == message.id)
        .order_by(MessageEvent.at, MessageEvent.id)
    )
    return list(session.scalars(stmt))


def list_messages(
    session: Session,
    ctx: Ctx,
    *,
    limit: int,
    starting_after: str | None,
    patient_id: str | None = None,
    status: str | None = None,
    channel: str | None = None,
) -> Page[Message]:
    stmt = scoped_select(Message, ctx.tenant_id)
    if patient_id is not None:
        stmt = stmt.where(Message.patient_id == patient_id)
    if status is not None:
        stmt = stmt.where(Message.status == status)
    if channel is not None:
        stmt = stmt.where(Message.channel == channel)
    return paginate(session, stmt, Message.id, limit, starting_after)
