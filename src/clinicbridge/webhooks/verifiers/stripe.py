"""Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]``.

The signature is HMAC-SHA256 over ``"<t>.<raw body>"`` keyed with the whole
``whsec_...`` string (Stripe does not decode it). Several ``v1`` entries appear
while Stripe rolls a secret; ``v0`` and other schemes are ignored, as Stripe's
libraries do.
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
    from_unix,
    parse_json,
    parse_unix_timestamp,
    require_header,
)

HEADER = "stripe-signature"
SCHEME = "v1"


def _parse_header(value: str) -> tuple[str, list[str]]:
    timestamp: str | None = None
    signatures: list[str] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = val
        elif key == SCHEME:
            signatures.append(val.strip().lower())
    if timestamp is None:
        raise WebhookVerificationError(f"no timestamp in {HEADER}")
    if not signatures:
        raise WebhookVerificationError(f"no {SCHEME} signature in {HEADER}")
    return timestamp, signatures


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    if not secrets:
        raise WebhookVerificationError("no secret configured")
    timestamp, signatures = _parse_header(require_header(request, HEADER))
    sent_at = parse_unix_timestamp(timestamp, HEADER)
    # Sign the digits as sent: they are what Stripe put in front of the body.
    signed = timestamp.strip().encode() + b"." + request.body
    expected = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets if s]
    # Every pair is compared (no early exit) so timing does not tell which secret matched.
    matches = [constant_time_equal(e, sig) for e in expected for sig in signatures]
    if not any(matches):
        raise WebhookVerificationError("no matching signature")
    # After the signature: a stale but authentic request is logged as such.
    check_timestamp(sent_at, now, TOLERANCE)

    event = parse_json(request.body)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise WebhookVerificationError("signed body is not a Stripe event")
    return Verified([_event(event)])


def _event(event: dict[str, Any]) -> InboundEvent:
    return InboundEvent(
        provider_event_id=event["id"],
        type=str(event.get("type") or "stripe.event"),
        occurred_at=from_unix(event.get("created")),
        payload=event,
    )
