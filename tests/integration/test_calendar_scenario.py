"""The scenario a clinic cares about: an outside event added to a provider's calendar
(Google through the fake, CalDAV on a real Radicale) takes the overlapping slots out of
``GET /api/v1/availability`` after one sync job (queued by a Google push notification
through the verified inbox, or by the 5-minute poll for CalDAV); deleting it brings
them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars.sync import POLL_KIND, SYNC_KIND
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.queue import enqueue
from clinicbridge.jobs.registry import JobContext, registry
from clinicbridge.settings import Settings
from clinicbridge.webhooks.inbox import PROCESS_KIND
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
    ok,
    practice,
    week_start,
)
from tests.integration.radicale_server import Radicale, radicale
from tests.integration.test_caldav_radicale import ics, vevent

__all__ = ["fakes", "radicale"]


def run_jobs(db: Database, settings: Settings, kind: str) -> int:
    """Run the due jobs of ``kind`` once through their registered handler."""
    with db.read() as session:
        jobs = session.scalars(sa.select(Job).where(Job.kind == kind, Job.state == "pending")).all()
    registration = registry.get(kind)
    assert registration is not None
    for job in jobs:
        context = JobContext(
            job.id, kind, job.tenant_id, dict(job.payload), 1, 12, db, SystemClock().now, settings
        )
        registration.handler(context)
        with db.write() as session:
            session.execute(sa.update(Job).where(Job.id == job.id).values(state="succeeded"))
    return len(jobs)


def tuesday(now: datetime) -> datetime:
    return week_start(now) + timedelta(days=1)  # 00:00 UTC: Monday evening in Toronto


def starts(client: TestClient, clinic: Clinic, setup: Practice, day: datetime) -> set[str]:
    params = {
        "service_id": setup.service,
        "provider_id": setup.provider,
        "from": (day + timedelta(hours=12)).isoformat(),
        "to": (day + timedelta(hours=20)).isoformat(),
        "tz": "UTC",
    }
    body = ok(client.get(f"{API}/availability", params=params, headers=clinic.headers))
    return {slot["start"] for slot in body["data"]}


def _slot(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _taken(before: set[str], after: set[str]) -> set[str]:
    return before - after


def test_google_event_blocks_slots_after_one_push(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(client, clinic, setup.provider, integration, "primary")
    assert run_jobs(db, settings, SYNC_KIND) == 1  # the first sync, queued on creation
    day = tuesday(datetime.now(UTC))
    free = starts(client, clinic, setup, day)
    begin = day + timedelta(hours=15)  # 10:00 in Toronto (EST)
    event = fakes.google.put(
        "primary",
        {
            "start": {"dateTime": begin.isoformat()},
            "end": {"dateTime": (begin + timedelta(hours=1)).isoformat()},
        },
    )
    # Google tells us through the channel started after the first sync
    (channel,) = fakes.google.channels
    address, headers = fakes.google.notification(channel)
    assert client.post(urlsplit(address).path, headers=headers).status_code == 200
    assert run_jobs(db, settings, PROCESS_KIND) == 1
    assert run_jobs(db, settings, SYNC_KIND) == 1
    after = starts(client, clinic, setup, day)
    assert _taken(free, after) == {_slot(begin), _slot(begin + timedelta(minutes=30))}
    fakes.google.delete("primary", event)
    address, headers = fakes.google.notification(channel)
    assert client.post(urlsplit(address).path, headers=headers).status_code == 200
    run_jobs(db, settings, PROCESS_KIND)
    assert run_jobs(db, settings, SYNC_KIND) == 1
    assert starts(client, clinic, setup, day) == free
    # and "sync now" works the same
    path = f"{API}/providers/{setup.provider}/calendar-connections/{connection['id']}/sync"
    assert ok(client.post(path, headers=clinic.headers), 202)["created"] is True


def test_caldav_event_blocks_slots_after_one_sync(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, radicale: Radicale
) -> None:
    setup = practice(client, clinic)
    calendar = radicale.make_calendar("work")
    integration = caldav_integration(client, clinic, radicale.url)
    connect(client, clinic, setup.provider, integration, calendar)
    run_jobs(db, settings, SYNC_KIND)
    day = tuesday(datetime.now(UTC))
    free = starts(client, clinic, setup, day)
    local = (day + timedelta(hours=15)).astimezone(ZoneInfo("America/Toronto"))
    stamp = local.strftime("%Y%m%dT%H%M%S")
    end = (local + timedelta(minutes=45)).strftime("%Y%m%dT%H%M%S")
    radicale.put(calendar, "visit", ics(vevent("visit@test", stamp, end)))
    with db.write() as session:
        enqueue(session, POLL_KIND, {}, now=SystemClock().now())
    run_jobs(db, settings, POLL_KIND)
    assert run_jobs(db, settings, SYNC_KIND) == 1
    begin = day + timedelta(hours=15)
    assert _taken(free, starts(client, clinic, setup, day)) == {
        _slot(begin),
        _slot(begin + timedelta(minutes=30)),
    }
    radicale.delete(calendar, "visit")
    with db.write() as session:
        enqueue(session, POLL_KIND, {}, now=SystemClock().now())
    run_jobs(db, settings, POLL_KIND)
    run_jobs(db, settings, SYNC_KIND)
    assert starts(client, clinic, setup, day) == free
