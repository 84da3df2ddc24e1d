"""``/api/v1`` routes of the patients package (filled in by the patients work)."""

from __future__ import annotations

from fastapi import APIRouter

from clinicbridge.api.idempotency import IdempotentRoute

router = APIRouter(tags=["patients"], route_class=IdempotentRoute)
