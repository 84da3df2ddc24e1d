"""``/api/v1/connectors`` and ``/api/v1/integrations``: the contract outside tools rely on."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from tests.conftest import Clinic, add_key

STRIPE_KEY = "sk_test_51Fake0000000000000000000000abcd"
WHSEC = "whsec_fakeSecretForTests0123456789"


class FakeStripe(BaseHTTPRequestHandler):
    """Answers GET /v1/balance like Stripe: 200 for the right key, 401 otherwise."""

    def do_GET(self) -> None:
        ok = self.path == "/v1/balance" and self.headers["Authorization"] == f"Bearer {STRIPE_KEY}"
        body = json.dumps(
            {"object": "balance"} if ok else {"error": {"type": "invalid_request_error"}}
        )
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def fake_stripe() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _create(client: TestClient, clinic: Clinic, **overrides: object):  # type: ignore[no-untyped-def]
    body = {
        "connector": "stripe",
        "name": "Stripe (front desk)",
        "credentials": {"api_key": STRIPE_KEY, "webhook_secret": WHSEC},
        "settings": {"currency": "cad"},
    }
    body.update(overrides)
    return client.post("/api/v1/integrations", headers=clinic.headers, json=body)


def test_catalog_lists_every_connector_with_schemas(client: TestClient, clinic: Clinic) -> None:
    data = client.get("/api/v1/connectors", headers=clinic.headers).json()["data"]
    keys = {c["key"] for c in data}
    assert keys >= {
        "stripe",
        "twilio",
        "sendgrid",
        "resend",
        "mailgun",
        "docusign",
        "zoom",
        "vapi",
        "generic_hmac",
        "standard_webhooks",
    }
    stripe = next(c for c in data if c["key"] == "stripe")
    assert set(stripe["credentials_schema"]["properties"]) == {"api_key", "webhook_secret"}
    assert (
        stripe["settings_schema"]["properties"]["api_base"]["default"] == "https://api.stripe.com/"
    )


def test_create_answers_the_contract_and_hides_credentials(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    created = _create(client, clinic)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("int_") and body["connector"] == "stripe"
    assert body["status"] == "active"
    assert body["webhook_url"] == f"http://127.0.0.1:8000/webhooks/{body['id']}"
    assert body["credentials_set"] is True
    assert body["credential_hints"] == {"api_key": "…abcd", "webhook_secret": None}
    assert body["settings"]["currency"] == "CAD"
    assert STRIPE_KEY not in created.text and WHSEC not in created.text
    shown = client.get(f"/api/v1/integrations/{body['id']}", headers=clinic.headers).text
    assert STRIPE_KEY not in shown and WHSEC not in shown
    with db.read() as session:
        stored = session.get(Integration, body["id"])
        assert stored is not None
        assert STRIPE_KEY not in json.dumps(stored.credentials)
        assert all(v.startswith("cb1:") for v in stored.credentials.values())
        audit = " ".join(str(r) for r in session.execute(sa.select(AuditEvent.__table__)).all())
        assert "integration.create" in audit and STRIPE_KEY not in audit and WHSEC not in audit


def test_bad_input_names_the_field(client: TestClient, clinic: Clinic) -> None:
    unknown = _create(client, clinic, connector="fax-o-matic")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "connector"
    bad_key = _create(client, clinic, credentials={"api_key": "not-a-stripe-key"})
    assert bad_key.status_code == 422
    assert bad_key.json()["errors"][0]["field"] == "credentials.api_key"
    assert "not-a-stripe-key" not in bad_key.text
    extra = _create(client, clinic, credentials={"api_key": STRIPE_KEY, "password": "x"})
    assert extra.json()["errors"][0]["field"] == "credentials.password"
    bad_setting = _create(client, clinic, settings={"api_base": "not a url"})
    assert bad_setting.json()["errors"][0]["field"] == "settings.api_base"
    twilio = _create(
        client,
        clinic,
        connector="twilio",
        credentials={"account_sid": "AC" + "0" * 32, "auth_token": "t0k3n"},
        settings={},
    )
    assert twilio.status_code == 422 and "from_number" in twilio.text


def test_generated_secret_is_shown_once(client: TestClient, clinic: Clinic) -> None:
    created = _create(client, clinic, connector="generic_hmac", credentials={}, settings={})
    assert created.status_code == 201, created.text
    secret = created.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    again = client.get(f"/api/v1/integrations/{created.json()['id']}", headers=clinic.headers)
    assert secret not in again.text


def test_update_disable_delete_and_isolation(
    client: TestClient, make_clinic: Callable[..., Clinic]
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    integration = _create(client, maple).json()
    path = f"/api/v1/integrations/{integration['id']}"
    for method in ("GET", "PATCH", "DELETE"):
        other = client.request(
            method, path, headers=birch.headers, json={"name": "x"} if method == "PATCH" else None
        )
        assert other.status_code == 404
    assert client.get("/api/v1/integrations", headers=birch.headers).json()["data"] == []
    patched = client.patch(
        path,
        headers=maple.headers,
        json={
            "name": "Stripe",
            "enabled": False,
            "settings": {"currency": "usd"},
            "credentials": {"api_key": "sk_live_51Other0000000000000000000000wxyz"},
        },
    )
    assert patched.status_code == 200, patched.text
    out = patched.json()
    assert (out["name"], out["enabled"], out["status"]) == ("Stripe", False, "disabled")
    assert out["settings"]["currency"] == "USD" and out["credential_hints"]["api_key"] == "…wxyz"
    assert client.delete(path, headers=maple.headers).status_code == 204
    assert client.get(path, headers=maple.headers).status_code == 404


def test_permissions(client: TestClient, clinic: Clinic, db: Database) -> None:
    auditor = add_key(db, clinic, "auditor")
    assert client.get("/api/v1/integrations", headers=auditor.headers).status_code == 200
    denied = _create(client, auditor)
    assert denied.status_code == 403 and denied.json()["permission"] == "integrations:manage"


def test_test_connection_calls_the_provider_and_records_the_result(
    client: TestClient, clinic: Clinic, fake_stripe: str
) -> None:
    good = _create(client, clinic, settings={"api_base": fake_stripe}).json()
    result = client.post(f"/api/v1/integrations/{good['id']}/test", headers=clinic.headers)
    assert result.status_code == 200 and result.json()["ok"] is True
    shown = client.get(f"/api/v1/integrations/{good['id']}", headers=clinic.headers).json()
    assert shown["last_test"]["ok"] is True and shown["status"] == "active"

    bad = _create(
        client,
        clinic,
        settings={"api_base": fake_stripe},
        credentials={"api_key": "sk_test_51Wrong000000000000000000000000"},
    ).json()
    refused = client.post(f"/api/v1/integrations/{bad['id']}/test", headers=clinic.headers).json()
    assert refused["ok"] is False and refused["status"] == "needs_reauth"
    assert "refused the credentials (401)" in refused["message"]


def test_rotate_webhook_secret(client: TestClient, clinic: Clinic) -> None:
    stripe = _create(client, clinic).json()
    path = f"/api/v1/integrations/{stripe['id']}/rotate-webhook-secret"
    needs_new = client.post(path, headers=clinic.headers, json={})
    assert (
        needs_new.status_code == 422 and needs_new.json()["errors"][0]["field"] == "webhook_secret"
    )
    rotated = client.post(
        path, headers=clinic.headers, json={"webhook_secret": "whsec_new0123456789"}
    )
    assert rotated.status_code == 200 and rotated.json()["webhook_secret"] is None
    assert rotated.json()["previous_valid_until"] is not None
    generic = _create(client, clinic, connector="generic_hmac", credentials={}, settings={}).json()
    generated = client.post(
        f"/api/v1/integrations/{generic['id']}/rotate-webhook-secret", headers=clinic.headers
    ).json()
    assert generated["webhook_secret"].startswith("whsec_")
