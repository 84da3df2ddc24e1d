"""``/api/v1/jobs``: tenant-scoped listing, retry and cancel with permissions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient

from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs import queue as q
from tests.conftest import Clinic, add_key


def _dead_job(db: Database, tenant_id: str | None, kind: str = "reminder.send") -> str:
    now = SystemClock().now()
    with db.write() as session:
        job_id = q.enqueue(session, kind, {"booking": "bkg_1"}, now=now, tenant_id=tenant_id).id
    q.claim(db, worker_id="w", queues=["default"], limit=10, lease=timedelta(seconds=30), now=now)
    q.record_outcomes(db, "w", [q.Outcome(job_id, "dead", error="ExternalServiceError: down")], now)
    return job_id


def test_list_filter_retry_and_cancel(client: TestClient, clinic: Clinic, db: Database) -> None:
    dead = _dead_job(db, clinic.id)
    with db.write() as session:
        waiting = q.enqueue(
            session, "calendar.sync", now=SystemClock().now(), tenant_id=clinic.id
        ).id
    h = clinic.headers
    listed = client.get("/api/v1/jobs?state=dead", headers=h).json()["data"]
    assert [j["id"] for j in listed] == [dead]
    assert listed[0]["last_error"] == "ExternalServiceError: down"
    assert (
        client.get("/api/v1/jobs?kind=calendar.sync", headers=h).json()["data"][0]["id"] == waiting
    )
    assert client.get("/api/v1/jobs?state=sleeping", headers=h).status_code == 422

    retried = client.post(f"/api/v1/jobs/{dead}/retry", headers=h)
    assert retried.status_code == 200 and retried.json()["state"] == "pending"
    assert retried.json()["attempts"] == 0
    assert client.post(f"/api/v1/jobs/{dead}/retry", headers=h).status_code == 409
    cancelled = client.post(f"/api/v1/jobs/{waiting}/cancel", headers=h)
    assert cancelled.json()["state"] == "cancelled"


def test_jobs_of_other_clinics_and_platform_jobs_are_invisible(
    client: TestClient, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    theirs = _dead_job(db, birch.id)
    platform = _dead_job(db, None, kind="housekeeping")
    assert client.get("/api/v1/jobs", headers=maple.headers).json()["data"] == []
    for job_id in (theirs, platform):
        assert client.get(f"/api/v1/jobs/{job_id}", headers=maple.headers).status_code == 404
        assert client.post(f"/api/v1/jobs/{job_id}/retry", headers=maple.headers).status_code == 404


def test_permissions(client: TestClient, clinic: Clinic, db: Database) -> None:
    dead = _dead_job(db, clinic.id)
    auditor = add_key(db, clinic, "auditor")
    assert client.get("/api/v1/jobs", headers=auditor.headers).status_code == 200
    denied = client.post(f"/api/v1/jobs/{dead}/retry", headers=auditor.headers)
    assert denied.status_code == 403 and denied.json()["permission"] == "jobs:manage"
    front = add_key(db, clinic, "front_desk")
    assert client.get("/api/v1/jobs", headers=front.headers).status_code == 403


def test_job_metrics(client: TestClient, clinic: Clinic, db: Database) -> None:
    _dead_job(db, clinic.id)
    text = client.get("/metrics").text
    assert 'clinicbridge_jobs{kind="reminder.send",state="dead"} 1.0' in text


def test_retry_and_cancel_are_audited(client: TestClient, clinic: Clinic, db: Database) -> None:
    dead = _dead_job(db, clinic.id)
    client.post(f"/api/v1/jobs/{dead}/retry", headers=clinic.headers)
    client.post(f"/api/v1/jobs/{dead}/cancel", headers=clinic.headers)
    events = client.get("/api/v1/audit-events?resource_type=job", headers=clinic.headers).json()
    assert [(e["action"], e["resource_id"]) for e in events["data"]] == [
        ("job.retry", dead),
        ("job.cancel", dead),
    ]
