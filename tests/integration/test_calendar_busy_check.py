"""The fresh busy check before a booking is written: an outside event the last sync has
not seen yet refuses the time (409 calendar-busy) and queues a sync; an unreachable
calendar books and flags (policy allow) or refuses with a 503 (policy block)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars.sync import SYNC_KIND
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Alert
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings
from clinicbridge.testing.microsoft_graph import FakeGraph
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    API,
    Fakes,
    Practice,
    authorize,
    caldav_integration,
    connect,
    fakes,
    google_integration,
    microsoft_integration,
    ok,
    pending_syncs,
    practice,
)
from tests.integration.radicale_server import Radicale, radicale
from tests.integration.test_caldav_radicale import ics, vevent
from tests.integration.test_calendar_export import PATIENT, _slot
from tests.integration.test_calendar_scenario import run_jobs

__all__ = ["fakes", "radicale"]


def _post(client: TestClient, clinic: Clinic, setup: Practice, start: str) -> httpx.Response:
    body = {
        "service_id": setup.service,
        "provider_id": setup.provider,
        "start": start,
        "patient": PATIENT,
    }
    return client.post(f"{API}/bookings", json=body, headers=clinic.headers)


def _bookings(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Booking)) or 0)


def _google(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> tuple[Practice, str, dict[str, Any]]:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(
        client, clinic, setup.provider, integration, "primary", export_bookings=False
    )
    run_jobs(db, settings, SYNC_KIND)
    return setup, integration, connection


def test_an_unseen_google_event_refuses_the_time_and_queues_a_sync(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup, _, _ = _google(client, clinic, db, settings, fakes)
    start = _slot(client, clinic, setup)
    begin = datetime.fromisoformat(start)
    fakes.google.put(
        "primary",
        {
            "start": {"dateTime": begin.isoformat()},
            "end": {"dateTime": (begin + timedelta(minutes=45)).isoformat()},
        },
    )
    refused = _post(client, clinic, setup, start)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/calendar-busy")
    assert _bookings(db) == 0 and len(pending_syncs(db)) == 1
    # a free (transparent) event does not refuse anything
    later = _slot(client, clinic, setup, offset_hours=17)
    at = datetime.fromisoformat(later)
    fakes.google.put(
        "primary",
        {
            "transparency": "transparent",
            "start": {"dateTime": at.isoformat()},
            "end": {"dateTime": (at + timedelta(hours=1)).isoformat()},
        },
    )
    assert _post(client, clinic, setup, later).status_code == 201
    # the public booking API checks too
    slug = ok(client.get(f"{API}/tenant", headers=clinic.headers))["slug"]
    body = {"service_id": setup.service, "provider_id": setup.provider, "start": start,
            "patient": {**PATIENT, "phone": "514-555-0199"}}  # fmt: skip
    public = client.post(f"/public/{slug}/bookings", json=body)
    assert public.status_code == 409 and "calendar" not in public.text.lower().replace(
        "calendar-busy", ""
    )


def test_unreachable_allow_books_and_flags_block_refuses(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup, integration, connection = _google(client, clinic, db, settings, fakes)
    fakes.google.failures.append(503)
    assert _post(client, clinic, setup, _slot(client, clinic, setup)).status_code == 201
    with db.read() as session:
        (alert,) = session.scalars(
            sa.select(Alert).where(Alert.rule == "calendar_unverified")
        ).all()
    assert alert.status == "open" and alert.subject_id == connection["id"]
    path = f"{API}/providers/{setup.provider}/calendar-connections/{connection['id']}/sync"
    ok(client.post(path, headers=clinic.headers), 202)
    run_jobs(db, settings, SYNC_KIND)
    with db.read() as session:
        assert session.get(Alert, alert.id).status == "resolved"  # type: ignore[union-attr]
    ok(
        client.patch(
            f"{API}/integrations/{integration}",
            json={"settings": {"when_unreachable": "block"}},
            headers=clinic.headers,
        )
    )
    fakes.google.failures.append(503)
    refused = _post(client, clinic, setup, _slot(client, clinic, setup, offset_hours=18))
    assert refused.status_code == 503 and refused.json()["type"].endswith("/calendar-unreachable")
    assert refused.json()["retry_after"] == 30 and _bookings(db) == 1


def test_graph_and_caldav_are_checked_too(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    fakes: Fakes,
    radicale: Radicale,
) -> None:
    setup = practice(client, clinic)
    integration = microsoft_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.graph.oauth)
    connect(client, clinic, setup.provider, integration, "primary", export_bookings=False)
    start = _slot(client, clinic, setup)
    begin = datetime.fromisoformat(start)
    fakes.graph.put(FakeGraph.timed("x", begin, begin + timedelta(minutes=30), showAs="free"))
    fakes.graph.put(
        FakeGraph.timed("y", begin + timedelta(minutes=20), begin + timedelta(minutes=50))
    )
    assert _post(client, clinic, setup, start).status_code == 409
    calendar = radicale.make_calendar("check")
    caldav = caldav_integration(client, clinic, radicale.url)
    other = ok(
        client.post(
            f"{API}/providers",
            json={"display_name": "Dr. Bo", "timezone": "America/Toronto"},
            headers=clinic.headers,
        ),
        201,
    )["id"]
    hours = [
        {"weekday": d, "start": "09:00", "end": "17:00", "location_id": setup.location}
        for d in range(7)
    ]
    ok(
        client.put(
            f"{API}/providers/{other}/hours", json={"intervals": hours}, headers=clinic.headers
        )
    )
    ok(
        client.patch(
            f"{API}/services/{setup.service}",
            json={"provider_ids": [setup.provider, other]},
            headers=clinic.headers,
        )
    )
    connect(client, clinic, other, caldav, calendar, export_bookings=False)
    local = begin.astimezone(ZoneInfo("America/Toronto"))
    radicale.put(
        calendar,
        "x",
        ics(
            vevent(
                "x@test",
                local.strftime("%Y%m%dT%H%M%S"),
                (local + timedelta(minutes=30)).strftime("%Y%m%dT%H%M%S"),
            )
        ),
    )
    other_setup = Practice(other, setup.service, setup.location)
    assert _post(client, clinic, other_setup, start).status_code == 409
    assert (
        _post(
            client, clinic, other_setup, _slot(client, clinic, setup, offset_hours=18)
        ).status_code
        == 201
    )
