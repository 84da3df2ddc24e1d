"""Alerts on webhook endpoints: one open alert per (endpoint, rule), resolved on recovery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clinicbridge.core.ids import new_id
from clinicbridge.integrations.models import Alert

SUBJECT_TYPE = "webhook_endpoint"
RULE_FAILING = "endpoint_failing"
RULE_GONE = "endpoint_gone"


def open_alert(
    session: Session,
    *,
    tenant_id: str,
    endpoint_id: str,
    rule: str,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """Open the alert, or touch the one already open (no alert storms)."""
    existing = session.scalar(
        sa.select(Alert).where(
            Alert.tenant_id == tenant_id,
            Alert.subject_id == endpoint_id,
            Alert.rule == rule,
            Alert.status == "open",
        )
    )
    if existing is not None:
        existing.last_seen_at, existing.details = now, details
        return
    alert = Alert(
        id=new_id("alr"),
        tenant_id=tenant_id,
        subject_type=SUBJECT_TYPE,
        subject_id=endpoint_id,
        rule=rule,
        status="open",
        details=details,
        opened_at=now,
        last_seen_at=now,
    )
    try:
        with session.begin_nested():
            session.add(alert)
    except IntegrityError:
        pass  # a concurrent delivery opened it first: one open alert is the point


def resolve_alerts(session: Session, *, tenant_id: str, endpoint_id: str, now: datetime) -> int:
    """Resolve every open alert of the endpoint; returns how many."""
    result = session.execute(
        sa.update(Alert)
        .where(
            Alert.tenant_id == tenant_id,
            Alert.subject_type == SUBJECT_TYPE,
            Alert.subject_id == endpoint_id,
            Alert.status == "open",
        )
        .values(status="resolved", resolved_at=now, last_seen_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
