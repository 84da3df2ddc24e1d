"""Cursor pagination: ``limit`` and ``starting_after`` over sortable ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


@dataclass
class Page(Generic[T]):
    items: list[T]
    has_more: bool

    @property
    def next_cursor(self) -> str | None:
        return getattr(self.items[-1], "id", None) if self.has_more and self.items else None


def paginate(
    session: Session,
    stmt: sa.Select[T],
    id_column: InstrumentedAttribute[Any],
    limit: int,
    starting_after: str | None,
) -> Page[T]:
    """One page of ``stmt`` ordered by id; fetches one extra row to learn ``has_more``."""
    if starting_after:
        stmt = stmt.where(id_column > starting_after)
    rows = list(session.scalars(stmt.order_by(id_column).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)
