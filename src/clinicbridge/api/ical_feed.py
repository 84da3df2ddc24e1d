"""``GET /ical/{token}.ics``: a provider's bookings as an iCalendar feed.

No API key: the secret token in the path is the credential. An unknown or revoked
token is answered like any other missing resource (404 problem+json), so a probe
learns nothing. Answers may be cached privately for five minutes and carry an ETag.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import anyio
from fastapi import APIRouter, Request, Response

from clinicbridge.api.deps import clock_of, db_of
from clinicbridge.api.problems import http_problem, problem_response
from clinicbridge.db.engine import Database
from clinicbridge.scheduling import ical

router = APIRouter(tags=["public"])
CACHE_CONTROL = "private, max-age=300"


@router.get("/ical/{token}.ics", summary="A provider's iCalendar feed", response_model=None)
async def ical_feed(token: str, request: Request) -> Response:
    body = await anyio.to_thread.run_sync(_calendar, db_of(request), token, clock_of(request).now())
    if body is None:
        return problem_response(http_problem(404), getattr(request.state, "request_id", None))
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=ical.CONTENT_TYPE, headers=headers)


def _calendar(db: Database, token: str, now: datetime) -> bytes | None:
    # A write session: a feed that shows patient names records the PHI read.
    with db.write() as session:
        return ical.feed_calendar(session, token, now)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
