"""E-mail events from SendGrid, Resend and Mailgun, applied to our messages.

The verifiers turn each provider's webhook into events (a SendGrid POST is an array:
one stored event per item) with ``type``:

* SendGrid: ``email.<event>`` (``processed``, ``delivered``, ``bounce``, ...),
  the payload is one item of the array;
* Resend (Standard Webhooks): the body's ``type`` (``email.delivered``, ...),
  the payload is the whole body (``data.email_id``);
* Mailgun: ``email.<event-data.event>``, the payload is the whole body.

A message is found by our id when the event carries it (SendGrid ``custom_args``,
Mailgun ``user-variables``, Resend tags), else by the provider's id, always within
the integration's clinic. The status goes through ``status.apply_provider_status``
(forward only, every event in the timeline); events that change nothing
(deferrals, temporary failures) only add a timeline step.

A hard bounce or a complaint suppresses the address: every patient of the clinic
with that e-mail gets an e-mail consent ``granted=False`` (source "hard bounce" or
"complaint"), so later messages to it are ``suppressed``. Handlers are idempotent:
a replay finds the status already applied and the consent already withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.core.context import Ctx
from clinicbridge.integrations.registry import StoredEvent, integrations
from clinicbridge.jobs.registry import JobContext
from clinicbridge.messaging.email_api_senders import CB_ID
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.service import add_event, opted_out
from clinicbridge.messaging.status import apply_provider_status
from clinicbridge.patients.models import PatientContact
from clinicbridge.patients.records import record_consent

HARD_BOUNCE = "hard bounce"
COMPLAINT = "complaint"
TIMELINE_ONLY = "deferred"  # recorded as a step, never as the message's status


class MessageStillSending(Exception):
    """The event is for a message whose send has not been recorded yet: retry later."""

    retryable = True


@dataclass(frozen=True)
class EmailEvent:
    status: str  # a status of ``status.RANK`` or TIMELINE_ONLY
    provider_message_id: str | None
    our_id: str | None
    address: str | None
    at: datetime | None
    detail: str | None = None
    suppress: str | None = None  # HARD_BOUNCE / COMPLAINT


# --- per provider ------------------------------------------------------------------------


def _unix(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _short(*parts: Any) -> str | None:
    text = " ".join(str(p) for p in parts if p not in (None, ""))
    return " ".join(text.split())[:500] or None


SENDGRID_STATUS = {
    "processed": "sent",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "dropped": "dropped",
    "deferred": TIMELINE_ONLY,
    "bounce": "bounced",
    "spamreport": "complained",
}


def map_sendgrid(item: dict[str, Any]) -> EmailEvent | None:
    kind = item.get("event")
    status = SENDGRID_STATUS.get(kind) if isinstance(kind, str) else None
    if status is None:
        return None
    suppress = None
    detail = _short(item.get("reason") or item.get("response"))
    if kind == "bounce":
        # "bounce" is a hard bounce; "blocked" a temporary refusal by the receiver.
        if item.get("type") == "blocked":
            status, detail = "undelivered", _short("blocked:", detail)
        else:
            suppress = HARD_BOUNCE
    elif kind == "spamreport":
        suppress = COMPLAINT
    sg_id = _text(item.get("sg_message_id"))
    return EmailEvent(
        status=status,
        # sg_message_id is X-Message-Id followed by ".filter..." (the recipient part)
        provider_message_id=sg_id.split(".", 1)[0] if sg_id else None,
        our_id=_text(item.get(CB_ID)),
        address=_text(item.get("email")),
        at=_unix(item.get("timestamp")),
        detail=detail,
        suppress=suppress,
    )


RESEND_STATUS = {
    "email.sent": "sent",
    "email.delivered": "delivered",
    "email.delivery_delayed": TIMELINE_ONLY,
    "email.bounced": "bounced",
    "email.complained": "complained",
    "email.opened": "opened",
    "email.clicked": "clicked",
    "email.failed": "failed",
}


def _resend_tag(data: dict[str, Any]) -> str | None:
    tags = data.get("tags")
    if isinstance(tags, dict):  # webhooks: {"name": "value"}
        return _text(tags.get(CB_ID))
    if isinstance(tags, list):  # as sent: [{"name", "value"}]
        for tag in tags:
            if isinstance(tag, dict) and tag.get("name") == CB_ID:
                return _text(tag.get("value"))
    return None


def map_resend(body: dict[str, Any]) -> EmailEvent | None:
    status = RESEND_STATUS.get(str(body.get("type")))
    data = body.get("data")
    if status is None or not isinstance(data, dict):
        return None
    to = data.get("to")
    address = _text(to[0]) if isinstance(to, list) and to else _text(to)
    detail, suppress = None, None
    if status == "bounced":
        bounce = _dict(data.get("bounce"))
        kind = _text(bounce.get("type"))
        detail = _short(kind, bounce.get("subType"), bounce.get("message"))
        # Resend reports permanent bounces; a "Transient" one is not a dead address.
        if kind is None or kind.lower() == "permanent":
            suppress = HARD_BOUNCE
    elif status == "complained":
        suppress = COMPLAINT
    elif status == "failed":
        failed = _dict(data.get("failed"))
        detail = _short(failed.get("reason"))
    return EmailEvent(
        status=status,
        provider_message_id=_text(data.get("email_id")),
        our_id=_resend_tag(data),
        address=address,
        at=_iso(body.get("created_at")) or _iso(data.get("created_at")),
        detail=detail,
        suppress=suppress,
    )


MAILGUN_STATUS = {
    "accepted": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
    "failed": "bounced",
}


def map_mailgun(body: dict[str, Any]) -> EmailEvent | None:
    data = body.get("event-data")
    if not isinstance(data, dict):
        return None
    kind = data.get("event")
    status = MAILGUN_STATUS.get(kind) if isinstance(kind, str) else None
    if status is None:
        return None
    detail, suppress = None, None
    if kind == "failed":
        delivery = data.get("delivery-status")
        delivery = delivery if isinstance(delivery, dict) else {}
        detail = _short(data.get("reason"), delivery.get("code"), delivery.get("message")
                        or delivery.get("description"))  # fmt: skip
        if data.get("severity") == "permanent":
            suppress = HARD_BOUNCE
        else:  # temporary: Mailgun retries on its own
            status = TIMELINE_ONLY
    elif kind == "complained":
        suppress = COMPLAINT
    message = _dict(data.get("message"))
    headers = _dict(message.get("headers"))
    mg_id = _text(headers.get("message-id"))
    variables = data.get("user-variables")
    our_id = _text(variables.get(CB_ID)) if isinstance(variables, dict) else None
    return EmailEvent(
        status=status,
        provider_message_id=mg_id.strip("<>") if mg_id else None,
        our_id=our_id,
        address=_text(data.get("recipient")),
        at=_unix(data.get("timestamp")),
        detail=detail,
        suppress=suppress,
    )


MAPPERS = {"sendgrid": map_sendgrid, "resend": map_resend, "mailgun": map_mailgun}


# --- applying ------------------------------------------------------------------------------


def _find(session: Session, event: StoredEvent, ev: EmailEvent) -> Message | None:
    base = sa.select(Message).where(
        Message.tenant_id == event.tenant_id, Message.provider == event.connector
    )
    found = None
    if ev.our_id:
        found = session.scalars(base.where(Message.id == ev.our_id).with_for_update()).first()
    if found is None and ev.provider_message_id:
        found = session.scalars(
            base.where(Message.provider_message_id == ev.provider_message_id).with_for_update()
        ).first()
    return found


def apply_event(session: Session, event: StoredEvent, ev: EmailEvent, now: datetime) -> None:
    at = ev.at or now
    message = _find(session, event, ev)
    if message is not None:
        if message.provider_message_id is None:
            if message.status in ("queued", "sending"):
                # The provider answered our send, but the worker has not recorded it yet.
                raise MessageStillSending(f"message {message.id} is still being sent")
            if ev.provider_message_id:
                # An attempt whose outcome was unknown: the provider says it has it.
                message.provider_message_id = ev.provider_message_id
        if ev.status == TIMELINE_ONLY:
            add_event(session, message, ev.status, source="provider", at=at,
                      detail=ev.detail)  # fmt: skip
        elif message.provider_message_id:
            apply_provider_status(
                session,
                provider=event.connector,
                provider_message_id=message.provider_message_id,
                status=ev.status,
                at=at,
                detail=ev.detail,
            )
    if ev.suppress:
        address = ev.address or (message.to_address if message is not None else None)
        if address:
            suppress_address(session, event, address, ev.suppress, now)


def suppress_address(
    session: Session, event: StoredEvent, address: str, source: str, now: datetime
) -> list[str]:
    """Withdraw e-mail consent for every patient of the clinic with this address."""
    ctx = Ctx(
        tenant_id=event.tenant_id,
        actor_type="integration",
        actor_id=event.integration_id,
        role="system",
        permissions=frozenset(),
        now=now,
    )
    patients = session.scalars(
        sa.select(PatientContact.patient_id)
        .where(
            PatientContact.tenant_id == event.tenant_id,
            PatientContact.kind == "email",
            PatientContact.value == address.strip().lower(),
        )
        .distinct()
    ).all()
    changed = []
    for patient_id in sorted(patients):
        if not opted_out(session, event.tenant_id, patient_id, "email"):
            record_consent(session, ctx, patient_id, "email", False, source)
            changed.append(patient_id)
    return changed


def handle(event: StoredEvent, job: JobContext) -> None:
    mapper = MAPPERS.get(event.connector)
    ev = mapper(event.payload) if mapper is not None else None
    if ev is None:
        return
    with job.db.write() as session:
        apply_event(session, event, ev, job.now())


for _connector, _types in (
    ("sendgrid", [f"email.{kind}" for kind in SENDGRID_STATUS]),
    ("resend", list(RESEND_STATUS)),
    ("mailgun", [f"email.{kind}" for kind in MAILGUN_STATUS]),
):
    for _type in _types:
        integrations.on(_connector, _type)(handle)
