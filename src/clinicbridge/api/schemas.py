"""Envelopes shared by every router."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class ListOut(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool = False
    next_cursor: str | None = None
