"""iCalendar feeds per provider over HTTP, read back with the ``icalendar`` package."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from icalendar import Calendar

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock
from clinicbridge.core.context import Ctx
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.patients.service import find_or_create_patient
from clinicbridge.scheduling import bookings as bookings_service
from clinicbridge.scheduling import ical
from clinicbridge.scheduling.models import Booking, IcalFeed
from clinicbridge.settings import Settings
from tests.conftest import Clinic, add_key

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
API = "/api/v1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def app(settings: Settings, db: Database, clock: FakeClock) -> FastAPI:
    return create_app(settings, db=db, clock=clock)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


@dataclass
class Setup:
    location: str
    providers: list[str]
    service: str


def configure(client: TestClient, clinic: Clinic) -> Setup:
    h = clinic.headers
    body = {"name": "Harbour Rd", "timezone": "America/Toronto"}
    loc = _ok(client.post(f"{API}/locations", json=body, headers=h), 201)["id"]
    providers = []
    for name in ("Dr. Ada Test", "Dr. Bo Sample"):
        body = {"display_name": name, "timezone": "America/Toronto"}
        pid = _ok(client.post(f"{API}/providers", json=body, headers=h), 201)["id"]
        hours = [
            {"weekday": d, "start": "09:00", "end": "17:00", "location_id": loc} for d in range(5)
        ]
        _ok(client.put(f"{API}/providers/{pid}/hours", json={"intervals": hours}, headers=h))
        providers.append(pid)
    service = {"name": "Consultation", "duration_minutes": 30, "provider_ids": providers}
    svc = _ok(client.post(f"{API}/services", json=service, headers=h), 201)["id"]
    return Setup(loc, providers, svc)


@pytest.fixture
def setup(client: TestClient, clinic: Clinic) -> Setup:
    return configure(client, clinic)


def _ctx(tenant_id: str, now: datetime = NOW) -> Ctx:
    return Ctx(tenant_id, "system", "test", "owner", frozenset(), now)


def add_patient(db: Database, tenant_id: str, first: str, last: str) -> str:
    with db.write() as session:
        patient, _ = find_or_create_patient(
            session,
            _ctx(tenant_id),
            first_name=first,
            last_name=last,
            date_of_birth=date(1980, 5, 17),
            phone="+14165550123",
            email=f"{first.lower()}@example.com",
            source="api",
        )
        return patient.id


def add_booking(
    db: Database,
    tenant_id: str,
    setup: Setup,
    provider_id: str,
    patient_id: str,
    start: datetime,
    *,
    now: datetime = NOW,
    hold_minutes: int | None = None,
) -> str:
    """A booking made through ``create_booking`` as if it were ``now``."""
    with db.write() as session:
        booking = bookings_service.create_booking(
            session,
            _ctx(tenant_id, now),
            service_id=setup.service,
            provider_id=provider_id,
            start=start,
            patient_id=patient_id,
            hold_minutes=hold_minutes,
        )
        return booking.id


def new_feed(client: TestClient, clinic: Clinic, provider_id: str) -> dict[str, Any]:
    created: dict[str, Any] = _ok(
        client.post(f"{API}/providers/{provider_id}/ical-feeds", headers=clinic.headers), 201
    )
    return created


def fetch(client: TestClient, feed: dict[str, Any]) -> Calendar:
    path = feed["url"].split("://", 1)[1].split("/", 1)[1]
    response = client.get("/" + path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    assert response.headers["cache-control"] == "private, max-age=300"
    return Calendar.from_ical(response.content)


def events(cal: Calendar) -> dict[str, Any]:
    return {str(e["uid"]): e for e in cal.walk("VEVENT")}


def set_patient_names(db: Database, tenant_id: str, allowed: bool) -> None:
    with db.write() as session:
        session.execute(
            sa.update(Tenant).where(Tenant.id == tenant_id).values(calendar_patient_names=allowed)
        )


@dataclass
class Bookings:
    patient: str
    code: str  # of ``upcoming``
    upcoming: str
    held: str
    recent: str
    cancelled: str
    too_old: str
    too_far: str
    other_provider: str


# Monday 2 March 2026, 07:00 in Toronto; bookings at 15:00 UTC (10:00 or 11:00 there).
AT = NOW + timedelta(hours=3)


@pytest.fixture
def bookings(db: Database, clinic: Clinic, setup: Setup) -> Bookings:
    ada, bo = setup.providers
    patient = add_patient(db, clinic.id, "Quinn", "Zephyrine")
    other = add_patient(db, clinic.id, "Rowan", "Marchetti")

    def book(provider: str, start: datetime, **kw: Any) -> str:
        return add_booking(db, clinic.id, setup, provider, patient, start, **kw)

    def past(start: datetime) -> str:  # booked the day before
        return book(ada, start, now=start - timedelta(days=1))

    upcoming = book(ada, AT + timedelta(days=1))
    cancelled = book(ada, AT + timedelta(days=3))
    with db.write() as session:
        ctx = _ctx(clinic.id)
        bookings_service.confirm_booking(session, ctx, upcoming)
        bookings_service.cancel_booking(session, ctx, cancelled, reason="Feeling better")
        code = session.get_one(Booking, upcoming).confirmation_code
    made = Bookings(
        patient=patient,
        code=code,
        upcoming=upcoming,
        cancelled=cancelled,
        recent=past(AT - timedelta(days=10)),
        too_old=past(AT - timedelta(days=40)),
        too_far=past(AT + timedelta(days=400)),
        other_provider=add_booking(db, clinic.id, setup, bo, other, AT + timedelta(days=1)),
        held=book(ada, AT + timedelta(days=2), hold_minutes=60),  # last: holds expire on booking
    )
    return made


# --- the feed -----------------------------------------------------------------------------


def test_a_feed_shows_its_providers_active_bookings_without_patient_data(
    client: TestClient, clinic: Clinic, setup: Setup, bookings: Bookings
) -> None:
    feed = new_feed(client, clinic, setup.providers[0])
    assert feed["provider_id"] == setup.providers[0]
    assert feed["url"] == f"http://127.0.0.1:8000/ical/{feed['token']}.ics"
    assert len(feed["token"]) >= 43

    cal = fetch(client, feed)
    assert str(cal["prodid"]) == ical.PRODID
    assert str(cal["version"]) == "2.0"
    assert str(cal["x-wr-calname"]) == "Dr. Ada Test"
    assert cal.decoded("refresh-interval") == timedelta(minutes=15)
    assert "x-published-ttl" in cal

    found = events(cal)
    ids = {b: f"{b}@clinicbridge" for b in (bookings.upcoming, bookings.held, bookings.recent)}
    assert set(found) == set(ids.values())  # not cancelled, too old, too far, other provider
    upcoming = found[ids[bookings.upcoming]]
    assert upcoming.decoded("dtstart") == AT + timedelta(days=1)
    assert upcoming.decoded("dtstart").utcoffset() == timedelta(0)
    assert upcoming.decoded("dtend") == AT + timedelta(days=1, minutes=30)
    assert upcoming.decoded("dtstamp") == NOW  # its last change: the confirmation
    assert str(upcoming["summary"]) == "Consultation"
    assert str(upcoming["location"]) == "Harbour Rd"
    assert str(upcoming["status"]) == "CONFIRMED"
    assert int(upcoming["sequence"]) == 2  # booked, then confirmed
    assert str(found[ids[bookings.held]]["status"]) == "TENTATIVE"
    recent = found[ids[bookings.recent]]
    assert str(recent["status"]) == "CONFIRMED" and int(recent["sequence"]) == 1
    assert recent.decoded("dtstart") == AT - timedelta(days=10)

    body = cal.to_ical().decode()
    for secret in ("Quinn", "Zephyrine", "Rowan", "5550123", "example.com", "1980", bookings.code):
        assert secret not in body
    for event in found.values():
        assert set(event) <= {
            "UID", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY", "SEQUENCE", "CREATED",
            "LAST-MODIFIED", "STATUS", "TRANSP", "LOCATION",
        }  # fmt: skip


def test_patient_names_only_when_the_clinic_allows_them(
    client: TestClient, clinic: Clinic, db: Database, setup: Setup, bookings: Bookings
) -> None:
    feed = new_feed(client, clinic, setup.providers[0])
    assert all("Quinn" not in str(e["summary"]) for e in events(fetch(client, feed)).values())
    with db.read() as session:
        reads = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "ical_feed.read"))
        assert list(reads) == []

    set_patient_names(db, clinic.id, True)
    found = events(fetch(client, feed))
    assert {str(e["summary"]) for e in found.values()} == {"Consultation: Quinn Zephyrine"}
    body = b"".join(e.to_ical() for e in found.values()).decode()
    for secret in ("5550123", "example.com", "1980", bookings.code, "Rowan"):
        assert secret not in body
    with db.read() as session:
        read = session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "ical_feed.read")
        ).one()
        assert read.tenant_id == clinic.id and read.phi and read.resource_id == feed["id"]

    set_patient_names(db, clinic.id, False)
    assert all("Quinn" not in str(e["summary"]) for e in events(fetch(client, feed)).values())


def test_an_expired_hold_leaves_the_feed(
    client: TestClient, clinic: Clinic, setup: Setup, bookings: Bookings, clock: FakeClock
) -> None:
    feed = new_feed(client, clinic, setup.providers[0])
    assert f"{bookings.held}@clinicbridge" in events(fetch(client, feed))
    clock.advance(timedelta(minutes=61))  # not yet released by the sweeper
    assert f"{bookings.held}@clinicbridge" not in events(fetch(client, feed))
    assert f"{bookings.upcoming}@clinicbridge" in events(fetch(client, feed))


def test_a_feed_shows_only_its_own_providers_bookings(
    client: TestClient, clinic: Clinic, setup: Setup, bookings: Bookings
) -> None:
    feed = new_feed(client, clinic, setup.providers[1])
    cal = fetch(client, feed)
    assert str(cal["x-wr-calname"]) == "Dr. Bo Sample"
    assert set(events(cal)) == {f"{bookings.other_provider}@clinicbridge"}


def test_a_feed_answers_etag_revalidation(
    client: TestClient, clinic: Clinic, setup: Setup, bookings: Bookings
) -> None:
    feed = new_feed(client, clinic, setup.providers[0])
    path = f"/ical/{feed['token']}.ics"
    first = client.get(path)
    etag = first.headers["etag"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


# --- managing feeds -------------------------------------------------------------------------


def _not_found(response: Any) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_revoked_and_unknown_feeds_answer_404(
    client: TestClient, clinic: Clinic, db: Database, setup: Setup, bookings: Bookings
) -> None:
    provider = setup.providers[0]
    feed = new_feed(client, clinic, provider)
    kept = new_feed(client, clinic, provider)
    assert feed["token"] != kept["token"]
    base = f"{API}/providers/{provider}/ical-feeds"

    unknown = client.get("/ical/not-a-real-token-0000000000000000000000000.ics")
    _not_found(unknown)
    assert client.get(f"/ical/{'x' * 500}.ics").status_code == 404

    _ok(client.delete(f"{base}/{feed['id']}", headers=clinic.headers), 204)
    revoked = client.get(f"/ical/{feed['token']}.ics")
    _not_found(revoked)
    assert {k: v for k, v in revoked.json().items() if k != "request_id"} == {
        k: v for k, v in unknown.json().items() if k != "request_id"
    }
    fetch(client, kept)  # the other feed still works
    _ok(client.delete(f"{base}/{feed['id']}", headers=clinic.headers), 204)  # again: no change
    _not_found(client.delete(f"{base}/icf_doesnotexist", headers=clinic.headers))

    listed = _ok(client.get(base, headers=clinic.headers))["data"]
    assert [f["id"] for f in listed] == [feed["id"], kept["id"]]
    assert listed[0]["revoked_at"] is not None and listed[1]["revoked_at"] is None
    for item in listed:
        assert "token" not in item and "url" not in item
        assert feed["token"] not in str(item) and kept["token"] not in str(item)

    with db.read() as session:
        actions = session.scalars(
            sa.select(AuditEvent.action)
            .where(AuditEvent.action.like("ical_feed.%"))
            .order_by(AuditEvent.seq)
        ).all()
    assert actions == ["ical_feed.create", "ical_feed.create", "ical_feed.revoke"]


def test_another_clinics_provider_and_feeds_are_not_found(
    client: TestClient, make_clinic: Callable[..., Clinic], clinic: Clinic, setup: Setup
) -> None:
    other = make_clinic("Birch Dental")
    other_setup = configure(client, other)
    theirs = new_feed(client, other, other_setup.providers[0])
    mine = new_feed(client, clinic, setup.providers[0])

    foreign = f"{API}/providers/{other_setup.providers[0]}/ical-feeds"
    _not_found(client.post(foreign, headers=clinic.headers))
    _not_found(client.get(foreign, headers=clinic.headers))
    _not_found(client.delete(f"{foreign}/{theirs['id']}", headers=clinic.headers))
    own = f"{API}/providers/{setup.providers[0]}/ical-feeds"
    _not_found(client.delete(f"{own}/{theirs['id']}", headers=clinic.headers))
    # a feed id under another of the clinic's own providers is not found either
    _not_found(
        client.delete(
            f"{API}/providers/{setup.providers[1]}/ical-feeds/{mine['id']}", headers=clinic.headers
        )
    )
    fetch(client, theirs)  # untouched
    fetch(client, mine)


def test_tokens_are_not_stored_in_clear(
    client: TestClient, clinic: Clinic, db: Database, setup: Setup
) -> None:
    feed = new_feed(client, clinic, setup.providers[0])
    token = feed["token"]
    with db.read() as session:
        rows = session.execute(sa.select(IcalFeed.__table__)).mappings().all()
        audit = session.execute(sa.select(AuditEvent.__table__)).mappings().all()
    assert len(rows) == 1
    assert rows[0]["token_hash"] == ical.token_hash(token)
    for row in [*rows, *audit]:
        assert not any(token in str(value) for value in row.values())


def test_feed_routes_need_schedule_permissions(
    client: TestClient, clinic: Clinic, db: Database, setup: Setup
) -> None:
    base = f"{API}/providers/{setup.providers[0]}/ical-feeds"
    clinician = add_key(db, clinic, "clinician")  # schedule:read only
    feed = new_feed(client, clinic, setup.providers[0])
    assert client.post(base, headers=clinician.headers).status_code == 403
    assert client.delete(f"{base}/{feed['id']}", headers=clinician.headers).status_code == 403
    assert client.get(base, headers=clinician.headers).status_code == 200
    assert client.get(base).status_code == 401


# --- the attachment, with the database ------------------------------------------------------


def test_attachment_of_a_stored_booking(
    db: Database, clinic: Clinic, setup: Setup, bookings: Bookings
) -> None:
    with db.write() as session:
        booking = session.get_one(Booking, bookings.upcoming)
        cal = Calendar.from_ical(ical.ics_attachment(session, booking))
        event = cal.walk("VEVENT")[0]
        assert str(cal["method"]) == "PUBLISH"
        assert str(event["uid"]) == f"{bookings.upcoming}@clinicbridge"
        assert str(event["summary"]) == "Consultation with Dr. Ada Test"
        assert f"Confirmation code: {bookings.code}" in str(event["description"])
        assert "Quinn" not in cal.to_ical().decode()
        named = ical.ics_attachment(session, booking, include_patient_name=True)
        assert "Patient: Quinn Zephyrine" in str(
            Calendar.from_ical(named).walk("VEVENT")[0]["description"]
        )
