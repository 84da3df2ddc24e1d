"""``/api/v1/webhook-events``: the inbox as staff see it; replay processing."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.pagination import paginate
from clinicbridge.core.tenancy import get_scoped, scoped_select
from clinicbridge.webhooks.models import WebhookEvent
from clinicbridge.webhooks.processing import replay

router = APIRouter(prefix="/webhook-events", tags=["webhooks"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("webhooks:read")]
Manager = Annotated[Ctx, require("webhooks:manage")]
Status = Literal["received", "processing", "processed", "ignored", "failed", "dead"]


class WebhookEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    integration_id: str
    provider_event_id: str
    type: str
    status: str
    occurred_at: datetime | None
    received_at: datetime
    processed_at: datetime | None
    attempts: int
    last_error: str | None


class WebhookEventDetail(WebhookEventOut):
    payload: dict[str, Any]
    headers: dict[str, str]
    raw_body_retained: bool


@router.get("", response_model=ListOut[WebhookEventOut])
def list_events(
    db: DB,
    ctx: Reader,
    page: Paging,
    integration_id: Annotated[str | None, Query(max_length=32)] = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    status: Annotated[Status | None, Query()] = None,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
) -> ListOut[WebhookEventOut]:
    stmt = scoped_select(WebhookEvent, ctx.tenant_id)
    for column, value in (
        (WebhookEvent.integration_id, integration_id),
        (WebhookEvent.type, type),
        (WebhookEvent.status, status),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(WebhookEvent.received_at >= since)
    if until is not None:
        stmt = stmt.where(WebhookEvent.received_at < until)
    with db.read() as session:
        result = paginate(session, stmt, WebhookEvent.id, page.limit, page.starting_after)
        return ListOut.of(result, WebhookEventOut.model_validate)


def _detail(event: WebhookEvent) -> WebhookEventDetail:
    return WebhookEventDetail(
        **WebhookEventOut.model_validate(event).model_dump(),
        payload=event.payload,
        headers=event.headers,
        raw_body_retained=event.raw_body is not None,
    )


@router.get("/{event_id}", response_model=WebhookEventDetail)
def get_event(event_id: str, db: DB, ctx: Reader) -> WebhookEventDetail:
    with db.read() as session:
        return _detail(get_scoped(session, WebhookEvent, ctx.tenant_id, id=event_id))


@router.post("/{event_id}/replay", response_model=WebhookEventDetail)
def replay_event(event_id: str, db: DB, ctx: Manager) -> WebhookEventDetail:
    """Run the event's processing again; handlers are idempotent, nothing doubles."""
    with db.write() as session:
        return _detail(replay(session, ctx.tenant_id, event_id, ctx.now))
