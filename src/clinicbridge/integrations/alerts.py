"""Alert rules on integrations: one alert per incident, resolved on recovery.

Every minute a periodic job evaluates every clinic (``evaluate_clinic``):

``error_spike``                 opens at a 1 h error rate of 25 % or more over at
                                least 5 calls; resolves below 10 % (the band between
                                keeps a flapping rate from opening it again and again).
``provider_down``               opens when health says ``down``; resolves once the
                                breaker is not open and the latest call succeeded (or
                                none failed in 15 min).
``credentials_rejected``        open while health says ``needs_reauth``.
``webhook_verification_spike``  opens at ``VERIFICATION_SPIKE`` failed verifications in
                                15 min; resolves below a third of that.
``dead_jobs``                   per clinic (subject ``tenant``): open while it has dead jobs.

Opening is an INSERT guarded by the unique index on open alerts, so two evaluations
racing still open one alert and publish one ``integration.unhealthy`` event; while
the incident lasts the alert's ``last_seen_at`` and ``details`` are refreshed.
Resolving is a guarded UPDATE that publishes ``integration.recovered`` once. A
disabled or removed integration's alerts resolve with it. Only rules named here
are touched: webhook-endpoint alerts belong to ``webhooks.alerts``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.audit.diff import jsonable
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.http.breaker import BreakerRegistry
from clinicbridge.integrations.health import VERIFICATION_SPIKE, IntegrationHealth, clinic_health
from clinicbridge.integrations.models import Alert, Integration
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, PeriodicTask, registry

log = logging.getLogger("clinicbridge.alerts")
EVALUATE_KIND = "integrations.evaluate_alerts"
UNHEALTHY, RECOVERED = "integration.unhealthy", "integration.recovered"
SPIKE_CALLS, SPIKE_OPEN, SPIKE_CLEAR = 5, 0.25, 0.10
_OPEN = sa.text("status = 'open'")  # spelled as the partial index uq_alerts_open's predicate

Check = Callable[[IntegrationHealth], bool]


@dataclass(frozen=True)
class Rule:
    name: str
    fires: Check
    persists: Check  # while an alert is open: does the incident go on?
    details: Callable[[IntegrationHealth], dict[str, Any]]


def _rate(h: IntegrationHealth) -> float:
    return h.calls_1h.error_rate or 0.0


def _recovered(h: IntegrationHealth) -> bool:
    last_ok, last_bad = h.last_call_success_at, h.last_call_failure_at
    latest_ok = last_ok is not None and (last_bad is None or last_ok > last_bad)
    return h.breaker != "open" and (latest_ok or h.calls_15m.failures == 0)


def _calls(h: IntegrationHealth) -> dict[str, Any]:
    return {"calls_1h": h.calls_1h.model_dump(), "calls_15m": h.calls_15m.model_dump()}


RULES: tuple[Rule, ...] = (
    Rule(
        "error_spike",
        lambda h: h.calls_1h.calls >= SPIKE_CALLS and _rate(h) >= SPIKE_OPEN,
        lambda h: h.calls_1h.calls >= SPIKE_CALLS and _rate(h) >= SPIKE_CLEAR,
        _calls,
    ),
    Rule(
        "provider_down",
        lambda h: h.status == "down",
        lambda h: h.status == "down" or not _recovered(h),
        lambda h: {"breaker": h.breaker, "reasons": h.reasons, **_calls(h)},
    ),
    Rule(
        "credentials_rejected",
        lambda h: h.status == "needs_reauth",
        lambda h: h.status == "needs_reauth",
        lambda h: {"last_auth_failure_at": h.last_auth_failure_at, "reasons": h.reasons},
    ),
    Rule(
        "webhook_verification_spike",
        lambda h: h.webhooks.verification_failures_15m >= VERIFICATION_SPIKE,
        lambda h: h.webhooks.verification_failures_15m * 3 >= VERIFICATION_SPIKE,
        lambda h: {"verification_failures_15m": h.webhooks.verification_failures_15m},
    ),
)
DEAD_JOBS = "dead_jobs"
RULE_NAMES = (*(r.name for r in RULES), DEAD_JOBS)
Key = tuple[str, str]  # (subject_id, rule)


@dataclass
class Outcome:
    opened: list[str]
    resolved: list[str]


def _wanted(
    healths: list[IntegrationHealth], dead: int, tenant_id: str, open_keys: set[Key]
) -> dict[Key, tuple[str, dict[str, Any]]]:
    """Alerts that should be open now: (subject, rule) → (subject type, details)."""
    wanted: dict[Key, tuple[str, dict[str, Any]]] = {}
    for h in healths:
        if not h.enabled:
            continue
        for rule in RULES:
            key = (h.integration_id, rule.name)
            if (rule.persists if key in open_keys else rule.fires)(h):
                wanted[key] = ("integration", jsonable(rule.details(h)))
    if dead:
        wanted[(tenant_id, DEAD_JOBS)] = ("tenant", {"dead_jobs": dead})
    return wanted


def evaluate_clinic(
    db: Database, tenant_id: str, now: datetime, *, breakers: BreakerRegistry | None = None
) -> Outcome:
    """Open, refresh and resolve the clinic's integration alerts; see the module docstring."""
    with db.read() as session:
        report = clinic_health(session, tenant_id, now, breakers=breakers)
        open_keys = _open_keys(session, tenant_id)
    wanted = _wanted(report.integrations, report.dead_jobs, tenant_id, set(open_keys))
    outcome = Outcome([], [])
    if not wanted and not open_keys:
        return outcome  # the common case writes nothing
    names = {h.integration_id: h for h in report.integrations}
    with db.write() as session:
        for (subject_id, rule), (subject_type, details) in wanted.items():
            alert = open_or_touch(session, tenant_id, subject_type, subject_id, rule, details, now)
            if alert is not None:
                outcome.opened.append(alert.id)
                _announce(session, alert, names.get(subject_id), now)
        for key, alert_id in open_keys.items():
            if key not in wanted:
                alert = _resolve(session, alert_id, now)
                if alert is not None:
                    outcome.resolved.append(alert.id)
                    _announce(session, alert, names.get(alert.subject_id), now)
    return outcome


