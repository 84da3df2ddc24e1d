"""``/api/v1`` routes of the scheduling package (filled in by the scheduling work)."""

from __future__ import annotations

from fastapi import APIRouter

from clinicbridge.api.idempotency import IdempotentRoute

router = APIRouter(tags=["scheduling"], route_class=IdempotentRoute)
