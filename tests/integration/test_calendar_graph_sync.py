"""Microsoft Graph sync against the fake Graph: calendarView delta rounds with next and
delta links, @removed items, 410 → full resync, free/declined/own events ignored,
all-day events, occurrences of a series removed with it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars import microsoft
from clinicbridge.core.clock import SystemClock
from clinicbridge.db.engine import Database
from clinicbridge.scheduling.models import BusyBlock
from clinicbridge.settings import Settings
from clinicbridge.testing.microsoft_graph import FakeGraph
from tests.conftest import Clinic
from tests.integration.calendar_helpers import (
    Fakes,
    authorize,
    connect,
    fakes,
    microsoft_integration,
    practice,
    sync,
    week_start,
)

__all__ = ["fakes"]
CLOCK = SystemClock()


class World:
    def __init__(
        self, client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
    ) -> None:
        self.db, self.settings, self.fakes = db, settings, fakes
        setup = practice(client, clinic)
        integration = microsoft_integration(client, clinic)
        authorize(client, clinic, setup.provider, integration, fakes.graph.oauth)
        self.connection = connect(client, clinic, setup.provider, integration, "primary")
        self.tue = week_start(datetime.now(UTC)) + timedelta(days=1, hours=15)

    def sync(self):  # type: ignore[no-untyped-def]
        return sync(self.db, self.settings, self.connection["id"], CLOCK)

    def event(self, hours: float, minutes: int = 60, **extra: object) -> str:
        start = self.tue + timedelta(hours=hours)
        return self.fakes.graph.put(
            FakeGraph.timed("Private", start, start + timedelta(minutes=minutes), **extra)
        )

    def blocks(self) -> dict[str, tuple[datetime, datetime]]:
        with self.db.read() as session:
            rows = session.scalars(
                sa.select(BusyBlock).where(BusyBlock.connection_id == self.connection["id"])
            )
            return {b.external_id or "": (b.starts_at, b.ends_at) for b in rows}


@pytest.fixture
def world(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, fakes: Fakes
) -> World:
    return World(client, clinic, db, settings, fakes)


def test_delta_rounds(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(microsoft, "PREFER", 'outlook.timezone="UTC", odata.maxpagesize=2')
    busy = world.event(0)
    world.event(2, showAs="free")
    world.event(3, responseStatus={"response": "declined", "time": "2026-01-01T00:00:00Z"})
    world.event(4, transactionId="clinicbridge:bkg_01")
    tentative = world.event(5, showAs="tentative")
    day = (world.tue + timedelta(days=2)).date()
    all_day = world.fakes.graph.put(
        {"subject": "Off", "isAllDay": True,
         "start": {"dateTime": f"{day}T00:00:00.0000000", "timeZone": "UTC"},
         "end": {"dateTime": f"{day + timedelta(days=1)}T00:00:00.0000000", "timeZone": "UTC"}}
    )  # fmt: skip
    first = world.sync()
    assert first.status == "synced" and first.full
    found = world.blocks()
    assert set(found) == {busy, tentative, all_day}
    assert found[busy] == (world.tue, world.tue + timedelta(hours=1))
    start, end = found[all_day]
    assert start.hour in (4, 5) and end - start == timedelta(days=1)  # Toronto's day
    pages = [r for r in world.fakes.graph.requests if r.url.path.endswith("/delta")]
    assert len(pages) == 3 and "$skiptoken" in pages[1].url.params
    assert pages[0].url.params["startDateTime"].endswith("Z")
    world.fakes.graph.delete(busy)
    moved = world.fakes.graph.calendars["primary"][tentative]
    world.fakes.graph.put(
        {
            **moved,
            "showAs": "busy",
            **FakeGraph.timed("x", world.tue + timedelta(hours=7), world.tue + timedelta(hours=8)),
        }
    )
    second = world.sync()
    assert not second.full
    assert world.blocks()[tentative] == (
        world.tue + timedelta(hours=7),
        world.tue + timedelta(hours=8),
    )
    assert busy not in world.blocks()
    assert "$deltatoken" in world.fakes.graph.requests[-1].url.params


def test_series_removed_and_expired_delta_token(world: World) -> None:
    occurrences = [
        world.event(24 * i, type="occurrence", seriesMasterId="master1") for i in range(3)
    ]
    world.sync()
    assert set(world.blocks()) == set(occurrences)
    world.fakes.graph.delete("master1")
    world.sync()
    assert world.blocks() == {}
    keep = world.event(1)
    world.sync()
    world.fakes.graph.expire_delta_tokens()
    result = world.sync()
    assert result.full and set(world.blocks()) == {keep}
