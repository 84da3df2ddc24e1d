"""Google Calendar v3 as a sync source: ``events.list`` with sync tokens.

Full sync: ``GET /calendar/v3/calendars/{id}/events?singleEvents=true&timeMin&timeMax``
(recurring events come expanded, in the event's own timezone, by Google), page by page
(``pageToken``) until the last page's ``nextSyncToken``. Incremental: the same with
``syncToken`` only (Google refuses time bounds with it) and the changes since, cancelled
events included; ``410 Gone`` means the token expired: full sync again.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

from clinicbridge.calendars.calls import Authorized, json_of, refused
from clinicbridge.calendars.errors import SyncTokenExpired
from clinicbridge.calendars.events import (
    MARKER_PROPERTY,
    UID_SUFFIX,
    Changes,
    Instance,
    Window,
    key,
    parse_instant,
)

PAGE_SIZE = 2500  # Google's maximum
MAX_PAGES = 400


def events_path(calendar: str) -> str:
    return f"/calendar/v3/calendars/{quote(calendar, safe='')}/events"


def fetch(calls: Authorized, calendar: str, cursor: str | None, window: Window) -> Changes:
    changes = Changes(full=cursor is None)
    params: dict[str, str | int] = {"singleEvents": "true", "maxResults": PAGE_SIZE}
    if cursor is None:
        params["timeMin"] = window.start.isoformat()
        params["timeMax"] = window.end.isoformat()
    else:
        params["syncToken"] = cursor
    for _ in range(MAX_PAGES):
        response = calls.request(
            "GET", events_path(calendar), operation="calendar.events.list", params=params
        )
        if response.status_code == 410:
            raise SyncTokenExpired(calls.integration)
        if response.status_code != 200:
            raise refused(calls.integration, "calendar.events.list", response)
        page = json_of(response)
        for item in page.get("items") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                _add(changes, item)
        token = page.get("nextPageToken")
        if isinstance(token, str) and token:
            params = {**params, "pageToken": token}
            continue
        sync = page.get("nextSyncToken")
        changes.cursor = sync if isinstance(sync, str) and sync else None
        return changes
    raise refused(calls.integration, "calendar.events.list (too many pages)", response)


def _add(changes: Changes, item: dict[str, Any]) -> None:
    event_id = str(item["id"])
    group = key(str(item.get("recurringEventId") or event_id))
    if item.get("status") == "cancelled":
        changes.removed.append(key(event_id))
        if not item.get("recurringEventId"):  # a whole series (or a single event) is gone
            changes.removed_groups.append(key(event_id))
        return
    changes.instances.append(_instance(item, key(event_id), group))


def _instance(item: dict[str, Any], event_key: str, group: str) -> Instance:
    start, end = item.get("start") or {}, item.get("end") or {}
    busy = is_busy(item)
    if "date" in start:
        first, last = (
            date.fromisoformat(start["date"]),
            date.fromisoformat(end.get("date") or start["date"]),
        )
        return Instance(event_key, group, busy, first_day=first, end_day=max(last, first))
    if "dateTime" not in start or "dateTime" not in end:
        return Instance(event_key, group, False)
    return Instance(
        event_key,
        group,
        busy,
        start=parse_instant(start["dateTime"]),
        end=parse_instant(end["dateTime"]),
    )


def is_busy(item: dict[str, Any]) -> bool:
    if item.get("transparency") == "transparent":
        return False
    private = (item.get("extendedProperties") or {}).get("private") or {}
    if private.get(MARKER_PROPERTY) or str(item.get("iCalUID", "")).endswith(UID_SUFFIX):
        return False
    for attendee in item.get("attendees") or []:
        if isinstance(attendee, dict) and attendee.get("self"):
            return attendee.get("responseStatus") != "declined"
    return True


# --- export (bookings written as events) -------------------------------------------------


def event_id_for(booking_id: str, connection_id: str) -> str:
    """Our own event id (Google lets the client choose one: base32hex, 5-1024 chars), so
    an insert repeated after a timeout finds the first one (409) instead of a twin."""
    return "cb" + hashlib.sha256(f"{connection_id}:{booking_id}".encode()).hexdigest()[:40]


def write_event(
    calls: Authorized, calendar: str, event_id: str, body: dict[str, Any]
) -> tuple[str, str | None]:
    """Insert, or update when it exists already; returns the event id and, when the body
    asked for a Google Meet (``conferenceData.createRequest``), the Meet link once
    Google has made it. Only an insert sends ``conferenceDataVersion=1``: with it an
    update without ``conferenceData`` would remove the conference."""
    path = events_path(calendar)
    meet = "conferenceData" in body
    params: dict[str, str | int] = {"conferenceDataVersion": 1} if meet else {}
    response = calls.request(
        "POST", path, operation="calendar.events.insert", json={**body, "id": event_id},
        params=params,
    )  # fmt: skip
    if response.status_code == 409:  # ours from an earlier attempt: update it
        plain = {k: v for k, v in body.items() if k != "conferenceData"}
        response = calls.request(
            "PUT", f"{path}/{event_id}", operation="calendar.events.update", json=plain
        )
    if response.status_code not in (200, 201):
        raise refused(calls.integration, "calendar.events.insert", response)
    return event_id, meet_link(json_of(response))


def meet_link(event: dict[str, Any]) -> str | None:
    """The video entry point of an event's conference (a Meet link), if ready."""
    for point in (event.get("conferenceData") or {}).get("entryPoints") or []:
        if isinstance(point, dict) and point.get("entryPointType") == "video":
            uri = point.get("uri")
            return uri if isinstance(uri, str) and uri.startswith("https://") else None
    return None


def delete_event(calls: Authorized, calendar: str, event_id: str) -> None:
    response = calls.request(
        "DELETE", f"{events_path(calendar)}/{event_id}", operation="calendar.events.delete"
    )
    if response.status_code not in (200, 204, 404, 410):  # gone already is fine
        raise refused(calls.integration, "calendar.events.delete", response)


def event_body(summary: str, description: str, location: str | None, start: datetime,
               end: datetime, booking_id: str) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": end.isoformat()},
        "transparency": "opaque",
        "extendedProperties": {"private": {MARKER_PROPERTY: booking_id}},
    }
    if location:
        body["location"] = location
    return body


def window_events(calls: Authorized, calendar: str, window: Window) -> list[Instance]:
    """A fresh look at [window.start, window.end): the first page is plenty for the
    length of one appointment."""
    params: dict[str, str | int] = {
        "singleEvents": "true",
        "maxResults": 250,
        "timeMin": window.start.isoformat(),
        "timeMax": window.end.isoformat(),
    }
    response = calls.request(
        "GET", events_path(calendar), operation="calendar.events.check", params=params
    )
    if response.status_code != 200:
        raise refused(calls.integration, "calendar.events.check", response)
    items = json_of(response).get("items") or []
    return [
        _instance(item, key(str(item["id"])), key(str(item.get("recurringEventId") or item["id"])))
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("id"), str)
        and item.get("status") != "cancelled"
    ]
