"""Web push: a clinic's VAPID key pair made by the ``web_push`` connector, patients'
subscriptions through the API, and messages encrypted (RFC 8291) and signed (RFC 8292)
for a fake push service that checks the VAPID JWT and decrypts each body with the
browser's key, from the RFCs, independently of the sending libraries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.db.engine import Database
from clinicbridge.messaging.models import Message
from clinicbridge.messaging.push_models import PushSubscription
from clinicbridge.messaging.service import SEND_KIND
from clinicbridge.settings import Settings, load_settings
from clinicbridge.testing.push import FakePushService
from tests.conftest import Clinic
from tests.integration.test_messages import run_jobs

API = "/api/v1"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The fake push service listens on 127.0.0.1: allow-listed, as an operator would."""
    return load_settings(
        database_url=database_url,
        master_key_file=tmp_path / "master.key",
        webhook_allowlist="127.0.0.1",
    )


@pytest.fixture
def service() -> Iterator[FakePushService]:
    fake = FakePushService().start()
    yield fake
    fake.stop()


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _integration(client: TestClient, clinic: Clinic) -> dict[str, Any]:
    body = {"connector": "web_push", "name": "Patient app",
            "settings": {"subject": "mailto:rdv@clinic.example"}}  # fmt: skip
    return dict(_ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201))


def _patient(client: TestClient, clinic: Clinic) -> str:
    body = {"first_name": "Noor", "last_name": "Sample", "date_of_birth": "1990-01-02"}
    return str(
        _ok(client.post(f"{API}/patients?force=true", json=body, headers=clinic.headers), 201)["id"]
    )


def _subscribe(client: TestClient, clinic: Clinic, patient: str, sub: dict[str, Any]) -> Any:
    return client.post(f"{API}/patients/{patient}/push-subscriptions", json=sub,
                       headers=clinic.headers)  # fmt: skip


def _push(client: TestClient, clinic: Clinic, patient: str, body: str) -> dict[str, Any]:
    message = {"patient_id": patient, "channel": "push", "subject": "Maple Clinic", "body": body}
    return dict(_ok(client.post(f"{API}/messages", json=message, headers=clinic.headers), 202))


def _message(db: Database, message_id: str) -> Message:
    with db.read() as session:
        found = session.get(Message, message_id)
        assert found is not None
        return found


def test_a_push_message_reaches_every_device_encrypted_and_vapid_signed(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, service: FakePushService
) -> None:
    integration = _integration(client, clinic)
    public_key = integration["settings"]["application_server_key"]
    assert len(public_key) == 87 and integration["credentials_set"]
    assert integration["credential_hints"] == {"vapid_private_key": None}  # never shown
    patient = _patient(client, clinic)
    phone, laptop = service.subscription(), service.subscription()
    for sub in (phone, laptop):
        _ok(_subscribe(client, clinic, patient, sub), 201)
    listed = _ok(client.get(f"{API}/patients/{patient}/push-subscriptions",
                            headers=clinic.headers))["data"]  # fmt: skip
    assert [s["origin"] for s in listed] == [service.origin] * 2
    assert "endpoint" not in listed[0]

    queued = _push(client, clinic, patient, "Your appointment is tomorrow at 9:30. À demain!")
    run_jobs(db, settings, SEND_KIND)
    sent = _message(db, queued["id"])
    assert sent.status == "sent" and sent.provider_message_id.startswith(service.origin + "/m/")
    for sub in (phone, laptop):
        assert service.messages_for(sub["endpoint"]) == [
            {"title": "Maple Clinic", "body": "Your appointment is tomorrow at 9:30. À demain!",
             "message_id": queued["id"]}
        ]  # fmt: skip
    assert service.rejected == []
    first = service.received[0]
    assert first.vapid_key == public_key
    assert first.vapid_claims["sub"] == "mailto:rdv@clinic.example"
    assert first.headers["ttl"] == "86400" and first.headers["urgency"] == "normal"
    assert first.headers["topic"] == queued["id"].split("_", 1)[1]


