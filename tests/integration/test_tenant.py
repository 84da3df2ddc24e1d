"""``/api/v1/tenant``: the clinic's own profile."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Clinic


def test_profile_and_update(client: TestClient, clinic: Clinic) -> None:
    profile = client.get("/api/v1/tenant", headers=clinic.headers).json()
    assert profile["timezone"] == "America/Toronto" and profile["currency"] == "CAD"
    assert profile["webhook_body_retention_days"] == 30
    assert profile["calendar_patient_names"] is False
    updated = client.patch(
        "/api/v1/tenant",
        headers=clinic.headers,
        json={
            "name": "Maple Clinic",
            "default_language": "fr-CA",
            "webhook_body_retention_days": 7,
            "calendar_patient_names": True,
        },
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert body["calendar_patient_names"] is True
    assert (body["name"], body["default_language"], body["webhook_body_retention_days"]) == (
        "Maple Clinic",
        "fr-CA",
        7,
    )
    bad = client.patch(
        "/api/v1/tenant",
        headers=clinic.headers,
        json={"timezone": "Mars/Base", "webhook_body_retention_days": 0},
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"timezone", "webhook_body_retention_days"}
    assert client.get("/api/v1/tenant", headers=clinic.headers).json()["name"] == "Maple Clinic"
