"""Availability answers are reused only while nothing that shapes them has changed:
every kind of change, through the API or in plain SQL, gives a fresh answer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.app import create_app
from clinicbridge.core.clock import FakeClock
from clinicbridge.db.engine import Database
from clinicbridge.scheduling.models import Provider
from clinicbridge.settings import Settings
from tests.conftest import Clinic
from tests.integration.test_scheduling_api import API, NOW, Setup, _ok, add_claim, configure

FRIDAY = {"from": "2026-03-06T00:00:00-05:00", "to": "2026-03-07T00:00:00-05:00"}
NINE = "2026-03-06T09:00:00-05:00"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def client(settings: Settings, db: Database, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings, db=db, clock=clock)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def setup(client: TestClient, clinic: Clinic) -> Setup:
    return configure(client, clinic)


@pytest.fixture
def starts(client: TestClient, clinic: Clinic, setup: Setup) -> Callable[..., list[str]]:
    def search(**params: str) -> list[str]:
        query = {"service_id": setup.service, "provider_id": setup.providers[0], **FRIDAY}
        body = _ok(client.get(f"{API}/availability", params={**query, **params},
                              headers=clinic.headers))  # fmt: skip
        return [slot["start"] for slot in body["data"]]

    return search


def _version(db: Database, provider_id: str) -> int:
    with db.read() as session:
        return int(
            session.scalar(sa.select(Provider.schedule_version).where(Provider.id == provider_id))
            or 0
        )


def test_a_repeated_search_is_answered_from_the_cache(starts: Callable[..., list[str]]) -> None:
    from clinicbridge.api.scheduling import SLOTS

    first = starts()
    hits = SLOTS.hits
    assert starts() == first and SLOTS.hits == hits + 1


def test_bookings_busy_blocks_hours_and_exceptions_each_refresh_the_answer(
    client: TestClient, clinic: Clinic, setup: Setup, starts: Callable[..., list[str]]
) -> None:
    h, pid = clinic.headers, setup.providers[0]
    assert NINE in starts()
    body = {"first_name": "Ines", "last_name": "Sample", "date_of_birth": "1980-01-01"}
    patient = _ok(client.post(f"{API}/patients", json=body, headers=h), 201)["id"]
    booking = {
        "service_id": setup.service,
        "provider_id": pid,
        "start": NINE,
        "patient_id": patient,
    }
    booked = _ok(client.post(f"{API}/bookings", json=booking, headers=h), 201)
    assert NINE not in starts()
    _ok(client.post(f"{API}/bookings/{booked['id']}/cancel", json={"reason": "x"}, headers=h))
    assert NINE in starts()
    block = {"start": NINE, "end": "2026-03-06T10:00:00-05:00"}
    created = _ok(client.post(f"{API}/providers/{pid}/busy-blocks", json=block, headers=h), 201)
    assert NINE not in starts()
    client.delete(f"{API}/providers/{pid}/busy-blocks/{created['id']}", headers=h)
    assert NINE in starts()
    off = {"date": "2026-03-06", "kind": "time_off"}
    exception = _ok(client.post(f"{API}/providers/{pid}/exceptions", json=off, headers=h), 201)
    assert starts() == []
    client.delete(f"{API}/providers/{pid}/exceptions/{exception['id']}", headers=h)
    assert NINE in starts()
    hours = [{"weekday": 4, "start": "13:00", "end": "17:00", "location_id": setup.location}]
    _ok(client.put(f"{API}/providers/{pid}/hours", json={"intervals": hours}, headers=h))
    assert starts()[0] == "2026-03-06T13:00:00-05:00"


def test_service_and_provider_changes_refresh_the_answer(
    client: TestClient, clinic: Clinic, setup: Setup, starts: Callable[..., list[str]], db: Database
) -> None:
    h, pid = clinic.headers, setup.providers[0]
    before = starts()
    _ok(client.patch(f"{API}/services/{setup.service}", json={"duration_minutes": 60}, headers=h))
    assert len(starts()) < len(before)
    version = _version(db, pid)
    _ok(client.patch(f"{API}/providers/{pid}", json={"timezone": "America/Vancouver"}, headers=h))
    assert _version(db, pid) > version
    assert starts()[0] == "2026-03-06T09:00:00-08:00"
    _ok(client.patch(f"{API}/providers/{pid}", json={"is_active": False}, headers=h))
    assert starts() == []


def test_a_change_in_plain_sql_refreshes_the_answer_too(
    clinic: Clinic, setup: Setup, starts: Callable[..., list[str]], db: Database
) -> None:
    assert NINE in starts()
    pid = setup.providers[0]
    add_claim(db, clinic.id, pid, setup.service, datetime.fromisoformat(NINE))
    assert NINE not in starts()
    with db.write() as session:  # a sync job moving the time to the other provider
        session.execute(
            sa.text("UPDATE time_claims SET provider_id = :p"), {"p": setup.providers[1]}
        )
    assert NINE in starts()
    assert NINE not in starts(provider_id=setup.providers[1])


def test_the_clock_moves_the_answer_within_a_bucket(
    clock: FakeClock, starts: Callable[..., list[str]]
) -> None:
    assert NINE in starts()
    clock.advance(timedelta(days=4, hours=2, minutes=30))  # Friday 09:30 in Toronto
    assert NINE not in starts()


def test_the_clinic_timezone_is_part_of_the_key(
    client: TestClient, clinic: Clinic, starts: Callable[..., list[str]]
) -> None:
    local = {"from": "2026-03-06", "to": "2026-03-07"}
    toronto = starts(**local)
    _ok(client.patch(f"{API}/tenant", json={"timezone": "Asia/Tokyo"}, headers=clinic.headers))
    assert starts(**local) != toronto
