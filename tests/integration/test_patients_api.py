"""``/api/v1/patients``: records, duplicates, search, isolation, access log, notes, consents."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from clinicbridge.patients.models import PatientNote
from tests.conftest import Clinic, add_key

PATIENTS = "/api/v1/patients"
HELENE = {
    "first_name": "Hélène",
    "last_name": "Tremblay",
    "date_of_birth": "1984-03-12",
    "phone": "+15145550199",
    "email": "Helene.Tremblay@example.com",
    "preferred_language": "fr-CA",
    "identifiers": [{"system": "mrn", "value": "MRN-0042"}],
}


def _create(client: TestClient, clinic: Clinic, force: bool = False, **fields: Any) -> Any:
    body = {**HELENE, **fields}
    params = {"force": "true"} if force else {}
    return client.post(PATIENTS, headers=clinic.headers, json=body, params=params)


def _search(client: TestClient, clinic: Clinic, **params: str) -> list[dict[str, Any]]:
    response = client.get(PATIENTS + "/search", headers=clinic.headers, params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _events(db: Database, tenant_id: str, patient_id: str) -> list[AuditEvent]:
    with db.read() as session:
        stmt = (
            sa.select(AuditEvent)
            .where(AuditEvent.tenant_id == tenant_id, AuditEvent.resource_id == patient_id)
            .order_by(AuditEvent.seq)
        )
        return list(session.scalars(stmt))


def test_create_and_read_a_patient(client: TestClient, clinic: Clinic) -> None:
    created = _create(client, clinic, phone="(514) 555-0199")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("pat_")
    assert body["phones"] == [{"value": "+15145550199", "label": None, "is_primary": True}]
    assert body["emails"][0]["value"] == "helene.tremblay@example.com"
    assert body["identifiers"] == {"mrn": "MRN-0042"}
    got = client.get(f"{PATIENTS}/{body['id']}", headers=clinic.headers)
    assert got.status_code == 200
    assert got.json()["first_name"] == "Hélène" and got.json()["date_of_birth"] == "1984-03-12"


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("date_of_birth", "2023-02-30", "date_of_birth"),
        ("date_of_birth", "2999-01-01", "date_of_birth"),
        ("date_of_birth", "1850-01-01", "date_of_birth"),
        ("phone", "555-01", "phone"),
        ("email", "nope", "email"),
        ("sex", "robot", "sex"),
        ("first_name", "", "first_name"),
        ("identifiers", [{"system": "ssn", "value": "1"}], "identifiers.0.system"),
    ],
)
def test_bad_input_names_the_field(
    client: TestClient, clinic: Clinic, field: str, value: Any, named: str
) -> None:
    response = _create(client, clinic, **{field: value})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert named in [e["field"] for e in response.json()["errors"]]
    assert "Tremblay" not in response.text  # no patient data echoed back


def test_bad_phone_in_list_names_its_position(client: TestClient, clinic: Clinic) -> None:
    response = _create(
        client, clinic, phone=None, phones=[{"number": "+15145550100"}, {"number": "x"}]
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["phones.1.number"]
    assert _search(client, clinic, q="tremblay") == []  # nothing half-written


def test_duplicate_same_dob_similar_name_is_409_with_candidates(
    client: TestClient, clinic: Clinic
) -> None:
    first = _create(client, clinic).json()
    again = _create(
        client,
        clinic,
        first_name="Helene",
        last_name="Tremblai",
        phone=None,
        email=None,
        identifiers=[],
    )
    assert again.status_code == 409
    problem = again.json()
    assert problem["type"].endswith("/duplicate-patient")
    assert problem["candidates"] == [
        {
            "id": first["id"],
            "first_name": "Hélène",
            "last_name": "Tremblay",
            "date_of_birth": "1984-03-12",
        }
    ]
    forced = _create(
        client,
        clinic,
        force=True,
        first_name="Helene",
        last_name="Tremblai",
        phone=None,
        email=None,
        identifiers=[],
    )
    assert forced.status_code == 201
    assert forced.json()["id"] != first["id"]


def test_duplicate_same_phone_in_another_format(client: TestClient, clinic: Clinic) -> None:
    _create(client, clinic)
    other = _create(
        client,
        clinic,
        first_name="Marc",
        last_name="Gagnon",
        date_of_birth="1990-01-01",
        phone="514.555.0199",
        email=None,
        identifiers=[],
    )
    assert other.status_code == 409
    assert other.json()["candidates"][0]["last_name"] == "Tremblay"


def test_not_duplicates_are_created(client: TestClient, clinic: Clinic) -> None:
    _create(client, clinic)
    same_name_other_dob = _create(
        client, clinic, date_of_birth="1985-03-12", phone=None, email=None, identifiers=[]
    )
    other_name_same_dob = _create(
        client,
        clinic,
        first_name="Marc",
        last_name="Gagnon",
        phone=None,
        email=None,
        identifiers=[],
    )
    assert same_name_other_dob.status_code == 201
    assert other_name_same_dob.status_code == 201


def test_identifier_of_another_patient_conflicts(client: TestClient, clinic: Clinic) -> None:
    _create(client, clinic)
    other = _create(
        client,
        clinic,
        force=True,
        first_name="Marc",
        last_name="Gagnon",
        phone=None,
        email=None,
    )
    assert other.status_code == 409
    assert "MRN-0042" not in other.text


def test_search_by_name_accent_case_prefix_and_fuzzy(client: TestClient, clinic: Clinic) -> None:
    helene = _create(client, clinic).json()["id"]
    _create(
        client,
        clinic,
        first_name="Marc",
        last_name="Gagnon",
        date_of_birth="1990-01-01",
        phone="+15145550123",
        email=None,
        identifiers=[],
    )
    _create(
        client,
        clinic,
        first_name="Helen",
        last_name="Smith",
        date_of_birth="1970-05-05",
        phone=None,
        email=None,
        identifiers=[],
    )
    assert [p["id"] for p in _search(client, clinic, q="helene")] == [helene]
    assert [p["id"] for p in _search(client, clinic, q="HÉLÈNE tremblay")] == [helene]
    assert [p["id"] for p in _search(client, clinic, q="Tremblai")] == [helene]
    assert [p["id"] for p in _search(client, clinic, q="trem")] == [helene]
    assert [p["id"] for p in _search(client, clinic, q="helene tremblai")] == [helene]
    assert {p["last_name"] for p in _search(client, clinic, q="hel")} == {"Tremblay", "Smith"}
    assert _search(client, clinic, q="zzyzx") == []
    assert [p["last_name"] for p in _search(client, clinic, q="gagnon")] == ["Gagnon"]


def test_search_by_phone_dob_identifier(client: TestClient, clinic: Clinic) -> None:
    helene = _create(client, clinic).json()["id"]
    for phone in ("(514) 555-0199", "+15145550199", "1-514-555-0199"):
        assert [p["id"] for p in _search(client, clinic, phone=phone)] == [helene]
    assert [p["id"] for p in _search(client, clinic, date_of_birth="1984-03-12")] == [helene]
    assert [p["id"] for p in _search(client, clinic, identifier="mrn:MRN-0042")] == [helene]
    assert _search(client, clinic, identifier="mrn:other") == []
    assert _search(client, clinic, q="helene", date_of_birth="1999-01-01") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"phone": "abc"}, "phone"),
        ({"identifier": "ssn:1"}, "identifier"),
        ({"date_of_birth": "2020-02-30"}, "query.date_of_birth"),
        ({"q": "   "}, "q"),
    ],
)
def test_search_bad_input(
    client: TestClient, clinic: Clinic, params: dict[str, str], field: str
) -> None:
    response = client.get(PATIENTS + "/search", headers=clinic.headers, params=params)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field


def test_another_clinics_patient_is_not_found(
    client: TestClient, make_clinic: Callable[..., Clinic]
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    theirs = _create(client, birch).json()["id"]
    path = f"{PATIENTS}/{theirs}"
    assert client.get(path, headers=maple.headers).status_code == 404
    assert client.patch(path, headers=maple.headers, json={"sex": "female"}).status_code == 404
    assert client.get(path + "/notes", headers=maple.headers).status_code == 404
    note = client.post(path + "/notes", headers=maple.headers, json={"body": "x"})
    assert note.status_code == 404
    assert client.get(path + "/consents", headers=maple.headers).status_code == 404
    assert _search(client, maple, q="helene") == []
    assert _search(client, maple, phone="+15145550199") == []
    assert client.get(PATIENTS, headers=maple.headers).json()["data"] == []
    # And Maple may create the same person: duplicates are per clinic.
    assert _create(client, maple).status_code == 201


def test_every_read_is_in_the_access_log_with_its_purpose(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    patient = _create(client, clinic).json()["id"]
    client.get(f"{PATIENTS}/{patient}", headers=clinic.headers)
    client.get(f"{PATIENTS}/{patient}", headers={**clinic.headers, "X-Access-Purpose": "billing"})
    _search(client, clinic, q="helene")
    client.get(PATIENTS, headers=clinic.headers)
    log = client.get(f"{PATIENTS}/{patient}/access-log", headers=clinic.headers).json()["data"]
    assert [(e["action"], (e["diff"] or {}).get("purpose")) for e in log] == [
        ("patient.create", None),
        ("patient.read", "treatment"),
        ("patient.read", "billing"),
        ("patient.read", "search"),
        ("patient.read", "treatment"),
    ]
    assert all(e["phi"] for e in log)
    assert {e["actor_type"] for e in log} == {"api_key"}
    # The audit trail says that fields changed, never their values.
    stored = json.dumps([e.diff for e in _events(db, clinic.id, patient)])
    for value in ("Tremblay", "1984-03-12", "5145550199", "MRN-0042", "example.com"):
        assert value not in stored


def test_bad_purpose_header_is_refused(client: TestClient, clinic: Clinic) -> None:
    patient = _create(client, clinic).json()["id"]
    response = client.get(
        f"{PATIENTS}/{patient}", headers={**clinic.headers, "X-Access-Purpose": "x" * 65}
    )
    assert response.status_code == 422


def test_update_changes_fields_and_search_follows(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    patient = _create(client, clinic).json()["id"]
    changed = client.patch(
        f"{PATIENTS}/{patient}",
        headers=clinic.headers,
        json={"last_name": "Côté", "phones": [{"number": "514 555 0100", "label": "mobile"}]},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["last_name"] == "Côté" and body["first_name"] == "Hélène"
    assert body["phones"] == [{"value": "+15145550100", "label": "mobile", "is_primary": True}]
    assert body["emails"][0]["value"] == "helene.tremblay@example.com"  # not given: kept
    assert [p["id"] for p in _search(client, clinic, q="cote")] == [patient]
    assert _search(client, clinic, q="tremblay") == []
    assert _search(client, clinic, phone="+15145550199") == []
    update = [e for e in _events(db, clinic.id, patient) if e.action == "patient.update"]
    assert len(update) == 1 and set(update[0].diff or {}) == {"last_name", "phones"}
    assert "Côté" not in json.dumps(update[0].diff)


def test_update_bad_input(client: TestClient, clinic: Clinic) -> None:
    patient = _create(client, clinic).json()["id"]
    path = f"{PATIENTS}/{patient}"
    for body, field in (
        ({"first_name": None}, "first_name"),
        ({"date_of_birth": "2021-02-29"}, "date_of_birth"),
        ({"phones": [{"number": "nope"}]}, "phones.0.number"),
        ({"unknown": 1}, "unknown"),
    ):
        response = client.patch(path, headers=clinic.headers, json=body)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == field
    assert client.get(path, headers=clinic.headers).json()["first_name"] == "Hélène"


def test_notes_are_authored_and_append_only(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    patient = _create(client, clinic).json()["id"]
    path = f"{PATIENTS}/{patient}/notes"
    first = client.post(path, headers=clinic.headers, json={"body": "Allergic to penicillin."})
    second = client.post(path, headers=clinic.headers, json={"body": "Prefers mornings."})
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["author_type"] == "api_key" and first.json()["author_id"].startswith("key_")
    notes = client.get(path, headers=clinic.headers).json()["data"]
    assert [n["body"] for n in notes] == ["Allergic to penicillin.", "Prefers mornings."]
    # No route edits or deletes a note...
    note_path = f"{path}/{notes[0]['id']}"
    assert client.patch(note_path, headers=clinic.headers, json={"body": "x"}).status_code in (
        404,
        405,
    )
    # ...and the database itself refuses it.
    for statement in (
        sa.update(PatientNote).where(PatientNote.id == notes[0]["id"]).values(body="edited"),
        sa.delete(PatientNote).where(PatientNote.id == notes[0]["id"]),
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), db.write() as session:
            session.execute(statement)
    assert client.get(path, headers=clinic.headers).json()["data"][0]["body"] == notes[0]["body"]


def test_permissions(client: TestClient, clinic: Clinic, db: Database) -> None:
    patient = _create(client, clinic).json()["id"]
    front_desk = add_key(db, clinic, "front_desk")
    auditor = add_key(db, clinic, "auditor")
    path = f"{PATIENTS}/{patient}"
    assert client.get(path, headers=front_desk.headers).status_code == 200
    denied = client.post(path + "/notes", headers=front_desk.headers, json={"body": "x"})
    assert denied.status_code == 403 and denied.json()["permission"] == "patients:notes"
    assert client.get(path, headers=auditor.headers).json()["permission"] == "patients:read"
    assert client.get(path).status_code == 401


def test_communication_consents_current_and_history(client: TestClient, clinic: Clinic) -> None:
    patient = _create(client, clinic).json()["id"]
    path = f"{PATIENTS}/{patient}/consents"
    start = client.get(path, headers=clinic.headers).json()
    assert start["channels"] == dict.fromkeys(("sms", "email", "whatsapp", "voice", "push"))
    grant = {"consents": [{"channel": "sms", "granted": True, "source": "intake form"}]}
    assert client.put(path, headers=clinic.headers, json=grant).status_code == 200
    client.put(path, headers=clinic.headers, json=grant)  # same state again: no new row
    revoke = {
        "consents": [
            {"channel": "sms", "granted": False, "source": "sms STOP"},
            {"channel": "email", "granted": True, "source": "portal"},
        ]
    }
    now = client.put(path, headers=clinic.headers, json=revoke).json()
    assert now["channels"]["sms"]["granted"] is False
    assert now["channels"]["sms"]["source"] == "sms STOP"
    assert now["channels"]["email"]["granted"] is True
    assert now["channels"]["voice"] is None
    assert [(c["channel"], c["granted"]) for c in now["channel_history"]] == [
        ("sms", True),
        ("email", True),  # one request: its rows in channel order
        ("sms", False),
    ]
    bad = client.put(
        path, headers=clinic.headers, json={"consents": [{"channel": "fax", "granted": True}]}
    )
    assert bad.status_code == 422


def test_data_sharing_per_integration(client: TestClient, clinic: Clinic) -> None:
    patient = _create(client, clinic).json()["id"]
    integration = client.post(
        "/api/v1/integrations",
        headers=clinic.headers,
        json={"connector": "generic_hmac", "name": "EHR", "credentials": {}, "settings": {}},
    ).json()["id"]
    path = f"{PATIENTS}/{patient}/data-sharing"
    unknown = client.post(
        path, headers=clinic.headers, json={"integration_id": "int_X", "granted": True}
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "integration_id"
    granted = client.post(
        path, headers=clinic.headers, json={"integration_id": integration, "granted": True}
    )
    assert granted.status_code == 201 and granted.json()["granted"] is True
    client.post(
        path, headers=clinic.headers, json={"integration_id": integration, "granted": False}
    )
    view = client.get(f"{PATIENTS}/{patient}/consents", headers=clinic.headers).json()
    assert view["data_sharing"][integration]["granted"] is False
    assert [d["granted"] for d in view["data_sharing_history"]] == [True, False]


def test_list_is_paginated(client: TestClient, clinic: Clinic) -> None:
    for i in range(3):
        _create(
            client,
            clinic,
            force=True,
            first_name=f"Test{i}",
            phone=None,
            email=None,
            identifiers=[],
        )
    first = client.get(PATIENTS, headers=clinic.headers, params={"limit": 2}).json()
    assert len(first["data"]) == 2 and first["has_more"]
    rest = client.get(
        PATIENTS,
        headers=clinic.headers,
        params={"limit": 2, "starting_after": first["next_cursor"]},
    ).json()
    assert len(rest["data"]) == 1 and not rest["has_more"]
