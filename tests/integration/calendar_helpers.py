"""Shared set-up of the calendar tests: a clinic with a provider and a service, Google
and Microsoft fakes behind ``calendars.runtime``, and the OAuth dance through the API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars import runtime
from clinicbridge.calendars.sync import SyncResult, sync_connection
from clinicbridge.core.clock import Clock
from clinicbridge.db.engine import Database
from clinicbridge.jobs.models import Job
from clinicbridge.settings import Settings
from clinicbridge.testing import google_calendar as g
from clinicbridge.testing import microsoft_graph as m
from clinicbridge.testing.hosts import HostRouter
from clinicbridge.testing.oauth_server import OAuthServer
from clinicbridge.vault.shared import shared_vault
from tests.conftest import Clinic
from tests.integration.radicale_server import PASSWORD, USER

API = "/api/v1"
GOOGLE_CLIENT = ("1234-fake.apps.googleusercontent.com", "google-client-secret-0000")
MS_CLIENT = ("00000000-1111-2222-3333-444444444444", "microsoft-client-secret-0000")


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


@dataclass
class Fakes:
    google: g.FakeGoogleCalendar
    graph: m.FakeGraph
    router: HostRouter


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    google = g.FakeGoogleCalendar(OAuthServer(*GOOGLE_CLIENT))
    graph = m.FakeGraph(OAuthServer(*MS_CLIENT, rotate_refresh_tokens=True))
    router = HostRouter(
        {g.API_HOST: google, g.TOKEN_HOST: google, m.GRAPH_HOST: graph, m.LOGIN_HOST: graph},
        fallback=httpx.HTTPTransport(),
    )
    runtime.configure(transport=router)
    yield Fakes(google, graph, router)
    runtime.configure()


def week_start(now: datetime) -> datetime:
    """Next week's Monday, 00:00 UTC (a week with no DST change in Toronto)."""
    monday = (now + timedelta(days=7 - now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return monday


@dataclass
class Practice:
    provider: str
    service: str
    location: str


def practice(client: TestClient, clinic: Clinic, *, email: str | None = None) -> Practice:
    h = clinic.headers
    loc = ok(
        client.post(
            f"{API}/locations", json={"name": "Main", "timezone": "America/Toronto"}, headers=h
        ),
        201,
    )["id"]
    body: dict[str, Any] = {"display_name": "Dr. Ada Test", "timezone": "America/Toronto"}
    if email:
        body["email"] = email
    provider = ok(client.post(f"{API}/providers", json=body, headers=h), 201)["id"]
    hours = [{"weekday": d, "start": "09:00", "end": "17:00", "location_id": loc} for d in range(7)]
    ok(client.put(f"{API}/providers/{provider}/hours", json={"intervals": hours}, headers=h))
    service = ok(
        client.post(
            f"{API}/services",
            json={"name": "Consultation", "duration_minutes": 30, "provider_ids": [provider]},
            headers=h,
        ),
        201,
    )["id"]
    return Practice(provider, service, loc)


def google_integration(client: TestClient, clinic: Clinic) -> str:
    body = {
        "connector": "google_calendar",
        "name": "Google Workspace",
        "credentials": {"client_id": GOOGLE_CLIENT[0], "client_secret": GOOGLE_CLIENT[1]},
    }
    return str(ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)["id"])


def microsoft_integration(client: TestClient, clinic: Clinic) -> str:
    body = {
        "connector": "microsoft_calendar",
        "name": "Microsoft 365",
        "credentials": {"client_id": MS_CLIENT[0], "client_secret": MS_CLIENT[1]},
    }
    return str(ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)["id"])


def caldav_integration(
    client: TestClient, clinic: Clinic, server_url: str, name: str = "CalDAV"
) -> str:
    """A CalDAV integration on the test Radicale server at ``server_url``."""
    body = {
        "connector": "caldav",
        "name": name,
        "credentials": {"url": server_url + "/", "username": USER, "password": PASSWORD},
    }
    return str(ok(client.post(f"{API}/integrations", json=body, headers=clinic.headers), 201)["id"])


def authorize(
    client: TestClient,
    clinic: Clinic,
    provider: str,
    integration: str,
    server: OAuthServer,
    *,
    export_bookings: bool = True,
) -> dict[str, Any]:
    """Start through the API, consent at the fake, come back to the callback."""
    started = ok(
        client.post(
            f"{API}/providers/{provider}/calendar-accounts/authorize",
            json={"integration_id": integration, "export_bookings": export_bookings},
            headers=clinic.headers,
        ),
        201,
    )
    back = urlsplit(server.consent(started["authorization_url"]))
    page = client.get(f"{back.path}?{back.query}")
    assert page.status_code == 200, page.text
    accounts = ok(
        client.get(f"{API}/providers/{provider}/calendar-accounts", headers=clinic.headers)
    )
    return {"started": started, "account": accounts["data"][-1]}


def connect(
    client: TestClient, clinic: Clinic, provider: str, integration: str, calendar: str, **extra: Any
) -> dict[str, Any]:
    body = {"integration_id": integration, "calendar": calendar, **extra}
    return dict(
        ok(
            client.post(
                f"{API}/providers/{provider}/calendar-connections",
                json=body,
                headers=clinic.headers,
            ),
            201,
        )
    )


def sync(db: Database, settings: Settings, connection_id: str, clock: Clock) -> SyncResult:
    vault = shared_vault(db, settings.master_key_file)
    return sync_connection(db, vault, connection_id, clock=clock)


def pending_syncs(db: Database) -> list[Job]:
    with db.read() as session:
        return list(
            session.scalars(
                sa.select(Job).where(Job.kind == "calendars.sync", Job.state == "pending")
            )
        )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
