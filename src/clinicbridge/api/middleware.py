"""Pure ASGI middleware: request id, body limit, access log, metrics, last-resort 500.

Unhandled exceptions are answered here with a bare problem document and logged
by class and stack only: the exception's message may carry input values.
"""

from __future__ import annotations

import logging
import re
import time
import traceback

from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clinicbridge.api.problems import http_problem, problem_response
from clinicbridge.core.ids import new_id
from clinicbridge.core.metrics import Metrics

log = logging.getLogger("clinicbridge.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route_template(scope: Scope) -> str:
    """``/api/v1/users/{user_id}`` for ``/api/v1/users/usr_...``: ids never become labels."""
    if scope.get("route") is None:
        return "<unmatched>"
    names = {str(v): k for k, v in scope.get("path_params", {}).items()}
    segments = scope["path"].split("/")
    return "/".join(f"{{{names[s]}}}" if s in names else s for s in segments)


class RequestMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else new_id("req")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(413)
            return message

        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await problem_response(http_problem(413), request_id)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive_limited, send_with_id)
        except Exception as exc:
            log.error(
                "unhandled error",
                extra={
                    "fields": {
                        "request_id": request_id,
                        "error_class": type(exc).__name__,
                        "stack": "".join(traceback.format_tb(exc.__traceback__)),
                    }
                },
            )
            if response_started:
                raise
            await problem_response(http_problem(500), request_id)(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            route_path = _route_template(scope)
            method = scope["method"]
            self.metrics.http_requests.labels(method, route_path, str(status)).inc()
            self.metrics.http_duration.labels(method, route_path).observe(duration)
            log.info(
                "request",
                extra={
                    "fields": {
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                        "request_id": request_id,
                        "tenant_id": state.get("tenant_id"),
                    }
                },
            )


class PublicCorsMiddleware:
    """CORS for the public booking API only, so a clinic's website can call it from
    the browser. Other paths get no CORS headers: the API and the admin UI are not
    meant to be called from other origins."""

    def __init__(self, app: ASGIApp, *, prefix: str = "/public/") -> None:
        self.app = app
        self.prefix = prefix
        self.cors = CORSMiddleware(
            app,
            allow_origins=["*"],
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Idempotency-Key"],
            expose_headers=["Retry-After", "X-Request-Id"],
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
