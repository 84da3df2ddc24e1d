"""The ``.ics`` attachment for confirmation messages, read back with ``icalendar``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from icalendar import Calendar
from sqlalchemy.orm import Session

from clinicbridge.patients.models import Patient
from clinicbridge.scheduling import ical
from clinicbridge.scheduling.models import Booking, Location, Provider, Service

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
START = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)


class FakeSession:
    """Just ``get``: what ``ics_attachment`` reads."""

    def __init__(self, *rows: Any) -> None:
        self.rows = {(type(row), row.id): row for row in rows}

    def get(self, model: type[Any], ident: str) -> Any:
        return self.rows.get((model, ident))


def _session(*, provider_email: str | None = "ada@clinic.example.com") -> Session:
    rows = [
        Service(id="svc_1", name="Physiotherapy assessment"),
        Provider(id="prv_1", display_name="Dr. Ada Test", email=provider_email),
        Location(
            id="loc_1",
            name="Harbour Rd",
            address={"line1": "12 Harbour Rd", "city": "Toronto", "note": None},
        ),
        Patient(id="pat_1", first_name="Quinn", last_name="Zephyrine"),
    ]
    return cast(Session, FakeSession(*rows))


def _booking(**changes: Any) -> Booking:
    fields: dict[str, Any] = {
        "id": "bkg_1",
        "service_id": "svc_1",
        "provider_id": "prv_1",
        "location_id": "loc_1",
        "patient_id": "pat_1",
        "status": "booked",
        "starts_at": START,
        "ends_at": START + timedelta(minutes=45),
        "confirmation_code": "K7Q-4MX",
        "version": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }
    return Booking(**(fields | changes))


def _event(data: bytes) -> tuple[Calendar, Any]:
    cal = Calendar.from_ical(data)
    (event,) = cal.walk("VEVENT")
    return cal, event


def test_a_booked_appointment_is_published() -> None:
    booking = _booking()
    cal, event = _event(ical.ics_attachment(_session(), booking, now=NOW + timedelta(hours=1)))
    assert str(cal["prodid"]) == ical.PRODID
    assert str(cal["method"]) == "PUBLISH" == ical.attachment_method(booking)
    assert str(event["uid"]) == "bkg_1@clinicbridge"
    assert event.decoded("dtstart") == START
    assert event.decoded("dtend") == START + timedelta(minutes=45)
    assert event.decoded("dtstamp") == NOW + timedelta(hours=1)
    assert str(event["summary"]) == "Physiotherapy assessment with Dr. Ada Test"
    assert str(event["location"]) == "Harbour Rd, 12 Harbour Rd, Toronto"
    assert str(event["status"]) == "CONFIRMED"
    assert int(event["sequence"]) == 1
    assert str(event["organizer"]) == "mailto:ada@clinic.example.com"
    assert event["organizer"].params["CN"] == "Dr. Ada Test"
    description = str(event["description"])
    assert "Confirmation code: K7Q-4MX" in description
    assert "Quinn" not in cal.to_ical().decode()


def test_the_patient_name_is_included_only_when_asked() -> None:
    _, event = _event(ical.ics_attachment(_session(), _booking(), include_patient_name=True))
    assert "Patient: Quinn Zephyrine" in str(event["description"])


def test_a_cancelled_booking_gives_a_cancel() -> None:
    booking = _booking(status="cancelled", version=2)
    cal, event = _event(ical.ics_attachment(_session(), booking))
    assert str(cal["method"]) == "CANCEL" == ical.attachment_method(booking)
    assert str(event["status"]) == "CANCELLED"
    assert str(event["uid"]) == "bkg_1@clinicbridge"  # the same event as the confirmation
    assert int(event["sequence"]) == 2
    assert event.decoded("dtstamp") == NOW  # the booking's last change when no ``now``
    assert ical.attachment_method(_booking(status="expired")) == "CANCEL"


def test_a_held_booking_is_tentative_and_the_organizer_is_optional() -> None:
    booking = _booking(status="held", location_id=None)
    _, event = _event(ical.ics_attachment(_session(provider_email=None), booking))
    assert str(event["status"]) == "TENTATIVE"
    assert "organizer" not in event and "location" not in event
    _, event = _event(
        ical.ics_attachment(
            _session(provider_email=None), booking, organizer_email="desk@clinic.example.com"
        )
    )
    assert str(event["organizer"]) == "mailto:desk@clinic.example.com"


def test_text_is_escaped_not_injected() -> None:
    session = _session()
    service = session.get(Service, "svc_1")
    assert service is not None
    service.name = "Check-up\r\nATTENDEE:mailto:evil@example.com; x, y"
    _, event = _event(ical.ics_attachment(session, _booking()))
    assert "attendee" not in event
    assert str(event["summary"]).startswith("Check-up\nATTENDEE:mailto:evil@example.com; x, y")
