"""Probes, readiness, metrics and the one JSON access line per request."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database, create_database
from clinicbridge.db.migrate import downgrade
from clinicbridge.jobs import heartbeat
from clinicbridge.settings import Settings
from tests.conftest import Clinic, LiveServer


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_needs_a_fresh_worker(client: TestClient, db: Database) -> None:
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.headers["content-type"] == "application/problem+json"
    assert not_ready.json()["checks"]["worker"]["ok"] is False
    assert not_ready.json()["checks"]["database"]["ok"] is True
    with db.write() as session:
        heartbeat.register(session, SystemClock().now())
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["migrations"]["ok"] is True


def test_readyz_notices_old_migrations(client: TestClient, db: Database) -> None:
    with db.write() as session:
        heartbeat.register(session, SystemClock().now())
    downgrade(db.engine, "base")
    body = client.get("/readyz").json()
    assert body["checks"]["migrations"]["ok"] is False
    assert body["checks"]["migrations"]["current"] is None


def test_embedded_worker_makes_the_server_ready(live_server: LiveServer) -> None:
    deadline = time.monotonic() + 5
    while httpx.get(f"{live_server.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "worker never became fresh"
        time.sleep(0.1)


def test_metrics_are_prometheus_text(client: TestClient, clinic: Clinic) -> None:
    client.get("/api/v1/tenant", headers=clinic.headers)
    client.get(f"/api/v1/users/usr_{'0' * 26}", headers=clinic.headers)
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'clinicbridge_http_requests_total{method="GET",route="/api/v1/tenant",status="200"} 1.0'
        in text
    )
    # route templates, not raw paths, so ids never become label values
    assert 'route="/api/v1/users/{user_id}",status="404"' in text
    assert "usr_000" not in text
    assert "clinicbridge_worker_heartbeat_age_seconds -1.0" in text


def test_one_json_log_line_per_request_without_secrets(
    client: TestClient, clinic: Clinic, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="clinicbridge.http"):
        client.post(
            "/api/v1/users?search=Jane",
            headers={**clinic.headers, "X-Request-Id": "trace-1"},
            json={"email": "jane.patient@maple.example.com", "role": "clinician"},
        )
    lines = [r for r in caplog.records if r.name == "clinicbridge.http"]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["method"] == "POST" and fields["path"] == "/api/v1/users"
    assert fields["status"] == 201 and fields["request_id"] == "trace-1"
    assert fields["tenant_id"] == clinic.id and fields["duration_ms"] >= 0
    from clinicbridge.core.logs import JsonFormatter

    rendered = JsonFormatter().format(lines[0])
    assert json.loads(rendered)["request_id"] == "trace-1"
    assert clinic.key not in rendered and "jane" not in rendered.lower()


def test_unreachable_database_is_not_ready(settings: Settings) -> None:
    unreachable = create_database("postgresql://nobody@127.0.0.1:9/clinicbridge")
    with TestClient(create_app(settings, db=unreachable)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": {"ok": False, "error": "OperationalError"}}
