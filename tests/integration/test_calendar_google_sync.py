"""Google Calendar sync against the fake Calendar API v3: full and incremental rounds
with sync and page tokens, 410 → full resync, what is imported and what is ignored,
recurring instances, status on the connection, errors and a revoked authorization."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars import google
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.core.clock import SystemClock
from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.db.engine import Database
from clinicbridge.http.models import HttpCall
from clinicbridge.integrations.models import Alert
from clinicbridge.scheduling.models import BusyBlock
from clinicbridge.settings import Settings
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    API,
    Fakes,
    Practice,
    authorize,
    connect,
    fakes,
    google_integration,
    ok,
    pending_syncs,
    practice,
    sync,
    week_start,
)

__all__ = ["fakes"]
CLOCK = SystemClock()
EMAIL = "ada@clinic.example"


def timed(start: datetime, minutes: int = 60, **extra: Any) -> dict[str, Any]:
    return {
        "summary": "Dentist (private)",
        "start": {"dateTime": start.isoformat(), "timeZone": "America/Toronto"},
        "end": {
            "dateTime": (start + timedelta(minutes=minutes)).isoformat(),
            "timeZone": "America/Toronto",
        },
        **extra,
    }


def blocks(db: Database, connection_id: str) -> dict[str, tuple[datetime, datetime]]:
    with db.read() as session:
        rows = session.scalars(sa.select(BusyBlock).where(BusyBlock.connection_id == connection_id))
        return {b.external_id or "": (b.starts_at, b.ends_at) for b in rows}


class World:
    def __init__(
        self, client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
    ) -> None:
        self.client, self.clinic, self.db, self.settings, self.fakes = (
            client,
            clinic,
            db,
            settings,
            fakes,
        )
        self.setup: Practice = practice(client, clinic, email=EMAIL)
        self.integration = google_integration(client, clinic)
        self.account = authorize(
            client, clinic, self.setup.provider, self.integration, fakes.google.oauth
        )["account"]
        fakes.google.calendars["primary"] = {}
        self.connection = connect(client, clinic, self.setup.provider, self.integration, "primary")
        self.monday = week_start(datetime.now(CLOCK.now().tzinfo))

    def sync(self) -> Any:
        return sync(self.db, self.settings, self.connection["id"], CLOCK)

    def put(self, event: dict[str, Any]) -> str:
        return self.fakes.google.put("primary", event)

    def status(self) -> dict[str, Any]:
        path = f"{API}/providers/{self.setup.provider}/calendar-connections/{self.connection['id']}"
        return dict(ok(self.client.get(path, headers=self.clinic.headers)))


@pytest.fixture
def world(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> World:
    return World(client, clinic, db, settings, fakes)


def test_full_sync_imports_busy_time_and_ignores_free_declined_and_our_own(
    world: World, db: Database
) -> None:
    tue = world.monday + timedelta(days=1, hours=15)  # 10:00 or 11:00 in Toronto
    busy = world.put(timed(tue))
    world.put(timed(tue + timedelta(hours=2), transparency="transparent"))
    world.put(
        timed(
            tue + timedelta(hours=3),
            attendees=[{"email": EMAIL, "self": True, "responseStatus": "declined"}],
        )
    )
    accepted = world.put(
        timed(
            tue + timedelta(hours=4),
            attendees=[{"email": EMAIL, "self": True, "responseStatus": "accepted"}],
        )
    )
    world.put(
        timed(tue + timedelta(hours=5), extendedProperties={"private": {"clinicbridge": "bkg_01"}})
    )
    world.put(timed(tue + timedelta(hours=6), iCalUID="bkg_02@clinicbridge"))
    day = (world.monday + timedelta(days=3)).date()
    all_day = world.put(
        {
            "summary": "Conference",
            "start": {"date": day.isoformat()},
            "end": {"date": (day + timedelta(days=1)).isoformat()},
        }
    )
    result = world.sync()
    assert result.status == "synced" and result.full and result.blocks == 3
    found = blocks(db, world.connection["id"])
    assert set(found) == {busy, accepted, all_day}
    assert found[busy] == (tue, tue + timedelta(hours=1))
    # the all-day event blocks the provider's whole local day (midnight Toronto, in UTC)
    start, end = found[all_day]
    assert start.hour in (4, 5) and end - start == timedelta(days=1)
    with db.read() as session:
        block = session.scalars(sa.select(BusyBlock).where(BusyBlock.external_id == busy)).one()
    assert block.source == world.connection["id"] and "Dentist" not in (block.reason or "")
    # the first request was a windowed full listing, expanded
    first = next(
        r
        for r in world.fakes.google.requests
        if r.url.path.endswith("/events") and "timeMin" in r.url.params
    )
    assert first.url.params["singleEvents"] == "true" and "syncToken" not in first.url.params


def test_incremental_rounds_use_the_sync_token(world: World, db: Database) -> None:
    tue = world.monday + timedelta(days=1, hours=15)
    moved = world.put(timed(tue))
    gone = world.put(timed(tue + timedelta(hours=2)))
    world.sync()
    calls_before = len(world.fakes.google.requests)
    world.put({**world.fakes.google.calendars["primary"][moved], **timed(tue + timedelta(hours=1))})
    world.fakes.google.delete("primary", gone)
    new = world.put(timed(tue + timedelta(days=1)))
    result = world.sync()
    assert result.status == "synced" and not result.full and result.changes == 3
    found = blocks(db, world.connection["id"])
    assert set(found) == {moved, new} and found[moved][0] == tue + timedelta(hours=1)
    listing = [
        r for r in world.fakes.google.requests[calls_before:] if r.url.path.endswith("/events")
    ]
    assert all("syncToken" in r.url.params and "timeMin" not in r.url.params for r in listing)
    assert world.sync().changes == 0  # nothing new: nothing written


def test_pages_are_followed(world: World, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(google, "PAGE_SIZE", 2)
    ids = [world.put(timed(world.monday + timedelta(days=1, hours=13 + i))) for i in range(5)]
    assert world.sync().blocks == 5
    pages = [r for r in world.fakes.google.requests if "singleEvents" in r.url.params]
    assert len(pages) == 3 and "pageToken" in pages[1].url.params
    assert set(blocks(db, world.connection["id"])) == set(ids)


def test_an_expired_sync_token_means_a_full_resync(world: World, db: Database) -> None:
    tue = world.monday + timedelta(days=1, hours=15)
    keep, gone = world.put(timed(tue)), world.put(timed(tue + timedelta(hours=2)))
    world.sync()
    world.fakes.google.delete("primary", gone)
    world.fakes.google.expire_sync_tokens()
    result = world.sync()
    assert result.status == "synced" and result.full
    statuses = [
        r.url.params.get("syncToken") is not None
        for r in world.fakes.google.requests
        if r.url.path.endswith("/events")
    ]
    assert statuses[-2:] == [True, False]  # the 410, then the full listing
    assert set(blocks(db, world.connection["id"])) == {keep}


def test_recurring_instances_one_cancelled_then_the_series(world: World, db: Database) -> None:
    base = world.monday + timedelta(days=1, hours=14)
    instances = [
        world.put(timed(base + timedelta(days=i), id=f"series1_{i}", recurringEventId="series1",
                        originalStartTime={"dateTime": (base + timedelta(days=i)).isoformat()}))
        for i in range(3)
    ]  # fmt: skip
    world.sync()
    assert set(blocks(db, world.connection["id"])) == set(instances)
    world.fakes.google.calendars["primary"][instances[1]] = {
        "id": instances[1],
        "status": "cancelled",
        "recurringEventId": "series1",
    }
    world.fakes.google.seq += 1
    world.fakes.google.changed_at[("primary", instances[1])] = world.fakes.google.seq
    world.sync()
    assert set(blocks(db, world.connection["id"])) == {instances[0], instances[2]}
    world.fakes.google.delete("primary", "series1")  # the whole series
    world.sync()
    assert blocks(db, world.connection["id"]) == {}


def test_status_sync_now_and_errors(world: World, db: Database) -> None:
    world.put(timed(world.monday + timedelta(days=1, hours=15)))
    assert len(pending_syncs(db)) == 1  # queued when the connection was created
    path = (
        f"{API}/providers/{world.setup.provider}/calendar-connections/{world.connection['id']}/sync"
    )
    again = ok(world.client.post(path, headers=world.clinic.headers), 202)
    assert again["created"] is False and again["job_id"] == pending_syncs(db)[0].id
    world.sync()
    status = world.status()
    assert status["status"] == "active" and status["sync"]["blocks"] == 1
    assert status["sync"]["last_success_at"] and status["sync"]["lag_seconds"] < 60
    assert status["sync"]["push"] is False and status["sync"]["last_error"] is None
    world.fakes.google.failures.extend([500])
    with pytest.raises(ExternalServiceError):
        world.sync()  # retryable: the job retries with backoff
    status = world.status()
    assert status["status"] == "error" and status["sync"]["consecutive_failures"] == 1
    assert (
        "HTTP 500" in status["sync"]["last_error"] and "Dentist" not in status["sync"]["last_error"]
    )
    world.sync()
    assert world.status()["status"] == "active"
    with db.read() as session:
        operations = set(session.scalars(sa.select(HttpCall.operation)))
    assert {"oauth.token", "calendar.events.list", "calendar.get"} <= operations


def test_a_revoked_authorization_needs_reauth_and_alerts(world: World, db: Database) -> None:
    world.put(timed(world.monday + timedelta(days=1, hours=15)))
    world.sync()
    world.fakes.google.oauth.revoke_all()  # every token dies, the next call needs a refresh
    result = world.sync()
    assert result.status == "needs_reauth"
    assert world.status()["status"] == "needs_reauth"
    accounts = ok(
        world.client.get(
            f"{API}/providers/{world.setup.provider}/calendar-accounts",
            headers=world.clinic.headers,
        )
    )
    assert accounts["data"][0]["status"] == "needs_reauth"
    with db.read() as session:
        alert = session.scalars(
            sa.select(Alert).where(Alert.rule == "calendar_reauth_required")
        ).one()
    assert alert.status == "open" and alert.subject_id == world.account["id"]
    assert world.sync().status == "skipped"  # no call while waiting for a new authorization
    path = (
        f"{API}/providers/{world.setup.provider}/calendar-connections/{world.connection['id']}/sync"
    )
    assert world.client.post(path, headers=world.clinic.headers).status_code == 409
    authorize(
        world.client,
        world.clinic,
        world.setup.provider,
        world.integration,
        world.fakes.google.oauth,
    )
    assert world.status()["status"] == "active"
    with db.read() as session:
        assert session.get(Alert, alert.id).status == "resolved"  # type: ignore[union-attr]
    assert world.sync().status == "synced"


def test_delete_removes_the_connection_and_its_blocks(world: World, db: Database) -> None:
    world.put(timed(world.monday + timedelta(days=1, hours=15)))
    world.sync()
    assert len(blocks(db, world.connection["id"])) == 1
    path = f"{API}/providers/{world.setup.provider}/calendar-connections/{world.connection['id']}"
    assert world.client.delete(path, headers=world.clinic.headers).status_code == 204
    assert blocks(db, world.connection["id"]) == {}
    with db.read() as session:
        assert session.get(CalendarConnection, world.connection["id"]) is None
    assert world.sync().status == "skipped"


def test_a_sync_asked_for_during_a_round_gets_another_round(
    world: World, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One job per connection at a time: a request that finds the job running is folded
    into it, and the job then runs one more round instead of leaving the change behind."""
    from clinicbridge.calendars import sync as sync_module
    from clinicbridge.vault.shared import shared_vault

    tue = world.monday + timedelta(days=1, hours=15)
    world.sync()
    late: list[str] = []
    original = google.fetch

    def fetch_then_change(*args: Any, **kwargs: Any) -> Any:
        changes = original(*args, **kwargs)
        if not late:  # while the first round runs: a new event and a sync request
            late.append(world.put(timed(tue)))
            with db.write() as session:
                row = session.get(CalendarConnection, world.connection["id"])
                assert row is not None
                job = sync_module.enqueue_sync(session, row, CLOCK.now(), reason="requested")
            assert job.created is False  # folded into the waiting job
        return changes

    monkeypatch.setattr(google, "fetch", fetch_then_change)
    vault = shared_vault(db, world.settings.master_key_file)
    result = sync_module.sync_until_current(db, vault, world.connection["id"], clock=CLOCK)
    assert result.status == "synced" and set(blocks(db, world.connection["id"])) == set(late)


