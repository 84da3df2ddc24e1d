"""Calendar alerts. ``calendar_reauth_required``: a practitioner's calendar authorization
was revoked (the token endpoint answered ``invalid_grant``), so their outside calendar no
longer blocks slots until someone authorizes again. ``calendar_sync_failing``: a
connection's sync failed ``FAILING_AFTER`` rounds in a row (subject: the connection).

One open alert per account (the unique index on open alerts), opened with the
``integration.unhealthy`` outbound event and resolved, with ``integration.recovered``,
by a successful authorization. Like ``credentials_rejected`` in ``integrations.alerts``,
but per practitioner: the clinic's OAuth app itself is fine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.integrations.alerts import RECOVERED, UNHEALTHY, event_data, open_or_touch
from clinicbridge.integrations.models import Alert
from clinicbridge.webhooks.outbound import publish

SUBJECT_TYPE = "calendar_account"
RULE = "calendar_reauth_required"
# A connection whose sync kept failing (FAILING_AFTER rounds in a row, 30 minutes of
# polling): its calendar no longer blocks slots; resolved by the next successful round.
FAILING_RULE, FAILING_SUBJECT, FAILING_AFTER = "calendar_sync_failing", "calendar_connection", 6
# A booking was written although the provider's calendar could not be checked (policy
# "allow"); resolved by the connection's next successful sync (conflicts then show).
UNVERIFIED_RULE = "calendar_unverified"


def open_reauth(
    session: Session, *, tenant_id: str, account_id: str, details: dict[str, Any], now: datetime
) -> Alert | None:
    """Open the alert (or touch the open one); returns it only when newly opened."""
    return open_alert(
        session, tenant_id=tenant_id, subject_type=SUBJECT_TYPE, subject_id=account_id,
        rule=RULE, details=details, now=now,
    )  # fmt: skip


def open_alert(
    session: Session,
    *,
    tenant_id: str,
    subject_type: str,
    subject_id: str,
    rule: str,
    details: dict[str, Any],
    now: datetime,
) -> Alert | None:
    """Open (audited, announced) or touch the open one; returns it only when newly opened."""
    alert = open_or_touch(session, tenant_id, subject_type, subject_id, rule, details, now)
    if alert is not None:
        _announce(session, alert, now)
    return alert


def resolve(
    session: Session, *, tenant_id: str, subject_id: str, now: datetime, rule: str = RULE
) -> int:
    """Resolve the subject's open alert of ``rule``; returns how many (0 or 1)."""
    alerts = session.scalars(
        sa.select(Alert).where(
            Alert.tenant_id == tenant_id,
            Alert.subject_id == subject_id,
            Alert.rule == rule,
            Alert.status == "open",
        )
    ).all()
    for alert in alerts:
        alert.status, alert.resolved_at, alert.last_seen_at = "resolved", now, now
        record_system(
            session, tenant_id, "alert.resolve", alert.subject_type, subject_id, now=now,
            diff={"rule": rule},
        )  # fmt: skip
        _announce(session, alert, now)
    return len(alerts)


def _announce(session: Session, alert: Alert, now: datetime) -> None:
    session.flush()
    publish(
        session,
        tenant_id=alert.tenant_id,
        event_type=UNHEALTHY if alert.status == "open" else RECOVERED,
        data=event_data(alert, None),
        now=now,
    )
