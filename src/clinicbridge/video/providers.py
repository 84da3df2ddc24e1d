"""The video providers' APIs, through the outbound client: Daily rooms and Zoom meetings.

Daily (``api_base`` https://api.daily.co/v1, ``Authorization: Bearer <api_key>``):
``POST /rooms`` (``privacy: private``; ``nbf``/``exp`` in epoch seconds: the room opens 15
minutes before the visit and closes 30 minutes after; our own room name, so a create
repeated after a lost answer finds the room: 400 "already exists" → ``GET /rooms/{name}``),
``POST /rooms/{name}`` to move it, ``DELETE /rooms/{name}``; and one meeting token per
participant (``POST /meeting-tokens``: ``is_owner`` for the provider, not for the
patient), appended to the room URL as ``?t=``.

Zoom (server-to-server OAuth: ``POST {api_base}/oauth/token`` ``grant_type=
account_credentials``; the REST API at ``meetings_api_base``): ``POST /v2/users/me/meetings``
(a scheduled meeting, type 2, UTC, waiting room on, no join before host),
``PATCH /v2/meetings/{id}``, ``DELETE /v2/meetings/{id}``. Zoom has no idempotency key:
a create whose answer was lost may leave one unused meeting behind (never two links).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from clinicbridge.core.errors import ExternalServiceError
from clinicbridge.integrations.connector import ConnectorContext

OPENS_BEFORE = timedelta(minutes=15)
CLOSES_AFTER = timedelta(minutes=30)


@dataclass(frozen=True)
class Meeting:
    external_id: str
    join_url: str
    host_url: str


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refused(
    ctx: ConnectorContext, operation: str, response: httpx.Response
) -> ExternalServiceError:
    return ExternalServiceError(
        f"{ctx.integration_id} {operation}: the provider answered HTTP {response.status_code}",
        integration=ctx.integration_id,
        status_code=response.status_code,
        retryable=False,
    )


# --- Daily ------------------------------------------------------------------------------


def room_name(booking_id: str) -> str:
    return "cb-" + booking_id.lower().replace("_", "-")


def _daily_window(start: datetime, end: datetime) -> dict[str, int]:
    return {
        "nbf": int((start - OPENS_BEFORE).timestamp()),
        "exp": int((end + CLOSES_AFTER).timestamp()),
    }


def daily_meeting(
    ctx: ConnectorContext, booking_id: str, start: datetime, end: datetime
) -> Meeting:
    """Create the room (or find ours) with the visit's window, then the two tokens."""
    auth = {"Authorization": f"Bearer {ctx.secret('api_key')}"}
    name, window = room_name(booking_id), _daily_window(start, end)
    with ctx.client(headers=auth) as client:
        body = {
            "name": name,
            "privacy": "private",
            "properties": {**window, "eject_at_room_exp": True},
        }
        response = client.post("/rooms", operation="rooms.create", json=body)
        if response.status_code == 400 and "already exists" in str(_json(response).get("info", "")):
            response = client.post(f"/rooms/{quote(name)}", operation="rooms.update",
                                   json={"properties": window}, idempotent=True)  # fmt: skip
        if response.status_code != 200:
            raise _refused(ctx, "rooms.create", response)
        url = str(_json(response).get("url") or "")
        tokens = {}
        for owner in (False, True):
            props = {"room_name": name, "is_owner": owner, **window,
                     "user_name": "Provider" if owner else "Patient"}  # fmt: skip
            answer = client.post("/meeting-tokens", operation="meeting_tokens.create",
                                 json={"properties": props}, idempotent=True)  # fmt: skip
            if answer.status_code != 200 or not isinstance(_json(answer).get("token"), str):
                raise _refused(ctx, "meeting_tokens.create", answer)
            tokens[owner] = _json(answer)["token"]
    return Meeting(name, f"{url}?t={tokens[False]}", f"{url}?t={tokens[True]}")


def daily_delete(ctx: ConnectorContext, external_id: str) -> None:
    auth = {"Authorization": f"Bearer {ctx.secret('api_key')}"}
    with ctx.client(headers=auth) as client:
        response = client.request(
            "DELETE", f"/rooms/{quote(external_id)}", operation="rooms.delete"
        )
    if response.status_code not in (200, 204, 404):
        raise _refused(ctx, "rooms.delete", response)


# --- Zoom -------------------------------------------------------------------------------


def _zoom_token(ctx: ConnectorContext) -> str:
    basic = base64.b64encode(
        f"{ctx.secret('client_id')}:{ctx.secret('client_secret')}".encode()
    ).decode()
    with ctx.client(headers={"Authorization": f"Basic {basic}"}) as client:
        response = client.post(
            "/oauth/token",
            operation="oauth.token",
            data={
                "grant_type": "account_credentials",
                "account_id": str(ctx.settings["account_id"]),
            },
        )
    token = _json(response).get("access_token")
    if response.status_code != 200 or not isinstance(token, str):
        raise _refused(ctx, "oauth.token", response)
    return token


def _zoom_body(topic: str, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "topic": topic,
        "type": 2,
        "start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration": max(1, int((end - start).total_seconds() // 60)),
        "timezone": "UTC",
        "settings": {"waiting_room": True, "join_before_host": False},
    }


def zoom_meeting(
    ctx: ConnectorContext, existing: str | None, topic: str, start: datetime, end: datetime
) -> Meeting | None:
    """Create the meeting, or move ``existing`` (None: it moved, links unchanged)."""
    base = str(ctx.settings.get("meetings_api_base") or "https://api.zoom.us").rstrip("/")
    auth = {"Authorization": f"Bearer {_zoom_token(ctx)}"}
    with ctx.client(headers=auth) as client:
        if existing is not None:
            response = client.request(
                "PATCH",
                f"{base}/v2/meetings/{quote(existing)}",
                operation="meetings.update",
                json=_zoom_body(topic, start, end),
                idempotent=True,
            )
            if response.status_code == 204:
                return None
            if response.status_code != 404:
                raise _refused(ctx, "meetings.update", response)
        response = client.post(f"{base}/v2/users/me/meetings", operation="meetings.create",
                               json=_zoom_body(topic, start, end))  # fmt: skip
    body = _json(response)
    if response.status_code != 201 or not body.get("join_url"):
        raise _refused(ctx, "meetings.create", response)
    return Meeting(str(body["id"]), str(body["join_url"]), str(body.get("start_url") or ""))


def zoom_delete(ctx: ConnectorContext, external_id: str) -> None:
    base = str(ctx.settings.get("meetings_api_base") or "https://api.zoom.us").rstrip("/")
    auth = {"Authorization": f"Bearer {_zoom_token(ctx)}"}
    with ctx.client(headers=auth) as client:
        response = client.request(
            "DELETE", f"{base}/v2/meetings/{quote(external_id)}", operation="meetings.delete"
        )
    if response.status_code not in (200, 204, 404):
        raise _refused(ctx, "meetings.delete", response)