def test_a_device_the_push_service_says_is_gone_is_never_used_again(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, service: FakePushService
) -> None:
    _integration(client, clinic)
    patient = _patient(client, clinic)
    old, new = service.subscription(), service.subscription()
    _ok(_subscribe(client, clinic, patient, old), 201)
    _ok(_subscribe(client, clinic, patient, new), 201)
    service.gone.add(old["endpoint"].rsplit("/", 1)[-1])
    first = _push(client, clinic, patient, "One")
    run_jobs(db, settings, SEND_KIND)
    assert _message(db, first["id"]).status == "sent"
    with db.read() as session:
        expired = session.scalars(
            sa.select(PushSubscription.id).where(PushSubscription.expired_at.is_not(None))
        ).all()
    assert len(expired) == 1
    service.gone.add(new["endpoint"].rsplit("/", 1)[-1])
    second = _push(client, clinic, patient, "Two")  # queued to the one device left
    run_jobs(db, settings, SEND_KIND)
    failed = _message(db, second["id"])
    assert failed.status == "failed"
    assert failed.error == "web push: the patient has no active push subscription"
    three = {"patient_id": patient, "channel": "push", "body": "Three"}
    refused = client.post(f"{API}/messages", headers=clinic.headers, json=three)
    assert refused.status_code == 422
    assert refused.json()["errors"][0] == {
        "field": "channel",
        "message": "the patient has no address for push",
        "code": "no_address",
    }


def test_a_push_service_outage_is_retried_and_an_opt_out_suppresses(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, service: FakePushService
) -> None:
    _integration(client, clinic)
    patient = _patient(client, clinic)
    sub = service.subscription()
    _ok(_subscribe(client, clinic, patient, sub), 201)
    service.next_statuses = [503, 503, 503]  # the outbound client tries three times
    queued = _push(client, clinic, patient, "Hello")
    with pytest.raises(ExternalServiceError) as raised:
        run_jobs(db, settings, SEND_KIND)
    assert raised.value.retryable and raised.value.status_code == 503
    assert _message(db, queued["id"]).status == "queued"  # nothing went out: it will retry
    run_jobs(db, settings, SEND_KIND)
    assert _message(db, queued["id"]).status == "sent"
    assert len(service.messages_for(sub["endpoint"])) == 1
    opt_out = {"consents": [{"channel": "push", "granted": False, "source": "app settings"}]}
    _ok(client.put(f"{API}/patients/{patient}/consents", json=opt_out, headers=clinic.headers))
    assert _push(client, clinic, patient, "Again")["status"] == "suppressed"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"keys": {"p256dh": "A" * 87, "auth": "B" * 22}}, "keys.p256dh"),
        ({"keys": {"p256dh": "BA" + "A" * 85, "auth": "B" * 22}}, "keys.p256dh"),  # off the curve
        ({"keys": {"p256dh": "ok", "auth": "B" * 20}}, "keys.auth"),
        ({"endpoint": "https://10.0.0.5/wpush/x"}, None),
        ({"endpoint": "ftp://push.example/x"}, "endpoint"),
        ({"endpoint": "http://push.example/x"}, "endpoint"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_subscription_names_its_field_and_stores_nothing(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    service: FakePushService,
    change: dict[str, Any],
    field: str | None,
) -> None:
    patient = _patient(client, clinic)
    sub = {**service.subscription(), **change}
    if sub["keys"]["p256dh"] == "ok":  # a good key, with a bad auth secret
        sub["keys"]["p256dh"] = service.subscription()["keys"]["p256dh"]
    answer = _subscribe(client, clinic, patient, sub)
    if field is None:  # https to a private address: accepted, refused when connecting
        assert answer.status_code == 201
        return
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PushSubscription)) == 0


def test_another_clinic_cannot_see_or_register_a_patients_devices(
    client: TestClient, clinic: Clinic, make_clinic: Any, service: FakePushService
) -> None:
    patient = _patient(client, clinic)
    _ok(_subscribe(client, clinic, patient, service.subscription()), 201)
    other = make_clinic("Other Clinic")
    assert _subscribe(client, other, patient, service.subscription()).status_code == 404
    listing = client.get(f"{API}/patients/{patient}/push-subscriptions", headers=other.headers)
    assert listing.status_code == 404


def test_a_new_private_key_changes_the_public_key_and_a_bad_one_is_refused(
    client: TestClient, clinic: Clinic
) -> None:
    integration = _integration(client, clinic)
    from clinicbridge.integrations.connectors.web_push import new_private_key

    fresh = {"credentials": {"vapid_private_key": new_private_key()}}
    patched = client.patch(
        f"{API}/integrations/{integration['id']}", headers=clinic.headers, json=fresh
    )
    changed = _ok(patched)
    assert (
        changed["settings"]["application_server_key"]
        != integration["settings"]["application_server_key"]
    )
    bad = client.patch(f"{API}/integrations/{integration['id']}", headers=clinic.headers,
                       json={"credentials": {"vapid_private_key": "not-a-key"}})  # fmt: skip
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["credentials.vapid_private_key"]
    test = _ok(client.post(f"{API}/integrations/{integration['id']}/test", headers=clinic.headers))
    assert test["ok"] is True
