"""A clinic's own templates: validated on save, previewed with sample data and SMS
segments, used over the built-in ones along the language chain, and removable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.db.engine import Database
from clinicbridge.messaging.models import ClinicTemplate, Message
from tests.conftest import Clinic, add_key
from tests.integration.test_messages import Server, _email_integration, _patient, smtp  # noqa: F401

API = "/api/v1"
URL = f"{API}/message-templates/booking.reminder/email/fr"
FRENCH = {
    "subject": "Rappel : {{ booking.service }} le {{ booking.date_text }}",
    "body": "Bonjour {{ patient.first_name }}, à bientôt à {{ clinic.name }}.",
    "html": "<p>Bonjour {{ patient.first_name }}</p>",
}


def test_save_validates_and_names_the_field(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    bad = {**FRENCH, "body": "Bonjour {{ patient.last_name }}"}
    answer = client.put(URL, json=bad, headers=clinic.headers)
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "body"
    unsafe = {**FRENCH, "html": "{{ ''.__class__ }}"}
    assert client.put(URL, json=unsafe, headers=clinic.headers).status_code == 422
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ClinicTemplate)) == 0
    saved = client.put(URL, json=FRENCH, headers=clinic.headers)
    assert saved.status_code == 200, saved.text
    listed = client.get(f"{API}/message-templates", headers=clinic.headers).json()["data"]
    assert [(t["kind"], t["channel"], t["language"]) for t in listed] == [
        ("booking.reminder", "email", "fr")
    ]


def test_preview_shows_text_and_sms_segments(client: TestClient, clinic: Clinic) -> None:
    sms = {
        "kind": "booking.reminder",
        "channel": "sms",
        "language": "fr",
        "body": "Rappel: {{ booking.service }} le {{ booking.start_text }} ({{ clinic.name }})",
    }
    shown = client.post(f"{API}/message-templates/preview", json=sms, headers=clinic.headers)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert "Check-up" in body["text"] and body["sms"]["segments"] == 1
    assert body["sms"]["encoding"] == "GSM-7"
    emoji = client.post(
        f"{API}/message-templates/preview",
        json={**sms, "body": sms["body"] + " 🙂"},
        headers=clinic.headers,
    )
    assert emoji.json()["sms"]["encoding"] == "UCS-2"


def test_a_clinic_template_is_used_for_its_language_and_can_be_removed(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    smtp: Server,  # noqa: F811
) -> None:
    _email_integration(client, clinic, smtp.port)
    patient = _patient(client, clinic)
    client.patch(
        f"{API}/patients/{patient}", json={"preferred_language": "fr-CA"}, headers=clinic.headers
    )
    assert client.put(URL, json=FRENCH, headers=clinic.headers).status_code == 200
    variables = _variables()
    message = {
        "patient_id": patient,
        "channel": "email",
        "template": "booking.reminder",
        "variables": variables,
    }
    sent = client.post(f"{API}/messages", json=message, headers=clinic.headers)
    assert sent.status_code == 202, sent.text
    with db.read() as session:
        row = session.get(Message, sent.json()["id"])
        assert row is not None and row.body.startswith("Bonjour Quinn") and row.language == "fr"
    assert client.delete(URL, headers=clinic.headers).status_code == 204
    again = client.post(f"{API}/messages", json=message, headers=clinic.headers).json()
    with db.read() as session:
        row = session.get(Message, again["id"])
        assert row is not None and not row.body.startswith("Bonjour Quinn, à bientôt")
    assert client.delete(URL, headers=clinic.headers).status_code == 404


def test_editing_needs_tenant_write_and_stays_in_the_clinic(
    client: TestClient, clinic: Clinic, db: Database, make_clinic: Callable[..., Clinic]
) -> None:
    desk = add_key(db, clinic, "front_desk")
    answer = client.put(URL, json=FRENCH, headers=desk.headers)
    assert answer.status_code == 403 and answer.json()["permission"] == "tenant:write"
    assert client.put(URL, json=FRENCH, headers=clinic.headers).status_code == 200
    other = make_clinic("Birch Clinic")
    assert client.get(f"{API}/message-templates", headers=other.headers).json()["data"] == []


def _variables() -> dict[str, Any]:
    return {
        "clinic": {"name": "Maple Family Clinic", "phone": "+1 416 555 0100"},
        "patient": {"first_name": "Quinn"},
        "booking": {
            "start_text": "mardi 10 mars 2026, 10 h 30",
            "date_text": "mardi 10 mars",
            "time_text": "10 h 30",
            "service": "Bilan",
            "provider": "Dr. Sample",
            "location": "Main Street",
            "confirmation_code": "K7Q-4MX",
            "video_url": "",
        },
        "links": {
            "confirm_url": "https://clinic.example/b/x",
            "cancel_url": "https://clinic.example/b/y",
        },
    }
