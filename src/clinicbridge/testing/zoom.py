"""A fake Zoom: server-to-server OAuth (``POST /oauth/token`` on zoom.us,
``grant_type=account_credentials``, HTTP Basic client id and secret) and the meetings
API on api.zoom.us: ``POST /v2/users/me/meetings`` (201 with ``id``, ``join_url``,
``start_url``), ``PATCH``/``DELETE /v2/meetings/{id}`` (204; 404 ``code`` 3001 when gone)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

OAUTH_HOST, API_HOST = "zoom.us", "api.zoom.us"


@dataclass
class FakeZoom:
    client_id: str
    client_secret: str
    account_id: str
    meetings: dict[str, dict[str, Any]] = field(default_factory=dict)
    access_tokens: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == OAUTH_HOST and request.url.path == "/oauth/token":
            return self._token(request)
        if request.url.host != API_HOST:
            return httpx.Response(404, json={"code": 404, "message": "Not found"})
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or token not in self.access_tokens:
            return httpx.Response(401, json={"code": 124, "message": "Invalid access token."})
        path = request.url.path
        with self._lock:
            if path == "/v2/users/me/meetings" and request.method == "POST":
                body = json.loads(request.content)
                meeting_id = str(secrets.randbelow(10**10) + 10**10)
                pwd, zak = secrets.token_urlsafe(12), secrets.token_urlsafe(24)
                meeting = {
                    **body,
                    "id": int(meeting_id),
                    "join_url": f"https://zoom.us/j/{meeting_id}?pwd={pwd}",
                    "start_url": f"https://zoom.us/s/{meeting_id}?zak={zak}",
                }
                self.meetings[meeting_id] = meeting
                return httpx.Response(201, json=meeting)
            if path.startswith("/v2/meetings/"):
                meeting_id = path.removeprefix("/v2/meetings/")
                if meeting_id not in self.meetings:
                    return httpx.Response(
                        404, json={"code": 3001, "message": "Meeting does not exist."}
                    )
                if request.method == "DELETE":
                    del self.meetings[meeting_id]
                    return httpx.Response(204)
                if request.method == "PATCH":
                    self.meetings[meeting_id].update(json.loads(request.content))
                    return httpx.Response(204)
        return httpx.Response(404, json={"code": 404, "message": "Not found"})

    def _token(self, request: httpx.Request) -> httpx.Response:
        basic = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {basic}":
            return httpx.Response(
                401,
                json={"reason": "Invalid client_id or client_secret", "error": "invalid_client"},
            )
        form = dict(parse_qsl(request.content.decode()))
        if (
            form.get("grant_type") != "account_credentials"
            or form.get("account_id") != self.account_id
        ):
            return httpx.Response(
                400, json={"reason": "Invalid request", "error": "invalid_request"}
            )
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.access_tokens.add(token)
        return httpx.Response(
            200,
            json={
                "access_token": token,
                "token_type": "bearer",
                "expires_in": 3599,
                "scope": "meeting:write:admin",
            },
        )
