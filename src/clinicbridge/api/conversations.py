"""Conversations with patients: their SMS/WhatsApp messages and the clinic's answers.

``GET /conversations`` lists who wrote (no message text); a patient's conversation
shows the text and is audited as a read of patient data.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.messages import MessageOut, message_out
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.messaging import conversations

router = APIRouter(tags=["messages"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("messages:read")]
Sender = Annotated[Ctx, require("messages:send")]
PatientId = Annotated[str, Path(max_length=64)]
ONE = "/patients/{patient_id}/conversation"


class SummaryOut(BaseModel):
    patient_id: str
    last_inbound_at: datetime
    unread: int


class ItemOut(BaseModel):
    id: str
    direction: Literal["inbound", "outbound"]
    channel: str
    body: str
    at: datetime
    status: str | None
    handled_as: str | None


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: Annotated[str, Field(min_length=1, max_length=1600)]
    channel: Literal["sms", "whatsapp"] | None = None


class MarkedOut(BaseModel):
    marked_read: int


@router.get("/conversations", response_model=ListOut[SummaryOut])
def list_conversations(
    db: DB,
    ctx: Reader,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    before: Annotated[datetime | None, Query(description="next_cursor of the last page")] = None,
    unread: bool = False,
) -> ListOut[SummaryOut]:
    """Patients who wrote to the clinic, latest first, with their unread count."""
    if before is not None and before.tzinfo is None:
        raise InvalidInputError.one("before", "needs a timezone offset")
    with db.read() as session:
        rows = conversations.list_conversations(
            session, ctx, limit=limit + 1, before=before, unread_only=unread
        )
    shown = rows[:limit]
    more = len(rows) > limit
    return ListOut[SummaryOut](
        data=[SummaryOut(patient_id=r.patient_id, last_inbound_at=r.last_inbound_at,
                         unread=r.unread) for r in shown],
        has_more=more,
        next_cursor=shown[-1].last_inbound_at.isoformat() if more else None,
    )  # fmt: skip


@router.get(ONE, response_model=ListOut[ItemOut])
def get_conversation(
    patient_id: PatientId,
    db: DB,
    ctx: Reader,
    limit: Annotated[int, Query(ge=1, le=conversations.MAX_ITEMS)] = 100,
) -> ListOut[ItemOut]:
    """The latest messages both ways, oldest first (audited as a read of patient data)."""
    with db.write() as session:
        items = conversations.conversation(session, ctx, patient_id, limit=limit)
        return ListOut[ItemOut](
            data=[ItemOut(id=i.id, direction=i.direction, channel=i.channel, body=i.body,
                          at=i.at, status=i.status, handled_as=i.handled_as) for i in items]
        )  # fmt: skip


@router.post(ONE + "/replies", status_code=202, response_model=MessageOut)
def reply(patient_id: PatientId, body: ReplyIn, db: DB, ctx: Sender) -> MessageOut:
    """Answer the patient (by default on the channel they last wrote on); marks their
    messages read."""
    with db.write() as session:
        row = conversations.reply(session, ctx, patient_id, body=body.body, channel=body.channel)
        return message_out(row)


@router.post(ONE + "/read", response_model=MarkedOut)
def mark_read(patient_id: PatientId, db: DB, ctx: Sender) -> MarkedOut:
    with db.write() as session:
        return MarkedOut(marked_read=conversations.mark_read(session, ctx, patient_id))
