"""``/api/v1/messages``: send a message to a patient, and follow its status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.messaging import service
from clinicbridge.messaging.models import Message, MessageEvent

router = APIRouter(tags=["messages"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("messages:read")]
Sender = Annotated[Ctx, require("messages:send")]
Channel = Literal["sms", "email", "whatsapp", "push"]


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    patient_id: Annotated[str, Field(min_length=1, max_length=64)]
    channel: Channel
    template: Annotated[str | None, Field(max_length=64)] = Field(
        default=None, description="A message kind, e.g. booking.reminder; with variables."
    )
    variables: dict[str, Any] | None = None
    subject: Annotated[str | None, Field(min_length=1, max_length=500)] = None
    body: Annotated[str | None, Field(min_length=1, max_length=20_000)] = None


class MessageEventOut(BaseModel):
    status: str
    detail: str | None
    source: str
    at: datetime


class MessageOut(BaseModel):
    id: str
    status: str
    channel: str
    kind: str
    patient_id: str | None
    booking_id: str | None
    provider: str | None
    language: str | None
    subject: str | None
    provider_message_id: str | None
    error: str | None
    created_at: datetime
    sent_at: datetime | None
    timeline: list[MessageEventOut] | None = None


def _event(e: MessageEvent) -> MessageEventOut:
    return MessageEventOut(status=e.status, detail=e.detail, source=e.source, at=e.at)


def message_out(row: Message, events: list[MessageEvent] | None = None) -> MessageOut:
    return MessageOut(
        id=row.id,
        status=row.status,
        channel=row.channel,
        kind=row.kind,
        patient_id=row.patient_id,
        booking_id=row.booking_id,
        provider=row.provider,
        language=row.language,
        subject=row.subject,
        provider_message_id=row.provider_message_id,
        error=row.error,
        created_at=row.created_at,
        sent_at=row.sent_at,
        timeline=None if events is None else [_event(e) for e in events],
    )


@router.post("/messages", status_code=202, response_model=MessageOut)
def send_message(body: MessageCreate, db: DB, ctx: Sender) -> MessageOut:
    """Queue a message from a built-in template (``template`` + ``variables``) or a
    literal ``subject``/``body``. A patient who opted out of the channel gets a
    ``suppressed`` message that is never sent."""
    with db.write() as session:
        row = service.queue_message(
            session,
            ctx,
            patient_id=body.patient_id,
            channel=body.channel,
            template=body.template,
            variables=body.variables,
            subject=body.subject,
            body=body.body,
        )
        return message_out(row)


@router.get("/messages", response_model=ListOut[MessageOut])
def list_messages(
    db: DB,
    ctx: Reader,
    page: Paging,
    patient_id: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    channel: Channel | None = None,
) -> ListOut[MessageOut]:
    with db.read() as session:
        found = service.list_messages(
            session,
            ctx,
            limit=page.limit,
            starting_after=page.starting_after,
            patient_id=patient_id,
            status=status,
            channel=channel,
        )
        return ListOut.of(found, message_out)


@router.get("/messages/{message_id}", response_model=MessageOut)
def get_message(message_id: Annotated[str, Path(max_length=64)], db: DB, ctx: Reader) -> MessageOut:
    """The message and its status timeline (queued, sending, sent, delivered, ...)."""
    with db.read() as session:
        row = service.get_message(session, ctx, message_id)
        return message_out(row, service.timeline(session, row))
