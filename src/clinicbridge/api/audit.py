"""``/api/v1/audit-events`` and a patient's access log: reading the audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.schemas import ListOut
from clinicbridge.audit import query
from clinicbridge.audit.models import AuditEvent
from clinicbridge.audit.schemas import AuditEventOut
from clinicbridge.core.context import ActorType, Ctx
from clinicbridge.core.pagination import Page

router = APIRouter(tags=["audit"])
Reader = Annotated[Ctx, require("audit:read")]
Text64 = Annotated[str | None, Query(min_length=1, max_length=64)]


def _filters(
    actor_type: Annotated[ActorType | None, Query()] = None,
    actor_id: Text64 = None,
    action: Text64 = None,
    resource_type: Text64 = None,
    resource_id: Text64 = None,
    phi: Annotated[bool | None, Query()] = None,
    since: Annotated[AwareDatetime | None, Query(description="Inclusive; with a zone.")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Exclusive; with a zone.")] = None,
) -> query.EventFilter:
    return query.EventFilter(
        actor_type, actor_id, action, resource_type, resource_id, phi, since, until
    )


def _out(page: Page[AuditEvent]) -> ListOut[AuditEventOut]:
    return ListOut.of(page, AuditEventOut.model_validate)


@router.get("/audit-events", response_model=ListOut[AuditEventOut])
def list_audit_events(
    db: DB,
    ctx: Reader,
    page: Paging,
    filters: Annotated[query.EventFilter, Depends(_filters)],
) -> ListOut[AuditEventOut]:
    """This clinic's audit events in the order they were recorded."""
    with db.read() as session:
        return _out(
            query.list_events(
                session, ctx, filters, limit=page.limit, starting_after=page.starting_after
            )
        )


@router.get("/patients/{patient_id}/access-log", response_model=ListOut[AuditEventOut])
def patient_access_log(
    patient_id: Annotated[str, Path(max_length=64)], db: DB, ctx: Reader, page: Paging
) -> ListOut[AuditEventOut]:
    """Who looked at or changed this patient's record, oldest first."""
    with db.read() as session:
        return _out(
            query.access_log(
                session, ctx, patient_id, limit=page.limit, starting_after=page.starting_after
            )
        )
