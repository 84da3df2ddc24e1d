"""Reading a clinic's audit events: filters, the patient access log, cursor pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.pagination import Page
from clinicbridge.core.tenancy import scoped_select

PATIENT = "patient"


@dataclass(frozen=True)
class EventFilter:
    """All given criteria must match; ``since`` is inclusive, ``until`` exclusive."""

    actor_type: str | None = None
    actor_id: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    phi: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_events(
    session: Session,
    ctx: Ctx,
    filters: EventFilter,
    *,
    limit: int,
    starting_after: str | None,
) -> Page[AuditEvent]:
    """One page of this clinic's events in chain order; the cursor is an event id."""
    stmt = scoped_select(AuditEvent, ctx.tenant_id)
    for column in ("actor_type", "actor_id", "action", "resource_type", "resource_id", "phi"):
        value = getattr(filters, column)
        if value is not None:
            stmt = stmt.where(getattr(AuditEvent, column) == value)
    if filters.since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditEvent.occurred_at < filters.until)
    if starting_after:
        stmt = stmt.where(AuditEvent.seq > _cursor_seq(session, ctx, starting_after))
    rows = list(session.scalars(stmt.order_by(AuditEvent.seq).limit(limit + 1)))
    return Page(items=rows[:limit], has_more=len(rows) > limit)


def access_log(
    session: Session, ctx: Ctx, patient_id: str, *, limit: int, starting_after: str | None
) -> Page[AuditEvent]:
    """Who touched this patient's record: events about resource ("patient", id)."""
    filters = EventFilter(resource_type=PATIENT, resource_id=patient_id)
    return list_events(session, ctx, filters, limit=limit, starting_after=starting_after)


def _cursor_seq(session: Session, ctx: Ctx, event_id: str) -> int:
    # Pages follow seq (the chain's order), so the cursor id is turned into its seq.
    seq = session.scalar(
        sa.select(AuditEvent.seq).where(
            AuditEvent.tenant_id == ctx.tenant_id, AuditEvent.id == event_id
        )
    )
    if seq is None:
        raise InvalidInputError.one("starting_after", "no such event", "unknown_cursor")
    return seq
