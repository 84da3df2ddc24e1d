"""Public routes (no API key) of voice_inbox."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["public"])
