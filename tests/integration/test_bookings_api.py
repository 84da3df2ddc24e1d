"""Bookings over HTTP: create (by id or inline patient), conflicts with the next free
slots, bad input that writes nothing, reschedule, cancel window, confirm, no-show,
complete, holds and their expiry, group seats, history, and the events a change sets off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext
from clinicbridge.patients.models import Patient
from clinicbridge.scheduling import bookings, events
from clinicbridge.scheduling.models import Booking, BookingChange, TimeClaim
from clinicbridge.settings import Settings
from clinicbridge.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.conftest import Clinic, add_key
from tests.integration.test_scheduling_api import API, NOW, Setup, _ok, configure, fields, problem

FRIDAY_9 = "2026-03-06T09:00:00-05:00"
FRIDAY_930 = "2026-03-06T09:30:00-05:00"
CODE = re.compile(r"^[ACDEFGHJKMNPQRTUVWXY34679]{3}-[ACDEFGHJKMNPQRTUVWXY34679]{3}$")


def _patient(
    client: TestClient, clinic: Clinic, first: str = "Alex", dob: str = "1980-04-02"
) -> str:
    body = {"first_name": first, "last_name": "Sample", "date_of_birth": dob}
    return str(_ok(client.post(f"{API}/patients", json=body, headers=clinic.headers), 201)["id"])


def _book(client: TestClient, clinic: Clinic, **body: Any) -> Any:
    return client.post(f"{API}/bookings", json=body, headers=clinic.headers)


def _count(db: Database, model: type, **where: Any) -> int:
    with db.read() as session:
        stmt = sa.select(sa.func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int(session.scalar(stmt) or 0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)  # Monday 2 March 2026, 07:00 in Toronto


@pytest.fixture
def client(settings: Settings, db: Database, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings, db=db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def setup(client: TestClient, clinic: Clinic) -> Setup:
    return configure(client, clinic)


@pytest.fixture
def patient(client: TestClient, clinic: Clinic) -> str:
    return _patient(client, clinic)


@pytest.fixture
def listener() -> Iterator[str]:
    kind = "test.booking_changed"
    events.subscribe(kind)
    yield kind
    events.unsubscribe(kind)


def test_booking_answers_the_contract_and_sets_off_its_events(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, db: Database, listener: str
) -> None:
    with db.write() as session:
        session.add(
            WebhookEndpoint(
                id=new_id("whe"), tenant_id=clinic.id, url="https://pms.example.test/hook",
                event_types=["booking.*"], secret="x", enabled=True,
                created_at=NOW, updated_at=NOW,
            )
        )  # fmt: skip
    prv = setup.providers[0]
    body = _ok(
        _book(client, clinic, service_id=setup.service, provider_id=prv, start=FRIDAY_9,
              patient_id=patient),
        201,
    )  # fmt: skip
    assert body["status"] == "booked" and CODE.match(body["confirmation_code"])
    assert body["start"] == FRIDAY_9 and body["end"] == "2026-03-06T09:30:00-05:00"
    assert body["location_id"] == setup.location and body["patient_id"] == patient
    assert _count(db, TimeClaim, provider_id=prv, active=True) == 1
    with db.read() as session:
        change = session.scalars(sa.select(BookingChange)).one()
        assert (change.action, change.from_status, change.to_status) == ("created", None, "booked")
        audit = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "booking.create")
        ).one()
        assert audit.resource_id == body["id"] and audit.actor_type == "api_key"
        delivery = session.scalars(sa.select(WebhookDelivery)).one()
        assert delivery.event_type == "booking.created"
        assert delivery.payload["data"]["confirmation_code"] == body["confirmation_code"]
        job = session.scalars(sa.select(Job).where(Job.kind == listener)).one()
        assert job.payload == {
            "booking_id": body["id"],
            "change_id": change.id,
            "action": "created",
            "from_status": None,
        }
    got = _ok(client.get(f"{API}/bookings/{body['id']}", headers=clinic.headers))
    assert got == body
    code = body["confirmation_code"].replace("-", "").lower()
    assert (
        _ok(client.get(f"{API}/bookings/by-code/{code}", headers=clinic.headers))["id"]
        == body["id"]
    )


def test_inline_patient_is_created_once_then_matched(
    client: TestClient, clinic: Clinic, setup: Setup, db: Database
) -> None:
    person = {"first_name": "Rowan", "last_name": "Example", "date_of_birth": "1975-06-01",
              "phone": "(416) 555-0199"}  # fmt: skip
    first = _ok(
        _book(client, clinic, service_id=setup.service, provider_id=setup.providers[0],
              start=FRIDAY_9, patient=person),
        201,
    )  # fmt: skip
    again = _ok(
        _book(client, clinic, service_id=setup.service, provider_id=setup.providers[0],
              start=FRIDAY_930, patient={**person, "phone": "+1 416 555 0199"}),
        201,
    )  # fmt: skip
    assert first["patient_id"] == again["patient_id"]
    assert _count(db, Patient) == 1


def test_taken_slot_answers_409_with_next_slots_and_writes_nothing(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, db: Database
) -> None:
    prv = setup.providers[0]
    args = {"service_id": setup.service, "provider_id": prv, "start": FRIDAY_9}
    _ok(_book(client, clinic, **args, patient_id=patient), 201)
    person = {"first_name": "Noa", "last_name": "Late", "date_of_birth": "1990-01-01"}
    for body in ({**args, "patient_id": patient}, {**args, "patient": person}):
        doc = problem(_book(client, clinic, **body), 409)
        assert doc["type"].endswith("/slot-taken")
        nxt = doc["next_available"]
        assert nxt and all(s["provider_id"] == prv for s in nxt)
        assert nxt[0]["start"] == FRIDAY_930
    assert _count(db, Booking) == 1 and _count(db, Patient) == 1  # the inline patient rolled back


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"service_id": "svc_unknown"}, "service_id"),
        ({"provider_id": "prv_unknown"}, "provider_id"),
        ({"patient_id": "pat_unknown"}, "patient_id"),
        ({"start": "2026-03-01T09:00:00-05:00"}, "start"),  # the past
        ({"start": "2026-03-07T10:00:00-05:00"}, "start"),  # a Saturday
        ({"start": "2026-03-06T20:00:00-05:00"}, "start"),  # after hours
        ({"start": "2026-03-06T09:10:00-05:00"}, "start"),  # off the slot grid
        ({"start": "2026-03-06T09:00:00"}, "start"),  # no offset
        ({"start": "2026-02-30T09:00:00-05:00"}, "start"),  # no such date
        ({"hold_minutes": 0}, "hold_minutes"),
        ({"status": "confirmed"}, "status"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(
    client: TestClient,
    clinic: Clinic,
    setup: Setup,
    patient: str,
    db: Database,
    change: dict[str, Any],
    field: str,
) -> None:
    body = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9,
            "patient_id": patient, **change}  # fmt: skip
    assert field in fields(_book(client, clinic, **body))
    assert _count(db, Booking) == 0 and _count(db, TimeClaim) == 0


def test_exactly_one_of_patient_id_and_patient(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str
) -> None:
    base = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9}
    person = {"first_name": "A", "last_name": "B"}
    for body in (base, {**base, "patient_id": patient, "patient": person}):
        doc = problem(_book(client, clinic, **body), 422)
        assert "patient_id" in doc["detail"] or "patient_id" in str(doc["errors"])


def test_another_clinics_patient_or_booking_is_not_found(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, make_clinic: Any
) -> None:
    other = make_clinic("Birch Clinic")
    other_patient = _patient(client, other, first="Zed")
    args = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9}
    assert fields(_book(client, clinic, **args, patient_id=other_patient)) == ["patient_id"]
    assert fields(_book(client, other, **args, patient_id=other_patient)) == ["service_id"]
    booked = _ok(_book(client, clinic, **args, patient_id=patient), 201)
    for path in ("", "/history"):
        problem(client.get(f"{API}/bookings/{booked['id']}{path}", headers=other.headers), 404)
    problem(
        client.post(f"{API}/bookings/{booked['id']}/cancel", json={"reason": "x"},
                    headers=other.headers),
        404,
    )  # fmt: skip
    assert _ok(client.get(f"{API}/bookings", headers=other.headers))["data"] == []


def test_any_provider_takes_the_least_booked_then_the_other(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str
) -> None:
    args = {"service_id": setup.service, "provider_id": "any", "start": FRIDAY_9}
    first = _ok(_book(client, clinic, **args, patient_id=patient), 201)
    second = _ok(_book(client, clinic, **args, patient_id=_patient(client, clinic, "Sam")), 201)
    assert {first["provider_id"], second["provider_id"]} == set(setup.providers)
    doc = problem(_book(client, clinic, **args, patient_id=patient), 409)
    assert doc["next_available"][0]["start"] == FRIDAY_930


def test_reschedule_keeps_id_and_code_and_the_old_time_on_conflict(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, db: Database
) -> None:
    prv = setup.providers[0]
    _ok(client.patch(f"{API}/services/{setup.service}", json={"slot_interval_minutes": 15},
                     headers=clinic.headers))  # fmt: skip
    args = {"service_id": setup.service, "provider_id": prv}
    booked = _ok(_book(client, clinic, **args, start=FRIDAY_9, patient_id=patient), 201)
    other = _ok(
        _book(client, clinic, **args, start="2026-03-06T10:00:00-05:00", patient_id=patient), 201
    )
    url = f"{API}/bookings/{booked['id']}/reschedule"
    # 15 minutes later overlaps its own old time: allowed
    moved = _ok(
        client.post(url, json={"start": "2026-03-06T09:15:00-05:00"}, headers=clinic.headers)
    )
    assert (moved["id"], moved["confirmation_code"]) == (booked["id"], booked["confirmation_code"])
    assert moved["start"] == "2026-03-06T09:15:00-05:00" and moved["version"] == 2
    # onto the other booking: 409, and the booking keeps 09:15
    doc = problem(client.post(url, json={"start": other["start"]}, headers=clinic.headers), 409)
    assert doc["type"].endswith("/slot-taken")
    kept = _ok(client.get(f"{API}/bookings/{booked['id']}", headers=clinic.headers))
    assert kept["start"] == "2026-03-06T09:15:00-05:00"
    assert _count(db, TimeClaim, active=True) == 2
    # to the other provider
    moved = _ok(client.post(url, json={"start": FRIDAY_9, "provider_id": setup.providers[1]},
                            headers=clinic.headers))  # fmt: skip
    assert moved["provider_id"] == setup.providers[1]
    history = _ok(client.get(f"{API}/bookings/{booked['id']}/history", headers=clinic.headers))
    assert [c["action"] for c in history["data"]] == ["created", "rescheduled", "rescheduled"]
    assert history["data"][2]["details"]["provider_id"] == [prv, setup.providers[1]]


def test_cancel_needs_a_reason_honours_the_window_and_frees_the_slot(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, clock: FakeClock
) -> None:
    h = clinic.headers
    _ok(client.patch(f"{API}/services/{setup.service}", json={"cancellation_window_minutes": 1440},
                     headers=h))  # fmt: skip
    args = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9}
    booked = _ok(_book(client, clinic, **args, patient_id=patient), 201)
    url = f"{API}/bookings/{booked['id']}/cancel"
    assert fields(client.post(url, json={"reason": ""}, headers=h)) == ["reason"]
    clock.advance(datetime(2026, 3, 5, 15, 0, tzinfo=UTC) - NOW)  # 19 hours before
    doc = problem(client.post(url, json={"reason": "feeling better"}, headers=h), 409)
    assert doc["type"].endswith("/cancellation-window")
    cancelled = _ok(
        client.post(url, json={"reason": "feeling better", "override_window": True}, headers=h)
    )
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "feeling better"
    doc = problem(client.post(url, json={"reason": "again"}, headers=h), 409)
    assert doc["type"].endswith("/booking-state")
    _ok(_book(client, clinic, **args, patient_id=patient), 201)  # the time is free again


def test_confirm_no_show_and_complete_follow_the_clock(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, clock: FakeClock
) -> None:
    h = clinic.headers
    args = {"service_id": setup.service, "provider_id": setup.providers[0]}
    first = _ok(_book(client, clinic, **args, start=FRIDAY_9, patient_id=patient), 201)
    second = _ok(_book(client, clinic, **args, start=FRIDAY_930, patient_id=patient), 201)
    one, two = f"{API}/bookings/{first['id']}", f"{API}/bookings/{second['id']}"
    assert _ok(client.post(f"{one}/confirm", headers=h))["status"] == "confirmed"
    assert _ok(client.post(f"{one}/confirm", headers=h))["status"] == "confirmed"  # idempotent
    problem(client.post(f"{one}/no-show", headers=h), 409)  # not started yet
    clock.advance(datetime(2026, 3, 6, 15, 0, tzinfo=UTC) - NOW)
    assert _ok(client.post(f"{one}/complete", headers=h))["status"] == "completed"
    assert _ok(client.post(f"{two}/no-show", headers=h))["status"] == "no_show"
    problem(client.post(f"{one}/cancel", json={"reason": "x"}, headers=h), 409)
    statuses = {b["status"] for b in _ok(client.get(f"{API}/bookings", headers=h))["data"]}
    assert statuses == {"completed", "no_show"}
    listed = _ok(client.get(f"{API}/bookings", params={"status": "no_show"}, headers=h))["data"]
    assert [b["id"] for b in listed] == [second["id"]]


def test_a_hold_expires_and_frees_its_slot(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, clock: FakeClock, db: Database
) -> None:
    h = clinic.headers
    args = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9}
    held = _ok(_book(client, clinic, **args, patient_id=patient, hold_minutes=10), 201)
    assert held["status"] == "held" and held["hold_expires_at"]
    problem(_book(client, clinic, **args, patient_id=patient), 409)  # held is taken
    clock.advance(timedelta(minutes=11))
    problem(client.post(f"{API}/bookings/{held['id']}/confirm", headers=h), 409)
    # the periodic job releases it
    job = JobContext("job_x", bookings.RELEASE_HOLDS_KIND, None, {}, 1, 3, db, clock.now)
    bookings.release_holds(job)
    bookings.release_holds(job)  # idempotent
    expired = _ok(client.get(f"{API}/bookings/{held['id']}", headers=h))
    assert expired["status"] == "expired"
    assert _count(db, TimeClaim, active=True) == 0
    _ok(_book(client, clinic, **args, patient_id=patient), 201)
    history = _ok(client.get(f"{API}/bookings/{held['id']}/history", headers=h))["data"]
    assert [(c["action"], c["actor_type"]) for c in history] == [
        ("held", "api_key"),
        ("expired", "system"),
    ]


def test_an_expired_hold_never_blocks_even_before_the_job_runs(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, clock: FakeClock
) -> None:
    args = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9}
    held = _ok(_book(client, clinic, **args, patient_id=patient, hold_minutes=5), 201)
    clock.advance(timedelta(minutes=6))
    _ok(_book(client, clinic, **args, patient_id=patient), 201)
    got = _ok(client.get(f"{API}/bookings/{held['id']}", headers=clinic.headers))
    assert got["status"] == "expired"


def test_a_held_booking_becomes_confirmed_in_time(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, clock: FakeClock
) -> None:
    args = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9}
    held = _ok(_book(client, clinic, **args, patient_id=patient, hold_minutes=10), 201)
    clock.advance(timedelta(minutes=9))
    confirmed = _ok(client.post(f"{API}/bookings/{held['id']}/confirm", headers=clinic.headers))
    assert confirmed["status"] == "confirmed" and confirmed["hold_expires_at"] is None


def test_group_sessions_seat_up_to_capacity(
    client: TestClient, clinic: Clinic, setup: Setup, db: Database
) -> None:
    h = clinic.headers
    body = {"name": "Group physio", "duration_minutes": 60, "capacity": 2,
            "provider_ids": setup.providers[:1]}  # fmt: skip
    svc = _ok(client.post(f"{API}/services", json=body, headers=h), 201)["id"]
    args = {"service_id": svc, "provider_id": setup.providers[0], "start": FRIDAY_9}
    ids = [_ok(_book(client, clinic, **args, patient_id=_patient(client, clinic, n)), 201)["id"]
           for n in ("Ann", "Ben")]  # fmt: skip
    problem(_book(client, clinic, **args, patient_id=_patient(client, clinic, "Cy")), 409)
    with db.read() as session:
        claim = session.scalars(sa.select(TimeClaim)).one()
        assert (claim.seats_taken, claim.capacity, claim.active) == (2, 2, True)
    _ok(client.post(f"{API}/bookings/{ids[0]}/cancel", json={"reason": "ill"}, headers=h))
    _ok(_book(client, clinic, **args, patient_id=_patient(client, clinic, "Di")), 201)
    for booking_id in ids[1:]:
        _ok(client.post(f"{API}/bookings/{booking_id}/cancel", json={"reason": "x"}, headers=h))


def test_reading_needs_bookings_read_and_writing_bookings_write(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str, db: Database
) -> None:
    auditor = add_key(db, clinic, "auditor")
    args = {"service_id": setup.service, "provider_id": setup.providers[0], "start": FRIDAY_9,
            "patient_id": patient}  # fmt: skip
    doc = problem(_book(client, auditor, **args), 403)
    assert doc["permission"] == "bookings:write"
    _ok(client.get(f"{API}/bookings", headers=auditor.headers))


def test_any_provider_goes_to_the_one_with_fewer_bookings_that_day(
    client: TestClient, clinic: Clinic, setup: Setup, patient: str
) -> None:
    busy, free = setup.providers
    for start in ("2026-03-06T13:00:00-05:00", "2026-03-06T14:00:00-05:00"):
        _ok(_book(client, clinic, service_id=setup.service, provider_id=busy, start=start,
                  patient_id=patient), 201)  # fmt: skip
    args = {"service_id": setup.service, "provider_id": "any", "start": FRIDAY_9}
    assert _ok(_book(client, clinic, **args, patient_id=patient), 201)["provider_id"] == free
