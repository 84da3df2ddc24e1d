"""Stripe's wire format, for the fake Stripe: form bodies with nested keys, the error
JSON, list envelopes, and serving a request handler on 127.0.0.1.

Stripe's API takes ``application/x-www-form-urlencoded`` bodies whose keys nest with
brackets: ``metadata[booking_id]=bkg_1``, ``line_items[0][price_data][currency]=cad``,
``payment_method_types[0]=card`` (a list is indexed; ``expand[]=x`` appends). Errors
are ``{"error": {"type", "code", "message", "param", ...}}`` with the HTTP status
Stripe documents (400, 401, 402, 404, 409, 429, 500).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


@dataclass(frozen=True)
class WireRequest:
    method: str
    path: str
    query: dict[str, Any]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class WireResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


class StripeError(Exception):
    """Raised inside the fake; becomes Stripe's error JSON."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message
        self.code, self.param, self.extra = code, param, extra

    def response(self, request_id: str) -> WireResponse:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        error.update(self.extra)
        return WireResponse(self.status, {"error": error}, {"Request-Id": request_id})


def invalid(message: str, *, code: str | None = None, param: str | None = None) -> StripeError:
    return StripeError(400, "invalid_request_error", message, code=code, param=param)


def missing(param: str) -> StripeError:
    return invalid(f"Missing required param: {param}.", code="parameter_missing", param=param)


def no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(
        404,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def decode_form(body: bytes | str) -> dict[str, Any]:
    """``a[b][0][c]=v&x[]=1`` → ``{"a": {"b": [{"c": "v"}]}, "x": ["1"]}``."""
    text = body.decode() if isinstance(body, bytes) else body
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise invalid(f"Invalid parameter name: {key}", code="parameter_unknown")
        parts = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        _put(root, parts, value)
    decoded: dict[str, Any] = _lists(root)
    return decoded


def _put(node: dict[str, Any], parts: list[str], value: str) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "":  # "x[]": append
            part = str(len([k for k in node if k.isdigit()]))
        if last:
            node[part] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise invalid(f"Invalid nesting for parameter {parts[0]}", code="parameter_invalid")
        node = child


def _lists(value: Any) -> Any:
    """Dicts whose keys are exactly 0..n-1 become lists (Stripe's indexed arrays)."""
    if not isinstance(value, dict):
        return value
    converted = {k: _lists(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        indexes = sorted(int(k) for k in converted)
        if indexes == list(range(len(indexes))):
            return [converted[str(i)] for i in indexes]
    return converted


def list_object(url: str, items: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    """Stripe's list envelope with ``limit`` (1-100, default 10) and ``starting_after``
    (items newest first, as Stripe lists them)."""
    try:
        limit = int(query.get("limit", 10))
    except ValueError:
        raise invalid("Invalid integer: limit", param="limit") from None
    if not 1 <= limit <= 100:
        raise invalid("This value must be between 1 and 100.", param="limit")
    ordered = sorted(items, key=lambda o: (o["created"], o["id"]), reverse=True)
    after = query.get("starting_after")
    if after:
        ids = [o["id"] for o in ordered]
        if after not in ids:
            raise no_such("object", str(after), "starting_after")
        ordered = ordered[ids.index(after) + 1 :]
    return {
        "object": "list",
        "data": ordered[:limit],
        "has_more": len(ordered) > limit,
        "url": url,
    }


def metadata_param(params: dict[str, Any]) -> dict[str, str]:
    raw = params.get("metadata") or {}
    if not isinstance(raw, dict):
        raise invalid("Invalid object", param="metadata")
    if len(raw) > 50 or any(len(k) > 40 or len(str(v)) > 500 for k, v in raw.items()):
        raise invalid(
            "Metadata can have up to 50 keys of up to 40 characters and values of up "
            "to 500 characters.",
            param="metadata",
        )
    return {k: str(v) for k, v in raw.items() if v != ""}


def amount_param(params: dict[str, Any], name: str, param: str | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        raise missing(param or name)
    try:
        value = int(str(raw))
    except ValueError:
        raise invalid(
            f"Invalid integer: {raw}", code="parameter_invalid_integer", param=param or name
        ) from None
    if value < 1:
        raise invalid(
            "This value must be greater than or equal to 1.",
            code="parameter_invalid_integer",
            param=param or name,
        )
    return value


def currency_param(params: dict[str, Any], param: str = "currency") -> str:
    raw = params.get("currency")
    if not raw:
        raise missing(param)
    code = str(raw).lower()
    if len(code) != 3 or not code.isalpha():
        raise invalid(f"Invalid currency: {raw}.", param=param)
    return code


def unexpected_state(intent: dict[str, Any], verb: str) -> StripeError:
    return invalid(
        f"You cannot {verb} this PaymentIntent because it has a status of {intent['status']}.",
        code="payment_intent_unexpected_state",
        param="intent",
    )


Handler = Callable[[WireRequest], WireResponse]


def wire_request(method: str, target: str, headers: dict[str, str], body: bytes) -> WireRequest:
    parts = urlsplit(target)
    query = decode_form(parts.query) if parts.query else {}
    return WireRequest(
        method.upper(), parts.path, query, {k.lower(): v for k, v in headers.items()}, body
    )


@contextmanager
def serve(handler: Handler, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``handler`` over HTTP on ``host`` until the block ends; yields the base URL."""

    class _Http(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = wire_request(self.command, self.path, dict(self.headers.items()), body)
            response = handler(request)
            payload = response.encoded()
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: tests read the fake's own request log

    server = ThreadingHTTPServer((host, port), _Http)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-stripe", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
