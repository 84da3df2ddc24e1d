"""CalDAV sync against a real Radicale server: discovery, events created, changed and
deleted through PUT/DELETE, sync-collection deltas, an invalid sync token, the
ctag/etag fallback, a recurring event with a moved and a cancelled instance, an
all-day event, declined and free events, and a DST week (America/Toronto, November)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from clinicbridge.calendars import caldav
from clinicbridge.calendars.models import CalendarConnection
from clinicbridge.calendars.runtime import context
from clinicbridge.core.clock import FakeClock
from clinicbridge.db.engine import Database
from clinicbridge.integrations.models import Integration
from clinicbridge.scheduling.models import BusyBlock
from clinicbridge.settings import Settings
from clinicbridge.vault.shared import shared_vault
from tests.conftest import Clinic
from tests.integration.calendar_helpers import API, caldav_integration, ok, practice, sync
from tests.integration.radicale_server import USER, Radicale, radicale

__all__ = ["radicale"]
NOW = datetime(2026, 10, 26, 12, 0, tzinfo=UTC)  # Monday; DST ends Sunday Nov 1 in Toronto
EMAIL = "ada@clinic.example"
TZ = """BEGIN:VTIMEZONE
TZID:America/Toronto
BEGIN:STANDARD
DTSTART:19701101T020000
RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU
TZOFFSETFROM:-0400
TZOFFSETTO:-0500
TZNAME:EST
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700308T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU
TZOFFSETFROM:-0500
TZOFFSETTO:-0400
TZNAME:EDT
END:DAYLIGHT
END:VTIMEZONE"""


def ics(*events: str, tz: bool = True) -> str:
    body = "\n".join(events)
    zone = TZ + "\n" if tz else ""
    return f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//Clinic test//EN\n{zone}{body}\nEND:VCALENDAR\n"


def vevent(uid: str, start: str, end: str, *extra: str) -> str:
    lines = [
        "BEGIN:VEVENT",
        f"UID:{uid}",
        "DTSTAMP:20261001T000000Z",
        f"DTSTART;TZID=America/Toronto:{start}",
        f"DTEND;TZID=America/Toronto:{end}",
        "SUMMARY:Private appointment",
        *extra,
        "END:VEVENT",
    ]
    return "\n".join(lines)


class World:
    def __init__(
        self, client: TestClient, clinic: Clinic, db: Database, settings: Settings, server: Radicale
    ) -> None:
        self.client, self.clinic, self.db, self.settings, self.server = (
            client,
            clinic,
            db,
            settings,
            server,
        )
        self.clock = FakeClock(NOW)
        self.setup = practice(client, clinic, email=EMAIL)
        self.calendar = server.make_calendar("clinic")
        self.integration = caldav_integration(client, clinic, server.url, "Clinic CalDAV")
        self.connection: dict[str, Any] = {}

    def connect(self) -> dict[str, Any]:
        body = {"integration_id": self.integration, "calendar": self.calendar}
        self.connection = ok(
            self.client.post(
                f"{API}/providers/{self.setup.provider}/calendar-connections",
                json=body,
                headers=self.clinic.headers,
            ),
            201,
        )
        return self.connection

    def sync(self) -> Any:
        return sync(self.db, self.settings, self.connection["id"], self.clock)

    def blocks(self) -> list[tuple[datetime, datetime]]:
        with self.db.read() as session:
            rows = session.scalars(
                sa.select(BusyBlock)
                .where(BusyBlock.connection_id == self.connection["id"])
                .order_by(BusyBlock.starts_at)
            )
            return [(b.starts_at, b.ends_at) for b in rows]

    def row(self) -> CalendarConnection:
        with self.db.read() as session:
            found = session.get(CalendarConnection, self.connection["id"])
            assert found is not None
            return found


@pytest.fixture
def world(
    client: TestClient, clinic: Clinic, db: Database, settings: Settings, radicale: Radicale
) -> World:
    return World(client, clinic, db, settings, radicale)


def utc(day: int, hour: int, minute: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def test_discovery_connection_test_and_bad_calendars(
    world: World, db: Database, settings: Settings
) -> None:
    tested = ok(
        world.client.post(
            f"{API}/integrations/{world.integration}/test", headers=world.clinic.headers
        )
    )
    assert tested["ok"] is True, tested
    with db.read() as session:
        integration = session.get(Integration, world.integration)
        assert integration is not None
        conn = context(db, shared_vault(db, settings.master_key_file), integration)
    with caldav.CalDavClient(conn) as client:
        found = client.discover()
    assert [c.url for c in found] == [world.calendar] and found[0].name == "clinic"
    listed = ok(
        world.client.get(
            f"{API}/integrations/{world.integration}/calendars", headers=world.clinic.headers
        )
    )
    assert listed["data"] == [{"url": world.calendar, "name": "clinic"}]
    path = f"{API}/providers/{world.setup.provider}/calendar-connections"
    for calendar, code in (
        ("https://calendar.other.example/ada/clinic/", "other_origin"),
        (f"{world.server.url}/{USER}/", "not_calendar"),
    ):
        body = {"integration_id": world.integration, "calendar": calendar}
        response = world.client.post(path, json=body, headers=world.clinic.headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0] == {
            "field": "calendar",
            "message": response.json()["errors"][0]["message"],
            "code": code,
        }
    world.connect()
    again = world.client.post(
        path,
        json={"integration_id": world.integration, "calendar": world.calendar},
        headers=world.clinic.headers,
    )
    assert again.status_code == 409


def test_create_update_delete_through_sync_collection(world: World) -> None:
    world.server.put(
        world.calendar, "a", ics(vevent("a@test", "20261027T100000", "20261027T110000"))
    )
    world.server.put(
        world.calendar, "b", ics(vevent("b@test", "20261028T140000", "20261028T150000"))
    )
    world.connect()
    first = world.sync()
    assert first.status == "synced" and first.full and first.blocks == 2
    assert world.blocks() == [(utc(27, 14), utc(27, 15)), (utc(28, 18), utc(28, 19))]
    token = world.row().sync_token
    assert token and token.startswith("http")  # Radicale's sync-token URI
    world.server.put(
        world.calendar,
        "a",
        ics(vevent("a@test", "20261027T120000", "20261027T130000", "SEQUENCE:1")),
    )
    world.server.delete(world.calendar, "b")
    world.server.put(
        world.calendar, "c", ics(vevent("c@test", "20261029T090000", "20261029T093000"))
    )
    second = world.sync()
    assert second.status == "synced" and not second.full
    assert world.blocks() == [(utc(27, 16), utc(27, 17)), (utc(29, 13), utc(29, 13, 30))]
    assert world.row().sync_token != token
    assert world.sync().changes == 0


def test_an_unknown_sync_token_means_a_full_resync(world: World, db: Database) -> None:
    world.server.put(
        world.calendar, "a", ics(vevent("a@test", "20261027T100000", "20261027T110000"))
    )
    world.connect()
    world.sync()
    with db.write() as session:
        session.execute(
            sa.update(CalendarConnection)
            .where(CalendarConnection.id == world.connection["id"])
            .values(sync_token="http://radicale.org/ns/sync/" + "0" * 64)
        )
    world.server.delete(world.calendar, "a")
    result = world.sync()
    assert result.status == "synced" and result.full and world.blocks() == []


def test_ctag_and_etag_fallback(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(*args: object, **kwargs: object) -> None:
        raise caldav._Unsupported()

    monkeypatch.setattr(caldav.CalDavClient, "_sync_collection", unsupported)
    world.server.put(
        world.calendar, "a", ics(vevent("a@test", "20261027T100000", "20261027T110000"))
    )
    world.server.put(
        world.calendar, "b", ics(vevent("b@test", "20261028T100000", "20261028T110000"))
    )
    world.connect()
    assert world.sync().blocks == 2
    state = world.row().sync_state
    assert state["no_sync_collection"] and state["ctag"] and len(state["etags"]) == 2
    assert world.sync().changes == 0  # same ctag: one PROPFIND, nothing fetched
    world.server.put(
        world.calendar,
        "a",
        ics(vevent("a@test", "20261027T150000", "20261027T160000", "SEQUENCE:1")),
    )
    world.server.delete(world.calendar, "b")
    result = world.sync()
    assert not result.full and result.changes == 2
    assert world.blocks() == [(utc(27, 19), utc(27, 20))]


def test_recurring_with_a_moved_and_a_cancelled_instance(world: World) -> None:
    series = vevent(
        "weekly@test", "20261027T080000", "20261027T083000",
        "RRULE:FREQ=DAILY;COUNT=5", "EXDATE;TZID=America/Toronto:20261029T080000",
    )  # fmt: skip
    moved = "\n".join(
        [
            "BEGIN:VEVENT", "UID:weekly@test", "DTSTAMP:20261001T000000Z",
            "RECURRENCE-ID;TZID=America/Toronto:20261028T080000",
            "DTSTART;TZID=America/Toronto:20261028T160000",
            "DTEND;TZID=America/Toronto:20261028T163000", "END:VEVENT",
        ]
    )  # fmt: skip
    cancelled = "\n".join(
        [
            "BEGIN:VEVENT", "UID:weekly@test", "DTSTAMP:20261001T000000Z",
            "RECURRENCE-ID;TZID=America/Toronto:20261030T080000",
            "DTSTART;TZID=America/Toronto:20261030T080000",
            "DTEND;TZID=America/Toronto:20261030T083000", "STATUS:CANCELLED", "END:VEVENT",
        ]
    )  # fmt: skip
    world.server.put(world.calendar, "weekly", ics(series, moved, cancelled))
    world.connect()
    world.sync()
    assert world.blocks() == [
        (utc(27, 12), utc(27, 12, 30)),  # Tue 08:00 EDT
        (utc(28, 20), utc(28, 20, 30)),  # Wed moved to 16:00
        (utc(31, 12), utc(31, 12, 30)),  # Sat (Thu excluded, Fri cancelled)
    ]
    world.server.delete(world.calendar, "weekly")
    world.sync()
    assert world.blocks() == []


def test_dst_week_all_day_free_and_declined(world: World) -> None:
    daily = vevent("daily@test", "20261030T100000", "20261030T110000", "RRULE:FREQ=DAILY;COUNT=4")
    all_day = "\n".join(
        ["BEGIN:VEVENT", "UID:day@test", "DTSTAMP:20261001T000000Z", "DTSTART;VALUE=DATE:20261102",
         "DTEND;VALUE=DATE:20261103", "SUMMARY:Conference", "END:VEVENT"]
    )  # fmt: skip
    free = vevent("free@test", "20261103T100000", "20261103T110000", "TRANSP:TRANSPARENT")
    declined = vevent(
        "declined@test", "20261104T100000", "20261104T110000",
        f"ATTENDEE;PARTSTAT=DECLINED:mailto:{EMAIL.upper()}",
    )  # fmt: skip
    accepted = vevent(
        "accepted@test", "20261105T100000", "20261105T110000",
        f"ATTENDEE;PARTSTAT=ACCEPTED:mailto:{EMAIL}",
    )  # fmt: skip
    ours = vevent("bkg_01@clinicbridge", "20261106T100000", "20261106T110000")
    for name, event in (("daily", daily), ("day", all_day), ("free", free), ("declined", declined),
                        ("accepted", accepted), ("ours", ours)):  # fmt: skip
        world.server.put(world.calendar, name, ics(event))
    world.connect()
    world.sync()
    assert world.blocks() == [
        (utc(30, 14), utc(30, 15)),  # Fri 10:00 EDT
        (utc(31, 14), utc(31, 15)),  # Sat 10:00 EDT
        (utc(1, 15, month=11), utc(1, 16, month=11)),  # Sun 10:00 EST: after the change
        (utc(2, 5, month=11), utc(3, 5, month=11)),  # the all-day Monday, Toronto midnight
        (utc(2, 15, month=11), utc(2, 16, month=11)),  # Mon 10:00 EST
        (utc(5, 15, month=11), utc(5, 16, month=11)),  # accepted
    ]
