"""The admin integrations page over HTTP: forms from schemas, secrets, CSRF, isolation."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.integrations import alerts
from clinicbridge.jobs.models import Job
from clinicbridge.web.integrations import form_fields
from tests.conftest import Clinic
from tests.integration.test_admin_web import _csrf, _login, _user
from tests.integration.test_integration_health import _calls
from tests.integration.test_integrations_api import STRIPE_KEY, WHSEC, fake_stripe  # noqa: F401
from tests.integration.test_webhook_inbox import stripe_event, stripe_headers


def _signed_in(
    client: TestClient, clinic: Clinic, role: str = "owner", who: str = "maple"
) -> dict[str, str]:
    email = f"{role}@{who}.example.com"
    _user(client, clinic, email, role=role)
    _login(client, email)
    page = client.get(f"/admin/tenants/{clinic.id}/integrations")
    assert page.status_code == 200, page.text
    return {"HX-Request": "true", "X-CSRF-Token": _csrf(page.text)}


def _connect(
    client: TestClient, clinic: Clinic, hx: dict[str, str], api_base: str = "", **fields: str
) -> Any:  # the TestClient's response (httpx2)
    data = {
        "connector": "stripe",
        "name": "Stripe",
        "credentials.api_key": STRIPE_KEY,
        "credentials.webhook_secret": WHSEC,
        "settings.api_base": api_base,
        "settings.currency": "cad",
        **fields,
    }
    return client.post(f"/admin/tenants/{clinic.id}/integrations", headers=hx, data=data)


def _stripe_id(client: TestClient, clinic: Clinic) -> str:
    return str(client.get("/api/v1/integrations", headers=clinic.headers).json()["data"][0]["id"])


def test_form_fields_follow_the_schemas() -> None:
    from clinicbridge.integrations.connectors.stripe import StripeCredentials, StripeSettings

    creds = form_fields(StripeCredentials.model_json_schema(), secret=True)
    assert [(f.name, f.label, f.kind, f.required, f.default) for f in creds] == [
        ("api_key", "API key", "password", True, None),
        ("webhook_secret", "Webhook secret", "password", False, None),
    ]
    settings = form_fields(StripeSettings.model_json_schema(), secret=False)
    assert [(f.name, f.kind, f.default) for f in settings] == [
        ("api_base", "url", "https://api.stripe.com/"),
        ("currency", "text", "USD"),
        ("rate_limit_per_second", "number", None),
    ]


def test_catalog_and_a_connect_form_with_write_only_secrets(
    client: TestClient, clinic: Clinic
) -> None:
    hx = _signed_in(client, clinic)
    page = client.get(f"/admin/tenants/{clinic.id}/integrations")
    assert "Connect Twilio" in page.text and "Connect Stripe" in page.text
    form = client.get(f"/admin/tenants/{clinic.id}/integrations/connect/stripe", headers=hx)
    assert form.status_code == 200 and form.text.lstrip().startswith(
        '<section class="card" id="connect"'
    )
    secret_inputs = re.findall(r'<input type="password" name="credentials\.(\w+)"[^>]*>', form.text)
    assert secret_inputs == ["api_key", "webhook_secret"]
    assert all(
        "value=" not in tag for tag in re.findall(r'<input type="password"[^>]*>', form.text)
    )
    assert 'name="settings.api_base" value="https://api.stripe.com/"' in form.text
    assert (
        client.get(f"/admin/tenants/{clinic.id}/integrations/connect/fax", headers=hx).status_code
        == 404
    )


def test_connect_validates_and_never_echoes_credentials(client: TestClient, clinic: Clinic) -> None:
    hx = _signed_in(client, clinic)
    bad = _connect(client, clinic, hx, **{"credentials.api_key": "pk_wrong_kind_of_key"})
    assert bad.status_code == 422 and "credentials.api_key" in bad.text
    assert "pk_wrong_kind_of_key" not in bad.text and WHSEC not in bad.text
    assert 'name="settings.currency" value="cad"' in bad.text  # settings are kept
    ok = _connect(client, clinic, hx)
    assert ok.status_code == 200 and "Connected Stripe." in ok.text
    assert 'id="integrations" hx-swap-oob="true"' in ok.text  # the list is refreshed too
    assert STRIPE_KEY not in ok.text and WHSEC not in ok.text and "…abcd" in ok.text
    page = client.get(f"/admin/tenants/{clinic.id}/integrations").text
    assert STRIPE_KEY not in page and WHSEC not in page
    stripe_id = _stripe_id(client, clinic)
    assert f'value="http://127.0.0.1:8000/webhooks/{stripe_id}"' in page
    assert "Copy webhook URL" in page


def test_generated_secrets_are_shown_once(client: TestClient, clinic: Clinic) -> None:
    hx = _signed_in(client, clinic)
    created = client.post(
        f"/admin/tenants/{clinic.id}/integrations",
        headers=hx,
        data={"connector": "generic_hmac", "name": "Lab system"},
    )
    secret = re.search(r'id="generated-secret">(whsec_[^<]+)<', created.text)
    assert secret
    assert secret.group(1) not in client.get(f"/admin/tenants/{clinic.id}/integrations").text


def test_forms_need_the_csrf_token(client: TestClient, clinic: Clinic) -> None:
    hx = _signed_in(client, clinic)
    assert _connect(client, clinic, {"HX-Request": "true"}).status_code == 403
    assert client.get("/api/v1/integrations", headers=clinic.headers).json()["data"] == []
    _connect(client, clinic, hx)
    stripe_id = _stripe_id(client, clinic)
    forged = client.post(
        f"/admin/tenants/{clinic.id}/integrations/{stripe_id}/disable",
        headers={"HX-Request": "true", "X-CSRF-Token": "forged"},
    )
    assert forged.status_code == 403


def test_test_connection_enable_disable(
    client: TestClient,
    clinic: Clinic,
    fake_stripe: str,  # noqa: F811
) -> None:
    hx = _signed_in(client, clinic)
    _connect(client, clinic, hx, api_base=fake_stripe)
    stripe_id = _stripe_id(client, clinic)
    base = f"/admin/tenants/{clinic.id}/integrations/{stripe_id}"
    tested = client.post(f"{base}/test", headers=hx)
    assert tested.status_code == 200
    assert tested.text.lstrip().startswith(f'<article class="card" id="integration-{stripe_id}"')
    assert "Connection test: connected" in tested.text and 'data-health="healthy"' in tested.text
    assert "1 call, 0% failed" in tested.text  # the test call is in the call log
    disabled = client.post(f"{base}/disable", headers=hx)
    assert 'data-health="disabled"' in disabled.text and ">Enable</button>" in disabled.text
    assert (
        client.get(f"/api/v1/integrations/{stripe_id}", headers=clinic.headers).json()["enabled"]
        is False
    )
    enabled = client.post(f"{base}/enable", headers=hx)
    assert ">Disable</button>" in enabled.text


def test_events_are_listed_and_replayed(client: TestClient, clinic: Clinic, db: Database) -> None:
    hx = _signed_in(client, clinic)
    _connect(client, clinic, hx)
    stripe_id = _stripe_id(client, clinic)
    body = stripe_event("evt_admin")
    assert (
        client.post(
            f"/webhooks/{stripe_id}", content=body, headers=stripe_headers(body, secret=WHSEC)
        ).status_code
        == 200
    )
    page = client.get(f"/admin/tenants/{clinic.id}/integrations").text
    event_id = re.search(r'data-event-id="(whe_[^"]+)"', page)
    assert event_id and "evt_admin" in page
    with db.write() as session:  # as if the worker had given up on it
        session.execute(sa.update(Job).values(state="dead"))
        session.execute(sa.text("UPDATE webhook_events SET status = 'dead', attempts = 3"))
    base = f"/admin/tenants/{clinic.id}/integrations/{stripe_id}"
    replayed = client.post(f"{base}/events/{event_id.group(1)}/replay", headers=hx)
    assert replayed.status_code == 200 and "will be processed again" in replayed.text
    assert 'data-status="received"' in replayed.text
    refreshed = client.get(f"{base}/events", headers=hx)
    assert refreshed.text.lstrip().startswith(f'<section id="events-{stripe_id}"')


def test_health_badges_sparkline_and_alerts(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    hx = _signed_in(client, clinic)
    _connect(client, clinic, hx)
    stripe_id = _stripe_id(client, clinic)
    now = SystemClock().now()
    _calls(db, clinic.id, stripe_id, now - timedelta(hours=20), ms=[100.0, 300.0])
    _calls(db, clinic.id, stripe_id, now - timedelta(minutes=3), ms=[50.0] * 5, failed=5)
    alerts.evaluate_clinic(db, clinic.id, now)
    page = client.get(f"/admin/tenants/{clinic.id}/integrations").text
    assert 'data-health="down"' in page and "all 5 calls in the last 15 min failed" in page
    assert "Open alerts" in page and "provider down" in page and "error spike" in page
    spark = re.search(r'<svg role="img" aria-label="([^"]+)"', page)
    assert spark and spark.group(1) == (
        "Last 24 hours: 7 calls, 5 failed, slowest hourly mean 200 ms"
    )
    latency = re.search(r'<polyline class="lat" points="([^"]+)"', page)
    assert latency and len(latency.group(1).split()) == 24
    assert latency.group(1).split()[3] == "30.0,2.0"  # the peak hour, 20 hours ago


def test_another_clinics_integrations_are_404(
    client: TestClient, make_clinic: Callable[..., Clinic]
) -> None:
    maple, birch = make_clinic("Maple"), make_clinic("Birch")
    birch_hx = _signed_in(client, birch, who="birch")
    _connect(client, birch, birch_hx)
    birch_stripe = _stripe_id(client, birch)
    client.cookies.clear()
    hx = _signed_in(client, maple)
    assert client.get(f"/admin/tenants/{birch.id}/integrations").status_code == 404
    for path in (
        f"/admin/tenants/{maple.id}/integrations/{birch_stripe}/test",
        f"/admin/tenants/{maple.id}/integrations/{birch_stripe}/disable",
        f"/admin/tenants/{birch.id}/integrations/{birch_stripe}/disable",
    ):
        assert client.post(path, headers=hx).status_code == 404
    assert (
        client.get(
            f"/admin/tenants/{maple.id}/integrations/{birch_stripe}/events", headers=hx
        ).status_code
        == 404
    )
    assert (
        "Stripe"
        not in client.get(f"/admin/tenants/{maple.id}/integrations").text.split(
            "Available services"
        )[0]
    )


def test_permissions(client: TestClient, clinic: Clinic) -> None:
    owner = _signed_in(client, clinic)
    _connect(client, clinic, owner)
    stripe_id = _stripe_id(client, clinic)
    client.cookies.clear()
    auditor = _signed_in(client, clinic, role="auditor")
    page = client.get(f"/admin/tenants/{clinic.id}/integrations").text
    assert "Stripe" in page and "Test connection" not in page and "Connect Stripe" not in page
    assert ">Replay</button>" not in page
    base = f"/admin/tenants/{clinic.id}/integrations"
    assert client.post(f"{base}/{stripe_id}/test", headers=auditor).status_code == 403
    assert client.get(f"{base}/connect/stripe", headers=auditor).status_code == 403
    client.cookies.clear()
    _user(client, clinic, "nurse@maple.example.com", role="clinician")
    _login(client, "nurse@maple.example.com")
    assert client.get(base).status_code == 403
    assert "/integrations" not in client.get(f"/admin/tenants/{clinic.id}").text
