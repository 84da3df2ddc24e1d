"""Export backfill: a connection that starts exporting gets the provider's future
bookings written into its calendar (a job, in batches, idempotent), whether it was
created with export on (Google) or switched on later (Microsoft Graph)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars import backfill, google
from clinicbridge.calendars.export import EXPORT_KIND
from clinicbridge.calendars.sync import SYNC_KIND
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.registry import JobContext
from clinicbridge.settings import Settings
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    API,
    Fakes,
    authorize,
    connect,
    fakes,
    google_integration,
    microsoft_integration,
    ok,
    practice,
)
from tests.integration.test_calendar_export import _book, _slot
from tests.integration.test_calendar_scenario import run_jobs

__all__ = ["fakes"]


def _run_all(db: Database, settings: Settings) -> int:
    """Backfill jobs until none is pending (each batch queues the next); how many ran."""
    ran = 0
    while (done := run_jobs(db, settings, backfill.KIND)) > 0:
        ran += done
    return ran


def _live(events: dict[str, dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in events.values() if e.get("status") != "cancelled" and "@removed" not in e]


def test_a_new_google_connection_gets_the_future_bookings_in_batches(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backfill, "BATCH", 2)
    setup = practice(client, clinic)
    booked = [
        _book(client, clinic, setup, _slot(client, clinic, setup, offset_hours=h))
        for h in (15, 16, 17)
    ]
    gone = _book(client, clinic, setup, _slot(client, clinic, setup, offset_hours=18))
    ok(client.post(f"{API}/bookings/{gone['id']}/cancel", json={"reason": "x"},
                   headers=clinic.headers))  # fmt: skip
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(client, clinic, setup.provider, integration, "primary")
    run_jobs(db, settings, SYNC_KIND)
    assert _run_all(db, settings) == 2  # 3 bookings, 2 a batch; the cancelled one is not shown
    events = fakes.google.calendars["primary"]
    assert {google.event_id_for(b["id"], connection["id"]) for b in booked} == set(events)
    # idempotent: the first batch's job run again writes nothing
    with db.read() as session:
        first = session.scalars(
            sa.select(Job).where(Job.kind == backfill.KIND).order_by(Job.created_at, Job.id)
        ).first()
    assert first is not None
    seq = fakes.google.seq
    context = JobContext(first.id, first.kind, first.tenant_id, dict(first.payload), 2, 12, db,
                         SystemClock().now, settings)  # fmt: skip
    assert backfill.backfill(context) == 0 and fakes.google.seq == seq
    # a new booking is exported by its own change, not again by a backfill
    _book(client, clinic, setup, _slot(client, clinic, setup, offset_hours=19))
    assert run_jobs(db, settings, EXPORT_KIND) == 1
    seq = fakes.google.seq
    _run_all(db, settings)  # the rerun's next batch: writes nothing
    assert len(events) == 4 and fakes.google.seq == seq


def test_switching_export_on_writes_the_existing_bookings_to_graph(
    client: TestClient, clinic: Clinic, make_clinic, db: Database, settings: Settings,  # type: ignore[no-untyped-def]
    fakes: Fakes,
) -> None:  # fmt: skip
    setup = practice(client, clinic)
    integration = microsoft_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.graph.oauth)
    connection = connect(
        client, clinic, setup.provider, integration, "primary", export_bookings=False
    )
    assert _run_all(db, settings) == 0  # export off: no backfill
    for h in (15, 16):
        _book(client, clinic, setup, _slot(client, clinic, setup, offset_hours=h))
    run_jobs(db, settings, EXPORT_KIND)
    assert _live(fakes.graph.calendars["primary"]) == []
    url = f"{API}/providers/{setup.provider}/calendar-connections/{connection['id']}"
    other = make_clinic("Birch Dental")
    assert (
        client.patch(url, json={"export_bookings": True}, headers=other.headers).status_code == 404
    )
    bad = client.patch(url, json={"export_bookings": "sometimes"}, headers=clinic.headers)
    assert bad.status_code == 422 and "export_bookings" in bad.text
    assert ok(client.patch(url, json={"export_bookings": True}, headers=clinic.headers))[
        "export_bookings"
    ]
    ok(client.patch(url, json={"export_bookings": True}, headers=clinic.headers))  # no change
    assert _run_all(db, settings) == 1
    live = _live(fakes.graph.calendars["primary"])
    assert len(live) == 2 and all(str(e["transactionId"]).startswith("clinicbridge:") for e in live)
    started = {datetime.fromisoformat(str(e["start"]["dateTime"])).replace(tzinfo=UTC)  # type: ignore[index]
               for e in live}  # fmt: skip
    assert len(started) == 2
