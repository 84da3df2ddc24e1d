"""What one delivery attempt changes: the attempt row, the delivery, the endpoint's health.

All in one transaction, so an attempt is never recorded without its consequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session

from clinicbridge.audit import diff_of, record_system
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.webhooks.alerts import RULE_FAILING, RULE_GONE, open_alert, resolve_alerts
from clinicbridge.webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint

# An endpoint failing this long (no success in between) is disabled.
FAILING_LIMIT = timedelta(days=5)
Decision = Literal["done", "retry", "dead"]


@dataclass(frozen=True)
class Result:
    """One attempt as seen from here: never the response body."""

    at: datetime
    status_code: int | None
    duration_ms: float
    error: str | None  # an error class: HTTPStatus, ConnectError, ForbiddenDestination...
    retry_after: float | None = None
    forbidden: bool = False

    @property
    def success(self) -> bool:
        return self.error is None and self.status_code is not None

    @property
    def what(self) -> str:
        return f"HTTP {self.status_code}" if self.status_code is not None else str(self.error)


def apply(db: Database, delivery_id: str, result: Result, *, last: bool) -> Decision:
    """Record ``result``; ``last`` says the job has no attempt left after this one."""
    with db.write() as session:
        delivery = session.get(WebhookDelivery, delivery_id)
        # Locked (PostgreSQL): concurrent deliveries to one endpoint disable it only once.
        endpoint = (
            session.get(WebhookEndpoint, delivery.endpoint_id, with_for_update=True)
            if delivery
            else None
        )
        if delivery is None or endpoint is None:
            return "done"  # deleted while we were sending
        session.add(
            WebhookDeliveryAttempt(
                id=new_id("wha"),
                delivery_id=delivery.id,
                attempted_at=result.at,
                status_code=result.status_code,
                duration_ms=result.duration_ms,
                success=result.success,
                error=result.error,
            )
        )
        delivery.attempts += 1
        delivery.last_status_code, delivery.last_error = result.status_code, result.error
        delivery.updated_at = result.at
        decision = _decide(session, delivery, endpoint, result, last)
        delivery.status = {"done": "delivered", "retry": "retrying", "dead": "dead"}[decision]
        if decision == "done":
            delivery.delivered_at = result.at
        return decision


def _decide(
    session: Session,
    delivery: WebhookDelivery,
    endpoint: WebhookEndpoint,
    result: Result,
    last: bool,
) -> Decision:
    if result.success:
        if endpoint.failing_since is not None:
            endpoint.failing_since = None
            resolve_alerts(
                session, tenant_id=endpoint.tenant_id, endpoint_id=endpoint.id, now=result.at
            )
        return "done"
    if result.status_code == 410:
        _disable(session, endpoint, result, RULE_GONE, "the endpoint answered 410 Gone")
        return "dead"
    if endpoint.failing_since is None:
        endpoint.failing_since = result.at
    elif result.at - endpoint.failing_since >= FAILING_LIMIT and endpoint.enabled:
        _disable(session, endpoint, result, RULE_FAILING, "failing for 5 days")
        return "dead"
    return "dead" if result.forbidden or last else "retry"


def _disable(
    session: Session, endpoint: WebhookEndpoint, result: Result, rule: str, reason: str
) -> None:
    if endpoint.enabled:
        before = {"enabled": True, "disabled_reason": endpoint.disabled_reason}
        endpoint.enabled, endpoint.disabled_reason = False, reason
        endpoint.updated_at = result.at
        record_system(
            session,
            endpoint.tenant_id,
            "webhook_endpoint.disable",
            "webhook_endpoint",
            endpoint.id,
            now=result.at,
            actor_id="webhooks",
            diff=diff_of(before, {"enabled": False, "disabled_reason": reason}),
        )
    failing_since = endpoint.failing_since.isoformat() if endpoint.failing_since else None
    details: dict[str, object] = {
        "reason": reason,
        "last_status_code": result.status_code,
        "last_error": result.error,
        "failing_since": failing_since,
    }
    open_alert(
        session,
        tenant_id=endpoint.tenant_id,
        endpoint_id=endpoint.id,
        rule=rule,
        details=details,
        now=result.at,
    )
