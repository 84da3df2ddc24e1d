"""``/api/v1/providers/{provider_id}/ical-feeds``: a provider's secret iCalendar feeds.

The token (and so the feed's URL) is in the answer to the POST only; listing shows
the feeds without it. DELETE revokes: the URL answers 404 from then on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from clinicbridge.api.deps import DB, require
from clinicbridge.api.idempotency import IdempotentRoute
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.scheduling import ical

router = APIRouter(tags=["scheduling"], route_class=IdempotentRoute)
Reader = Annotated[Ctx, require("schedule:read")]
Writer = Annotated[Ctx, require("schedule:write")]
FEEDS = "/providers/{provider_id}/ical-feeds"


class IcalFeedOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    provider_id: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class IcalFeedCreated(BaseModel):
    id: str
    provider_id: str
    url: str
    token: str
    created_at: datetime


def feed_url(request: Request, token: str) -> str:
    return f"{request.app.state.settings.public_base_url}/ical/{token}.ics"


@router.post(FEEDS, status_code=201, response_model=IcalFeedCreated)
def create_feed(provider_id: str, request: Request, db: DB, ctx: Writer) -> IcalFeedCreated:
    """A new feed; its token is shown in this answer only."""
    with db.write() as session:
        feed, token = ical.create_feed(session, ctx, provider_id)
        return IcalFeedCreated(
            id=feed.id,
            provider_id=feed.provider_id,
            url=feed_url(request, token),
            token=token,
            created_at=feed.created_at,
        )


@router.get(FEEDS, response_model=ListOut[IcalFeedOut])
def list_feeds(provider_id: str, db: DB, ctx: Reader) -> ListOut[IcalFeedOut]:
    with db.read() as session:
        feeds = ical.list_feeds(session, ctx, provider_id)
        return ListOut(data=[IcalFeedOut.model_validate(f) for f in feeds])


@router.delete(FEEDS + "/{feed_id}", status_code=204)
def revoke_feed(provider_id: str, feed_id: str, db: DB, ctx: Writer) -> Response:
    with db.write() as session:
        ical.revoke_feed(session, ctx, provider_id, feed_id)
    return Response(status_code=204)
