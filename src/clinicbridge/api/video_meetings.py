"""``GET /api/v1/bookings/{booking_id}/video``: a video visit's meeting and its links.

The links open the meeting (the patient's joins it, the provider's hosts it): they are
shown to staff who may read bookings, never logged, and stored only sealed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel

from clinicbridge.api.deps import DB, require
from clinicbridge.core.context import Ctx
from clinicbridge.vault.shared import shared_vault
from clinicbridge.video import meetings

router = APIRouter(tags=["bookings"])
Reader = Annotated[Ctx, require("bookings:read")]


class VideoMeetingOut(BaseModel):
    booking_id: str
    connector: str
    status: str  # ready, failed, deleted
    join_url: str | None
    host_url: str | None
    starts_at: datetime
    ends_at: datetime
    last_error: str | None


@router.get("/bookings/{booking_id}/video", response_model=VideoMeetingOut)
def get_video(booking_id: str, request: Request, db: DB, ctx: Reader) -> VideoMeetingOut:
    vault = shared_vault(db, request.app.state.settings.master_key_file)
    with db.read() as session:
        row = meetings.for_booking(session, ctx.tenant_id, booking_id)
        found = meetings.links(session, vault, booking_id) or {}
        return VideoMeetingOut(
            booking_id=row.booking_id,
            connector=row.connector,
            status=row.status,
            join_url=found.get("join_url"),
            host_url=found.get("host_url") or None,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            last_error=row.last_error,
        )
