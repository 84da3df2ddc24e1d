"""OAuth connections of calendars: authorization code with PKCE through the API and the
public callback, against the fake Google and Microsoft authorization servers (which
check the client, the redirect URI and the S256 verifier as the real ones do)."""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode
from urllib.parse import parse_qs, urlencode, urlsplit

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.calendars.models import CalendarAccount, CalendarOAuthRequest
from clinicbridge.db.engine import Database
from clinicbridge.settings import Settings
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    API,
    GOOGLE_CLIENT,
    Fakes,
    authorize,
    fakes,
    google_integration,
    microsoft_integration,
    ok,
    practice,
)

__all__ = ["fakes"]  # the fixture


def _start(client: TestClient, clinic: Clinic, provider: str, integration: str, **body: object):  # type: ignore[no-untyped-def]
    return client.post(
        f"{API}/providers/{provider}/calendar-accounts/authorize",
        json={"integration_id": integration, **body},
        headers=clinic.headers,
    )


def test_google_authorization_url_has_pkce_state_minimal_scopes_and_our_redirect(
    client: TestClient, clinic: Clinic, settings: Settings, db: Database, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    started = ok(_start(client, clinic, setup.provider, integration, export_bookings=False), 201)
    url = urlsplit(started["authorization_url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "accounts.google.com",
        "/o/oauth2/v2/auth",
    )
    assert query["client_id"] == GOOGLE_CLIENT[0] and query["response_type"] == "code"
    assert query["redirect_uri"] == f"{settings.public_base_url}/oauth/calendar/callback"
    assert query["scope"] == "https://www.googleapis.com/auth/calendar.events.readonly"
    assert started["scopes"] == [query["scope"]]
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert len(query["state"]) >= 32
    with db.read() as session:
        request = session.scalars(sa.select(CalendarOAuthRequest)).one()
    # only the state's hash is stored, and the verifier only sealed
    assert request.state_hash == hashlib.sha256(query["state"].encode()).hexdigest()
    assert query["state"] not in request.code_verifier and request.provider_id == setup.provider
    with_write = ok(_start(client, clinic, setup.provider, integration), 201)
    assert with_write["scopes"] == ["https://www.googleapis.com/auth/calendar.events"]


def test_callback_stores_the_account_with_sealed_tokens_once(
    client: TestClient, clinic: Clinic, db: Database, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    started = ok(_start(client, clinic, setup.provider, integration), 201)
    back = urlsplit(fakes.google.oauth.consent(started["authorization_url"]))
    page = client.get(f"{back.path}?{back.query}")
    assert page.status_code == 200 and "Calendar connected" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert fakes.google.oauth.exchanges == 1
    accounts = ok(
        client.get(f"{API}/providers/{setup.provider}/calendar-accounts", headers=clinic.headers)
    )
    (account,) = accounts["data"]
    assert account["status"] == "active" and account["connector"] == "google_calendar"
    assert account["scopes"] == ["https://www.googleapis.com/auth/calendar.events"]
    assert "tokens" not in account and "access_token" not in str(account)
    (access,) = fakes.google.oauth.access_tokens
    (refresh,) = fakes.google.oauth.refresh_tokens
    with db.read() as session:
        row = session.scalars(sa.select(CalendarAccount)).one()
        audit = " ".join(str(e.diff) for e in session.scalars(sa.select(AuditEvent)))
    assert set(row.tokens) == {"access_token", "refresh_token"}
    assert access not in str(row.tokens) and refresh not in str(row.tokens)
    assert access not in audit and refresh not in audit
    # the same link again: the state was used up
    again = client.get(f"{back.path}?{back.query}")
    assert again.status_code == 400 and fakes.google.oauth.exchanges == 1


def test_unknown_or_tampered_state_and_refused_consent(
    client: TestClient, clinic: Clinic, db: Database, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    assert client.get("/oauth/calendar/callback?code=x&state=nope").status_code == 400
    assert client.get("/oauth/calendar/callback?code=x").status_code == 400
    started = ok(_start(client, clinic, setup.provider, integration), 201)
    state = parse_qs(urlsplit(started["authorization_url"]).query)["state"][0]
    denied = client.get(
        "/oauth/calendar/callback?" + urlencode({"error": "access_denied", "state": state})
    )
    assert denied.status_code == 400 and "not granted" in denied.text
    # refused once: the state cannot be reused with a code afterwards
    assert (
        client.get(
            "/oauth/calendar/callback?" + urlencode({"code": "c", "state": state})
        ).status_code
        == 400
    )
    with db.read() as session:
        assert session.scalars(sa.select(CalendarAccount)).all() == []


def test_a_code_from_another_authorization_fails_the_pkce_check(
    client: TestClient, clinic: Clinic, db: Database, fakes: Fakes
) -> None:
    """The fake checks the verifier against the challenge: a code minted for one
    authorization (another challenge) cannot finish another one."""
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    first = ok(_start(client, clinic, setup.provider, integration), 201)
    second = ok(_start(client, clinic, setup.provider, integration), 201)
    stolen = parse_qs(urlsplit(fakes.google.oauth.consent(first["authorization_url"])).query)[
        "code"
    ][0]
    state = parse_qs(urlsplit(second["authorization_url"]).query)["state"][0]
    page = client.get("/oauth/calendar/callback?" + urlencode({"code": stolen, "state": state}))
    assert page.status_code == 400 and "refused" in page.text
    with db.read() as session:
        assert session.scalars(sa.select(CalendarAccount)).all() == []


def test_missing_scope_is_not_connected(
    client: TestClient, clinic: Clinic, db: Database, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    started = ok(_start(client, clinic, setup.provider, integration), 201)
    back = urlsplit(fakes.google.oauth.consent(started["authorization_url"], grant=[]))
    page = client.get(f"{back.path}?{back.query}")
    assert page.status_code == 400 and "not granted" in page.text
    with db.read() as session:
        assert session.scalars(sa.select(CalendarAccount)).all() == []


def test_microsoft_authorization(client: TestClient, clinic: Clinic, fakes: Fakes) -> None:
    setup = practice(client, clinic)
    integration = microsoft_integration(client, clinic)
    done = authorize(
        client, clinic, setup.provider, integration, fakes.graph.oauth, export_bookings=False
    )
    url = urlsplit(done["started"]["authorization_url"])
    assert url.netloc == "login.microsoftonline.com" and url.path == "/common/oauth2/v2.0/authorize"
    assert done["started"]["scopes"] == ["offline_access", "Calendars.Read"]
    assert done["account"]["status"] == "active"
    assert done["account"]["scopes"] == ["Calendars.Read", "offline_access"]


def test_bad_input_and_other_clinics(
    client: TestClient,
    clinic: Clinic,
    make_clinic,
    fakes: Fakes,  # type: ignore[no-untyped-def]
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    other = make_clinic("Birch Dental")
    other_setup = practice(client, other)
    other_integration = google_integration(client, other)
    assert _start(client, clinic, other_setup.provider, integration).status_code == 404
    assert _start(client, clinic, setup.provider, other_integration).status_code == 404
    bad = _start(client, clinic, setup.provider, "int_nope")
    assert bad.status_code in (404, 422)
    smtp = ok(
        client.post(
            f"{API}/integrations",
            json={"connector": "generic_hmac", "name": "x", "credentials": {}},
            headers=clinic.headers,
        ),
        201,
    )["id"]
    wrong = _start(client, clinic, setup.provider, smtp)
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "integration_id"
    unknown_field = _start(client, clinic, setup.provider, integration, scopes=["all"])
    assert (
        unknown_field.status_code == 422 and unknown_field.json()["errors"][0]["field"] == "scopes"
    )
    # the other clinic cannot list this provider's accounts
    assert (
        client.get(
            f"{API}/providers/{setup.provider}/calendar-accounts", headers=other.headers
        ).status_code
        == 404
    )


def test_connection_test_checks_the_oauth_app(
    client: TestClient, clinic: Clinic, fakes: Fakes
) -> None:
    client.app.state.outbound_transport = fakes.router  # type: ignore[attr-defined]
    integration = google_integration(client, clinic)
    result = ok(client.post(f"{API}/integrations/{integration}/test", headers=clinic.headers))
    assert result["ok"] is True, result
    fakes.google.oauth.client_secret = "rotated-elsewhere"
    refused = ok(client.post(f"{API}/integrations/{integration}/test", headers=clinic.headers))
    assert refused["ok"] is False and refused["status"] == "needs_reauth"


def test_verifier_is_s256_of_what_the_callback_sends(
    client: TestClient, clinic: Clinic, fakes: Fakes
) -> None:
    """Independent of the fake: the challenge in the URL is BASE64URL(SHA256(verifier))
    of the verifier the token request carries."""
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    done = authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    challenge = parse_qs(urlsplit(done["started"]["authorization_url"]).query)["code_challenge"][0]
    token_calls = [r for r in fakes.google.requests if r.url.path == "/token"]
    form = parse_qs(token_calls[-1].content.decode())
    verifier = form["code_verifier"][0]
    digest = urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert digest == challenge and 43 <= len(verifier) <= 128
    assert form["grant_type"] == ["authorization_code"]
