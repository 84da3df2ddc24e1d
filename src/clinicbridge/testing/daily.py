"""A fake Daily REST API (https://api.daily.co/v1): rooms and meeting tokens.

``POST /rooms`` (``name``, ``privacy``, ``properties.nbf/exp``; a taken name is 400
``invalid-request-error`` "a room named ... already exists"), ``GET``/``POST``/``DELETE``
``/rooms/{name}``, ``GET /rooms``, ``POST /meeting-tokens`` (``properties.room_name``,
``is_owner``); ``Authorization: Bearer <api key>``, 401 ``authentication-error`` else.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx

HOST = "api.daily.co"
API_BASE = f"https://{HOST}/v1"


def _error(status: int, kind: str, info: str) -> httpx.Response:
    return httpx.Response(status, json={"error": kind, "info": info})


@dataclass
class FakeDaily:
    api_key: str
    domain: str = "clinic.daily.co"
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "authentication-error", "Invalid API key")
        if self.failures:
            return _error(self.failures.pop(0), "server-error", "try again")
        path = request.url.path.removeprefix("/v1")
        body = json.loads(request.content) if request.content else {}
        with self._lock:
            if path == "/rooms" and request.method == "POST":
                name = body.get("name") or secrets.token_hex(6)
                if name in self.rooms:
                    return _error(
                        400, "invalid-request-error", f"a room named {name} already exists"
                    )
                self.rooms[name] = {
                    "id": secrets.token_hex(8), "name": name, "api_created": True,
                    "privacy": body.get("privacy", "public"),
                    "url": f"https://{self.domain}/{name}", "config": body.get("properties", {}),
                }  # fmt: skip
                return httpx.Response(200, json=self.rooms[name])
            if path == "/rooms" and request.method == "GET":
                return httpx.Response(
                    200, json={"total_count": len(self.rooms), "data": list(self.rooms.values())}
                )
            if path.startswith("/rooms/"):
                name = unquote(path.removeprefix("/rooms/"))
                room = self.rooms.get(name)
                if room is None:
                    return _error(404, "not-found", f"room {name} not found")
                if request.method == "DELETE":
                    del self.rooms[name]
                    return httpx.Response(200, json={"deleted": True, "name": name})
                if request.method == "POST":
                    room["config"] = {**room["config"], **body.get("properties", {})}
                return httpx.Response(200, json=room)
            if path == "/meeting-tokens" and request.method == "POST":
                props = body.get("properties", {})
                if props.get("room_name") not in self.rooms:
                    return _error(400, "invalid-request-error", "room_name not found")
                token = "eyJ" + secrets.token_urlsafe(24)
                self.tokens[token] = props
                return httpx.Response(200, json={"token": token})
        return _error(404, "not-found", "no such endpoint")
