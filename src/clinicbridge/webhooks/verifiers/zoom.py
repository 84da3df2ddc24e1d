"""Zoom: ``x-zm-signature: v0=<hex HMAC-SHA256(secret token, "v0:<ts>:<body>")>``.

``x-zm-request-timestamp`` is the delivery time in epoch seconds and is part of
what is signed, so the replay window applies. Zoom signs every request with the
app's webhook secret token, the URL-validation challenge included.

``endpoint.url_validation`` (sent when the endpoint is saved, and again every
few days) must be answered with ``{"plainToken": <the token>, "encryptedToken":
<hex HMAC-SHA256(secret token, plainToken)>}``: that goes out through
``Verified.response``, with no event. It is keyed with the secret that matched
the request, so a rotation answers with the secret Zoom is actually using.

Zoom sends no event id. Dedupe id: ``<event>:<payload.object.uuid>:<event_ts>``
(``object.id`` when there is no uuid), else a hash of the body. ``event_ts`` is
when the event happened, in milliseconds, and stays the same when Zoom retries a
delivery; the request timestamp does not, so it is left out.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    TOLERANCE,
    InboundEvent,
    Verified,
    WebhookRequest,
    check_timestamp,
    constant_time_equal,
    content_id,
    from_unix,
    parse_json,
    parse_unix_timestamp,
    require_header,
)

SIGNATURE_HEADER = "x-zm-signature"
TIMESTAMP_HEADER = "x-zm-request-timestamp"
VERSION = "v0"
URL_VALIDATION = "endpoint.url_validation"


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    keys = [s.encode() for s in secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    signature = require_header(request, SIGNATURE_HEADER)
    timestamp = require_header(request, TIMESTAMP_HEADER)
    version, sep, sent = signature.partition("=")
    if not sep or version != VERSION:
        raise WebhookVerificationError(f"no {VERSION} signature in {SIGNATURE_HEADER}")
    sent_at = parse_unix_timestamp(timestamp, TIMESTAMP_HEADER)

    signed = f"{VERSION}:{timestamp}:".encode() + request.body
    matches = [
        constant_time_equal(hmac.new(key, signed, hashlib.sha256).hexdigest(), sent.lower())
        for key in keys
    ]
    if not any(matches):
        raise WebhookVerificationError("no matching signature")
    check_timestamp(sent_at, now, TOLERANCE)

    payload = parse_json(request.body)
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
        raise WebhookVerificationError("signed body is not a Zoom event")
    event: str = payload["event"]
    if event == URL_VALIDATION:
        return _answer_challenge(payload, keys[matches.index(True)])
    body = payload.get("payload")
    obj = body.get("object") if isinstance(body, dict) else None
    event_ts = payload.get("event_ts")
    return Verified(
        [
            InboundEvent(
                provider_event_id=_event_id(event, obj, event_ts, request.body),
                type=f"video.{event}",
                occurred_at=_from_ms(event_ts),
                payload=payload,
            )
        ]
    )


def _answer_challenge(payload: dict[str, Any], key: bytes) -> Verified:
    body = payload.get("payload")
    plain = body.get("plainToken") if isinstance(body, dict) else None
    if not isinstance(plain, str) or not plain:
        raise WebhookVerificationError("url validation without payload.plainToken")
    encrypted = hmac.new(key, plain.encode(), hashlib.sha256).hexdigest()
    return Verified([], response={"plainToken": plain, "encryptedToken": encrypted})


def _event_id(event: str, obj: object, event_ts: object, body: bytes) -> str:
    ident = None
    if isinstance(obj, dict):
        ident = obj.get("uuid") or obj.get("id")
    if isinstance(ident, bool) or not isinstance(ident, str | int):
        return content_id(body)
    if isinstance(event_ts, bool) or not isinstance(event_ts, int):
        return content_id(body)
    return f"{event}:{ident}:{event_ts}"


def _from_ms(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return from_unix(value / 1000)
