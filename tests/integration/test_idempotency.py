"""Idempotency-Key on POST: replay, conflicts, expiry after 24 hours."""

from __future__ import annotations

import threading
from datetime import timedelta

import httpx
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.core.clock import FakeClock, SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.settings import Settings
from tests.conftest import Clinic, LiveServer


def _post(client: TestClient, clinic: Clinic, key: str, name: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/api-keys",
        headers={**clinic.headers, "Idempotency-Key": key},
        json={"name": name},
    )


def test_same_key_same_body_replays_the_response(client: TestClient, clinic: Clinic) -> None:
    first = _post(client, clinic, "create-kiosk-key-1", "Kiosk")
    second = _post(client, clinic, "create-kiosk-key-1", "Kiosk")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    keys = client.get("/api/v1/api-keys", headers=clinic.headers).json()["data"]
    assert [k["name"] for k in keys].count("Kiosk") == 1


def test_same_key_different_body_is_409(client: TestClient, clinic: Clinic) -> None:
    assert _post(client, clinic, "k-2", "Kiosk").status_code == 201
    other = _post(client, clinic, "k-2", "Another")
    assert other.status_code == 409
    assert other.json()["type"].endswith("/idempotency-conflict")


def test_keys_are_scoped_to_the_credential(
    client: TestClient,
    make_clinic,  # type: ignore[no-untyped-def]
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    a = _post(client, maple, "shared-key", "Kiosk").json()
    b = _post(client, birch, "shared-key", "Kiosk").json()
    assert a["id"] != b["id"]


def test_failed_requests_are_not_stored(client: TestClient, clinic: Clinic) -> None:
    bad = _post(client, clinic, "k-3", "")
    assert bad.status_code == 422
    assert _post(client, clinic, "k-3", "").status_code == 422
    assert "idempotent-replayed" not in _post(client, clinic, "k-3", "").headers


def test_invalid_key_is_named(client: TestClient, clinic: Clinic) -> None:
    response = _post(client, clinic, "x" * 300, "Kiosk")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "header.Idempotency-Key"


def test_key_expires_after_24_hours(settings: Settings, db: Database, clinic: Clinic) -> None:
    clock = FakeClock(SystemClock().now())
    with TestClient(create_app(settings, db=db, clock=clock)) as client:
        first = _post(client, clinic, "daily", "Kiosk")
        clock.advance(timedelta(hours=23, minutes=59))
        assert _post(client, clinic, "daily", "Kiosk").json()["id"] == first.json()["id"]
        clock.advance(timedelta(minutes=2))
        again = _post(client, clinic, "daily", "Kiosk")
        assert again.status_code == 201 and again.json()["id"] != first.json()["id"]


def test_concurrent_twins_run_once(live_server: LiveServer, clinic: Clinic) -> None:
    barrier = threading.Barrier(4)
    results: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            barrier.wait()
            results.append(
                http.post(
                    "/api/v1/users",
                    headers={**clinic.headers, "Idempotency-Key": "twin"},
                    json={"email": "twin@maple.example.com", "role": "clinician"},
                )
            )

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [r for r in results if r.status_code == 201]
    assert created, [r.status_code for r in results]
    assert {r.json()["id"] for r in created} == {created[0].json()["id"]}
    assert all(r.status_code in (201, 409) for r in results)
    with httpx.Client(base_url=live_server.url, headers=clinic.headers) as http:
        emails = [u["email"] for u in http.get("/api/v1/users").json()["data"]]
    assert emails.count("twin@maple.example.com") == 1


def test_stored_answers_are_encrypted(client: TestClient, clinic: Clinic, db: Database) -> None:
    """A replayable answer may hold a secret shown once (a new API key)."""
    import sqlalchemy as sa

    from clinicbridge.core.models import IdempotencyRecord

    created = _post(client, clinic, "with-secret", "Kiosk").json()
    with db.read() as session:
        stored = session.scalars(sa.select(IdempotencyRecord.response_body)).all()
    assert stored and all(created["key"].encode() not in body for body in stored)
    assert _post(client, clinic, "with-secret", "Kiosk").json()["key"] == created["key"]
