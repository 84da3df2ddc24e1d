"""Envelopes shared by every router."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from pydantic import BaseModel

from clinicbridge.core.pagination import Page

T = TypeVar("T")
R = TypeVar("R")


class ListOut(BaseModel, Generic[T]):
    data: list[T]
    has_more: bool = False
    next_cursor: str | None = None

    @classmethod
    def of(cls, page: Page[R], item: Callable[[R], T]) -> ListOut[T]:
        """One page of rows as the API shows it, each row turned into ``item(row)``."""
        return ListOut[T](
            data=[item(row) for row in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )
