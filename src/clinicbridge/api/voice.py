"""``/api/v1`` routes of the voice package (filled in by the voice work)."""

from __future__ import annotations

from fastapi import APIRouter

from clinicbridge.api.idempotency import IdempotentRoute

router = APIRouter(tags=["voice"], route_class=IdempotentRoute)
