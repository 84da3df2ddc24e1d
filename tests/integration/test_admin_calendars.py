"""The admin calendars page over HTTP: connections per provider with last sync, lag,
status and errors, "Sync now" (CSRF, permission, isolation), and open calendar alerts."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars import alerts, conflicts
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.sync import SYNC_KIND
from clinicbridge.db.engine import Database
from clinicbridge.settings import Settings
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    Fakes,
    authorize,
    connect,
    fakes,
    google_integration,
    microsoft_integration,
    pending_syncs,
    practice,
)
from tests.integration.test_admin_web import _csrf, _login, _user
from tests.integration.test_calendar_scenario import run_jobs

__all__ = ["fakes"]


def _signed_in(client: TestClient, clinic: Clinic, role: str = "owner") -> dict[str, str]:
    email = f"{role}@{clinic.id.lower().replace('_', '-')}.example.com"
    _user(client, clinic, email, role=role)
    _login(client, email)
    page = client.get(f"/admin/tenants/{clinic.id}/calendars")
    assert page.status_code == 200, page.text
    return {"HX-Request": "true", "X-CSRF-Token": _csrf(page.text)}


def _row(html: str, connection_id: str) -> str:
    found = re.search(rf'<tr id="connection-{connection_id}".*?</tr>', html, re.S)
    assert found, html
    return found.group(0)


def test_connections_per_provider_with_status_sync_now_and_alerts(
    client: TestClient, clinic: Clinic, make_clinic, db: Database, settings: Settings,  # type: ignore[no-untyped-def]
    fakes: Fakes,
) -> None:  # fmt: skip
    setup = practice(client, clinic)
    google = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, google, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    synced = connect(client, clinic, setup.provider, google, "primary")
    microsoft = microsoft_integration(client, clinic)
    authorize(client, clinic, setup.provider, microsoft, fakes.graph.oauth)
    revoked = connect(client, clinic, setup.provider, microsoft, "primary")
    run_jobs(db, settings, SYNC_KIND)
    now = datetime.now(UTC)
    with db.write() as session:
        row = session.get(CalendarConnection, revoked["id"])
        assert row is not None
        row.status, row.last_error, row.consecutive_failures = (
            "needs_reauth", "The calendar authorization was revoked.", 3)  # fmt: skip
        alerts.open_alert(
            session, tenant_id=clinic.id, subject_type=conflicts.SUBJECT_TYPE,
            subject_id="bkg_conflicting", rule=conflicts.RULE,
            details={"start": "2030-01-01T10:00:00+00:00"}, now=now,
        )  # fmt: skip

    hx = _signed_in(client, clinic)
    page = client.get(f"/admin/tenants/{clinic.id}/calendars")
    assert page.status_code == 200 and "Dr. Ada Test" in page.text
    assert f'href="/admin/tenants/{clinic.id}/calendars"' in page.text  # in the nav
    ok_row, bad_row = _row(page.text, synced["id"]), _row(page.text, revoked["id"])
    assert "Google Calendar" in ok_row and "badge active" in ok_row and "Sync now" in ok_row
    assert re.search(r'class="lag">\d+ s<', ok_row) and "UTC" in ok_row
    assert "needs reauth" in bad_row and "authorize again" in bad_row
    assert "The calendar authorization was revoked." in bad_row and "3 failed in a row" in bad_row
    assert "Sync now" not in bad_row
    assert "calendar conflict" in page.text and "bkg_conflicting" in page.text

    url = f"/admin/tenants/{clinic.id}/calendars/{synced['id']}/sync"
    assert client.post(url, headers={"HX-Request": "true"}).status_code == 403  # no CSRF token
    assert pending_syncs(db) == []
    queued = client.post(url, headers=hx)
    assert queued.status_code == 202 and "Sync queued." in queued.text
    assert '<div id="calendars">' in queued.text and "<html" not in queued.text  # the partial
    assert len(pending_syncs(db)) == 1
    again = client.post(url, headers=hx)
    assert again.status_code == 202 and "already queued" in again.text
    assert len(pending_syncs(db)) == 1
    refused = client.post(f"/admin/tenants/{clinic.id}/calendars/{revoked['id']}/sync", headers=hx)
    assert refused.status_code == 409 and "authorize again" in refused.text

    # read-only staff see the page, without the button, and cannot sync
    client.cookies.clear()
    ro = _signed_in(client, clinic, role="auditor")
    assert "Sync now" not in client.get(f"/admin/tenants/{clinic.id}/calendars").text
    assert client.post(url, headers=ro).status_code == 403

    # another clinic: neither the page nor the connection
    other = make_clinic("Birch Dental")
    client.cookies.clear()
    theirs = _signed_in(client, other)
    assert client.get(f"/admin/tenants/{clinic.id}/calendars").status_code == 404
    mine = client.get(f"/admin/tenants/{other.id}/calendars")
    assert "No calendar connections yet." in mine.text and "Dr. Ada Test" not in mine.text
    assert "bkg_conflicting" not in mine.text
    stolen = client.post(f"/admin/tenants/{other.id}/calendars/{synced['id']}/sync", headers=theirs)
    assert stolen.status_code == 404
    with db.read() as session:
        assert len(session.scalars(sa.select(CalendarConnection)).all()) == 2
    assert len(pending_syncs(db)) == 1
