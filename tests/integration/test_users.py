"""Staff users: CRUD, duplicates, the last owner, concurrent creation."""

from __future__ import annotations

import threading

import httpx

from clinicbridge.core.models import User
from clinicbridge.core.passwords import verify_password
from clinicbridge.db.engine import Database
from tests.conftest import Clinic, LiveServer, add_key


def test_user_crud(client, clinic: Clinic, db: Database) -> None:  # type: ignore[no-untyped-def]
    h = clinic.headers
    created = client.post(
        "/api/v1/users",
        headers=h,
        json={"email": " Nurse.Joy@Maple.Example.com ", "role": "clinician", "display_name": "Joy"},
    )
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == "nurse.joy@maple.example.com"
    assert len(user["initial_password"]) >= 16
    assert "password_hash" not in user
    with db.read() as session:
        stored = session.get(User, user["id"])
        assert stored is not None and stored.password_hash.startswith("$argon2id$")
        assert verify_password(stored.password_hash, user["initial_password"])

    got = client.get(f"/api/v1/users/{user['id']}", headers=h).json()
    assert got["display_name"] == "Joy" and "initial_password" not in got
    patched = client.patch(
        f"/api/v1/users/{user['id']}", headers=h, json={"role": "front_desk", "is_active": False}
    )
    assert patched.json()["role"] == "front_desk" and patched.json()["is_active"] is False
    assert client.delete(f"/api/v1/users/{user['id']}", headers=h).status_code == 204
    assert client.get(f"/api/v1/users/{user['id']}", headers=h).status_code == 404


def test_given_password_is_used_and_validated(client, clinic: Clinic) -> None:  # type: ignore[no-untyped-def]
    short = client.post(
        "/api/v1/users",
        headers=clinic.headers,
        json={"email": "a@maple.example.com", "role": "clinician", "password": "short"},
    )
    assert short.status_code == 422 and short.json()["errors"][0]["field"] == "password"
    assert "short" not in short.json()["detail"]
    ok = client.post(
        "/api/v1/users",
        headers=clinic.headers,
        json={
            "email": "a@maple.example.com",
            "role": "clinician",
            "password": "correct horse battery",
        },
    )
    assert ok.status_code == 201 and ok.json()["initial_password"] is None


def test_duplicate_email_is_409(client, clinic: Clinic) -> None:  # type: ignore[no-untyped-def]
    body = {"email": "desk@maple.example.com", "role": "front_desk"}
    assert client.post("/api/v1/users", headers=clinic.headers, json=body).status_code == 201
    body["email"] = "DESK@maple.example.com"
    dup = client.post("/api/v1/users", headers=clinic.headers, json=body)
    assert dup.status_code == 409 and dup.headers["content-type"] == "application/problem+json"


def test_same_email_in_two_clinics_is_fine(client, make_clinic) -> None:  # type: ignore[no-untyped-def]
    body = {"email": "locum@example.com", "role": "clinician"}
    for clinic in (make_clinic("Maple"), make_clinic("Birch")):
        assert client.post("/api/v1/users", headers=clinic.headers, json=body).status_code == 201


def test_last_owner_cannot_leave(client, clinic: Clinic) -> None:  # type: ignore[no-untyped-def]
    h = clinic.headers
    owner = client.post(
        "/api/v1/users", headers=h, json={"email": "owner@maple.example.com", "role": "owner"}
    ).json()
    assert (
        client.patch(f"/api/v1/users/{owner['id']}", headers=h, json={"role": "admin"}).status_code
        == 409
    )
    assert client.delete(f"/api/v1/users/{owner['id']}", headers=h).status_code == 409
    second = client.post(
        "/api/v1/users", headers=h, json={"email": "owner2@maple.example.com", "role": "owner"}
    ).json()
    assert client.delete(f"/api/v1/users/{owner['id']}", headers=h).status_code == 204
    assert (
        client.patch(
            f"/api/v1/users/{second['id']}", headers=h, json={"is_active": False}
        ).status_code
        == 409
    )


def test_admin_cannot_touch_an_owner(client, clinic: Clinic, db: Database) -> None:  # type: ignore[no-untyped-def]
    owner = client.post(
        "/api/v1/users",
        headers=clinic.headers,
        json={"email": "owner@maple.example.com", "role": "owner"},
    ).json()
    client.post(
        "/api/v1/users",
        headers=clinic.headers,
        json={"email": "owner2@maple.example.com", "role": "owner"},
    )
    admin = add_key(db, clinic, "admin")
    demote = client.patch(
        f"/api/v1/users/{owner['id']}", headers=admin.headers, json={"role": "clinician"}
    )
    assert demote.status_code == 403
    assert client.delete(f"/api/v1/users/{owner['id']}", headers=admin.headers).status_code == 403


def test_concurrent_creation_of_the_same_email(live_server: LiveServer, clinic: Clinic) -> None:
    """Two requests racing for one e-mail: exactly one 201 and one 409."""
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def create() -> None:
        with httpx.Client(base_url=live_server.url, headers=clinic.headers, timeout=30) as http:
            barrier.wait()
            statuses.append(
                http.post(
                    "/api/v1/users", json={"email": "race@maple.example.com", "role": "clinician"}
                ).status_code
            )

    for _ in range(5):
        statuses.clear()
        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with httpx.Client(base_url=live_server.url, headers=clinic.headers) as http:
            users = http.get("/api/v1/users").json()["data"]
            race = [u for u in users if u["email"] == "race@maple.example.com"]
            assert len(race) == 1
            if sorted(statuses) == [201, 409]:
                http.delete(f"/api/v1/users/{race[0]['id']}")
                continue
        raise AssertionError(f"expected one 201 and one 409, got {statuses}")
