"""Integration health (call log, inbox, audit) and alert rules: once per incident, resolved."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.core.clock import SystemClock
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.http.breaker import BreakerPolicy, BreakerRegistry
from clinicbridge.http.models import HttpCall
from clinicbridge.integrations import alerts
from clinicbridge.integrations.health import IntegrationHealth, clinic_health
from clinicbridge.integrations.models import Alert, Integration
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.conftest import Clinic, add_key
from tests.integration.test_webhook_inbox import stripe_event, stripe_headers

STRIPE = {"api_key": "sk_test_51Health000000000000000000000", "webhook_secret": "whsec_health"}


def _integration(client: TestClient, clinic: Clinic, name: str = "Stripe") -> str:
    created = client.post(
        "/api/v1/integrations",
        headers=clinic.headers,
        json={"connector": "stripe", "name": name, "credentials": STRIPE, "settings": {}},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _calls(
    db: Database,
    tenant_id: str,
    integration_id: str,
    at: datetime,
    *,
    ms: list[float],
    failed: int = 0,
    status: int | None = None,
) -> None:
    """Call-log rows at ``at``; the first ``failed`` of them failed (with ``status``)."""
    with db.write() as session:
        for n, duration in enumerate(ms):
            bad = n < failed
            session.add(
                HttpCall(
                    id=new_id("hc"),
                    tenant_id=tenant_id,
                    integration=integration_id,
                    operation="balance.retrieve",
                    method="GET",
                    host="api.stripe.com",
                    status=(status or 503) if bad else 200,
                    duration_ms=duration,
                    success=not bad,
                    error_class="HTTPStatusError" if bad else None,
                    attempt=1,
                    created_at=at + timedelta(microseconds=n),
                )
            )


def _health(
    db: Database, clinic: Clinic, now: datetime, breakers: BreakerRegistry | None = None
) -> dict[str, IntegrationHealth]:
    with db.read() as session:
        report = clinic_health(session, clinic.id, now, breakers=breakers or BreakerRegistry())
    return {h.integration_id: h for h in report.integrations}


@pytest.fixture
def now() -> datetime:
    return SystemClock().now()


def test_error_rate_p95_and_last_times_over_1h_and_24h(
    client: TestClient, clinic: Clinic, db: Database, now: datetime
) -> None:
    stripe = _integration(client, clinic)
    recent = now - timedelta(minutes=30)
    _calls(db, clinic.id, stripe, recent, ms=[float(n) for n in range(1, 101)], failed=5)
    _calls(db, clinic.id, stripe, now - timedelta(hours=5), ms=[500.0] * 100, failed=50)
    _calls(db, clinic.id, stripe, now - timedelta(days=2), ms=[9999.0], failed=1)
    [health] = client.get("/api/v1/integrations/health", headers=clinic.headers).json()[
        "integrations"
    ]
    assert health["integration_id"] == stripe
    assert health["calls_1h"] == {"calls": 100, "failures": 5, "error_rate": 0.05, "p95_ms": 95.0}
    assert health["calls_24h"] == {
        "calls": 200,
        "failures": 55,
        "error_rate": 0.275,
        "p95_ms": 500.0,
    }
    # The last success is the newest successful row; the last failure is not windowed.
    assert health["last_call_success_at"].startswith(
        (recent + timedelta(microseconds=99)).isoformat()[:23]
    )
    assert health["last_call_failure_at"].startswith(
        (recent + timedelta(microseconds=4)).isoformat()[:23]
    )
    assert health["breaker"] == "closed" and health["status"] == "healthy"


def test_status_rules(client: TestClient, clinic: Clinic, db: Database, now: datetime) -> None:
    ids = {
        name: _integration(client, clinic, name)
        for name in ("quiet", "flaky", "down", "broken", "refused", "reauth", "off", "webhooks")
    }
    _calls(db, clinic.id, ids["flaky"], now - timedelta(minutes=40), ms=[10.0] * 10, failed=2)
    _calls(db, clinic.id, ids["down"], now - timedelta(minutes=5), ms=[10.0] * 3, failed=3)
    _calls(db, clinic.id, ids["refused"], now - timedelta(hours=3), ms=[10.0])
    _calls(db, clinic.id, ids["refused"], now - timedelta(hours=2), ms=[10.0], failed=1, status=401)
    breakers = BreakerRegistry()
    for _ in range(5):
        breakers.get(clinic.id, ids["broken"]).record_failure(now, BreakerPolicy())
    with db.write() as session:
        session.execute(
            sa.update(Integration)
            .where(Integration.id == ids["reauth"])
            .values(status="needs_reauth")
        )
        session.execute(
            sa.update(Integration)
            .where(Integration.id == ids["off"])
            .values(enabled=False, status="disabled")
        )
        session.add(
            WebhookEvent(
                id=new_id("whe"),
                tenant_id=clinic.id,
                integration_id=ids["webhooks"],
                provider_event_id="evt_dead",
                type="charge.failed",
                received_at=now,
                status="dead",
                headers={},
                payload={},
                attempts=3,
            )
        )
    health = _health(db, clinic, now, breakers)
    status = {name: health[i].status for name, i in ids.items()}
    assert status == {
        "quiet": "healthy",
        "flaky": "degraded",
        "down": "down",
        "broken": "down",
        "refused": "needs_reauth",
        "reauth": "needs_reauth",
        "off": "disabled",
        "webhooks": "degraded",
    }
    assert health[ids["flaky"]].reasons == ["20% of calls failed in the last hour"]
    assert health[ids["broken"]].reasons == ["the circuit breaker is open"]
    assert health[ids["webhooks"]].webhooks.processing_failures_24h == 1
    # A success after the refusal means the credentials work again.
    _calls(db, clinic.id, ids["refused"], now - timedelta(minutes=1), ms=[10.0])
    assert _health(db, clinic, now)[ids["refused"]].status == "healthy"


@pytest.fixture
def endpoint(db: Database, clinic: Clinic, now: datetime) -> str:
    """A clinic system subscribed to integration events (deliveries are only queued)."""
    endpoint_id = new_id("whep")
    with db.write() as session:
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                tenant_id=clinic.id,
                url="https://ops.maple.example.com/hooks",
                description="",
                event_types=["integration.*"],
                secret="unused",
                enabled=True,
                created_at=now,
                updated_at=now,
            )
        )
    return endpoint_id


def _events(db: Database) -> list[tuple[str, str]]:
    with db.read() as session:
        rows = session.execute(
            sa.select(WebhookDelivery.event_type, WebhookDelivery.payload).order_by(
                WebhookDelivery.id
            )
        ).all()
    return [(kind, payload["data"]["alert"]["rule"]) for kind, payload in rows]


def _alerts(db: Database, tenant_id: str) -> list[Alert]:
    with db.read() as session:
        return list(
            session.scalars(sa.select(Alert).where(Alert.tenant_id == tenant_id).order_by(Alert.id))
        )


def test_an_incident_opens_one_alert_and_recovery_resolves_it(
    client: TestClient, clinic: Clinic, db: Database, now: datetime, endpoint: str
) -> None:
    stripe = _integration(client, clinic)
    _calls(db, clinic.id, stripe, now - timedelta(minutes=20), ms=[10.0] * 10, failed=4)
    first = alerts.evaluate_clinic(db, clinic.id, now)
    for minute in range(1, 4):  # the incident goes on: no new alert, no new event
        again = alerts.evaluate_clinic(db, clinic.id, now + timedelta(minutes=minute))
        assert again.opened == [] and again.resolved == []
    [alert] = _alerts(db, clinic.id)
    assert first.opened == [alert.id]
    assert (alert.rule, alert.status, alert.subject_id) == ("error_spike", "open", stripe)
    assert alert.opened_at == now and alert.last_seen_at == now + timedelta(minutes=3)
    assert alert.details["calls_1h"]["error_rate"] == 0.4
    assert _events(db) == [("integration.unhealthy", "error_spike")]

    # 2 failures in 20 calls (10 %) is inside the hysteresis band: still the same incident.
    _calls(db, clinic.id, stripe, now + timedelta(minutes=4), ms=[10.0] * 10)
    later = now + timedelta(minutes=5)
    assert alerts.evaluate_clinic(db, clinic.id, later).resolved == []
    _calls(db, clinic.id, stripe, later, ms=[10.0] * 30)
    resolved = alerts.evaluate_clinic(db, clinic.id, later + timedelta(minutes=1))
    assert resolved.resolved == [alert.id]
    [alert] = _alerts(db, clinic.id)
    assert alert.status == "resolved" and alert.resolved_at == later + timedelta(minutes=1)
    assert _events(db) == [
        ("integration.unhealthy", "error_spike"),
        ("integration.recovered", "error_spike"),
    ]

    # A new incident is a new alert.
    _calls(db, clinic.id, stripe, later + timedelta(minutes=70), ms=[10.0] * 30, failed=30)
    reopened = alerts.evaluate_clinic(db, clinic.id, later + timedelta(minutes=71))
    assert len(reopened.opened) == 2  # error_spike and provider_down
    assert {a.rule for a in _alerts(db, clinic.id) if a.status == "open"} == {
        "error_spike",
        "provider_down",
    }


def test_credentials_dead_jobs_and_verification_spike(
    client: TestClient, clinic: Clinic, db: Database, now: datetime
) -> None:
    stripe = _integration(client, clinic)
    _calls(db, clinic.id, stripe, now - timedelta(minutes=2), ms=[10.0], failed=1, status=401)
    for n in range(10):  # forged deliveries: each is audited as a verification failure
        body = stripe_event(f"evt_{n}")
        forged = stripe_headers(body, secret="whsec_attacker")
        assert client.post(f"/webhooks/{stripe}", content=body, headers=forged).status_code == 401
    with db.write() as session:
        session.add(
            Job(
                id=new_id("job"),
                tenant_id=clinic.id,
                queue="default",
                kind="x",
                payload={},
                state="dead",
                attempts=3,
                max_attempts=3,
                run_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    clock_now = SystemClock().now()
    alerts.evaluate_clinic(db, clinic.id, clock_now)
    opened = {(a.rule, a.subject_type, a.subject_id) for a in _alerts(db, clinic.id)}
    assert opened == {
        ("credentials_rejected", "integration", stripe),
        ("webhook_verification_spike", "integration", stripe),
        ("dead_jobs", "tenant", clinic.id),
    }
    with db.write() as session:
        session.execute(sa.update(Job).values(state="succeeded"))
    _calls(db, clinic.id, stripe, clock_now, ms=[10.0])
    outcome = alerts.evaluate_clinic(db, clinic.id, clock_now + timedelta(minutes=16))
    assert len(outcome.resolved) == 3
    assert {a.status for a in _alerts(db, clinic.id)} == {"resolved"}


def test_disabling_an_integration_resolves_its_alerts(
    client: TestClient, clinic: Clinic, db: Database, now: datetime
) -> None:
    stripe = _integration(client, clinic)
    _calls(db, clinic.id, stripe, now - timedelta(minutes=1), ms=[10.0] * 5, failed=5)
    assert len(alerts.evaluate_clinic(db, clinic.id, now).opened) == 2
    client.patch(f"/api/v1/integrations/{stripe}", headers=clinic.headers, json={"enabled": False})
    assert len(alerts.evaluate_clinic(db, clinic.id, now).resolved) == 2


def test_the_periodic_task_evaluates_every_clinic(
    client: TestClient, make_clinic: Callable[..., Clinic], db: Database, now: datetime
) -> None:
    assert any(
        t.kind == alerts.EVALUATE_KIND and t.cron == "* * * * *" for t in registry.periodic_tasks
    )
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    for clinic in (maple, birch):
        stripe = _integration(client, clinic)
        _calls(db, clinic.id, stripe, now - timedelta(minutes=1), ms=[10.0] * 5, failed=5)
    alerts.evaluate_all(JobContext("job_t", alerts.EVALUATE_KIND, None, {}, 1, 1, db, lambda: now))
    assert len(_alerts(db, maple.id)) == len(_alerts(db, birch.id)) == 2


def test_api_is_tenant_scoped_and_needs_integrations_read(
    client: TestClient, make_clinic: Callable[..., Clinic], db: Database, now: datetime
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    stripe = _integration(client, maple)
    _calls(db, maple.id, stripe, now - timedelta(minutes=1), ms=[10.0] * 5, failed=5)
    alerts.evaluate_clinic(db, maple.id, now)

    mine = client.get("/api/v1/alerts?status=open", headers=maple.headers).json()["data"]
    assert {a["rule"] for a in mine} == {"error_spike", "provider_down"}
    assert client.get("/api/v1/alerts?status=resolved", headers=maple.headers).json()["data"] == []
    assert client.get("/api/v1/alerts", headers=birch.headers).json()["data"] == []
    theirs = client.get("/api/v1/integrations/health", headers=birch.headers).json()
    assert theirs["integrations"] == [] and theirs["dead_jobs"] == 0
    assert client.get("/api/v1/alerts?status=bogus", headers=maple.headers).status_code == 422

    auditor, front_desk = add_key(db, maple, "auditor"), add_key(db, maple, "front_desk")
    for path in ("/api/v1/integrations/health", "/api/v1/alerts"):
        assert client.get(path, headers=auditor.headers).status_code == 200
        denied = client.get(path, headers=front_desk.headers)
        assert denied.status_code == 403 and "integrations:read" in denied.text
    # The health path is not taken for an integration id.
    assert client.get(f"/api/v1/integrations/{stripe}", headers=maple.headers).status_code == 200
