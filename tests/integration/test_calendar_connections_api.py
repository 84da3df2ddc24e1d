"""``/api/v1/providers/{id}/calendar-connections``: bad input names the field, another
clinic's provider, integration or connection is a 404, permissions, duplicates,
idempotency, and what the list shows."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.db.engine import Database
from tests.conftest import Clinic, add_key
from tests.integration.calendar_helpers import (
    API,
    Fakes,
    authorize,
    connect,
    fakes,
    google_integration,
    ok,
    practice,
)

__all__ = ["fakes"]


def _post(
    client: TestClient, clinic: Clinic, provider: str, body: dict[str, object], **headers: str
):  # type: ignore[no-untyped-def]
    return client.post(
        f"{API}/providers/{provider}/calendar-connections",
        json=body,
        headers={**clinic.headers, **headers},
    )


def _field(response) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    return response.status_code, response.json()["errors"][0]["field"]


def test_bad_input_names_the_field(client: TestClient, clinic: Clinic, fakes: Fakes) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    assert _field(_post(client, clinic, setup.provider, {"integration_id": integration})) == (
        422,
        "calendar",
    )
    assert _field(_post(client, clinic, setup.provider, {"calendar": "primary"})) == (
        422,
        "integration_id",
    )
    assert _field(
        _post(
            client, clinic, setup.provider, {"integration_id": integration, "calendar": "x" * 1025}
        )
    ) == (422, "calendar")
    assert _field(
        _post(
            client,
            clinic,
            setup.provider,
            {"integration_id": integration, "calendar": "primary", "color": "red"},
        )
    ) == (422, "color")
    assert _field(
        _post(
            client,
            clinic,
            setup.provider,
            {"integration_id": integration, "calendar": "primary", "import_busy": "maybe"},
        )
    ) == (422, "import_busy")
    # not authorized yet: a conflict that says what to do
    response = _post(
        client, clinic, setup.provider, {"integration_id": integration, "calendar": "primary"}
    )
    assert response.status_code == 409 and response.json()["type"].endswith(
        "/calendar-not-authorized"
    )
    hook = ok(
        client.post(
            f"{API}/integrations",
            json={"connector": "generic_hmac", "name": "x", "credentials": {}},
            headers=clinic.headers,
        ),
        201,
    )["id"]
    assert _field(
        _post(client, clinic, setup.provider, {"integration_id": hook, "calendar": "primary"})
    ) == (422, "integration_id")
    authorize(
        client, clinic, setup.provider, integration, fakes.google.oauth, export_bookings=False
    )
    fakes.google.calendars["primary"] = {}
    read_only = _post(
        client, clinic, setup.provider, {"integration_id": integration, "calendar": "primary"}
    )
    assert _field(read_only) == (422, "export_bookings")
    missing = _post(
        client,
        clinic,
        setup.provider,
        {
            "integration_id": integration,
            "calendar": "nope@group.calendar.google.com",
            "export_bookings": False,
        },
    )
    assert _field(missing) == (422, "calendar")
    created = ok(
        _post(
            client,
            clinic,
            setup.provider,
            {"integration_id": integration, "calendar": "primary", "export_bookings": False},
        ),
        201,
    )
    assert created["export_bookings"] is False and created["import_busy"] is True
    again = _post(
        client,
        clinic,
        setup.provider,
        {"integration_id": integration, "calendar": "primary", "export_bookings": False},
    )
    assert again.status_code == 409 and again.json()["type"].endswith("/calendar-connection-exists")


def test_other_clinics_get_404_everywhere(
    client: TestClient, clinic: Clinic, make_clinic, fakes: Fakes
) -> None:  # type: ignore[no-untyped-def]
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(client, clinic, setup.provider, integration, "primary")
    other = make_clinic("Birch Dental")
    other_setup = practice(client, other)
    other_integration = google_integration(client, other)
    base = f"{API}/providers/{setup.provider}/calendar-connections"
    assert client.get(base, headers=other.headers).status_code == 404
    assert client.get(f"{base}/{connection['id']}", headers=other.headers).status_code == 404
    assert client.post(f"{base}/{connection['id']}/sync", headers=other.headers).status_code == 404
    assert client.delete(f"{base}/{connection['id']}", headers=other.headers).status_code == 404
    # the other clinic's provider with this clinic's integration, and the reverse
    assert (
        _post(
            client,
            other,
            setup.provider,
            {"integration_id": other_integration, "calendar": "primary"},
        ).status_code
        == 404
    )
    assert (
        _post(
            client,
            clinic,
            setup.provider,
            {"integration_id": other_integration, "calendar": "primary"},
        ).status_code
        == 404
    )
    assert (
        _post(
            client,
            other,
            other_setup.provider,
            {"integration_id": integration, "calendar": "primary"},
        ).status_code
        == 404
    )
    # the connection is still there, untouched
    assert (
        ok(client.get(f"{base}/{connection['id']}", headers=clinic.headers))["id"]
        == connection["id"]
    )
    # a provider of this clinic but the wrong one in the path
    second = ok(
        client.post(
            f"{API}/providers",
            json={"display_name": "Dr. Bo", "timezone": "America/Toronto"},
            headers=clinic.headers,
        ),
        201,
    )["id"]
    assert (
        client.get(
            f"{API}/providers/{second}/calendar-connections/{connection['id']}",
            headers=clinic.headers,
        ).status_code
        == 404
    )


def test_permissions_list_idempotency_and_audit(
    client: TestClient, clinic: Clinic, db: Database, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    front_desk = add_key(db, clinic, "front_desk")
    denied = client.post(
        f"{API}/providers/{setup.provider}/calendar-accounts/authorize",
        json={"integration_id": integration},
        headers=front_desk.headers,
    )
    assert denied.status_code == 403 and denied.json()["permission"] == "integrations:manage"
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    body = {"integration_id": integration, "calendar": "primary"}
    denied = _post(client, front_desk, setup.provider, body)
    assert denied.status_code == 403 and denied.json()["permission"] == "schedule:write"
    first = _post(client, clinic, setup.provider, body, **{"Idempotency-Key": "cal-1"})
    replay = _post(client, clinic, setup.provider, body, **{"Idempotency-Key": "cal-1"})
    assert first.status_code == replay.status_code == 201 and first.json() == replay.json()
    assert replay.headers.get("idempotent-replayed") == "true"
    listed = ok(
        client.get(
            f"{API}/providers/{setup.provider}/calendar-connections", headers=front_desk.headers
        )
    )
    (row,) = listed["data"]
    assert row["connector"] == "google_calendar" and row["calendar"] == "primary"
    assert row["sync"] == {
        "last_sync_at": None, "last_success_at": None, "last_full_sync_at": None,
        "lag_seconds": None, "last_error": None, "last_error_at": None,
        "consecutive_failures": 0, "last_changes": 0, "blocks": 0, "push": False,
    }  # fmt: skip
    with db.read() as session:
        actions = set(session.scalars(sa.select(AuditEvent.action)))
    assert {
        "calendar_account.authorize_start",
        "calendar_account.authorize",
        "calendar_connection.create",
    } <= actions
    path = f"{API}/providers/{setup.provider}/calendar-accounts/{row['account_id']}"
    assert client.delete(path, headers=clinic.headers).status_code == 204
    assert (
        ok(
            client.get(
                f"{API}/providers/{setup.provider}/calendar-connections", headers=clinic.headers
            )
        )["data"]
        == []
    )
