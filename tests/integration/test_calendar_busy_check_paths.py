"""Every booking path goes through the fresh busy check: a booking for "any" provider is
checked for the provider the engine picks (and goes to the next free one when that
calendar is busy), and the voice receptionist's bookings are checked too."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.db.engine import Database
from clinicbridge.scheduling.models import Booking
from clinicbridge.settings import Settings
from tests.conftest import Clinic
from tests.integration.calendar_helpers import API, Fakes, Practice, fakes, ok, pending_syncs
from tests.integration.test_calendar_busy_check import _google
from tests.integration.test_calendar_export import PATIENT, _slot
from tests.integration.test_voice_vapi import create_integration, message

__all__ = ["fakes"]

SECRET = "vapi-secret-maple-0123456789"


def _busy_at(fakes: Fakes, start: str) -> None:
    begin = datetime.fromisoformat(start)
    fakes.google.put(
        "primary",
        {
            "start": {"dateTime": begin.isoformat()},
            "end": {"dateTime": (begin + timedelta(minutes=45)).isoformat()},
        },
    )


def _second_provider(client: TestClient, clinic: Clinic, setup: Practice) -> str:
    h = clinic.headers
    body = {"display_name": "Dr. Zed Second", "timezone": "America/Toronto"}
    other = str(ok(client.post(f"{API}/providers", json=body, headers=h), 201)["id"])
    hours = [
        {"weekday": d, "start": "09:00", "end": "17:00", "location_id": setup.location}
        for d in range(7)
    ]
    ok(client.put(f"{API}/providers/{other}/hours", json={"intervals": hours}, headers=h))
    ok(
        client.patch(
            f"{API}/services/{setup.service}",
            json={"provider_ids": [setup.provider, other]},
            headers=h,
        )
    )
    return other


def _any(client: TestClient, clinic: Clinic, setup: Practice, start: str) -> httpx.Response:
    body = {"service_id": setup.service, "provider_id": "any", "start": start, "patient": PATIENT}
    return client.post(f"{API}/bookings", json=body, headers=clinic.headers)


def _bookings(db: Database) -> list[Booking]:
    with db.read() as session:
        return list(session.scalars(sa.select(Booking)))


def test_any_provider_is_checked_for_the_provider_the_engine_picks(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup, _, _ = _google(client, clinic, db, settings, fakes)
    start = _slot(client, clinic, setup)
    _busy_at(fakes, start)
    # the only provider: their outside calendar refuses the time
    refused = _any(client, clinic, setup, start)
    assert refused.status_code == 409 and refused.json()["type"].endswith("/calendar-busy")
    assert _bookings(db) == [] and len(pending_syncs(db)) == 1
    # a second provider, free then: "any" goes to them
    other = _second_provider(client, clinic, setup)
    booked = ok(_any(client, clinic, setup, start), 201)
    assert booked["provider_id"] == other
    # a free time of the calendar's provider: "any" books them, as the engine picks
    later = _slot(client, clinic, setup, offset_hours=17)
    assert ok(_any(client, clinic, setup, later), 201)["provider_id"] == setup.provider


def _voice(
    client: TestClient, integration: str, args: dict[str, Any], call_id: str,
    tool: str = "bookAppointment",
) -> Any:  # fmt: skip
    response = client.post(
        f"/voice/vapi/{integration}",
        json=message([(tool, args)], call_id=call_id, number=None),
        headers={"X-Vapi-Secret": SECRET},
    )
    assert response.status_code == 200, response.text
    return json.loads(response.json()["results"][0]["result"])


def test_the_voice_receptionist_books_through_the_same_check(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup, _, _ = _google(client, clinic, db, settings, fakes)
    integration = create_integration(client, clinic, SECRET)
    start = _slot(client, clinic, setup)
    _busy_at(fakes, start)
    caller = {"first_name": "Helene", "last_name": "Tremblay", "date_of_birth": "1980-03-05"}
    args = {"service": "Consultation", "provider": "Dr. Ada Test", "start": start, **caller}
    refused = _voice(client, integration, args, "call-1")
    assert refused["success"] is False and refused["error"] == "slot_taken", refused
    assert start not in json.dumps(refused["slots"])  # the refused time is not offered
    assert _bookings(db) == [] and len(pending_syncs(db)) == 1
    # another provider will do: the receptionist books the free one
    other = _second_provider(client, clinic, setup)
    booked = _voice(client, integration, {**args, "provider": "any"}, "call-2")
    assert booked["success"] is True and booked["provider_id"] == other, booked
    # a free time of the calendar's provider books as before
    later = _slot(client, clinic, setup, offset_hours=17)
    moved = _voice(client, integration, {**args, "start": later}, "call-3")
    assert moved["success"] is True and moved["provider_id"] == setup.provider, moved
    assert len(_bookings(db)) == 2
    # moving that booking onto the busy time is refused as well; it keeps its time
    back = {**caller, "confirmation_code": moved["confirmation_code"], "new_start": start}
    refused = _voice(client, integration, back, "call-4", tool="rescheduleAppointment")
    assert refused["success"] is False and refused["error"] == "slot_taken", refused
    with db.read() as session:
        kept = session.scalar(sa.select(Booking).where(Booking.id == moved["booking_id"]))
    assert kept is not None and kept.starts_at == datetime.fromisoformat(later)
