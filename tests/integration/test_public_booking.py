"""The public booking API of a clinic's website: no API key, and no patient data out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock
from clinicbridge.core.models import Tenant
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.patients.models import Patient, PatientContact
from clinicbridge.scheduling.models import Booking, BookingChange, TimeClaim
from clinicbridge.scheduling.public import WindowLimiter, client_key
from clinicbridge.settings import Settings
from tests.conftest import Clinic

# Monday 2 March 2026, 07:00 in Toronto (EST, -05:00).
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TUESDAY_10 = "2026-03-03T10:00:00-05:00"
TUESDAY_11 = "2026-03-03T11:00:00-05:00"
API = "/api/v1"
CODE = re.compile(r"^[ACDEFGHJKMNPQRTUVWXY34679]{3}-[ACDEFGHJKMNPQRTUVWXY34679]{3}$")
BOOKING_KEYS = {"confirmation_code", "start", "end", "service_id", "provider_id", "status"}
PERSON = {
    "first_name": "Zelda",
    "last_name": "Quimby-Testperson",
    "date_of_birth": "1984-07-19",
    "phone": "+1 416 555 0142",
    "email": "zelda.quimby@example.com",
}
# What must never appear in a public answer.
# Whole values only: a short digit run such as "555" also turns up, by chance, inside the
# random request id of an error body.
PHI_MARKERS = (
    "Zelda",
    "Quimby",
    "1984-07-19",
    "+14165550142",
    "555 0142",
    "555-0142",
    "5550142",
    "example.com",
    "pat_",
)


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


@dataclass
class Site:
    slug: str
    providers: list[str]  # sorted ids, both give ``service``
    service: str  # public, 30 minutes
    private: str  # active, not public
    retired: str  # public, inactive
    away: str  # an inactive provider of ``service``

    def url(self, path: str) -> str:
        return f"/public/{self.slug}/{path}"


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _service(client: TestClient, clinic: Clinic, providers: list[str], **fields: Any) -> str:
    body = {"duration_minutes": 30, "provider_ids": providers, **fields}
    return str(_ok(client.post(f"{API}/services", json=body, headers=clinic.headers), 201)["id"])


@pytest.fixture
def site(client: TestClient, clinic: Clinic, db: Database) -> Site:
    h = clinic.headers
    body = {"name": "Main St", "timezone": "America/Toronto"}
    loc = _ok(client.post(f"{API}/locations", json=body, headers=h), 201)["id"]
    providers = []
    for name, active in (("Dr. Ada Test", True), ("Dr. Bo Sample", True), ("Dr. Cy Away", False)):
        body = {"display_name": name, "timezone": "America/Toronto", "is_active": active}
        pid = _ok(client.post(f"{API}/providers", json=body, headers=h), 201)["id"]
        hours = [
            {"weekday": d, "start": "09:00", "end": "17:00", "location_id": loc} for d in range(5)
        ]
        _ok(client.put(f"{API}/providers/{pid}/hours", json={"intervals": hours}, headers=h))
        providers.append(pid)
    away = providers.pop()
    providers.sort()
    service = _service(
        client,
        clinic,
        [*providers, away],
        name="Consultation",
        description="A first visit.",
        price_minor=9000,
        currency="CAD",
    )
    private = _service(client, clinic, providers, name="Staff only", is_public=False)
    retired = _service(client, clinic, providers, name="Old service", is_active=False)
    with db.read() as session:
        slug = session.scalar(sa.select(Tenant.slug).where(Tenant.id == clinic.id))
    assert slug
    return Site(slug, providers, service, private, retired, away)


def _booking(site: Site, start: str = TUESDAY_10, **over: Any) -> dict[str, Any]:
    return {
        "service_id": site.service,
        "provider_id": "any",
        "start": start,
        "patient": dict(PERSON),
        **over,
    }


def _no_phi(response: Any) -> None:
    for marker in PHI_MARKERS:
        assert marker not in response.text, marker


def _fields(response: Any, status: int = 422) -> list[str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json().get("errors", [])]


_COUNTED = (Patient, PatientContact, Booking, BookingChange, TimeClaim, AuditEvent, Job)


def _counts(db: Database) -> dict[str, int]:
    with db.read() as session:
        return {
            m.__tablename__: session.scalar(sa.select(sa.func.count()).select_from(m)) or 0
            for m in _COUNTED
        }


# --- services and availability ----------------------------------------------------------


def test_services_lists_only_active_public_services_and_active_providers(
    client: TestClient, site: Site
) -> None:
    response = client.get(site.url("services"))
    data = _ok(response)["data"]
    assert [s["id"] for s in data] == [site.service]
    (svc,) = data
    assert svc == {
        "id": site.service,
        "name": "Consultation",
        "description": "A first visit.",
        "duration_minutes": 30,
        "modality": "in_person",
        "price_minor": 9000,
        "currency": "CAD",
        "providers": [
            {"id": site.providers[0], "display_name": "Dr. Ada Test"},
            {"id": site.providers[1], "display_name": "Dr. Bo Sample"},
        ],
    }
    assert site.away not in response.text


def test_no_api_key_is_needed_and_a_key_changes_nothing(
    client: TestClient, site: Site, clinic: Clinic
) -> None:
    plain = _ok(client.get(site.url("services")))
    assert _ok(client.get(site.url("services"), headers=clinic.headers)) == plain


def test_availability_matches_the_staff_search_for_public_services(
    client: TestClient, site: Site, clinic: Clinic
) -> None:
    params = {"service_id": site.service, "from": "2026-03-03", "to": "2026-03-05"}
    public = _ok(client.get(site.url("availability"), params=params))["data"]
    staff = _ok(client.get(f"{API}/availability", params=params, headers=clinic.headers))["data"]
    assert public == staff
    assert len(public) == 2 * 16  # two days, 09:00-17:00 every 30 minutes
    assert public[0] == {
        "start": TUESDAY_10.replace("10:00", "09:00"),
        "end": TUESDAY_10.replace("10:00", "09:30"),
        "provider_id": site.providers[0],
        "seats_left": 1,
    }
    one = {**params, "provider_id": site.providers[1], "tz": "UTC", "limit": "3"}
    slots = _ok(client.get(site.url("availability"), params=one))["data"]
    assert [s["start"] for s in slots] == [
        "2026-03-03T14:00:00+00:00",
        "2026-03-03T14:30:00+00:00",
        "2026-03-03T15:00:00+00:00",
    ]
    assert {s["provider_id"] for s in slots} == {site.providers[1]}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"service_id": "private"}, "service_id"),
        ({"service_id": "retired"}, "service_id"),
        ({"service_id": "svc_00000000000000000000000000"}, "service_id"),
        ({"from": "2026-02-30"}, "from"),
        ({"to": "next tuesday"}, "to"),
        ({"to": "2026-04-04"}, "to"),  # more than 31 days
        ({"to": "2026-03-03"}, "to"),  # before from
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"provider_id": "prv_00000000000000000000000000"}, "provider_id"),
    ],
)
def test_availability_bad_input_names_the_field(
    client: TestClient, site: Site, params: dict[str, str], field: str
) -> None:
    query = {"service_id": site.service, "from": "2026-03-03", "to": "2026-03-05", **params}
    if query["service_id"] in ("private", "retired"):
        query["service_id"] = getattr(site, query["service_id"])
    assert _fields(client.get(site.url("availability"), params=query)) == [field]


def test_availability_without_a_required_parameter_is_422(client: TestClient, site: Site) -> None:
    response = client.get(site.url("availability"), params={"service_id": site.service})
    assert set(_fields(response)) == {"query.from", "query.to"}


def test_unknown_clinic_is_a_plain_404(client: TestClient, site: Site) -> None:
    for slug in ("no-such-clinic", "Not_A_Slug"):
        for response in (
            client.get(f"/public/{slug}/services"),
            client.get(
                f"/public/{slug}/availability",
                params={"service_id": site.service, "from": "2026-03-03", "to": "2026-03-04"},
            ),
            client.post(f"/public/{slug}/bookings", json=_booking(site)),
        ):
            assert response.status_code == 404, response.text
            body = response.json()
            assert body["detail"] == "No resource at this address."
            assert slug not in response.text
            assert "errors" not in body


# --- bookings ---------------------------------------------------------------------------


def test_booking_answers_the_code_and_times_only(
    client: TestClient, site: Site, db: Database
) -> None:
    response = client.post(site.url("bookings"), json=_booking(site))
    body = _ok(response, 201)
    assert set(body) == BOOKING_KEYS
    assert CODE.match(body["confirmation_code"])
    assert body["start"] == TUESDAY_10
    assert body["end"] == TUESDAY_10.replace("10:00", "10:30")
    assert body["service_id"] == site.service
    assert body["provider_id"] in site.providers
    assert body["status"] == "booked"
    assert response.headers["cache-control"] == "no-store"
    _no_phi(response)
    with db.read() as session:
        booking = session.scalars(sa.select(Booking)).one()
        patient = session.get(Patient, booking.patient_id)
        assert patient is not None and patient.first_name == "Zelda"
        assert booking.confirmation_code == body["confirmation_code"]
        assert booking.source == "public"
        assert booking.created_by == "system:public_booking"
        assert patient.id not in response.text
        actors = session.execute(
            sa.select(AuditEvent.actor_type, AuditEvent.actor_id, AuditEvent.action).where(
                AuditEvent.tenant_id == booking.tenant_id, AuditEvent.action.like("booking.%")
            )
        ).all()
    assert actors == [("system", "public_booking", "booking.create")]


def test_a_second_booking_by_the_same_person_matches_the_patient(
    client: TestClient, site: Site, db: Database
) -> None:
    first = client.post(site.url("bookings"), json=_booking(site))
    again = dict(PERSON, first_name="zelda", phone="(416) 555-0142", email=None)
    second = client.post(site.url("bookings"), json=_booking(site, TUESDAY_11, patient=again))
    one, two = _ok(first, 201), _ok(second, 201)
    assert set(one) == set(two) == BOOKING_KEYS  # a match looks like a new patient
    assert one["confirmation_code"] != two["confirmation_code"]
    _no_phi(second)
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Patient)) == 1
        patients = set(session.scalars(sa.select(Booking.patient_id)))
    assert len(patients) == 1


def test_a_taken_slot_is_409_with_other_times_and_no_patient_data(
    client: TestClient, site: Site, db: Database
) -> None:
    chosen = site.providers[0]
    _ok(client.post(site.url("bookings"), json=_booking(site, provider_id=chosen)), 201)
    before = _counts(db)
    other = {**PERSON, "first_name": "Yorick", "last_name": "Other", "email": "y@example.com"}
    response = client.post(
        site.url("bookings"), json=_booking(site, provider_id=chosen, patient=other)
    )
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith("/slot-taken")
    offered = body["next_available"]
    assert 1 <= len(offered) <= 5
    for slot in offered:
        assert set(slot) == {"start", "end", "provider_id"}
        assert slot["provider_id"] == chosen
        assert slot["start"].endswith("-05:00")
    assert offered[0]["start"] == TUESDAY_10.replace("10:00", "10:30")
    _no_phi(response)
    assert "Yorick" not in response.text
    assert _counts(db) == before  # the second person was not added


def test_any_provider_books_the_other_one_while_one_is_taken(
    client: TestClient, site: Site
) -> None:
    a = _ok(client.post(site.url("bookings"), json=_booking(site)), 201)
    other = {**PERSON, "first_name": "Yorick", "last_name": "Other"}
    b = _ok(client.post(site.url("bookings"), json=_booking(site, patient=other)), 201)
    assert {a["provider_id"], b["provider_id"]} == set(site.providers)
    third = {**PERSON, "first_name": "Xavia", "last_name": "Third"}
    assert client.post(site.url("bookings"), json=_booking(site, patient=third)).status_code == 409


def _bad(site: Site, case: str) -> dict[str, Any]:
    body = _booking(site)
    if case == "missing last name":
        del body["patient"]["last_name"]
    elif case == "missing start":
        del body["start"]
    elif case == "february 30":
        body["patient"]["date_of_birth"] = "1984-02-30"
    elif case == "birth in the future":
        body["patient"]["date_of_birth"] = "2030-01-01"
    elif case == "no offset":
        body["start"] = "2026-03-03T10:00:00"
    elif case == "unknown service":
        body["service_id"] = "svc_00000000000000000000000000"
    elif case == "private service":
        body["service_id"] = site.private
    elif case == "inactive service":
        body["service_id"] = site.retired
    elif case == "unknown provider":
        body["provider_id"] = "prv_00000000000000000000000000"
    elif case == "inactive provider":
        body["provider_id"] = site.away
    elif case == "outside hours":
        body["start"] = "2026-03-03T20:00:00-05:00"
    elif case == "in the past":
        body["start"] = "2026-03-02T06:00:00-05:00"
    elif case == "bad phone":
        body["patient"]["phone"] = "not a phone"
    elif case == "bad email":
        body["patient"]["email"] = "nobody"
    elif case == "no contact":
        body["patient"].update(phone=None, email=None)
    elif case in ("status", "patient_id", "source"):
        body[case] = "booked" if case == "status" else "public"
    elif case == "patient.id":
        body["patient"]["id"] = "pat_00000000000000000000000000"
    return body


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("missing last name", "patient.last_name"),
        ("missing start", "start"),
        ("february 30", "patient.date_of_birth"),
        ("birth in the future", "patient.date_of_birth"),
        ("no offset", "start"),
        ("unknown service", "service_id"),
        ("private service", "service_id"),
        ("inactive service", "service_id"),
        ("unknown provider", "provider_id"),
        ("inactive provider", "provider_id"),
        ("outside hours", "start"),
        ("in the past", "start"),
        ("bad phone", "patient.phone"),
        ("bad email", "patient.email"),
        ("no contact", "patient.phone"),
        ("status", "status"),
        ("patient_id", "patient_id"),
        ("source", "source"),
        ("patient.id", "patient.id"),
    ],
)
def test_bad_booking_input_names_the_field_and_writes_nothing(
    client: TestClient, site: Site, db: Database, case: str, field: str
) -> None:
    before = _counts(db)
    response = client.post(site.url("bookings"), json=_bad(site, case))
    assert _fields(response) == [field]
    _no_phi(response)
    assert _counts(db) == before


def test_a_body_that_is_not_json_is_422(client: TestClient, site: Site) -> None:
    response = client.post(
        site.url("bookings"), content=b"{", headers={"content-type": "application/json"}
    )
    assert _fields(response) == ["body"]


# --- rate limits ------------------------------------------------------------------------


def test_bookings_are_rate_limited_per_client_ip_and_clinic(
    app: FastAPI, client: TestClient, site: Site, clock: FakeClock
) -> None:
    outside = _booking(site, "2026-03-03T20:00:00-05:00")  # 422: counts all the same
    for _ in range(10):
        assert client.post(site.url("bookings"), json=outside).status_code == 422
    refused = client.post(site.url("bookings"), json=_booking(site))
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(refused.headers["retry-after"]) <= 600
    # reads have their own, looser limit
    assert client.get(site.url("services")).status_code == 200
    # another address is not affected
    elsewhere = TestClient(app, client=("203.0.113.7", 40000))
    assert elsewhere.post(site.url("bookings"), json=_booking(site)).status_code == 201
    clock.advance(timedelta(minutes=10))
    assert client.post(site.url("bookings"), json=outside).status_code == 422


def test_reads_are_rate_limited_too(app: FastAPI, client: TestClient, site: Site) -> None:
    client.get(site.url("services"))  # creates the app's limits
    app.state.public_limits.reads = WindowLimiter(3, 60)
    for _ in range(3):
        assert client.get(site.url("services")).status_code == 200
    refused = client.get(site.url("services"))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    params = {"service_id": site.service, "from": "2026-03-03", "to": "2026-03-04"}
    assert client.get(site.url("availability"), params=params).status_code == 429


def test_window_limiter_and_client_keys() -> None:
    limiter = WindowLimiter(2, 60, max_keys=2)
    assert limiter.hit("a", 0) is None
    assert limiter.hit("a", 10) is None
    assert limiter.hit("a", 20) == 40  # the first hit leaves the window at 60
    assert limiter.hit("a", 60) is None
    assert limiter.hit("b", 60) is None
    assert limiter.hit("c", 60) is None  # "a" forgotten: at most two keys kept
    assert limiter.hit("a", 61) is None
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key(None) == "unknown"


def test_a_clinic_website_may_call_the_public_api_from_the_browser(
    client: TestClient, site: Site
) -> None:
    preflight = {"Origin": "https://maple.example.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}  # fmt: skip
    answer = client.options(f"/public/{site.slug}/bookings", headers=preflight)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "*"
    got = client.get(f"/public/{site.slug}/services", headers={"Origin": preflight["Origin"]})
    assert got.headers["access-control-allow-origin"] == "*"
    # the staff API is not for other origins
    other = client.options("/api/v1/bookings", headers=preflight)
    assert "access-control-allow-origin" not in other.headers