def _open_keys(session: Session, tenant_id: str) -> dict[Key, str]:
    rows = session.execute(
        sa.select(Alert.subject_id, Alert.rule, Alert.id).where(
            Alert.tenant_id == tenant_id, Alert.status == "open", Alert.rule.in_(RULE_NAMES)
        )
    )
    return {(subject, rule): alert_id for subject, rule, alert_id in rows}


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Alert)


def open_or_touch(
    session: Session,
    tenant_id: str,
    subject_type: str,
    subject_id: str,
    rule: str,
    details: dict[str, Any],
    now: datetime,
) -> Alert | None:
    """Insert the alert unless one is open (then refresh it); returns it only if new.
    Safe against a concurrent opener: the unique index on open alerts decides, and the
    opening is audited (``alert.open``). The caller announces it."""
    values = {
        "id": new_id("alr"),
        "tenant_id": tenant_id,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "rule": rule,
        "status": "open",
        "details": details,
        "opened_at": now,
        "last_seen_at": now,
    }
    inserted = session.execute(
        _insert(session)
        .values(values)
        .on_conflict_do_nothing(
            index_elements=["tenant_id", "subject_id", "rule"], index_where=_OPEN
        )
        .returning(Alert.id)
    ).scalar()
    if inserted is None:
        session.execute(
            sa.update(Alert)
            .where(
                Alert.tenant_id == tenant_id,
                Alert.subject_id == subject_id,
                Alert.rule == rule,
                Alert.status == "open",
            )
            .values(last_seen_at=now, details=details)
        )
        return None
    record_system(
        session, tenant_id, "alert.open", subject_type, subject_id, now=now, diff={"rule": rule}
    )
    return session.get(Alert, inserted)


def _resolve(session: Session, alert_id: str, now: datetime) -> Alert | None:
    resolved = session.execute(
        sa.update(Alert)
        .where(Alert.id == alert_id, Alert.status == "open")
        .values(status="resolved", resolved_at=now, last_seen_at=now)
        .returning(Alert.id)
    ).scalar()
    if resolved is None:
        return None  # someone else resolved it first: they announced it
    alert = session.get(Alert, alert_id, populate_existing=True)
    assert alert is not None
    record_system(
        session,
        alert.tenant_id,
        "alert.resolve",
        alert.subject_type,
        alert.subject_id,
        now=now,
        diff={"rule": alert.rule},
    )
    return alert


def event_data(alert: Alert, integration: IntegrationHealth | None) -> dict[str, Any]:
    """The outbound event's ``data``: the alert, and which integration (never credentials)."""
    return {
        "alert": {
            "id": alert.id,
            "rule": alert.rule,
            "status": alert.status,
            "subject_type": alert.subject_type,
            "subject_id": alert.subject_id,
            "details": alert.details,
            "opened_at": alert.opened_at,
            "resolved_at": alert.resolved_at,
        },
        "integration": None
        if integration is None
        else {
            "id": integration.integration_id,
            "connector": integration.connector,
            "name": integration.name,
            "status": integration.status,
        },
    }


def _announce(
    session: Session, alert: Alert, integration: IntegrationHealth | None, now: datetime
) -> None:
    """Publish through outbound webhooks in this transaction, when that package exists."""
    try:
        from clinicbridge.webhooks.outbound import publish
    except ImportError:  # outbound webhooks not installed yet: the alert still shows
        return
    publish(
        session,
        tenant_id=alert.tenant_id,
        event_type=UNHEALTHY if alert.status == "open" else RECOVERED,
        data=event_data(alert, integration),
        now=now,
    )


def clinics_to_check(session: Session) -> list[str]:
    """Clinics with an integration, an open alert of ours or a dead job."""
    union = sa.union(
        sa.select(Integration.tenant_id),
        sa.select(Alert.tenant_id).where(Alert.status == "open", Alert.rule.in_(RULE_NAMES)),
        sa.select(Job.tenant_id).where(Job.state == "dead", Job.tenant_id.is_not(None)),
    ).subquery()
    return sorted(str(t) for t in session.scalars(sa.select(union.c[0])))


# One attempt: the next tick, a minute later, is the retry.
@registry.handler(EVALUATE_KIND, max_attempts=1)
def evaluate_all(job: JobContext) -> None:
    now = job.now()
    with job.db.read() as session:
        tenants = clinics_to_check(session)
    failed = 0
    for tenant_id in tenants:
        try:
            evaluate_clinic(job.db, tenant_id, now)
        except Exception:  # one clinic's failure must not hide the others' alerts
            failed += 1
            log.exception("alert evaluation failed", extra={"fields": {"tenant_id": tenant_id}})
    if failed:
        raise RuntimeError(f"alert evaluation failed for {failed} clinic(s)")


registry.periodic(PeriodicTask(EVALUATE_KIND, "* * * * *", EVALUATE_KIND))
