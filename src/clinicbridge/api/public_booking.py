"""Public routes (no API key) of a clinic's website: services, availability, bookings.

``/public/{clinic_slug}/...`` answers no patient data, ever (see scheduling/public.py).
An unknown clinic is a plain 404. Every request counts against a limit per client
IP and clinic (bookings: 10 per 10 minutes; reads: 300 per 5 minutes), answered
429 with ``Retry-After``. The client IP is the connection's peer as the server
reports it; behind a reverse proxy, uvicorn puts the forwarded address there for
the proxies it trusts (``FORWARDED_ALLOW_IPS``), as for every other route.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from clinicbridge.api.deps import DB, clock_of
from clinicbridge.api.problems import http_problem, problem_response
from clinicbridge.scheduling import prechecks, public
from clinicbridge.scheduling.public import PublicBookingIn, WindowLimiter

router = APIRouter(prefix="/public/{clinic_slug}", tags=["public"])

BOOKING_LIMIT = (10, 600.0)  # requests, seconds: per client IP and clinic
READ_LIMIT = (300, 300.0)
_NO_STORE = {"Cache-Control": "no-store"}


class PublicLimits:
    def __init__(self) -> None:
        self.bookings = WindowLimiter(*BOOKING_LIMIT)
        self.reads = WindowLimiter(*READ_LIMIT)


def limits_of(request: Request) -> PublicLimits:
    state = request.app.state
    if not hasattr(state, "public_limits"):
        state.public_limits = PublicLimits()
    limits: PublicLimits = state.public_limits
    return limits


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _limited(request: Request, limiter: WindowLimiter, clinic_slug: str) -> Response | None:
    """A 429 when this client has used up its requests to this clinic; else None."""
    key = f"{clinic_slug}|{public.client_key(_ip(request))}"
    wait = limiter.hit(key, clock_of(request).now().timestamp())
    if wait is None:
        return None
    request_id = getattr(request.state, "request_id", None)
    return problem_response(
        http_problem(429), request_id, {"Retry-After": str(math.ceil(wait)), **_NO_STORE}
    )


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
    )


@router.get(
    "/services", response_model=public.PublicServicesOut, summary="Services a clinic offers online"
)
def list_services(clinic_slug: str, request: Request, db: DB) -> Response:
    """Active public services with their providers (id and name)."""
    refused = _limited(request, limits_of(request).reads, clinic_slug)
    if refused is not None:
        return refused
    with db.read() as session:
        tenant = public.public_clinic(session, clinic_slug)
        return _json({"data": public.list_services(session, tenant.id)})


@router.get(
    "/availability", response_model=public.PublicSlotsOut, summary="Free times of a public service"
)
def get_availability(
    clinic_slug: str,
    request: Request,
    db: DB,
    service_id: Annotated[str, Query(min_length=1, max_length=32)],
    start: Annotated[str, Query(alias="from", min_length=10, max_length=40)],
    end: Annotated[str, Query(alias="to", min_length=10, max_length=40)],
    provider_id: Annotated[str, Query(min_length=1, max_length=32)] = "any",
    tz: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int | None, Query(ge=1, le=5000)] = None,
) -> Response:
    """As ``GET /api/v1/availability``, for public services, at most 31 days per request."""
    refused = _limited(request, limits_of(request).reads, clinic_slug)
    if refused is not None:
        return refused
    with db.read() as session:
        tenant = public.public_clinic(session, clinic_slug)
        slots = public.public_slots(
            session,
            tenant,
            service_id=service_id,
            provider_id=provider_id,
            start=start,
            end=end,
            now=clock_of(request).now(),
            tz=tz,
            limit=limit,
        )
    return _json({"data": slots})


@router.post(
    "/bookings",
    status_code=201,
    response_model=public.PublicBookingOut,
    summary="Book a public service",
)
def create_booking(clinic_slug: str, body: PublicBookingIn, request: Request, db: DB) -> Response:
    """Finds or adds the patient and books. Answers the confirmation code and times only;
    a taken time is 409 with ``next_available``."""
    refused = _limited(request, limits_of(request).bookings, clinic_slug)
    if refused is not None:
        return refused
    now = clock_of(request).now()
    request_id = getattr(request.state, "request_id", None)
    with db.read() as session:
        tenant_id = public.public_clinic(session, clinic_slug).id
    ctx = public.public_ctx(tenant_id, now, request_id, _ip(request))
    settings = request.app.state.settings
    chosen = prechecks.run(
        db, settings, tenant_id, body.service_id, body.provider_id, body.start, now=now
    )
    if chosen and chosen != body.provider_id:  # "any": the provider that was checked
        body = body.model_copy(update={"provider_id": chosen})
    with db.write() as session:
        answer = public.book(session, ctx, body)
    return JSONResponse(answer, status_code=201, headers=_NO_STORE)
