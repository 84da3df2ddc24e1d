"""Public routes (no API key) of public_booking."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["public"])
