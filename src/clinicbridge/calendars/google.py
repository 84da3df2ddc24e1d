"""Google Calendar v3 as a sync source: ``events.list`` with sync tokens.

Full sync: ``GET /calendar/v3/calendars/{id}/events?singleEvents=true&timeMin&timeMax``
(recurring events come expanded, in the event's own timezone, by Google), page by page
(``pageToken``) until the last page's ``nextSyncToken``. Incremental: the same with
``syncToken`` only (Google refuses time bounds with it) and the changes since, cancelled
events included; ``410 Gone`` means the token expired: full sync again.
"""

from __future__ import annotations

from datetime import date
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
