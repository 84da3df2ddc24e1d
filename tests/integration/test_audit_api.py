"""The audit log through the HTTP API and the admin UI: what gets recorded, and reading it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit import MASK, PLATFORM, append, verify_chains
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.models import ApiKey
from clinicbridge.db.engine import Database
from tests.conftest import Clinic, add_key
from tests.integration.test_admin_web import _csrf, _login, _user

PASSWORD = "correct horse battery"
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _events(db: Database, tenant_id: str) -> list[AuditEvent]:
    with db.read() as session:
        stmt = sa.select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
        return list(session.scalars(stmt.order_by(AuditEvent.seq)))


def _all_audit_text(db: Database) -> str:
    """Every column of every audit row, as one string to search for leaks."""
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(AuditEvent.__table__)).mappings().all()
        heads = conn.exec_driver_sql("SELECT * FROM audit_chain_heads").all()
    return json.dumps([dict(r) for r in rows] + [list(h) for h in heads], default=str)


def _key_id(db: Database, clinic: Clinic, name: str = "test") -> str:
    with db.read() as session:
        stmt = sa.select(ApiKey.id).where(ApiKey.tenant_id == clinic.id, ApiKey.name == name)
        return str(session.scalar(stmt))


def test_changes_through_the_api_are_audited(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    def call(method: str, path: str, request_id: str, **kwargs: Any) -> Any:
        headers = clinic.headers | {"X-Request-Id": request_id}
        response = client.request(method, f"/api/v1{path}", headers=headers, **kwargs)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    user = call(
        "POST", "/users", "r-1", json={"email": "joy@maple.example.com", "role": "clinician"}
    )
    call("PATCH", f"/users/{user['id']}", "r-2", json={"role": "front_desk", "password": PASSWORD})
    call("DELETE", f"/users/{user['id']}", "r-3")
    key = call("POST", "/api-keys", "r-4", json={"name": "EHR sync", "role": "integration"})
    call("PATCH", f"/api-keys/{key['id']}", "r-5", json={"name": "EHR sync (new)"})
    call("DELETE", f"/api-keys/{key['id']}", "r-6")
    call("DELETE", f"/api-keys/{key['id']}", "r-7")  # revoking twice changes nothing
    call("POST", "/roles", "r-8", json={"name": "locum", "permissions": ["tenant:read"]})
    call("PATCH", "/roles/locum", "r-9", json={"permissions": ["tenant:read", "users:read"]})
    call("DELETE", "/roles/locum", "r-10")
    call("PATCH", "/tenant", "r-11", json={"name": "Maple Clinic", "timezone": "America/Toronto"})

    events = _events(db, clinic.id)
    assert [(e.action, e.request_id) for e in events] == [
        ("user.create", "r-1"),
        ("user.update", "r-2"),
        ("user.delete", "r-3"),
        ("api_key.create", "r-4"),
        ("api_key.rename", "r-5"),
        ("api_key.revoke", "r-6"),
        ("role.create", "r-8"),
        ("role.update", "r-9"),
        ("role.delete", "r-10"),
        ("tenant.update", "r-11"),
    ]
    actor = _key_id(db, clinic)
    assert {(e.actor_type, e.actor_id, e.outcome, e.phi) for e in events} == {
        ("api_key", actor, "success", False)
    }
    assert all(e.ip == "testclient" for e in events)
    by_action = {e.action: e for e in events}
    assert by_action["user.create"].resource_id == user["id"]
    assert by_action["user.create"].diff == {
        "display_name": {"new": ""},
        "email": {"new": "joy@maple.example.com"},
        "is_active": {"new": True},
        "role": {"new": "clinician"},
    }
    assert by_action["user.update"].diff == {
        "password": {"old": MASK, "new": MASK},
        "role": {"old": "clinician", "new": "front_desk"},
    }
    assert by_action["api_key.create"].diff == {
        "name": {"new": "EHR sync"},
        "role": {"new": "integration"},
    }
    assert by_action["api_key.rename"].diff == {
        "name": {"old": "EHR sync", "new": "EHR sync (new)"}
    }
    assert by_action["role.update"].diff == {
        "permissions": {"old": ["tenant:read"], "new": ["tenant:read", "users:read"]}
    }
    assert by_action["tenant.update"].diff == {
        "name": {"old": "Maple Family Clinic", "new": "Maple Clinic"}
    }  # the time zone did not change

    with db.read() as session:
        key_hash = session.scalar(sa.select(ApiKey.key_hash).where(ApiKey.id == key["id"]))
    leaks = _all_audit_text(db)
    for secret in (PASSWORD, user["initial_password"], key["key"], key_hash, key["key_hint"]):
        assert secret and secret not in leaks
    assert "argon2" not in leaks and "cb_live_" not in leaks
    assert all(report.ok for report in verify_chains(db.engine))


def test_a_refused_change_records_nothing(client: TestClient, clinic: Clinic, db: Database) -> None:
    body = {"email": "a@maple.example.com", "role": "clinician"}
    assert client.post("/api/v1/users", headers=clinic.headers, json=body).status_code == 201
    assert client.post("/api/v1/users", headers=clinic.headers, json=body).status_code == 409
    assert [e.action for e in _events(db, clinic.id)] == ["user.create"]


def test_sign_in_and_sign_out_are_audited(client: TestClient, clinic: Clinic, db: Database) -> None:
    staff = _user(client, clinic, "owner@maple.example.com")
    before = len(_events(db, clinic.id))
    assert _login(client, "owner@maple.example.com", "not the password").status_code == 401
    assert _login(client, "ghost@maple.example.com", "hunter2 hunter2").status_code == 401
    assert _login(client, "owner@maple.example.com").status_code == 303
    csrf = _csrf(client.get(f"/admin/tenants/{clinic.id}").text)
    assert client.post("/admin/logout", data={"csrf_token": csrf}).status_code == 200

    events = _events(db, clinic.id)[before:]
    assert [(e.action, e.outcome, e.diff) for e in events] == [
        ("auth.sign_in", "failure", {"reason": "wrong_password"}),
        ("auth.sign_in", "success", None),
        ("auth.sign_out", "success", None),
    ]
    assert {(e.actor_type, e.actor_id, e.resource_id) for e in events} == {
        ("user", staff["id"], staff["id"])
    }
    assert all(e.request_id and e.request_id.startswith("req_") for e in events)
    (unknown,) = _events(db, PLATFORM)  # no clinic to put it in
    assert (unknown.action, unknown.outcome, unknown.diff) == (
        "auth.sign_in",
        "failure",
        {"reason": "unknown_email"},
    )
    assert (unknown.actor_id, unknown.resource_id) == ("", None)
    assert "ghost@" not in _all_audit_text(db) and "hunter2" not in _all_audit_text(db)


def test_admin_ui_changes_are_audited_as_the_signed_in_user(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    staff = _user(client, clinic, "owner@maple.example.com")
    _login(client, "owner@maple.example.com")
    csrf = _csrf(client.get(f"/admin/tenants/{clinic.id}").text)
    created = client.post(
        f"/admin/tenants/{clinic.id}/api-keys",
        data={"csrf_token": csrf, "name": "Front desk tablet", "role": "front_desk"},
    )
    assert created.status_code == 200
    event = _events(db, clinic.id)[-1]
    assert (event.action, event.actor_type, event.actor_id) == (
        "api_key.create",
        "user",
        staff["id"],
    )
    assert "cb_live_" not in _all_audit_text(db)


def _seed(db: Database, tenant_id: str) -> list[str]:
    """Six known events of one clinic; returns their ids."""
    specs = [
        ("user", "usr_A", "user.update", "user", "usr_1", False, 0),
        ("api_key", "key_B", "patient.read", "patient", "pat_1", True, 1),
        ("api_key", "key_B", "patient.update", "patient", "pat_1", True, 2),
        ("integration", "int_C", "patient.read", "patient", "pat_2", True, 3),
        ("system", "cli", "tenant.create", "tenant", tenant_id, False, 4),
        ("user", "usr_A", "patient.read", "patient", "pat_1", True, 5),
    ]
    with db.write() as session:
        return [
            append(
                session,
                tenant_id=tenant_id,
                actor_type=actor_type,
                actor_id=actor_id,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                occurred_at=NOW + timedelta(hours=hours),
                phi=phi,
            ).id
            for actor_type, actor_id, action, resource_type, resource_id, phi, hours in specs
        ]


def test_audit_events_filters(client: TestClient, clinic: Clinic, db: Database) -> None:
    ids = _seed(db, clinic.id)

    def listed(**params: Any) -> list[str]:
        response = client.get("/api/v1/audit-events", headers=clinic.headers, params=params)
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["data"]]

    assert listed() == ids
    assert listed(actor_id="key_B") == ids[1:3]
    assert listed(actor_type="integration") == [ids[3]]
    assert listed(action="patient.read") == [ids[1], ids[3], ids[5]]
    assert listed(resource_type="patient", resource_id="pat_1") == [ids[1], ids[2], ids[5]]
    assert listed(resource_id="pat_2") == [ids[3]]
    assert listed(phi="true") == [ids[1], ids[2], ids[3], ids[5]]
    assert listed(phi="false") == [ids[0], ids[4]]
    since, until = (NOW + timedelta(hours=1)).isoformat(), (NOW + timedelta(hours=3)).isoformat()
    assert listed(since=since, until=until) == ids[1:3]
    assert listed(actor_id="usr_A", phi="true") == [ids[5]]
    first = client.get("/api/v1/audit-events", headers=clinic.headers).json()["data"][0]
    assert set(first) >= {"id", "seq", "occurred_at", "actor_type", "diff", "prev_hash", "hash"}

    for bad in ({"actor_type": "robot"}, {"since": "2026-01-05T09:00:00"}, {"limit": 0}):
        response = client.get("/api/v1/audit-events", headers=clinic.headers, params=bad)
        assert response.status_code == 422, bad


def test_audit_events_pages_follow_the_chain(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    ids = _seed(db, clinic.id)
    seen, cursor = [], None
    while True:
        params = {"limit": 4} | ({"starting_after": cursor} if cursor else {})
        page = client.get("/api/v1/audit-events", headers=clinic.headers, params=params).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            assert cursor is None
            break
    assert seen == ids


def test_another_clinics_events_are_never_listed(
    client: TestClient, make_clinic: Callable[..., Clinic], db: Database
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    _seed(db, maple.id)
    theirs = _seed(db, birch.id)
    for path in ("/api/v1/audit-events", "/api/v1/patients/pat_1/access-log"):
        listed = client.get(path, headers=maple.headers).json()["data"]
        assert listed and not {e["id"] for e in listed} & set(theirs)
    # Their event id as a cursor is refused like an unknown one: no leak, no data.
    response = client.get(
        "/api/v1/audit-events", headers=maple.headers, params={"starting_after": theirs[0]}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "starting_after"


def test_patient_access_log(client: TestClient, clinic: Clinic, db: Database) -> None:
    ids = _seed(db, clinic.id)
    log = client.get("/api/v1/patients/pat_1/access-log", headers=clinic.headers).json()
    assert [e["id"] for e in log["data"]] == [ids[1], ids[2], ids[5]]
    assert [e["actor_id"] for e in log["data"]] == ["key_B", "key_B", "usr_A"]
    page = client.get(
        "/api/v1/patients/pat_1/access-log", headers=clinic.headers, params={"limit": 1}
    ).json()
    assert page["has_more"] and page["next_cursor"] == ids[1]
    empty = client.get("/api/v1/patients/pat_9/access-log", headers=clinic.headers).json()
    assert empty["data"] == []


def test_reading_the_audit_log_needs_audit_read(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    clinician, auditor = add_key(db, clinic, "clinician"), add_key(db, clinic, "auditor")
    for path in ("/api/v1/audit-events", "/api/v1/patients/pat_1/access-log"):
        denied = client.get(path, headers=clinician.headers)
        assert denied.status_code == 403 and denied.json()["permission"] == "audit:read"
        assert client.get(path, headers=auditor.headers).status_code == 200
        assert client.get(path).status_code == 401
