"""Public routes (no API key) of ical_feed."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["public"])
