"""Microsoft Graph as a sync source: ``calendarView/delta`` rounds.

Full sync: ``GET /v1.0/me/calendars/{id}/calendarView/delta?startDateTime&endDateTime``
(``/me/calendarView/delta`` for the default calendar, ``calendar`` = ``primary``): the
occurrences, exceptions and single events of the window, page by page through
``@odata.nextLink`` until ``@odata.deltaLink``, which is the cursor (it carries the
window). Incremental: GET the deltaLink; removed items come as ``{"id", "@removed"}``.
``410 Gone`` (``syncStateNotFound``...): full sync again. Times are asked in UTC
(``Prefer: outlook.timezone="UTC"``); all-day events are whole days.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from clinicbridge.calendars.calls import Authorized, json_of, refused
from clinicbridge.calendars.errors import SyncTokenExpired
from clinicbridge.calendars.events import (
    TRANSACTION_PREFIX,
    Changes,
    Instance,
    Window,
    key,
    parse_instant,
)

PAGE_SIZE = 200
MAX_PAGES = 400
PREFER = 'outlook.timezone="UTC", odata.maxpagesize=' + str(PAGE_SIZE)
NOT_BUSY = frozenset({"free"})


def delta_path(calendar: str) -> str:
    if calendar in ("", "primary"):
        return "/v1.0/me/calendarView/delta"
    return f"/v1.0/me/calendars/{quote(calendar, safe='')}/calendarView/delta"


def fetch(calls: Authorized, calendar: str, cursor: str | None, window: Window) -> Changes:
    changes = Changes(full=cursor is None)
    url: str = cursor or delta_path(calendar)
    params: dict[str, str | int] | None = None
    if cursor is None:
        params = {
            "startDateTime": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "endDateTime": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    for _ in range(MAX_PAGES):
        response = calls.request(
            "GET", url, operation="calendar.delta", params=params, headers={"Prefer": PREFER}
        )
        if response.status_code == 410:
            raise SyncTokenExpired(calls.integration)
        if response.status_code != 200:
            raise refused(calls.integration, "calendar.delta", response)
        page = json_of(response)
        for item in page.get("value") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                _add(changes, item)
        next_link = page.get("@odata.nextLink")
        if isinstance(next_link, str) and next_link:
            url, params = next_link, None
            continue
        delta = page.get("@odata.deltaLink")
        changes.cursor = delta if isinstance(delta, str) and delta else None
        return changes
    raise refused(calls.integration, "calendar.delta (too many pages)", response)


def _add(changes: Changes, item: dict[str, Any]) -> None:
    event_key = key(str(item["id"]))
    if "@removed" in item:
        changes.removed.append(event_key)
        changes.removed_groups.append(event_key)  # a series master: all its occurrences
        return
    group = key(str(item.get("seriesMasterId") or item["id"]))
    if item.get("type") == "seriesMaster":
        return  # its occurrences come on their own
    start, end = item.get("start") or {}, item.get("end") or {}
    if not isinstance(start.get("dateTime"), str) or not isinstance(end.get("dateTime"), str):
        return  # an update without times (delta may send changed fields only): keep the block
    busy = is_busy(item)
    if item.get("isAllDay"):
        first_day = date.fromisoformat(start["dateTime"][:10])
        end_day = date.fromisoformat(end["dateTime"][:10])
        changes.instances.append(
            Instance(event_key, group, busy, first_day=first_day, end_day=max(end_day, first_day))
        )
        return
    changes.instances.append(
        Instance(
            event_key,
            group,
            busy,
            start=parse_instant(_with_zone(start)),
            end=parse_instant(_with_zone(end)),
        )
    )


def _with_zone(value: dict[str, Any]) -> str:
    text = str(value["dateTime"])
    zone = str(value.get("timeZone") or "UTC")
    if zone.upper() in ("UTC", "Z") and not text.endswith("Z"):
        return text + "Z"
    return text


def is_busy(item: dict[str, Any]) -> bool:
    if item.get("isCancelled") or item.get("showAs") in NOT_BUSY:
        return False
    if str(item.get("transactionId") or "").startswith(TRANSACTION_PREFIX):
        return False
    response = (item.get("responseStatus") or {}).get("response")
    return response != "declined"


# --- export (bookings written as events) -------------------------------------------------


def events_collection(calendar: str) -> str:
    if calendar in ("", "primary"):
        return "/v1.0/me/events"
    return f"/v1.0/me/calendars/{quote(calendar, safe='')}/events"


def create_event(calls: Authorized, calendar: str, body: dict[str, Any]) -> str:
    """POST with our ``transactionId``: Graph drops a repeated create after a timeout."""
    response = calls.request(
        "POST", events_collection(calendar), operation="calendar.events.create", json=body
    )
    if response.status_code not in (200, 201):
        raise refused(calls.integration, "calendar.events.create", response)
    return str(json_of(response)["id"])


def update_event(calls: Authorized, event_id: str, body: dict[str, Any]) -> bool:
    """PATCH; False when the event is gone (deleted in Outlook): create it again."""
    response = calls.request(
        "PATCH",
        f"/v1.0/me/events/{quote(event_id, safe='')}",
        operation="calendar.events.update",
        json=body,
    )
    if response.status_code == 404:
        return False
    if response.status_code != 200:
        raise refused(calls.integration, "calendar.events.update", response)
    return True


def delete_event(calls: Authorized, event_id: str) -> None:
    response = calls.request(
        "DELETE", f"/v1.0/me/events/{quote(event_id, safe='')}", operation="calendar.events.delete"
    )
    if response.status_code not in (200, 204, 404):
        raise refused(calls.integration, "calendar.events.delete", response)


def event_body(summary: str, description: str, location: str | None, start: datetime,
               end: datetime, booking_id: str) -> dict[str, Any]:  # fmt: skip
    fmt = "%Y-%m-%dT%H:%M:%S"
    body: dict[str, Any] = {
        "subject": summary,
        "body": {"contentType": "text", "content": description},
        "start": {"dateTime": start.astimezone(UTC).strftime(fmt), "timeZone": "UTC"},
        "end": {"dateTime": end.astimezone(UTC).strftime(fmt), "timeZone": "UTC"},
        "showAs": "busy",
        "transactionId": f"{TRANSACTION_PREFIX}{booking_id}",
    }
    if location:
        body["location"] = {"displayName": location}
    return body


def window_events(calls: Authorized, calendar: str, window: Window) -> list[Instance]:
    """A fresh look at [window.start, window.end) through calendarView (occurrences
    expanded, times in UTC)."""
    path = (
        "/v1.0/me/calendarView"
        if calendar in ("", "primary")
        else (f"/v1.0/me/calendars/{quote(calendar, safe='')}/calendarView")
    )
    params: dict[str, str | int] = {
        "startDateTime": window.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "endDateTime": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "$top": 100,
    }
    response = calls.request(
        "GET", path, operation="calendar.view.check", params=params,
        headers={"Prefer": 'outlook.timezone="UTC"'},
    )  # fmt: skip
    if response.status_code != 200:
        raise refused(calls.integration, "calendar.view.check", response)
    changes = Changes(full=True)
    for item in json_of(response).get("value") or []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            _add(changes, item)
    return changes.instances