def test_a_request_after_the_last_round_queues_a_new_job(world: World, db: Database) -> None:
    """Found by bench/calendar_sync.py: a request arriving after the job's last round but
    before the worker recorded its outcome was folded into a job that was done, and lost.
    The job now gives up its dedupe key when it finds no new request."""
    from clinicbridge.calendars import sync as sync_module
    from clinicbridge.jobs.models import Job
    from clinicbridge.vault.shared import shared_vault

    (job,) = pending_syncs(db)
    with db.write() as session:  # the worker claimed it
        session.execute(sa.update(Job).where(Job.id == job.id).values(state="running"))
    vault = shared_vault(db, world.settings.master_key_file)
    result = sync_module.sync_until_current(
        db, vault, world.connection["id"], clock=CLOCK, job_id=job.id
    )
    assert result.status == "synced"
    # the handler is done, the job row still says running: a push arrives now
    with db.write() as session:
        row = session.get(CalendarConnection, world.connection["id"])
        assert row is not None
        queued = sync_module.enqueue_sync(session, row, CLOCK.now(), reason="push")
    assert queued.created and queued.id != job.id


def test_a_sync_failing_for_half_an_hour_alerts_and_recovers(world: World, db: Database) -> None:
    from clinicbridge.calendars.alerts import FAILING_AFTER, FAILING_RULE

    world.sync()
    world.fakes.google.failures.extend([403] * FAILING_AFTER)  # refused, not retryable
    for _ in range(FAILING_AFTER):
        assert world.sync().status == "failed"
    with db.read() as session:
        (alert,) = session.scalars(sa.select(Alert).where(Alert.rule == FAILING_RULE)).all()
    assert alert.status == "open" and alert.subject_id == world.connection["id"]
    assert alert.details["consecutive_failures"] == FAILING_AFTER
    assert world.sync().status == "synced"
    with db.read() as session:
        assert session.get(Alert, alert.id).status == "resolved"  # type: ignore[union-attr]


def test_deleting_the_integration_takes_accounts_connections_and_blocks(
    world: World, db: Database
) -> None:
    world.put(timed(world.monday + timedelta(days=1, hours=15)))
    world.sync()
    assert len(blocks(db, world.connection["id"])) == 1
    path = f"{API}/integrations/{world.integration}"
    assert world.client.delete(path, headers=world.clinic.headers).status_code == 204
    assert blocks(db, world.connection["id"]) == {}
    with db.read() as session:
        assert session.get(CalendarConnection, world.connection["id"]) is None
