"""``PATCH .../calendar-connections/{cid}`` with ``import_busy``: off removes the imported
blocks at once (the slots are offered again), stops push and polling, and ``sync now``
refuses; on queues a full sync that brings the blocks (and push) back. At least one of
import and export stays on; a sync round in flight when import goes off writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.audit.models import AuditEvent
from clinicbridge.calendars import sync as sync_module
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.push import RENEW_KIND, STOP_KIND
from clinicbridge.calendars.sync import POLL_KIND, SYNC_KIND, connections_to_poll
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Alert
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.queue import enqueue
from clinicbridge.scheduling.models import BusyBlock
from clinicbridge.settings import Settings
from clinicbridge.vault.shared import shared_vault
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
    microsoft_integration,
    ok,
    practice,
)
from tests.integration.radicale_server import Radicale, radicale
from tests.integration.test_caldav_radicale import ics, vevent
from tests.integration.test_calendar_export import _book, _slot
from tests.integration.test_calendar_push import _graph
from tests.integration.test_calendar_scenario import run_jobs, starts, tuesday

__all__ = ["fakes", "radicale"]


def _url(setup: Practice, connection: dict[str, Any]) -> str:
    return f"{API}/providers/{setup.provider}/calendar-connections/{connection['id']}"


def _blocks(db: Database, connection_id: str) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(BusyBlock.connection_id == connection_id)
            )
            or 0
        )


def _row(db: Database, connection_id: str) -> CalendarConnection:
    with db.read() as session:
        row = session.get(CalendarConnection, connection_id)
        assert row is not None
        return row


def _pending(db: Database, kind: str) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(Job.kind == kind, Job.state == "pending")
            )
            or 0
        )


def _polled(db: Database, connection_id: str) -> bool:
    with db.read() as session:
        return connection_id in {
            cid for cid, _ in connections_to_poll(session, SystemClock().now())
        }


def _field(response: Any) -> tuple[int, list[str]]:
    return response.status_code, [e["field"] for e in response.json()["errors"]]


def _google_event(fakes: Fakes, day: datetime) -> datetime:
    begin = day + timedelta(hours=15)  # 10:00 in Toronto
    fakes.google.put(
        "primary",
        {
            "start": {"dateTime": begin.isoformat()},
            "end": {"dateTime": (begin + timedelta(hours=1)).isoformat()},
        },
    )
    return begin


def test_google_import_off_frees_the_slots_and_stops_push_then_on_brings_them_back(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    day = tuesday(datetime.now(UTC))
    free = starts(client, clinic, setup, day)
    begin = _google_event(fakes, day)
    connection = connect(client, clinic, setup.provider, integration, "primary")
    assert run_jobs(db, settings, SYNC_KIND) == 1
    taken = {begin.isoformat(), (begin + timedelta(minutes=30)).isoformat()}
    assert free - starts(client, clinic, setup, day) == taken
    assert _blocks(db, connection["id"]) == 1
    (channel,) = fakes.google.channels
    assert _row(db, connection["id"]).push_id == channel

    url = _url(setup, connection)
    off = ok(client.patch(url, json={"import_busy": False}, headers=clinic.headers))
    assert off["import_busy"] is False and off["export_bookings"] is True
    assert off["sync"]["blocks"] == 0 and off["sync"]["push"] is False
    # in the same transaction: the blocks are gone and the slots are offered again
    assert _blocks(db, connection["id"]) == 0
    assert starts(client, clinic, setup, day) == free
    row = _row(db, connection["id"])
    assert row.push_id is None and row.sync_token is None and row.window_start is None
    assert run_jobs(db, settings, STOP_KIND) == 1
    assert fakes.google.stopped == [channel] and fakes.google.channels == {}
    assert not _polled(db, connection["id"])
    with db.write() as session:  # the hourly renewal leaves it alone too
        enqueue(session, RENEW_KIND, {}, now=SystemClock().now())
    run_jobs(db, settings, RENEW_KIND)
    assert fakes.google.channels == {}
    refused = client.post(f"{url}/sync", headers=clinic.headers)
    assert _field(refused) == (422, ["import_busy"])
    with db.read() as session:
        event = session.scalars(
            sa.select(AuditEvent)
            .where(AuditEvent.action == "calendar_connection.update")
            .order_by(AuditEvent.seq.desc())
        ).first()
    assert event is not None and event.resource_id == connection["id"]
    assert event.diff == {"import_busy": {"old": True, "new": False}, "blocks_removed": 1}
    ok(client.patch(url, json={"import_busy": False}, headers=clinic.headers))  # no change

    on = ok(client.patch(url, json={"import_busy": True}, headers=clinic.headers))
    assert on["import_busy"] is True
    assert _pending(db, SYNC_KIND) == 1
    assert _blocks(db, connection["id"]) == 0  # until the sync job runs
    assert run_jobs(db, settings, SYNC_KIND) == 1
    assert _blocks(db, connection["id"]) == 1
    assert free - starts(client, clinic, setup, day) == taken
    row = _row(db, connection["id"])
    assert row.last_full_sync_at is not None and row.has_push
    (again,) = fakes.google.channels
    assert again != channel and row.push_id == again


def test_graph_import_off_stops_the_subscription_and_on_subscribes_again(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    _, connection = _graph(client, clinic, db, settings, fakes)
    (sub,) = fakes.graph.subscriptions
    url = f"{API}/providers/{connection['provider_id']}/calendar-connections/{connection['id']}"
    ok(client.patch(url, json={"import_busy": False}, headers=clinic.headers))
    assert run_jobs(db, settings, STOP_KIND) == 1
    assert fakes.graph.subscriptions == {}
    ok(client.patch(url, json={"import_busy": True}, headers=clinic.headers))
    assert run_jobs(db, settings, SYNC_KIND) == 1
    (renewed,) = fakes.graph.subscriptions
    assert renewed != sub and _row(db, connection["id"]).push_id == renewed


def test_a_connection_must_import_or_export(
    client: TestClient,
    clinic: Clinic,
    make_clinic,
    db: Database,
    fakes: Fakes,  # type: ignore[no-untyped-def]
) -> None:
    setup = practice(client, clinic)
    integration = microsoft_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.graph.oauth)
    both_off = client.post(
        f"{API}/providers/{setup.provider}/calendar-connections",
        json={
            "integration_id": integration,
            "calendar": "primary",
            "import_busy": False,
            "export_bookings": False,
        },
        headers=clinic.headers,
    )
    assert _field(both_off) == (422, ["import_busy", "export_bookings"])
    connection = connect(
        client, clinic, setup.provider, integration, "primary", export_bookings=False
    )
    url = _url(setup, connection)
    assert _field(client.patch(url, json={}, headers=clinic.headers)) == (
        422,
        ["import_busy", "export_bookings"],
    )
    assert _field(client.patch(url, json={"import_busy": None}, headers=clinic.headers))[0] == 422
    assert _field(client.patch(url, json={"import_busy": "no"}, headers=clinic.headers)) == (
        422,
        ["import_busy"],
    )
    # export is already off: import off too would leave it doing nothing
    alone = client.patch(url, json={"import_busy": False}, headers=clinic.headers)
    assert _field(alone) == (422, ["import_busy"])
    assert "delete it instead" in alone.json()["errors"][0]["message"]
    both = client.patch(
        url, json={"import_busy": False, "export_bookings": False}, headers=clinic.headers
    )
    assert _field(both) == (422, ["import_busy"])  # export_bookings did not change
    assert _row(db, connection["id"]).import_busy is True  # nothing half-written
    # switching both at once is fine: export on, import off
    swapped = ok(
        client.patch(
            url, json={"import_busy": False, "export_bookings": True}, headers=clinic.headers
        )
    )
    assert swapped["import_busy"] is False and swapped["export_bookings"] is True
    assert _field(client.patch(url, json={"export_bookings": False}, headers=clinic.headers)) == (
        422,
        ["export_bookings"],
    )
    other = make_clinic("Birch Dental")
    assert client.patch(url, json={"import_busy": True}, headers=other.headers).status_code == 404
    assert _row(db, connection["id"]).import_busy is False


def test_caldav_import_off_and_on_with_radicale(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, radicale: Radicale
) -> None:
    setup = practice(client, clinic)
    calendar = radicale.make_calendar("work")
    integration = caldav_integration(client, clinic, radicale.url)
    day = tuesday(datetime.now(UTC))
    free = starts(client, clinic, setup, day)
    local = (day + timedelta(hours=15)).astimezone(ZoneInfo("America/Toronto"))
    end = local + timedelta(minutes=45)
    radicale.put(
        calendar,
        "visit",
        ics(vevent("visit@test", local.strftime("%Y%m%dT%H%M%S"), end.strftime("%Y%m%dT%H%M%S"))),
    )
    connection = connect(client, clinic, setup.provider, integration, calendar)
    run_jobs(db, settings, SYNC_KIND)
    assert _blocks(db, connection["id"]) == 1 and starts(client, clinic, setup, day) != free
    url = _url(setup, connection)
    ok(client.patch(url, json={"import_busy": False}, headers=clinic.headers))
    assert _blocks(db, connection["id"]) == 0 and starts(client, clinic, setup, day) == free
    assert _pending(db, STOP_KIND) == 0  # CalDAV has no push to stop
    with db.write() as session:
        enqueue(session, POLL_KIND, {}, now=SystemClock().now())
    run_jobs(db, settings, POLL_KIND)
    assert _pending(db, SYNC_KIND) == 0  # the 5-minute poll skips it
    ok(client.patch(url, json={"import_busy": True}, headers=clinic.headers))
    assert run_jobs(db, settings, SYNC_KIND) == 1
    assert _blocks(db, connection["id"]) == 1 and starts(client, clinic, setup, day) != free
    assert _row(db, connection["id"]).sync_token is not None  # the sync-collection cursor


@pytest.mark.parametrize("how", ["import_off", "deleted", "account_deleted"])
def test_import_off_or_a_delete_resolves_the_conflict_alerts_its_blocks_caused(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes, how: str
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(client, clinic, setup.provider, integration, "primary")
    run_jobs(db, settings, SYNC_KIND)
    booking = _book(client, clinic, setup, _slot(client, clinic, setup))
    start = datetime.fromisoformat(booking["start"])
    fakes.google.put(
        "primary",
        {
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(minutes=30)).isoformat()},
        },
    )
    ok(client.post(f"{_url(setup, connection)}/sync", headers=clinic.headers), 202)
    run_jobs(db, settings, SYNC_KIND)
    with db.read() as session:
        (alert,) = session.scalars(sa.select(Alert).where(Alert.rule == "calendar_conflict"))
    assert alert.status == "open"
    if how == "deleted":  # the connection deleted: its blocks go, and the conflict with them
        assert client.delete(_url(setup, connection), headers=clinic.headers).status_code == 204
    elif how == "account_deleted":  # the authorization forgotten, its connections with it
        path = f"{API}/providers/{setup.provider}/calendar-accounts/{connection['account_id']}"
        assert client.delete(path, headers=clinic.headers).status_code == 204
    else:
        body = {"import_busy": False}
        ok(client.patch(_url(setup, connection), json=body, headers=clinic.headers))
    with db.read() as session:
        assert session.get(Alert, alert.id).status == "resolved"  # type: ignore[union-attr]


@pytest.mark.parametrize("switch_back_on", [False, True])
def test_a_round_in_flight_when_import_goes_off_writes_nothing(
    client: TestClient,
    clinic: Clinic,
    db: Database,
    settings: Settings,
    fakes: Fakes,
    monkeypatch: pytest.MonkeyPatch,
    switch_back_on: bool,
) -> None:
    setup = practice(client, clinic)
    integration = google_integration(client, clinic)
    authorize(client, clinic, setup.provider, integration, fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    day = tuesday(datetime.now(UTC))
    _google_event(fakes, day)
    connection = connect(client, clinic, setup.provider, integration, "primary")
    run_jobs(db, settings, SYNC_KIND)  # a cursor exists: the next round is incremental
    _google_event(fakes, day + timedelta(hours=2))  # all the next round will hear about
    url = _url(setup, connection)
    original, calls = sync_module.google.fetch, []

    def fetch_then_switch(*args: Any, **kwargs: Any) -> Any:
        changes = original(*args, **kwargs)
        if not calls:  # while the first round's answer is on its way
            ok(client.patch(url, json={"import_busy": False}, headers=clinic.headers))
            if switch_back_on:
                ok(client.patch(url, json={"import_busy": True}, headers=clinic.headers))
        calls.append(changes.full)
        return changes

    monkeypatch.setattr(sync_module.google, "fetch", fetch_then_switch)
    vault = shared_vault(db, settings.master_key_file)
    result = sync_module.sync_until_current(db, vault, connection["id"])
    row = _row(db, connection["id"])
    if switch_back_on:
        # import off forgot the window, so the round asked for by switching it on again is
        # a full one: both events, not only the one the stale round heard about
        assert calls == [False, True] and result.status == "synced"
        assert _blocks(db, connection["id"]) == 2 and row.blocks == 2
        assert row.sync_token is not None and row.window_start is not None
    else:
        assert calls == [False] and result.status == "skipped"
        assert _blocks(db, connection["id"]) == 0 and row.blocks == 0
        assert row.sync_token is None and row.window_start is None
        ok(client.patch(url, json={"import_busy": True}, headers=clinic.headers))
        assert run_jobs(db, settings, SYNC_KIND) == 1
        assert calls == [False, True]  # a full round, so both events are back
        assert _blocks(db, connection["id"]) == 2
