"""``/api/v1`` routes of the bookings package (filled in by the bookings work)."""

from __future__ import annotations

from fastapi import APIRouter

from clinicbridge.api.idempotency import IdempotentRoute

router = APIRouter(tags=["bookings"], route_class=IdempotentRoute)
