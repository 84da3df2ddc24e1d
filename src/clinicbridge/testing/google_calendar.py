"""A fake Google: the OAuth token endpoint and Calendar API v3 (events.list, freeBusy).

Hosts as Google's: ``oauth2.googleapis.com`` (``POST /token``), ``www.googleapis.com``
(``/calendar/v3/...``); the authorization endpoint is only parsed (``oauth.consent``).

``events.list`` as documented: ``singleEvents``, ``timeMin``/``timeMax`` (overlap),
``maxResults`` (default 250, at most 2500), ``pageToken``/``nextPageToken``, and sync:
the last page of a full listing carries ``nextSyncToken``; a request with ``syncToken``
answers every event changed since (``status: cancelled`` for deleted ones, without
``showDeleted``), refuses ``timeMin``/``timeMax`` with it (400), and answers
``410 Gone`` (reason ``fullSyncRequired``) for a token the server expired. Errors use
Google's JSON error shape; an invalid or expired access token is a 401.

Events are stored already expanded (``singleEvents=true`` is what the sync asks for):
an instance of a recurring event has ``recurringEventId`` and ``originalStartTime``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import httpx

from clinicbridge.testing.oauth_server import OAuthServer

API_HOST, TOKEN_HOST = "www.googleapis.com", "oauth2.googleapis.com"
AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
TOKEN_URL = f"https://{TOKEN_HOST}/token"
API_BASE = f"https://{API_HOST}"
EVENTS_PREFIX = "/calendar/v3/calendars/"


def _error(status: int, reason: str, message: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={
            "error": {
                "errors": [{"domain": "global", "reason": reason, "message": message}],
                "code": status,
                "message": message,
            }
        },
    )


def _instant(value: dict[str, Any], zone_default: str = "UTC") -> datetime:
    if "dateTime" in value:
        return datetime.fromisoformat(value["dateTime"].replace("Z", "+00:00"))
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(value["date"]).replace(tzinfo=ZoneInfo(zone_default))


@dataclass
class FakeGoogleCalendar:
    oauth: OAuthServer
    time_zone: str = "America/Toronto"
    calendars: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    changed_at: dict[tuple[str, str], int] = field(default_factory=dict)  # -> sequence
    seq: int = 0
    expired_before: int = 0  # sync tokens issued before this sequence answer 410
    requests: list[httpx.Request] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)  # statuses for the next API calls
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> channel
    stopped: list[str] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- what a practitioner does in Google Calendar ---------------------------------------

    def put(self, calendar: str, event: dict[str, Any]) -> str:
        """Create or replace an event (Google's event resource shape)."""
        with self._lock:
            event = dict(event)
            event.setdefault("id", secrets.token_hex(10))
            event.setdefault("kind", "calendar#event")
            event.setdefault("status", "confirmed")
            event.setdefault("iCalUID", f"{event['id']}@google.com")
            self.seq += 1
            event["updated"] = f"2026-01-01T00:00:{self.seq % 60:02d}.000Z"
            self.calendars.setdefault(calendar, {})[event["id"]] = event
            self.changed_at[(calendar, event["id"])] = self.seq
            return str(event["id"])

    def delete(self, calendar: str, event_id: str) -> None:
        with self._lock:
            events = self.calendars[calendar]
            events[event_id] = {"kind": "calendar#event", "id": event_id, "status": "cancelled"}
            self.seq += 1
            self.changed_at[(calendar, event_id)] = self.seq

    def expire_sync_tokens(self) -> None:
        with self._lock:
            self.expired_before = self.seq + 1

    # -- the transport ----------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == TOKEN_HOST and request.url.path == "/token":
            return self.oauth.token(request)
        if request.url.host != API_HOST:
            return _error(404, "notFound", "Not Found")
        if not self.oauth.valid_access_token(request.headers.get("authorization")):
            return _error(401, "authError", "Invalid Credentials")
        if self.failures:
            status = self.failures.pop(0)
            return _error(status, "backendError", "Backend Error")
        path = request.url.path
        if path == "/calendar/v3/freeBusy" and request.method == "POST":
            return self._free_busy(json.loads(request.content))
        if path.startswith(EVENTS_PREFIX) and path.endswith("/events/watch"):
            calendar = unquote(path[len(EVENTS_PREFIX) : -len("/events/watch")])
            return self._watch(calendar, json.loads(request.content))
        if path == "/calendar/v3/channels/stop" and request.method == "POST":
            return self._stop(json.loads(request.content))
        if path.startswith(EVENTS_PREFIX) and path.endswith("/events") and request.method == "GET":
            calendar = unquote(path[len(EVENTS_PREFIX) : -len("/events")])
            return self._list(calendar, request.url.params)
        if path.startswith(EVENTS_PREFIX) and path.endswith("/events") and request.method == "POST":
            calendar = unquote(path[len(EVENTS_PREFIX) : -len("/events")])
            return self._insert(calendar, json.loads(request.content), request.url.params)
        if (
            path.startswith(EVENTS_PREFIX)
            and "/events/" in path
            and request.method in ("PUT", "DELETE")
        ):
            head, _, event_id = path[len(EVENTS_PREFIX) :].rpartition("/events/")
            return self._change(unquote(head), unquote(event_id), request)
        return _error(404, "notFound", "Not Found")

    def _list(self, calendar: str, params: httpx.QueryParams) -> httpx.Response:
        with self._lock:
            if calendar not in self.calendars:
                return _error(404, "notFound", "Not Found")
            size = min(int(params.get("maxResults", "250")), 2500)
            sync, page = params.get("syncToken"), params.get("pageToken")
            if sync and (params.get("timeMin") or params.get("timeMax")):
                return _error(400, "invalid", "Sync token cannot be used with timeMin/timeMax")
            if page:  # p.<snapshot>.<since>.<offset>
                _, snap, since_text, offset_text = page.split(".")
                snapshot, since, offset = int(snap), int(since_text), int(offset_text)
            else:
                snapshot, offset = self.seq, 0
                since = -1
                if sync:
                    since = int(sync.removeprefix("s."))
                    if since < self.expired_before:
                        return _error(
                            410,
                            "fullSyncRequired",
                            "Sync token is no longer valid, a full sync is required.",
                        )
            items = self._select(calendar, params, since, snapshot)
            chunk = items[offset : offset + size]
            body: dict[str, Any] = {
                "kind": "calendar#events",
                "summary": calendar,
                "timeZone": self.time_zone,
                "accessRole": "owner",
                "items": chunk,
            }
            if offset + size < len(items):
                body["nextPageToken"] = f"p.{snapshot}.{since}.{offset + size}"
            else:
                body["nextSyncToken"] = f"s.{snapshot}"
            return httpx.Response(200, json=body)

    def _select(
        self, calendar: str, params: httpx.QueryParams, since: int, snapshot: int
    ) -> list[dict[str, Any]]:
        lo, hi = params.get("timeMin"), params.get("timeMax")
        start = datetime.fromisoformat(lo.replace("Z", "+00:00")) if lo else None
        end = datetime.fromisoformat(hi.replace("Z", "+00:00")) if hi else None
        found = []
        for event_id, event in self.calendars[calendar].items():
            changed = self.changed_at[(calendar, event_id)]
            if changed > snapshot:
                continue  # after the listing started: the next sync token shows it
            if since >= 0:
                if changed > since:
                    found.append(event)
                continue
            if event.get("status") == "cancelled":
                continue  # full listings omit deleted events unless showDeleted
            ev_start = _instant(event["start"], self.time_zone)
            ev_end = _instant(event["end"], self.time_zone)
            if (end is None or ev_start < end) and (start is None or ev_end > start):
                found.append(event)
        return sorted(found, key=lambda e: (self.changed_at[(calendar, e["id"])], e["id"]))

    # -- events.insert / update / delete ---------------------------------------------------

    def _insert(
        self, calendar: str, body: dict[str, Any], params: httpx.QueryParams
    ) -> httpx.Response:
        """``events.insert``: a client-chosen ``id`` (base32hex, 5-1024) that exists is 409."""
        with self._lock:
            if calendar not in self.calendars:
                return _error(404, "notFound", "Not Found")
            event_id = body.get("id")
            if event_id is not None:
                if not re.fullmatch(r"[a-v0-9]{5,1024}", str(event_id)):
                    return _error(400, "invalid", "Invalid resource id value.")
                existing = self.calendars[calendar].get(event_id)
                if existing is not None and existing.get("status") != "cancelled":
                    return _error(409, "duplicate", "The requested identifier already exists.")
            request = (body.get("conferenceData") or {}).get("createRequest")
            if request and params.get("conferenceDataVersion") == "1":
                letters = "abcdefghijklmnopqrstuvwxyz"
                code = "-".join(
                    "".join(secrets.choice(letters) for _ in range(n)) for n in (3, 4, 3)
                )
                entry = {
                    "entryPointType": "video",
                    "uri": f"https://meet.google.com/{code}",
                    "label": f"meet.google.com/{code}",
                }
                solution = {"key": {"type": "hangoutsMeet"}, "name": "Google Meet"}
                body = {
                    **body,
                    "conferenceData": {
                        "createRequest": {**request, "status": {"statusCode": "success"}},
                        "entryPoints": [entry],
                        "conferenceSolution": solution,
                        "conferenceId": code,
                    },
                }
            else:
                body = {k: v for k, v in body.items() if k != "conferenceData"}
            new_id = self.put(calendar, body)
            return httpx.Response(200, json=self.calendars[calendar][new_id])

    def _change(self, calendar: str, event_id: str, request: httpx.Request) -> httpx.Response:
        with self._lock:
            event = self.calendars.get(calendar, {}).get(event_id)
            if event is None:
                return _error(404, "notFound", "Not Found")
            if event.get("status") == "cancelled":
                return _error(410, "deleted", "Resource has been deleted")
            if request.method == "DELETE":
                self.delete(calendar, event_id)
                return httpx.Response(204)
            update = {**json.loads(request.content), "id": event_id}
            if request.url.params.get("conferenceDataVersion") != "1":
                update.pop("conferenceData", None)  # ignored: the conference stays
                if "conferenceData" in event:
                    update["conferenceData"] = event["conferenceData"]
            self.put(calendar, update)
            return httpx.Response(200, json=self.calendars[calendar][event_id])

    # -- push (watch channels) --------------------------------------------------------------

    def _watch(self, calendar: str, body: dict[str, Any]) -> httpx.Response:
        """``events.watch``: a channel to ``address`` with our ``token``, ``params.ttl`` s."""
        with self._lock:
            if calendar not in self.calendars:
                return _error(404, "notFound", "Not Found")
            if body.get("type") != "web_hook" or not str(body.get("address", "")).startswith(
                "http"
            ):
                return _error(400, "invalid", "Invalid channel")
            if body["id"] in self.channels:
                return _error(400, "channelIdNotUnique", "Channel id not unique")
            ttl = int((body.get("params") or {}).get("ttl", "604800"))
            expiration = int(time.time() * 1000) + min(ttl, 2_592_000) * 1000
            channel = {
                "kind": "api#channel",
                "id": body["id"],
                "resourceId": f"res-{calendar}",
                "resourceUri": f"{API_BASE}/calendar/v3/calendars/{calendar}/events",
                "token": body.get("token"),
                "expiration": str(expiration),
                "address": body["address"],
                "calendar": calendar,
                "messages": 0,
            }
            self.channels[body["id"]] = channel
            return httpx.Response(
                200,
                json={
                    k: v for k, v in channel.items() if k not in ("address", "calendar", "messages")
                },
            )

    def _stop(self, body: dict[str, Any]) -> httpx.Response:
        with self._lock:
            channel = self.channels.get(body.get("id", ""))
            if channel is None or channel["resourceId"] != body.get("resourceId"):
                return _error(404, "notFound", "Channel not found")
            del self.channels[body["id"]]
            self.stopped.append(body["id"])
            return httpx.Response(204)

    def notification(self, channel_id: str, state: str = "exists") -> tuple[str, dict[str, str]]:
        """What Google POSTs to a channel's address: (address, headers); the body is empty."""
        with self._lock:
            channel = self.channels[channel_id]
            channel["messages"] += 1
            return channel["address"], {
                "X-Goog-Channel-ID": channel["id"],
                "X-Goog-Channel-Token": channel["token"] or "",
                "X-Goog-Channel-Expiration": "Tue, 19 Nov 2030 01:13:52 GMT",
                "X-Goog-Resource-ID": channel["resourceId"],
                "X-Goog-Resource-URI": channel["resourceUri"],
                "X-Goog-Resource-State": state,
                "X-Goog-Message-Number": str(channel["messages"]),
            }

    def _free_busy(self, body: dict[str, Any]) -> httpx.Response:
        lo = datetime.fromisoformat(body["timeMin"].replace("Z", "+00:00"))
        hi = datetime.fromisoformat(body["timeMax"].replace("Z", "+00:00"))
        calendars: dict[str, Any] = {}
        with self._lock:
            for item in body.get("items", []):
                cid = item["id"]
                if cid not in self.calendars:
                    calendars[cid] = {"errors": [{"domain": "global", "reason": "notFound"}]}
                    continue
                busy = []
                for event in self.calendars[cid].values():
                    if (
                        event.get("status") == "cancelled"
                        or event.get("transparency") == "transparent"
                    ):
                        continue
                    start, end = (
                        _instant(event["start"], self.time_zone),
                        _instant(event["end"], self.time_zone),
                    )
                    if start < hi and end > lo:
                        busy.append(
                            {"start": max(start, lo).isoformat(), "end": min(end, hi).isoformat()}
                        )
                calendars[cid] = {"busy": sorted(busy, key=lambda b: b["start"])}
        return httpx.Response(
            200,
            json={
                "kind": "calendar#freeBusy",
                "timeMin": body["timeMin"],
                "timeMax": body["timeMax"],
                "calendars": calendars,
            },
        )
