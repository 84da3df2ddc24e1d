"""Export: bookings become events in the provider's connected calendars (Google and
Graph fakes, a real Radicale), updated on reschedule, deleted on cancel, written once
per change, without patient data by default, and never imported back as busy time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.calendars import google
from clinicbridge.calendars.export import EXPORT_KIND, export_booking
from clinicbridge.calendars.sync import SYNC_KIND
from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.scheduling.models import BusyBlock
from clinicbridge.settings import Settings
from clinicbridge.vault.shared import shared_vault
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
    practice,
    week_start,
)
from tests.integration.radicale_server import Radicale, radicale
from tests.integration.test_calendar_scenario import run_jobs

__all__ = ["fakes", "radicale"]
PATIENT = {
    "first_name": "Hélène",
    "last_name": "Tremblay",
    "date_of_birth": "1980-03-05",
    "phone": "514-555-0123",
}


def _slot(client: TestClient, clinic: Clinic, setup: Practice, offset_hours: int = 15) -> str:
    day = week_start(datetime.now(UTC)) + timedelta(days=1)
    return (day + timedelta(hours=offset_hours)).isoformat()


def _book(
    client: TestClient, clinic: Clinic, setup: Practice, start: str, **extra: Any
) -> dict[str, Any]:
    body = {
        "service_id": setup.service,
        "provider_id": setup.provider,
        "start": start,
        "patient": PATIENT,
        **extra,
    }
    return dict(ok(client.post(f"{API}/bookings", json=body, headers=clinic.headers), 201))


def _blocks(db: Database, connection_id: str) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(BusyBlock.connection_id == connection_id)
            )
            or 0
        )


def test_google_export_lifecycle(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(client, clinic, setup.provider, integration, "primary")
    run_jobs(db, settings, SYNC_KIND)
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    assert run_jobs(db, settings, EXPORT_KIND) == 1
    event_id = google.event_id_for(booking["id"], connection["id"])
    event = fakes.google.calendars["primary"][event_id]
    assert (
        event["summary"] == "Consultation"
        and event["description"] == "Booked through ClinicBridge."
    )
    text = str(event)
    assert (
        "Tremblay" not in text and "Hélène" not in text and booking["confirmation_code"] not in text
    )
    assert event["extendedProperties"]["private"]["clinicbridge"] == booking["id"]
    assert datetime.fromisoformat(event["start"]["dateTime"]) == datetime.fromisoformat(
        booking["start"]
    )
    # our own event is not imported back as busy time
    run_jobs(db, settings, SYNC_KIND)
    ok(
        client.post(
            f"{API}/providers/{setup.provider}/calendar-connections/{connection['id']}/sync",
            headers=clinic.headers,
        ),
        202,
    )
    run_jobs(db, settings, SYNC_KIND)
    assert _blocks(db, connection["id"]) == 0
    # the same change's job again writes nothing
    seq = fakes.google.seq
    assert (
        export_booking(
            db, shared_vault(db, settings.master_key_file), booking["id"], datetime.now(UTC)
        )
        == 0
    )
    assert fakes.google.seq == seq
    later = _slot(client, clinic, setup, offset_hours=17)
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/reschedule",
            json={"start": later},
            headers=clinic.headers,
        )
    )
    run_jobs(db, settings, EXPORT_KIND)
    moved = fakes.google.calendars["primary"][event_id]
    assert datetime.fromisoformat(moved["start"]["dateTime"]) == datetime.fromisoformat(later)
    assert (
        len(
            [
                e
                for e in fakes.google.calendars["primary"].values()
                if e.get("status") != "cancelled"
            ]
        )
        == 1
    )
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/cancel",
            json={"reason": "patient asked"},
            headers=clinic.headers,
        )
    )
    run_jobs(db, settings, EXPORT_KIND)
    assert fakes.google.calendars["primary"][event_id]["status"] == "cancelled"


def test_a_lost_insert_answer_is_not_a_second_event(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    """The insert reached Google but the answer was lost: the retry's insert gets 409 for
    our own id and updates that event instead of creating a twin."""
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connect(client, clinic, setup.provider, integration, "primary")
    run_jobs(db, settings, SYNC_KIND)
    original = fakes.google.__call__

    def lose_answer(request: httpx.Request) -> httpx.Response:
        response = original(request)
        if (
            request.method == "POST"
            and request.url.path.endswith("/events")
            and not lose_answer.done
        ):  # type: ignore[attr-defined]
            lose_answer.done = True  # type: ignore[attr-defined]
            raise httpx.ReadTimeout("answer lost", request=request)
        return response

    lose_answer.done = False  # type: ignore[attr-defined]
    fakes.router.handlers["www.googleapis.com"] = lose_answer
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    with pytest.raises(ExternalServiceError):  # the answer was lost: the job retries
        run_jobs(db, settings, EXPORT_KIND)
    assert (
        export_booking(
            db, shared_vault(db, settings.master_key_file), booking["id"], datetime.now(UTC)
        )
        == 1
    )
    live = [e for e in fakes.google.calendars["primary"].values() if e.get("status") != "cancelled"]
    assert len(live) == 1


def test_patient_names_only_when_the_clinic_says_so(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    with db.write() as session:
        session.execute(
            sa.update(Tenant).where(Tenant.id == clinic.id).values(calendar_patient_names=True)
        )
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(client, clinic, setup.provider, integration, "primary")
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    run_jobs(db, settings, EXPORT_KIND)
    event = fakes.google.calendars["primary"][google.event_id_for(booking["id"], connection["id"])]
    assert event["summary"] == "Consultation: Hélène Tremblay"
    with db.read() as session:
        audit = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "calendar_export.write")
        ).one()
    assert audit.phi and audit.resource_id == booking["id"]


def test_graph_export_and_holds(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = microsoft_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.graph.oauth)
    connect(client, clinic, setup.provider, integration, "primary")
    held = _book(client, clinic, setup, _slot(client, clinic, setup), hold_minutes=10)
    run_jobs(db, settings, EXPORT_KIND)
    assert fakes.graph.calendars["primary"] == {}  # a hold is not exported
    ok(client.post(f"{API}/bookings/{held['id']}/confirm", headers=clinic.headers))
    run_jobs(db, settings, EXPORT_KIND)
    (event,) = fakes.graph.calendars["primary"].values()
    assert (
        event["transactionId"] == f"clinicbridge:{held['id']}"
        and event["subject"] == "Consultation"
    )
    assert event["showAs"] == "busy" and event["start"]["timeZone"] == "UTC"
    later = _slot(client, clinic, setup, offset_hours=18)
    ok(
        client.post(
            f"{API}/bookings/{held['id']}/reschedule", json={"start": later}, headers=clinic.headers
        )
    )
    run_jobs(db, settings, EXPORT_KIND)
    (moved,) = fakes.graph.calendars["primary"].values()
    assert moved["id"] == event["id"] and moved["start"]["dateTime"].startswith(
        later[:16].replace("+00:00", "")
    )
    ok(
        client.post(
            f"{API}/bookings/{held['id']}/cancel", json={"reason": "x"}, headers=clinic.headers
        )
    )
    run_jobs(db, settings, EXPORT_KIND)
    assert "@removed" in fakes.graph.calendars["primary"][event["id"]]


def test_caldav_export_is_not_imported_back(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, radicale: Radicale
) -> None:
    setup = practice(client, clinic)
    calendar = radicale.make_calendar("exported")
    integration = caldav_integration(client, clinic, radicale.url)
    connection = connect(client, clinic, setup.provider, integration, calendar)
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    run_jobs(db, settings, EXPORT_KIND)
    with radicale.client() as dav:
        resource = dav.get(f"{calendar}{booking['id']}.ics")
    assert resource.status_code == 200
    assert f"UID:{booking['id']}@clinicbridge" in resource.text and "Tremblay" not in resource.text
    assert "METHOD" not in resource.text and booking["confirmation_code"] not in resource.text
    run_jobs(db, settings, SYNC_KIND)
    assert _blocks(db, connection["id"]) == 0
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/cancel", json={"reason": "x"}, headers=clinic.headers
        )
    )
    run_jobs(db, settings, EXPORT_KIND)
    with radicale.client() as dav:
        assert dav.get(f"{calendar}{booking['id']}.ics").status_code == 404


def test_bookings_without_calendars_or_video_queue_no_job(
    client: TestClient, clinic: Clinic, db: Database
) -> None:
    from clinicbridge.jobs.models import Job
    from clinicbridge.video.meetings import KIND as VIDEO_KIND

    setup = practice(client, clinic)
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    ok(
        client.post(
            f"{API}/bookings/{booking['id']}/cancel", json={"reason": "x"}, headers=clinic.headers
        )
    )
    with db.read() as session:
        kinds = set(session.scalars(sa.select(Job.kind)))
    assert EXPORT_KIND not in kinds and VIDEO_KIND not in kinds
