"""Integration health: what the call log, the inbox and the audit log say, per integration.

One ``clinic_health`` call runs a fixed handful of aggregate queries for all of a
clinic's integrations (call counts, p95 per window, inbox counts, verification
failures, dead jobs); nothing is loaded row by row.

Status, first rule that matches wins:

``disabled``      the clinic switched the integration off (no alert rules run).
``needs_reauth``  ``integration.status`` is ``needs_reauth`` (a connection test was
                  refused), or the provider's latest 401/403 came after the last
                  successful call.
``down``          this process's circuit breaker is open, or in the last 15 min at
                  least ``DOWN_MIN_CALLS`` calls were made and every one failed.
``degraded``      the 1 h error rate is above 10 %, the breaker is half-open, an
                  inbound event received in the last 24 h failed or died in
                  processing, webhook verification failures spiked (at least
                  ``VERIFICATION_SPIKE`` in 15 min), or the last connection test
                  failed (``integration.status`` is ``error``).
``healthy``       everything else, including an integration with no traffic yet.

The breaker lives in each process (see ``http.breaker``): the API shows its own
view, the alert rules (run by a worker) the worker's.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.tenancy import scoped_select
from clinicbridge.http.breaker import BreakerRegistry, BreakerState, breaker_state
from clinicbridge.http.calllog import RETENTION
from clinicbridge.http.models import HttpCall
from clinicbridge.integrations.models import Integration
from clinicbridge.jobs.models import Job
from clinicbridge.webhooks.models import WebhookEvent

Status = Literal["healthy", "degraded", "down", "needs_reauth", "disabled"]
DEGRADED_ERROR_RATE = 0.10
DOWN_MIN_CALLS = 3
VERIFICATION_SPIKE = 10
VERIFICATION_FAILED = "webhook.verification_failed"
_FAILED_EVENT = ("failed", "dead")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class CallWindow(Frozen):
    calls: int = 0
    failures: int = 0
    error_rate: float | None = None  # None without calls
    p95_ms: float | None = None


class WebhookStats(Frozen):
    received_1h: int = 0
    received_24h: int = 0
    processing_failures_24h: int = 0  # events received in 24 h now failed or dead
    verification_failures_15m: int = 0
    verification_failures_1h: int = 0
    verification_failures_24h: int = 0
    last_received_at: datetime | None = None
    last_verification_failure_at: datetime | None = None


class IntegrationHealth(Frozen):
    integration_id: str
    connector: str
    name: str
    enabled: bool
    status: Status = "healthy"
    reasons: list[str] = []
    last_success_at: datetime | None  # a successful call or a verified inbound event
    last_failure_at: datetime | None  # a failed call or a failed verification
    calls_15m: CallWindow = CallWindow()
    calls_1h: CallWindow = CallWindow()
    calls_24h: CallWindow = CallWindow()
    last_call_success_at: datetime | None = None
    last_call_failure_at: datetime | None = None
    last_auth_failure_at: datetime | None = None  # the provider's latest 401/403
    breaker: BreakerState
    webhooks: WebhookStats


class ClinicHealth(Frozen):
    checked_at: datetime
    dead_jobs: int
    integrations: list[IntegrationHealth]


def _latest(*stamps: datetime | None) -> datetime | None:
    return max((s for s in stamps if s is not None), default=None)


def _p95(session: Session, tenant_id: str, since: datetime, now: datetime) -> dict[str, float]:
    """Nearest-rank p95 per integration in SQL: the first row whose rank reaches 95 %."""
    ranked = (
        sa.select(
            HttpCall.integration,
            HttpCall.duration_ms,
            sa.func.row_number()
            .over(partition_by=HttpCall.integration, order_by=HttpCall.duration_ms)
            .label("rn"),
            sa.func.count().over(partition_by=HttpCall.integration).label("n"),
        )
        .where(
            HttpCall.tenant_id == tenant_id,
            HttpCall.created_at >= since,
            HttpCall.created_at <= now,
        )
        .subquery()
    )
    rows = session.execute(
        sa.select(ranked.c.integration, ranked.c.duration_ms).where(
            ranked.c.rn * 100 >= ranked.c.n * 95, (ranked.c.rn - 1) * 100 < ranked.c.n * 95
        )
    )
    return {integration: float(ms) for integration, ms in rows}


def _window(calls: int, failures: int, p95: float | None = None) -> CallWindow:
    rate = failures / calls if calls else None
    return CallWindow(calls=calls, failures=failures, error_rate=rate, p95_ms=p95)


def _calls(session: Session, tenant_id: str, now: datetime) -> dict[str, dict[str, Any]]:
    """Per integration, the call-log fields of ``IntegrationHealth``."""
    at, failed, count = HttpCall.created_at, sa.not_(HttpCall.success), sa.func.count
    m15, h1, h24 = now - timedelta(minutes=15), now - timedelta(hours=1), now - timedelta(hours=24)
    stmt = (
        sa.select(
            HttpCall.integration,
            *(count().filter(at >= since) for since in (m15, h1, h24)),
            *(count().filter(at >= since, failed) for since in (m15, h1, h24)),
            sa.func.max(at).filter(HttpCall.success),
            sa.func.max(at).filter(failed),
            sa.func.max(at).filter(HttpCall.status.in_((401, 403))),
        )
        .where(HttpCall.tenant_id == tenant_id, at <= now)
        .group_by(HttpCall.integration)
    )
    p95_1h, p95_24h = _p95(session, tenant_id, h1, now), _p95(session, tenant_id, h24, now)
    rows: list[Any] = list(session.execute(stmt))
    return {
        i: {
            "calls_15m": _window(n15, f15),
            "calls_1h": _window(n1, f1, p95_1h.get(i)),
            "calls_24h": _window(n24, f24, p95_24h.get(i)),
            "last_call_success_at": ok,
            "last_call_failure_at": bad,
            "last_auth_failure_at": auth,
        }
        for i, n15, n1, n24, f15, f1, f24, ok, bad, auth in rows
    }


def _webhooks(session: Session, tenant_id: str, now: datetime) -> dict[str, WebhookStats]:
    at, count = WebhookEvent.received_at, sa.func.count
    h1, h24 = now - timedelta(hours=1), now - timedelta(hours=24)
    events = session.execute(
        sa.select(
            WebhookEvent.integration_id,
            count().filter(at >= h1),
            count().filter(at >= h24),
            count().filter(at >= h24, WebhookEvent.status.in_(_FAILED_EVENT)),
            sa.func.max(at),
        )
        .where(WebhookEvent.tenant_id == tenant_id, at >= now - RETENTION, at <= now)
        .group_by(WebhookEvent.integration_id)
    )
    found = {
        i: WebhookStats(
            received_1h=a, received_24h=b, processing_failures_24h=c, last_received_at=d
        )
        for i, a, b, c, d in events
    }
    when = AuditEvent.occurred_at
    rejected = session.execute(
        sa.select(
            AuditEvent.resource_id,
            count().filter(when >= now - timedelta(minutes=15)),
            count().filter(when >= h1),
            count(),
            sa.func.max(when),
        )
        .where(
            AuditEvent.tenant_id == tenant_id,
            AuditEvent.resource_type == "integration",
            AuditEvent.action == VERIFICATION_FAILED,
            when >= h24,
            when <= now,
        )
        .group_by(AuditEvent.resource_id)
    )
    for integration_id, m15_n, h1_n, h24_n, last in rejected:
        if integration_id is not None:
            found[integration_id] = (found.get(integration_id) or WebhookStats()).model_copy(
                update={
                    "verification_failures_15m": m15_n,
                    "verification_failures_1h": h1_n,
                    "verification_failures_24h": h24_n,
                    "last_verification_failure_at": last,
                }
            )
    return found


def dead_jobs(session: Session, tenant_id: str) -> int:
    dead = sa.select(sa.func.count()).where(Job.tenant_id == tenant_id, Job.state == "dead")
    return int(session.scalar(dead) or 0)


def classify(row: Integration, h: IntegrationHealth) -> tuple[Status, list[str]]:
    """The status rules of the module docstring, with the reasons that matched."""
    if not row.enabled:
        return "disabled", ["the integration is disabled"]
    auth = h.last_auth_failure_at
    if row.status == "needs_reauth" or (
        auth is not None and (h.last_call_success_at is None or auth > h.last_call_success_at)
    ):
        return "needs_reauth", ["the provider refused the credentials"]
    m15 = h.calls_15m
    if h.breaker == "open":
        return "down", ["the circuit breaker is open"]
    if m15.calls >= DOWN_MIN_CALLS and m15.failures == m15.calls:
        return "down", [f"all {m15.calls} calls in the last 15 min failed"]
    reasons = []
    if (h.calls_1h.error_rate or 0.0) > DEGRADED_ERROR_RATE:
        reasons.append(f"{h.calls_1h.error_rate:.0%} of calls failed in the last hour")
    if h.breaker == "half_open":
        reasons.append("the circuit breaker is testing the provider")
    if h.webhooks.processing_failures_24h:
        reasons.append(
            f"inbound events failed processing in 24 h: {h.webhooks.processing_failures_24h}"
        )
    if h.webhooks.verification_failures_15m >= VERIFICATION_SPIKE:
        reasons.append("many webhook signatures failed verification")
    if row.status == "error":
        reasons.append("the last connection test failed")
    return ("degraded" if reasons else "healthy"), reasons


def clinic_health(
    session: Session,
    tenant_id: str,
    now: datetime,
    *,
    breakers: BreakerRegistry | None = None,
    only: Iterable[str] | None = None,
) -> ClinicHealth:
    """Health of every integration of the clinic (or of the ``only`` ids)."""
    stmt = scoped_select(Integration, tenant_id).order_by(Integration.id)
    if only is not None:
        stmt = stmt.where(Integration.id.in_(list(only)))
    rows = session.scalars(stmt).all()
    calls = _calls(session, tenant_id, now)
    hooks = _webhooks(session, tenant_id, now)
    result = []
    for row in rows:
        c, web = calls.get(row.id, {}), hooks.get(row.id, WebhookStats())
        draft = IntegrationHealth(
            integration_id=row.id,
            connector=row.connector,
            name=row.name,
            enabled=row.enabled,
            last_success_at=_latest(c.get("last_call_success_at"), web.last_received_at),
            last_failure_at=_latest(
                c.get("last_call_failure_at"), web.last_verification_failure_at
            ),
            breaker=breaker_state(row.tenant_id, row.id, now=now, registry=breakers),
            webhooks=web,
            **c,
        )
        status, reasons = classify(row, draft)
        result.append(draft.model_copy(update={"status": status, "reasons": reasons}))
    return ClinicHealth(
        checked_at=now, dead_jobs=dead_jobs(session, tenant_id), integrations=result
    )


class HourBucket(Frozen):
    calls: int = 0
    failures: int = 0
    avg_ms: float | None = None


def hourly(session: Session, tenant_id: str, now: datetime) -> dict[str, list[HourBucket]]:
    """The last 24 h of calls per integration, in 24 hourly buckets (oldest first)."""
    start, at = now - timedelta(hours=24), HttpCall.created_at
    bucket = sa.case(*((at >= start + timedelta(hours=i), i) for i in range(23, 0, -1)), else_=0)
    # Grouped in an outer query: PostgreSQL cannot match a GROUP BY on a CASE with
    # bound parameters against the same CASE in the select list.
    inner = (
        sa.select(
            HttpCall.integration, bucket.label("bucket"), HttpCall.duration_ms, HttpCall.success
        )
        .where(HttpCall.tenant_id == tenant_id, at >= start, at <= now)
        .subquery()
    )
    c = inner.c
    rows: list[Any] = list(
        session.execute(
            sa.select(
                c.integration,
                c.bucket,
                sa.func.count(),
                sa.func.count().filter(sa.not_(c.success)),
                sa.func.avg(c.duration_ms),
            ).group_by(c.integration, c.bucket)
        )
    )
    series: dict[str, list[HourBucket]] = {}
    for integration, index, calls, failures, avg in rows:
        buckets = series.setdefault(integration, [HourBucket()] * 24)
        avg_ms = None if avg is None else float(avg)
        buckets[int(index)] = HourBucket(calls=calls, failures=failures, avg_ms=avg_ms)
    return series
