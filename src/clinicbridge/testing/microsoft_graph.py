"""A fake Microsoft: the identity platform's token endpoint and Graph calendar delta.

Hosts as Microsoft's: ``login.microsoftonline.com`` (``POST /{tenant}/oauth2/v2.0/token``,
refresh tokens rotated on every use) and ``graph.microsoft.com``:

* ``GET /v1.0/me/calendar``, ``GET /v1.0/me/calendars/{id}``;
* ``GET /v1.0/me/calendarView/delta`` and ``/v1.0/me/calendars/{id}/calendarView/delta``:
  the first request needs ``startDateTime`` and ``endDateTime``; pages follow through
  ``@odata.nextLink`` (``$skiptoken``, size from ``Prefer: odata.maxpagesize``), the last
  page has ``@odata.deltaLink`` (``$deltatoken``) which carries the window. A delta round
  answers the events changed since, deleted ones as ``{"id", "@removed": {"reason":
  "deleted"}}``. An expired delta token answers ``410`` with code ``syncStateNotFound``.

Events are Graph event resources (``start``/``end`` as ``dateTimeTimeZone`` in UTC,
``isAllDay``, ``showAs``, ``responseStatus``, ``type`` and ``seriesMasterId`` for
occurrences).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlencode

import httpx

from clinicbridge.testing.oauth_server import OAuthServer

GRAPH_HOST, LOGIN_HOST = "graph.microsoft.com", "login.microsoftonline.com"
GRAPH_BASE = f"https://{GRAPH_HOST}"
LOGIN_BASE = f"https://{LOGIN_HOST}"
DEFAULT = "primary"
_DELTA = re.compile(r"^/v1\.0/me(?:/calendars/(?P<id>[^/]+))?/calendarView/delta$")
_CAL = re.compile(r"^/v1\.0/me/(?:calendar|calendars/(?P<id>[^/]+))$")


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def _when(value: dict[str, Any]) -> datetime:
    text = value["dateTime"].split(".")[0]
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _utc(moment: datetime) -> dict[str, str]:
    return {
        "dateTime": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000"),
        "timeZone": "UTC",
    }


@dataclass
class FakeGraph:
    oauth: OAuthServer
    calendars: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {DEFAULT: {}})
    changed_at: dict[tuple[str, str], int] = field(default_factory=dict)
    seq: int = 0
    expired_before: int = 0
    requests: list[httpx.Request] = field(default_factory=list)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Delivers a validation request to a notification URL and answers (status, body):
    # set by the test (e.g. a TestClient's post), as Graph calls the URL before answering.
    deliver: Callable[[str], tuple[int, str]] | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def put(self, event: dict[str, Any], calendar: str = DEFAULT) -> str:
        with self._lock:
            event = dict(event)
            event.setdefault("id", "AAMk" + secrets.token_hex(12))
            event.setdefault("@odata.type", "#microsoft.graph.event")
            event.setdefault("type", "singleInstance")
            event.setdefault("isAllDay", False)
            event.setdefault("isCancelled", False)
            event.setdefault("showAs", "busy")
            event.setdefault(
                "responseStatus", {"response": "organizer", "time": "0001-01-01T00:00:00Z"}
            )
            self.seq += 1
            self.calendars.setdefault(calendar, {})[event["id"]] = event
            self.changed_at[(calendar, event["id"])] = self.seq
            return str(event["id"])

    @staticmethod
    def timed(subject: str, start: datetime, end: datetime, **extra: Any) -> dict[str, Any]:
        return {"subject": subject, "start": _utc(start), "end": _utc(end), **extra}

    def delete(self, event_id: str, calendar: str = DEFAULT) -> None:
        """Delete an event; a series master takes its occurrences and exceptions along."""
        with self._lock:
            events = self.calendars[calendar]
            gone = [event_id] + [
                i for i, e in events.items() if e.get("seriesMasterId") == event_id
            ]
            for item in gone:
                events[item] = {"id": item, "@removed": {"reason": "deleted"}}
                self.seq += 1
                self.changed_at[(calendar, item)] = self.seq

    def expire_delta_tokens(self) -> None:
        with self._lock:
            self.expired_before = self.seq + 1

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == LOGIN_HOST and request.url.path.endswith("/oauth2/v2.0/token"):
            return self.oauth.token(request)
        if request.url.host != GRAPH_HOST:
            return _error(404, "ResourceNotFound", "Resource not found")
        if not self.oauth.valid_access_token(request.headers.get("authorization")):
            return _error(
                401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid."
            )
        path = request.url.path
        cal = _CAL.match(path)
        if cal and request.method == "GET":
            cid = unquote(cal.group("id") or DEFAULT)
            if cid not in self.calendars:
                return _error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            return httpx.Response(200, json={"id": cid, "name": "Calendar", "canEdit": True})
        events = re.match(r"^/v1\.0/me(?:/calendars/(?P<id>[^/]+))?/events$", path)
        if events and request.method == "POST":
            return self._create(unquote(events.group("id") or DEFAULT), json.loads(request.content))
        one = re.match(r"^/v1\.0/me/events/(?P<id>[^/]+)$", path)
        if one and request.method in ("PATCH", "DELETE"):
            return self._change_event(unquote(one.group("id")), request)
        if path == "/v1.0/subscriptions" and request.method == "POST":
            return self._subscribe(json.loads(request.content))
        sub = re.match(r"^/v1\.0/subscriptions/(?P<id>[^/]+)$", path)
        if sub and request.method in ("PATCH", "DELETE"):
            return self._change_subscription(sub.group("id"), request)
        view = re.match(r"^/v1\.0/me(?:/calendars/(?P<id>[^/]+))?/calendarView$", path)
        if view and request.method == "GET":
            return self._view(unquote(view.group("id") or DEFAULT), request.url.params)
        delta = _DELTA.match(path)
        if delta and request.method == "GET":
            return self._delta(unquote(delta.group("id") or DEFAULT), request)
        return _error(400, "BadRequest", "Unsupported request")

    def _view(self, calendar: str, params: httpx.QueryParams) -> httpx.Response:
        """``calendarView``: the events overlapping [startDateTime, endDateTime)."""
        lo, hi = params.get("startDateTime"), params.get("endDateTime")
        if not lo or not hi:
            return _error(
                400, "ErrorInvalidParameter", "startDateTime and endDateTime are required"
            )
        window = (
            datetime.fromisoformat(lo.replace("Z", "+00:00")),
            datetime.fromisoformat(hi.replace("Z", "+00:00")),
        )
        with self._lock:
            if calendar not in self.calendars:
                return _error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            found = self._select(calendar, -1, self.seq, window)
        return httpx.Response(200, json={"value": found[: int(params.get("$top", "10"))]})

    # -- events: create / update / delete -------------------------------------------------

    def _create(self, calendar: str, body: dict[str, Any]) -> httpx.Response:
        """A create repeated with the same ``transactionId`` answers the first event."""
        with self._lock:
            if calendar not in self.calendars:
                return _error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            tx = body.get("transactionId")
            for event in self.calendars[calendar].values():
                if tx and event.get("transactionId") == tx and "@removed" not in event:
                    return httpx.Response(201, json=event)
            event_id = self.put(body, calendar)
            return httpx.Response(201, json=self.calendars[calendar][event_id])

    def _change_event(self, event_id: str, request: httpx.Request) -> httpx.Response:
        with self._lock:
            for calendar, events in self.calendars.items():
                event = events.get(event_id)
                if event is None or "@removed" in event:
                    continue
                if request.method == "DELETE":
                    self.delete(event_id, calendar)
                    return httpx.Response(204)
                self.put({**event, **json.loads(request.content)}, calendar)
                return httpx.Response(200, json=events[event_id])
            return _error(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )

    # -- subscriptions ----------------------------------------------------------------------

    def _subscribe(self, body: dict[str, Any]) -> httpx.Response:
        """Create: Graph first POSTs ``?validationToken=`` to the URL and wants it back as
        text/plain (else 400 ``ValidationError``); ``expirationDateTime`` at most 10,080 min."""
        url, expires = str(body.get("notificationUrl", "")), body.get("expirationDateTime")
        if not url.startswith("http") or not isinstance(expires, str) or not body.get("resource"):
            return _error(400, "ExtensionError", "Invalid subscription request")
        when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
        if when > datetime.now(UTC) + timedelta(minutes=10080):
            return _error(400, "InvalidRequest", "expirationDateTime is too far in the future")
        token = secrets.token_urlsafe(16)
        if self.deliver is None:
            return _error(400, "ValidationError", "Notification endpoint unreachable")
        status, answer = self.deliver(f"{url}?{urlencode({'validationToken': token})}")
        if status != 200 or answer != token:
            return _error(400, "ValidationError", "Subscription validation request failed")
        with self._lock:
            sub = {
                "id": str(uuid.uuid4()),
                "resource": body["resource"],
                "changeType": body.get("changeType"),
                "notificationUrl": url,
                "clientState": body.get("clientState"),
                "expirationDateTime": when.isoformat().replace("+00:00", "Z"),
            }
            self.subscriptions[sub["id"]] = sub
            return httpx.Response(201, json=sub)

    def _change_subscription(self, sub_id: str, request: httpx.Request) -> httpx.Response:
        with self._lock:
            sub = self.subscriptions.get(sub_id)
            if sub is None:
                return _error(404, "ResourceNotFound", "The object was not found.")
            if request.method == "DELETE":
                del self.subscriptions[sub_id]
                return httpx.Response(204)
            expires = json.loads(request.content).get("expirationDateTime")
            sub["expirationDateTime"] = expires
            return httpx.Response(200, json=sub)

    def notification(self, sub_id: str, change: str = "updated") -> tuple[str, dict[str, Any]]:
        """What Graph POSTs for a change: (notification URL, JSON body)."""
        with self._lock:
            sub = self.subscriptions[sub_id]
            item = {
                "subscriptionId": sub_id,
                "subscriptionExpirationDateTime": sub["expirationDateTime"],
                "changeType": change,
                "resource": f"Users/00000000/Events/{secrets.token_hex(8)}",
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Event",
                    "id": secrets.token_hex(8),
                },
                "clientState": sub["clientState"],
                "tenantId": "00000000-0000-0000-0000-000000000000",
            }
            return sub["notificationUrl"], {"value": [item]}

    def _delta(self, calendar: str, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        prefer = request.headers.get("prefer", "")
        size = 10
        match = re.search(r"odata\.maxpagesize=(\d+)", prefer)
        if match:
            size = int(match.group(1))
        with self._lock:
            if calendar not in self.calendars:
                return _error(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
            if "$skiptoken" in params:  # <snapshot>.<since>.<offset>.<start>.<end>
                snap, since, offset, lo, hi = params["$skiptoken"].split("~")
                snapshot, since_seq, start_at = int(snap), int(since), int(offset)
            elif "$deltatoken" in params:
                since, lo, hi = params["$deltatoken"].split("~")
                since_seq = int(since)
                if since_seq < self.expired_before:
                    return _error(
                        410, "syncStateNotFound", "The sync state generation is not found."
                    )
                snapshot, start_at = self.seq, 0
            else:
                lo, hi = params.get("startDateTime"), params.get("endDateTime")
                if not lo or not hi:
                    return _error(
                        400, "ErrorInvalidParameter", "startDateTime and endDateTime are required"
                    )
                snapshot, since_seq, start_at = self.seq, -1, 0
            window = (
                datetime.fromisoformat(lo.replace("Z", "+00:00")),
                datetime.fromisoformat(hi.replace("Z", "+00:00")),
            )
            items = self._select(calendar, since_seq, snapshot, window)
            chunk = items[start_at : start_at + size]
            base = f"{GRAPH_BASE}{request.url.path}"
            body: dict[str, Any] = {
                "@odata.context": f"{GRAPH_BASE}/v1.0/$metadata#Collection(event)",
                "value": chunk,
            }
            if start_at + size < len(items):
                token = "~".join(map(str, (snapshot, since_seq, start_at + size, lo, hi)))
                body["@odata.nextLink"] = f"{base}?{urlencode({'$skiptoken': token})}"
            else:
                body["@odata.deltaLink"] = (
                    f"{base}?{urlencode({'$deltatoken': '~'.join((str(snapshot), lo, hi))})}"
                )
            return httpx.Response(200, json=body)

    def _select(
        self, calendar: str, since: int, snapshot: int, window: tuple[datetime, datetime]
    ) -> list[dict[str, Any]]:
        found = []
        for event_id, event in self.calendars[calendar].items():
            changed = self.changed_at[(calendar, event_id)]
            if changed > snapshot:
                continue
            if since >= 0 and changed <= since:
                continue
            if "@removed" in event:
                if since >= 0:
                    found.append(event)
                continue
            if event.get("type") == "seriesMaster":
                continue  # calendarView lists occurrences, not masters
            if _when(event["start"]) < window[1] and _when(event["end"]) > window[0]:
                found.append(event)
            elif since >= 0:  # moved out of the window: gone from this view
                found.append({"id": event_id, "@removed": {"reason": "deleted"}})
        return sorted(found, key=lambda e: (self.changed_at[(calendar, e["id"])], e["id"]))
