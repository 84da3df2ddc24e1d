"""Conflicts found later: an outside event added over a booking raises one staff alert
with both items (never a cancel), refreshed while it lasts, resolved when it ends."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars.export import EXPORT_KIND
from clinicbridge.calendars.sync import SYNC_KIND
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Alert
from clinicbridge.settings import Settings
from tests.conftest import Clinic
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
from tests.integration.test_calendar_export import _book, _slot
from tests.integration.test_calendar_scenario import run_jobs

__all__ = ["fakes"]


def _alerts(db: Database) -> list[Alert]:
    with db.read() as session:
        return list(session.scalars(sa.select(Alert).where(Alert.rule == "calendar_conflict")))


def _sync(client: TestClient, clinic: Clinic, db: Database, settings: Settings, path: str) -> None:
    ok(client.post(path, headers=clinic.headers), 202)
    assert run_jobs(db, settings, SYNC_KIND) == 1


def test_an_outside_event_over_a_booking_raises_an_alert_and_cancels_nothing(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(
        client, clinic, setup.provider, integration, "primary", export_bookings=False
    )
    run_jobs(db, settings, SYNC_KIND)
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    run_jobs(db, settings, EXPORT_KIND)
    assert _alerts(db) == []
    start = datetime.fromisoformat(booking["start"]) + timedelta(minutes=15)
    event = fakes.google.put(
        "primary",
        {
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(hours=1)).isoformat()},
        },
    )
    path = f"{API}/providers/{setup.provider}/calendar-connections/{connection['id']}/sync"
    _sync(client, clinic, db, settings, path)
    (alert,) = _alerts(db)
    assert (
        alert.status == "open"
        and alert.subject_type == "booking"
        and alert.subject_id == booking["id"]
    )
    assert alert.details["booking"]["id"] == booking["id"]
    (busy,) = alert.details["busy"]
    assert busy["connection_id"] == connection["id"]
    assert datetime.fromisoformat(busy["start"]) == start
    shown = ok(client.get(f"{API}/alerts", params={"status": "open"}, headers=clinic.headers))
    assert [a["rule"] for a in shown["data"]] == ["calendar_conflict"]
    status = ok(client.get(f"{API}/bookings/{booking['id']}", headers=clinic.headers))["status"]
    assert status == "booked"  # never a silent cancel
    _sync(client, clinic, db, settings, path)
    assert len(_alerts(db)) == 1  # the same incident, refreshed
    fakes.google.delete("primary", event)
    _sync(client, clinic, db, settings, path)
    (alert,) = _alerts(db)
    assert alert.status == "resolved"


def test_cancelling_the_booking_resolves_the_conflict(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(
        client, clinic, setup.provider, integration, "primary", export_bookings=False
    )
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    start = datetime.fromisoformat(booking["start"])
    fakes.google.put(
        "primary",
        {
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()},
        },
    )
    run_jobs(db, settings, SYNC_KIND)
    assert [a.status for a in _alerts(db)] == ["open"]
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/cancel",
            json={"reason": "clash"},
            headers=clinic.headers,
        )
    )
    run_jobs(db, settings, EXPORT_KIND)
    assert [a.status for a in _alerts(db)] == ["resolved"]
    assert connection["status"] == "active"
