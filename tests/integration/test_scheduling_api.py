"""Scheduling configuration and availability over HTTP, plus the service-level entry points
(``find_slots``) that bookings and voice call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.audit.models import AuditEvent
from clinicbridge.core.clock import FakeClock
from clinicbridge.core.errors import InvalidInputError
from clinicbridge.core.ids import new_id
from clinicbridge.db.engine import Database
from clinicbridge.scheduling import availability
from clinicbridge.scheduling.models import TimeClaim, WorkingHours
from clinicbridge.settings import Settings
from tests.conftest import Clinic, add_key

# Monday 2 March 2026, 07:00 in Toronto. Toronto moves to daylight time on Sunday 8 March.
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FRIDAY = "2026-03-06"  # EST, -05:00
MONDAY = "2026-03-09"  # EDT, -04:00
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


@dataclass
class Setup:
    location: str
    providers: list[str]  # sorted ids
    service: str
    video: str


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def configure(client: TestClient, clinic: Clinic) -> Setup:
    h = clinic.headers
    loc = _ok(
        client.post(
            f"{API}/locations",
            json={"name": "Main St", "timezone": "America/Toronto"},
            headers=h,
        ),
        201,
    )["id"]
    providers = []
    for name in ("Dr. Ada Test", "Dr. Bo Sample"):
        body = {"display_name": name, "timezone": "America/Toronto"}
        pid = _ok(client.post(f"{API}/providers", json=body, headers=h), 201)["id"]
        hours = [
            {"weekday": d, "start": "09:00", "end": "17:00", "location_id": loc} for d in range(5)
        ]
        _ok(client.put(f"{API}/providers/{pid}/hours", json={"intervals": hours}, headers=h))
        providers.append(pid)
    providers.sort()
    service = {
        "name": "Consultation",
        "duration_minutes": 30,
        "provider_ids": providers,
        "price_minor": 9000,
        "currency": "CAD",
    }
    svc = _ok(client.post(f"{API}/services", json=service, headers=h), 201)["id"]
    video = {"name": "Video visit", "duration_minutes": 20, "modality": "video"}
    vid = _ok(
        client.post(f"{API}/services", json={**video, "provider_ids": providers[:1]}, headers=h),
        201,
    )["id"]
    return Setup(loc, providers, svc, vid)


@pytest.fixture
def setup(client: TestClient, clinic: Clinic) -> Setup:
    return configure(client, clinic)


def slots(client: TestClient, clinic: Clinic, **params: str) -> list[dict[str, Any]]:
    result = _ok(client.get(f"{API}/availability", params=params, headers=clinic.headers))
    data: list[dict[str, Any]] = result["data"]
    return data


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    return body


def fields(response: Any, status: int = 422) -> list[str]:
    return [e["field"] for e in problem(response, status).get("errors", [])]


def add_claim(
    db: Database, tenant_id: str, provider_id: str, service_id: str, start: datetime, **kw: Any
) -> None:
    minutes = kw.pop("minutes", 30)
    with db.write() as session:
        session.add(
            TimeClaim(
                id=new_id("clm"),
                tenant_id=tenant_id,
                provider_id=provider_id,
                service_id=service_id,
                starts_at=start,
                ends_at=start + timedelta(minutes=minutes),
                blocked_from=start,
                blocked_until=start + timedelta(minutes=minutes),
                capacity=kw.get("capacity", 1),
                seats_taken=kw.get("seats_taken", 1),
                active=True,
            )
        )


# --- the contract -------------------------------------------------------------------------


def test_services_and_providers_are_listed_as_data(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    services = _ok(client.get(f"{API}/services", headers=clinic.headers))["data"]
    assert {s["id"] for s in services} == {setup.service, setup.video}
    consult = next(s for s in services if s["id"] == setup.service)
    assert consult["provider_ids"] == setup.providers
    assert consult["slot_interval_minutes"] == 30  # defaults to the duration
    assert consult["modality"] == "in_person" and consult["price_minor"] == 9000
    providers = _ok(client.get(f"{API}/providers", headers=clinic.headers))["data"]
    assert [p["id"] for p in providers] == setup.providers
    hours = _ok(client.get(f"{API}/providers/{setup.providers[0]}/hours", headers=clinic.headers))
    assert len(hours["data"]) == 5 and hours["data"][0]["start"] == "09:00"


def test_availability_of_one_provider_answers_in_its_timezone(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    got = slots(
        client,
        clinic,
        service_id=setup.service,
        provider_id=setup.providers[0],
        **{"from": FRIDAY, "to": "2026-03-10"},
    )
    assert len(got) == 32  # Friday and Monday, 16 each; nothing at the weekend
    assert got[0] == {
        "start": "2026-03-06T09:00:00-05:00",
        "end": "2026-03-06T09:30:00-05:00",
        "provider_id": setup.providers[0],
        "seats_left": 1,
    }
    assert got[16]["start"] == "2026-03-09T09:00:00-04:00"  # DST: still 09:00 wall time
    assert got[-1]["end"] == "2026-03-09T17:00:00-04:00"


def test_tz_parameter_changes_the_offsets_not_the_instants(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    got = slots(
        client,
        clinic,
        service_id=setup.service,
        provider_id=setup.providers[0],
        tz="Europe/London",
        **{"from": f"{MONDAY}T00:00:00-04:00", "to": f"{MONDAY}T23:00:00-04:00"},
    )
    assert got[0]["start"] == "2026-03-09T13:00:00Z" or got[0]["start"].startswith(
        "2026-03-09T13:00:00+00:00"
    )


def test_any_provider_goes_to_the_one_with_fewest_bookings(
    client: TestClient, clinic: Clinic, setup: Setup, db: Database
) -> None:
    params = {"service_id": setup.service, "provider_id": "any", "from": MONDAY, "to": "2026-03-10"}
    got = slots(client, clinic, **params)
    assert len(got) == 16  # one per start time, not one per provider
    assert {s["provider_id"] for s in got} == {setup.providers[0]}  # tie: lowest id
    first, second = setup.providers
    add_claim(db, clinic.id, first, setup.service, datetime(2026, 3, 9, 14, 0, tzinfo=UTC))
    got = slots(client, clinic, **params)
    assert len(got) == 16
    assert {s["provider_id"] for s in got} == {second}
    # the second provider is now busier; the first gets the free times, the second the rest
    for hour in (15, 16):
        add_claim(db, clinic.id, second, setup.service, datetime(2026, 3, 9, hour, tzinfo=UTC))
    chosen = {s["start"]: s["provider_id"] for s in slots(client, clinic, **params)}
    assert len(chosen) == 16
    assert chosen["2026-03-09T10:00:00-04:00"] == second  # the first is taken at 10:00
    assert chosen["2026-03-09T11:00:00-04:00"] == first  # the second is taken then
    assert chosen["2026-03-09T11:30:00-04:00"] == first


def test_the_answer_is_find_slots_written_out(
    client: TestClient, clinic: Clinic, setup: Setup, db: Database
) -> None:
    """Over a DST change, with claims and a busy block, for one provider or any, in the
    providers' zone or another, limited or not: the slots of ``find_slots``, each written
    as ``isoformat`` writes it."""
    first, second = setup.providers
    add_claim(db, clinic.id, first, setup.service, datetime(2026, 3, 6, 15, 0, tzinfo=UTC))
    add_claim(db, clinic.id, second, setup.service, datetime(2026, 3, 9, 14, 0, tzinfo=UTC))
    block = {"start": f"{MONDAY}T10:15:00-04:00", "end": f"{MONDAY}T11:00:00-04:00"}
    _ok(
        client.post(f"{API}/providers/{first}/busy-blocks", json=block, headers=clinic.headers), 201
    )
    lo, hi = "2026-03-06T00:00:00-05:00", "2026-03-11T00:00:00-04:00"
    for provider, tz, limit in (
        (first, None, None),
        ("any", None, None),
        ("any", "Asia/Kolkata", None),
        (second, "UTC", 7),
    ):
        params = {"service_id": setup.service, "provider_id": provider, "from": lo, "to": hi}
        if tz is not None:
            params["tz"] = tz
        if limit is not None:
            params["limit"] = str(limit)
        got = slots(client, clinic, **params)
        with db.read() as session:
            expected = availability.find_slots(
                session,
                clinic.id,
                service_id=setup.service,
                provider_id=None if provider == "any" else provider,
                start=datetime.fromisoformat(lo),
                end=datetime.fromisoformat(hi),
                now=NOW,
                limit=limit,
            )
        zone = ZoneInfo(tz or "America/Toronto")
        assert len(got) == len(expected) > 0
        assert got == [
            {
                "start": s.start.astimezone(zone).isoformat(),
                "end": s.end.astimezone(zone).isoformat(),
                "provider_id": s.provider_id,
                "seats_left": s.seats_left,
            }
            for s in expected
        ]


def test_busy_blocks_take_time_and_give_it_back(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    pid = setup.providers[0]
    params = {"service_id": setup.service, "provider_id": pid, "from": MONDAY, "to": "2026-03-10"}
    block = {"start": f"{MONDAY}T10:15:00-04:00", "end": f"{MONDAY}T11:00:00-04:00"}
    created = _ok(
        client.post(f"{API}/providers/{pid}/busy-blocks", json=block, headers=clinic.headers), 201
    )
    assert created["source"] == "manual"
    starts = [s["start"][11:16] for s in slots(client, clinic, **params)]
    assert "10:00" not in starts and "10:30" not in starts and "11:00" in starts
    listed = _ok(
        client.get(
            f"{API}/providers/{pid}/busy-blocks",
            params={"from": f"{MONDAY}T00:00:00Z", "to": "2026-03-10T00:00:00Z"},
            headers=clinic.headers,
        )
    )["data"]
    assert [b["id"] for b in listed] == [created["id"]]
    outside = client.get(
        f"{API}/providers/{pid}/busy-blocks",
        params={"from": "2026-03-10T00:00:00Z", "to": "2026-03-11T00:00:00Z"},
        headers=clinic.headers,
    )
    assert _ok(outside)["data"] == []
    resp = client.delete(
        f"{API}/providers/{pid}/busy-blocks/{created['id']}", headers=clinic.headers
    )
    assert resp.status_code == 204
    assert len(slots(client, clinic, **params)) == 16


def test_exceptions_time_off_and_extra_hours(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    pid = setup.providers[0]
    url = f"{API}/providers/{pid}/exceptions"
    params = {"service_id": setup.service, "provider_id": pid, "from": MONDAY, "to": "2026-03-10"}
    off = _ok(
        client.post(url, json={"date": MONDAY, "kind": "time_off"}, headers=clinic.headers), 201
    )
    assert off["start"] is None
    assert slots(client, clinic, **params) == []
    # overlapping another exception of the same date: refused, nothing written
    clash = {"date": MONDAY, "kind": "extra_hours", "start": "18:00", "end": "19:00"}
    assert fields(client.post(url, json=clash, headers=clinic.headers)) == ["date"]
    assert len(_ok(client.get(url, headers=clinic.headers))["data"]) == 1
    assert client.delete(f"{url}/{off['id']}", headers=clinic.headers).status_code == 204
    _ok(client.post(url, json=clash, headers=clinic.headers), 201)
    lunch = {"date": MONDAY, "kind": "time_off", "start": "12:00", "end": "13:00"}
    _ok(client.post(url, json=lunch, headers=clinic.headers), 201)
    starts = [s["start"][11:16] for s in slots(client, clinic, **params)]
    assert starts[-2:] == ["18:00", "18:30"]
    assert "12:00" not in starts and "12:30" not in starts and "13:00" in starts
    overlapping = {"date": MONDAY, "kind": "time_off", "start": "12:30", "end": "14:00"}
    assert fields(client.post(url, json=overlapping, headers=clinic.headers)) == ["date"]


def test_impossible_dates_and_bad_exception_shapes(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    url = f"{API}/providers/{setup.providers[0]}/exceptions"
    assert fields(
        client.post(url, json={"date": "2026-02-30", "kind": "time_off"}, headers=clinic.headers)
    ) == ["date"]
    half = {"date": MONDAY, "kind": "time_off", "start": "12:00"}
    assert problem(client.post(url, json=half, headers=clinic.headers), 422)
    backwards = {"date": MONDAY, "kind": "time_off", "start": "13:00", "end": "12:00"}
    assert problem(client.post(url, json=backwards, headers=clinic.headers), 422)
    bad_time = {"date": MONDAY, "kind": "time_off", "start": "25:00", "end": "26:00"}
    assert "start" in fields(client.post(url, json=bad_time, headers=clinic.headers))


def test_overlapping_weekly_hours_are_refused_and_nothing_changes(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    pid = setup.providers[0]
    url = f"{API}/providers/{pid}/hours"
    before = _ok(client.get(url, headers=clinic.headers))
    hours = [
        {"weekday": 0, "start": "09:00", "end": "12:00", "location_id": setup.location},
        {"weekday": 0, "start": "11:30", "end": "17:00", "location_id": setup.location},
    ]
    assert fields(client.put(url, json={"intervals": hours}, headers=clinic.headers)) == [
        "intervals.1"
    ]
    hours[1]["start"] = "12:00"  # touching is fine
    hours[1]["location_id"] = "loc_nope"
    assert fields(client.put(url, json={"intervals": hours}, headers=clinic.headers)) == [
        "intervals.1.location_id"
    ]
    assert _ok(client.get(url, headers=clinic.headers)) == before
    hours[1]["location_id"] = setup.location
    _ok(client.put(url, json={"intervals": hours}, headers=clinic.headers))
    assert len(_ok(client.get(url, headers=clinic.headers))["data"]) == 2


def test_availability_bad_input_names_the_field(
    client: TestClient, clinic: Clinic, setup: Setup
) -> None:
    base = {"service_id": setup.service, "provider_id": "any", "from": MONDAY, "to": "2026-03-10"}

    def bad(**over: str) -> list[str]:
        return fields(
            client.get(f"{API}/availability", params={**base, **over}, headers=clinic.headers)
        )

    assert bad(tz="Mars/Olympus_Mons") == ["tz"]
    assert bad(to=MONDAY) == ["to"]
    assert bad(to="2026-05-20") == ["to"]  # more than 62 days
    assert bad(**{"from": "2026-02-30"}) == ["from"]
    assert bad(**{"from": "next tuesday"}) == ["from"]
    assert bad(service_id="svc_unknown") == ["service_id"]
    assert bad(provider_id="prv_unknown") == ["provider_id"]
    video_only_first = {"service_id": setup.video, "provider_id": setup.providers[1]}
    assert bad(**video_only_first) == ["provider_id"]


def test_window_notice_and_the_past(client: TestClient, clinic: Clinic, setup: Setup) -> None:
    # now is Monday 2 March 07:00 Toronto: today's slots from 09:00 are all in the future
    today = slots(
        client,
        clinic,
        service_id=setup.service,
        provider_id=setup.providers[0],
        **{"from": "2026-03-01", "to": "2026-03-03"},
    )
    assert today[0]["start"] == "2026-03-02T09:00:00-05:00"
    _ok(
        client.patch(
            f"{API}/services/{setup.service}",
            json={"min_notice_minutes": 180, "max_advance_days": 3},
            headers=clinic.headers,
        )
    )
    got = slots(
        client,
        clinic,
        service_id=setup.service,
        provider_id=setup.providers[0],
        **{"from": "2026-03-01", "to": "2026-03-20"},
    )
    assert got[0]["start"] == "2026-03-02T10:00:00-05:00"
    assert got[-1]["start"] <= "2026-03-05T07:00:00-05:00"


def test_group_service_seats(
    client: TestClient, clinic: Clinic, setup: Setup, db: Database
) -> None:
    group = {
        "name": "Prenatal class",
        "duration_minutes": 60,
        "capacity": 6,
        "provider_ids": setup.providers[:1],
    }
    svc = _ok(client.post(f"{API}/services", json=group, headers=clinic.headers), 201)["id"]
    at = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 Toronto
    add_claim(db, clinic.id, setup.providers[0], svc, at, minutes=60, capacity=6, seats_taken=4)
    got = slots(
        client,
        clinic,
        service_id=svc,
        provider_id=setup.providers[0],
        **{"from": MONDAY, "to": "2026-03-10"},
    )
    seats = {s["start"][11:16]: s["seats_left"] for s in got}
    assert seats["10:00"] == 2 and seats["09:00"] == 6 and "11:00" in seats


def test_services_validate_providers_and_prices(
    client: TestClient, clinic: Clinic, setup: Setup, make_clinic: Callable[..., Clinic]
) -> None:
    other = make_clinic("Other Clinic")
    theirs = _ok(
        client.post(
            f"{API}/providers",
            json={"display_name": "Dr. Elsewhere", "timezone": "Europe/London"},
            headers=other.headers,
        ),
        201,
    )["id"]
    body = {"name": "X", "duration_minutes": 15, "provider_ids": [setup.providers[0], theirs]}
    assert fields(client.post(f"{API}/services", json=body, headers=clinic.headers)) == [
        "provider_ids.1"
    ]
    assert fields(
        client.post(
            f"{API}/services",
            json={"name": "X", "duration_minutes": 15, "price_minor": 100},
            headers=clinic.headers,
        )
    ) == ["body"]
    url = f"{API}/services/{setup.video}"
    assert fields(client.patch(url, json={"duration_minutes": None}, headers=clinic.headers)) == [
        "duration_minutes"
    ]
    assert fields(client.patch(url, json={"price_minor": 500}, headers=clinic.headers)) == [
        "currency"
    ]
    changed = _ok(
        client.patch(
            url,
            json={"provider_ids": setup.providers, "buffer_after_minutes": 10},
            headers=clinic.headers,
        )
    )
    assert changed["provider_ids"] == setup.providers and changed["buffer_after_minutes"] == 10
    assert fields(
        client.post(
            f"{API}/services",
            json={"name": "X", "duration_minutes": 0, "modality": "phone"},
            headers=clinic.headers,
        )
    ) == ["duration_minutes", "modality"]


def test_providers_validate_timezones(client: TestClient, clinic: Clinic) -> None:
    body = {"display_name": "Dr. Zone", "timezone": "America/Atlantis"}
    assert fields(client.post(f"{API}/providers", json=body, headers=clinic.headers)) == [
        "timezone"
    ]
    body["timezone"] = "Europe/London"
    pid = _ok(client.post(f"{API}/providers", json=body, headers=clinic.headers), 201)["id"]
    url = f"{API}/providers/{pid}"
    assert fields(client.patch(url, json={"timezone": "EST5EDT6"}, headers=clinic.headers)) == [
        "timezone"
    ]
    assert (
        _ok(client.patch(url, json={"is_active": False}, headers=clinic.headers))["is_active"]
        is False
    )


def test_another_clinics_resources_are_not_found(
    client: TestClient, setup: Setup, make_clinic: Callable[..., Clinic], clinic: Clinic
) -> None:
    other = make_clinic("Other Clinic")
    pid = setup.providers[0]
    for path in (
        f"/providers/{pid}",
        f"/providers/{pid}/hours",
        f"/providers/{pid}/exceptions",
        f"/providers/{pid}/busy-blocks",
        f"/services/{setup.service}",
        f"/locations/{setup.location}",
    ):
        problem(client.get(API + path, headers=other.headers), 404)
    block = {"start": f"{MONDAY}T10:00:00Z", "end": f"{MONDAY}T11:00:00Z"}
    problem(
        client.post(f"{API}/providers/{pid}/busy-blocks", json=block, headers=other.headers), 404
    )
    assert fields(
        client.get(
            f"{API}/availability",
            params={"service_id": setup.service, "from": MONDAY, "to": "2026-03-10"},
            headers=other.headers,
        )
    ) == ["service_id"]


def test_permissions(client: TestClient, clinic: Clinic, db: Database, setup: Setup) -> None:
    desk = add_key(db, clinic, "front_desk")
    assert client.get(f"{API}/services", headers=desk.headers).status_code == 200
    params = {"service_id": setup.service, "from": MONDAY, "to": "2026-03-10"}
    assert client.get(f"{API}/availability", params=params, headers=desk.headers).status_code == 200
    body = {"display_name": "Dr. No", "timezone": "UTC"}
    assert (
        problem(client.post(f"{API}/providers", json=body, headers=desk.headers), 403)["permission"]
        == "schedule:write"
    )


def test_changes_are_audited(
    client: TestClient, clinic: Clinic, setup: Setup, db: Database
) -> None:
    with db.read() as session:
        actions = set(
            session.scalars(sa.select(AuditEvent.action).where(AuditEvent.tenant_id == clinic.id))
        )
    assert {
        "location.create",
        "provider.create",
        "provider.hours.replace",
        "service.create",
    } <= actions


# --- the entry points other modules call -----------------------------------------------------


def test_find_slots_entry_point(clinic: Clinic, setup: Setup, db: Database) -> None:
    start = datetime(2026, 3, 9, 4, tzinfo=UTC)
    with db.read() as session:
        got = availability.find_slots(
            session,
            clinic.id,
            service_id=setup.service,
            provider_id=None,
            start=start,
            end=start + timedelta(days=1),
            now=NOW,
            limit=3,
        )
        assert [s.start for s in got] == [
            datetime(2026, 3, 9, 13, 0, tzinfo=UTC) + timedelta(minutes=30 * i) for i in range(3)
        ]
        with pytest.raises(InvalidInputError) as caught:
            availability.find_slots(
                session,
                clinic.id,
                service_id="svc_nope",
                provider_id=None,
                start=start,
                end=start + timedelta(days=1),
                now=NOW,
            )
        assert caught.value.errors[0].field == "service_id"
        hours = session.scalars(sa.select(WorkingHours)).all()
        assert len(hours) == 10
