"""Push: Google watch channels and Microsoft Graph subscriptions against the fakes,
notifications through the real inbox (verified, deduplicated), renewal before expiry,
stop on delete, and falling back to polling when push cannot run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars.events import parse_instant
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.push import RENEW_KIND, STOP_KIND
from clinicbridge.calendars.sync import SYNC_KIND, connections_to_poll
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.jobs.queue import enqueue
from clinicbridge.settings import Settings
from clinicbridge.webhooks.inbox import PROCESS_KIND
from clinicbridge.webhooks.models import WebhookEvent
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    API,
    GOOGLE_CLIENT,
    MS_CLIENT,
    Fakes,
    authorize,
    connect,
    fakes,
    ok,
    practice,
)
from tests.integration.test_calendar_scenario import run_jobs

__all__ = ["fakes"]


def _integration(
    client: TestClient, clinic: Clinic, connector: str, creds: tuple[str, str]
) -> dict[str, Any]:
    body = {
        "connector": connector,
        "name": connector,
        "credentials": {"client_id": creds[0], "client_secret": creds[1]},
    }
    return dict(ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201))


def _row(db: Database, connection_id: str) -> CalendarConnection:
    with db.read() as session:
        row = session.get(CalendarConnection, connection_id)
        assert row is not None
        return row


def _jobs(db: Database, kind: str) -> int:
    with db.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).where(Job.kind == kind, Job.state == "pending")
            )
            or 0
        )


def _google(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> tuple[dict[str, Any], dict[str, Any]]:
    setup = practice(client, clinic)
    integration = _integration(client, clinic, "google_calendar", GOOGLE_CLIENT)
    assert integration["webhook_secret"].startswith("whsec_")  # generated, shown once
    assert integration["webhook_url"].endswith(f"/webhooks/{integration['id']}")
    authorize(client, clinic, setup.provider, integration["id"], fakes.google.oauth)
    fakes.google.calendars["primary"] = {}
    connection = connect(client, clinic, setup.provider, integration["id"], "primary")
    run_jobs(db, settings, SYNC_KIND)
    return integration, connection


def test_google_channel_notifications_and_verification(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    integration, connection = _google(client, clinic, db, settings, fakes)
    (channel,) = fakes.google.channels.values()
    assert channel["token"] == integration["webhook_secret"]
    assert channel["address"] == f"{settings.public_base_url}/webhooks/{integration['id']}"
    row = _row(db, connection["id"])
    assert (
        row.has_push and row.push_id == channel["id"] and row.push_resource == channel["resourceId"]
    )
    shown = ok(
        client.get(
            f"{API}/providers/{connection['provider_id']}/calendar-connections/{connection['id']}",
            headers=clinic.headers,
        )
    )
    assert shown["sync"]["push"] is True
    with db.read() as session:
        assert (connection["id"], clinic.id) not in connections_to_poll(
            session, SystemClock().now()
        )
    path = urlsplit(channel["address"]).path
    _, hello = fakes.google.notification(channel["id"], state="sync")
    assert client.post(path, headers=hello).status_code == 200
    run_jobs(db, settings, PROCESS_KIND)
    assert _jobs(db, SYNC_KIND) == 0  # the channel's hello changes nothing
    _, headers = fakes.google.notification(channel["id"])
    forged = {**headers, "X-Goog-Channel-Token": "whsec_guessed"}
    assert client.post(path, headers=forged).status_code == 401
    assert client.post(path, headers=headers).status_code == 200
    assert client.post(path, headers=headers).json()["duplicates"] == 1  # Google retried
    with db.read() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 2
    run_jobs(db, settings, PROCESS_KIND)
    assert _jobs(db, SYNC_KIND) == 1
    # an unknown channel (an old one) is accepted and does nothing
    fakes.google.channels["old"] = {**channel, "id": "old"}
    _, stale = fakes.google.notification("old")
    assert client.post(path, headers=stale).status_code == 200
    run_jobs(db, settings, PROCESS_KIND)
    assert _jobs(db, SYNC_KIND) == 1


def test_google_renewal_replaces_the_channel_and_delete_stops_it(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    _, connection = _google(client, clinic, db, settings, fakes)
    first = _row(db, connection["id"]).push_id
    with db.write() as session:
        session.execute(
            sa.update(CalendarConnection)
            .where(CalendarConnection.id == connection["id"])
            .values(push_expires_at=SystemClock().now() + timedelta(hours=2))
        )
    with db.write() as session:  # the hourly tick
        enqueue(session, RENEW_KIND, {}, now=SystemClock().now())
    run_jobs(db, settings, RENEW_KIND)
    row = _row(db, connection["id"])
    assert row.push_id != first and row.push_expires_at is not None
    assert row.push_expires_at > SystemClock().now() + timedelta(days=6)
    run_jobs(db, settings, STOP_KIND)
    assert fakes.google.stopped == [first] and list(fakes.google.channels) == [row.push_id]
    path = f"{API}/providers/{connection['provider_id']}/calendar-connections/{connection['id']}"
    assert client.delete(path, headers=clinic.headers).status_code == 204
    run_jobs(db, settings, STOP_KIND)
    assert fakes.google.stopped == [first, row.push_id] and fakes.google.channels == {}


def _graph(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> tuple[dict[str, Any], dict[str, Any]]:
    def deliver(url: str) -> tuple[int, str]:
        parts = urlsplit(url)
        response = client.post(
            f"{parts.path}?{parts.query}", headers={"Content-Type": "text/plain"}
        )
        assert response.headers["content-type"].startswith("text/plain")
        return response.status_code, response.text

    fakes.graph.deliver = deliver
    setup = practice(client, clinic)
    integration = _integration(client, clinic, "microsoft_calendar", MS_CLIENT)
    authorize(client, clinic, setup.provider, integration["id"], fakes.graph.oauth)
    connection = connect(client, clinic, setup.provider, integration["id"], "primary")
    run_jobs(db, settings, SYNC_KIND)
    return integration, connection


def test_graph_subscription_validation_notifications_renewal_and_delete(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    integration, connection = _graph(client, clinic, db, settings, fakes)
    (sub,) = fakes.graph.subscriptions.values()
    assert sub["clientState"] == integration["webhook_secret"] and sub["resource"] == "me/events"
    assert sub["changeType"] == "created,updated,deleted"
    row = _row(db, connection["id"])
    assert row.has_push and row.push_id == sub["id"]
    url, body = fakes.graph.notification(sub["id"])
    path = urlsplit(url).path
    bad = {"value": [{**body["value"][0], "clientState": "nope"}]}
    assert client.post(path, json=bad).status_code == 401
    assert client.post(path, json=body).status_code == 200
    run_jobs(db, settings, PROCESS_KIND)
    assert _jobs(db, SYNC_KIND) == 1
    old_expiry = sub["expirationDateTime"]
    with db.write() as session:
        session.execute(
            sa.update(CalendarConnection)
            .where(CalendarConnection.id == connection["id"])
            .values(push_expires_at=SystemClock().now() + timedelta(hours=1))
        )

        enqueue(session, RENEW_KIND, {}, now=SystemClock().now())
    run_jobs(db, settings, RENEW_KIND)
    assert list(fakes.graph.subscriptions) == [sub["id"]]  # extended, not replaced
    renewed = fakes.graph.subscriptions[sub["id"]]["expirationDateTime"]
    assert parse_instant(renewed) >= parse_instant(old_expiry)
    assert _row(db, connection["id"]).push_expires_at > SystemClock().now() + timedelta(days=2)  # type: ignore[operator]
    path = f"{API}/providers/{connection['provider_id']}/calendar-connections/{connection['id']}"
    assert client.delete(path, headers=clinic.headers).status_code == 204
    run_jobs(db, settings, STOP_KIND)
    assert fakes.graph.subscriptions == {}


def test_push_that_cannot_start_leaves_the_connection_polled(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> None:
    fakes.graph.deliver = lambda url: (404, "")  # the notification URL does not answer
    setup = practice(client, clinic)
    integration = _integration(client, clinic, "microsoft_calendar", MS_CLIENT)
    authorize(client, clinic, setup.provider, integration["id"], fakes.graph.oauth)
    connection = connect(client, clinic, setup.provider, integration["id"], "primary")
    run_jobs(db, settings, SYNC_KIND)
    row = _row(db, connection["id"])
    assert not row.has_push and "HTTP 400" in (row.push_error or "")
    assert row.status == "active" and row.last_success_at is not None  # the sync itself is fine
    with db.read() as session:
        assert (connection["id"], clinic.id) in connections_to_poll(session, SystemClock().now())
