"""``/api/v1/integrations/health`` and ``/api/v1/alerts``.

Included before the integrations router, so ``/integrations/health`` is not read
as an integration id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from clinicbridge.api.deps import DB, Paging, require
from clinicbridge.api.schemas import ListOut
from clinicbridge.core.context import Ctx
from clinicbridge.core.pagination import paginate
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.integrations.health import ClinicHealth, clinic_health
from clinicbridge.integrations.models import Alert

router = APIRouter(tags=["integrations"])
Reader = Annotated[Ctx, require("integrations:read")]


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    subject_type: str
    subject_id: str
    rule: str
    status: str
    details: dict[str, Any]
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None


@router.get("/integrations/health", response_model=ClinicHealth)
def integrations_health(db: DB, ctx: Reader) -> ClinicHealth:
    """Per integration: last success and failure, error rate and p95 latency over 15 min,
    1 h and 24 h, breaker state, inbound webhook failures, and a status
    (``healthy``, ``degraded``, ``down``, ``needs_reauth``, or ``disabled``)."""
    with db.read() as session:
        return clinic_health(session, ctx.tenant_id, ctx.now)


@router.get("/alerts", response_model=ListOut[AlertOut])
def list_alerts(
    db: DB,
    ctx: Reader,
    page: Paging,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = None,
    subject_id: Annotated[str | None, Query(max_length=32)] = None,
) -> ListOut[AlertOut]:
    """Alerts on integrations and webhook endpoints, oldest first; one per incident."""
    stmt = scoped_select(Alert, ctx.tenant_id)
    if status is not None:
        stmt = stmt.where(Alert.status == status)
    if subject_id is not None:
        stmt = stmt.where(Alert.subject_id == subject_id)
    with db.read() as session:
        result = paginate(session, stmt, Alert.id, page.limit, page.starting_after)
        return ListOut.of(result, AlertOut.model_validate)
