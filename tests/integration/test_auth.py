"""API keys: shown once, stored hashed, revocable, and 401 without a reason."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.core.models import ApiKey
from clinicbridge.db.engine import Database
from tests.conftest import Clinic

GENERIC_401 = "A valid API key or session is required."


def _assert_401(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"] == GENERIC_401


def test_missing_malformed_and_unknown_keys_get_the_same_401(client: TestClient) -> None:
    _assert_401(client.get("/api/v1/tenant"))
    _assert_401(client.get("/api/v1/tenant", headers={"Authorization": "Basic abc"}))
    _assert_401(client.get("/api/v1/tenant", headers={"Authorization": "Bearer not-a-key"}))
    _assert_401(
        client.get("/api/v1/tenant", headers={"Authorization": "Bearer cb_live_" + "A" * 43})
    )


def test_created_key_is_shown_once_and_stored_hashed(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    created = client.post(
        "/api/v1/api-keys", headers=clinic.headers, json={"name": "Front desk kiosk"}
    )
    assert created.status_code == 201
    body = created.json()
    raw = body["key"]
    assert raw.startswith("cb_live_") and len(raw) >= 40
    assert body["role"] == "integration"
    assert body["key_hint"] == "cb_live_…" + raw[-4:]
    listed = client.get(f"/api/v1/api-keys/{body['id']}", headers=clinic.headers).json()
    assert "key" not in listed
    with db.read() as session:
        stored = session.scalar(sa.select(ApiKey).where(ApiKey.id == body["id"]))
        assert stored is not None
        assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest()
        assert raw not in str(session.execute(sa.select(ApiKey.__table__)).all())


def test_revoked_key_is_refused_at_once(client: TestClient, clinic: Clinic) -> None:
    created = client.post(
        "/api/v1/api-keys", headers=clinic.headers, json={"name": "Old PMS sync"}
    ).json()
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert client.get("/api/v1/tenant", headers=headers).status_code == 200
    revoked = client.delete(f"/api/v1/api-keys/{created['id']}", headers=clinic.headers)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    _assert_401(client.get("/api/v1/tenant", headers=headers))


def test_last_used_time_is_recorded(client: TestClient, clinic: Clinic, db: Database) -> None:
    with db.read() as session:
        key = session.scalar(
            sa.select(ApiKey).where(
                ApiKey.key_hash == hashlib.sha256(clinic.key.encode()).hexdigest()
            )
        )
        assert key is not None and key.last_used_at is None
        key_id = key.id
    client.get("/api/v1/tenant", headers=clinic.headers)
    shown = client.get(f"/api/v1/api-keys/{key_id}", headers=clinic.headers).json()
    assert shown["last_used_at"] is not None


def test_key_rename_and_pagination(client: TestClient, clinic: Clinic) -> None:
    ids = [
        client.post("/api/v1/api-keys", headers=clinic.headers, json={"name": f"k{i}"}).json()["id"]
        for i in range(5)
    ]
    first = client.get("/api/v1/api-keys?limit=3", headers=clinic.headers).json()
    assert first["has_more"] is True and len(first["data"]) == 3
    second = client.get(
        f"/api/v1/api-keys?limit=3&starting_after={first['next_cursor']}", headers=clinic.headers
    ).json()
    assert second["has_more"] is False and second["next_cursor"] is None
    seen = [k["id"] for k in first["data"] + second["data"]]
    assert seen == sorted(seen) and set(ids) <= set(seen) and len(seen) == 6
    renamed = client.patch(
        f"/api/v1/api-keys/{ids[0]}", headers=clinic.headers, json={"name": "Renamed"}
    )
    assert renamed.json()["name"] == "Renamed"
    bad_cursor = client.get("/api/v1/api-keys?starting_after=nope", headers=clinic.headers)
    assert bad_cursor.status_code == 422
