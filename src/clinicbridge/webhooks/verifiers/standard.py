"""Standard Webhooks (Resend, Svix, and many others).

Headers ``webhook-id``, ``webhook-timestamp`` (epoch seconds) and
``webhook-signature`` (space-separated ``v1,<base64>`` entries, several during a
secret rotation); Svix sends the same as ``svix-id``, ``svix-timestamp`` and
``svix-signature``. The signature is HMAC-SHA256 over ``"<id>.<timestamp>.<raw
body>"`` keyed with the base64-decoded part of ``whsec_<base64>``. Entries of
other versions (``v1a`` is the asymmetric variant) are skipped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    TOLERANCE,
    InboundEvent,
    Verified,
    WebhookRequest,
    check_timestamp,
    constant_time_equal,
    parse_json,
    parse_unix_timestamp,
    require_header,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
VERSION = "v1"


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    keys = [key for key in map(decode_secret, secrets) if key]
    if not keys:
        raise WebhookVerificationError("no valid secret configured")
    # One family of names per request: an id from one and a signature from the
    # other would never be what the sender signed.
    prefix = _header_family(request)
    msg_id = require_header(request, f"{prefix}-id")
    timestamp = require_header(request, f"{prefix}-timestamp")
    header = require_header(request, f"{prefix}-signature")
    sent_at = parse_unix_timestamp(timestamp, f"{prefix}-timestamp")

    signatures = _signatures(header)
    if not signatures:
        raise WebhookVerificationError(f"no {VERSION} signature in {prefix}-signature")
    signed = f"{msg_id}.{timestamp}.".encode() + request.body
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in keys]
    matches = [constant_time_equal(e, sig) for e in expected for sig in signatures]
    if not any(matches):
        raise WebhookVerificationError("no matching signature")
    check_timestamp(sent_at, now, TOLERANCE)

    payload = parse_json(request.body)
    if not isinstance(payload, dict):
        raise WebhookVerificationError("signed body is not a JSON object")
    return Verified(
        [
            InboundEvent(
                provider_event_id=msg_id,
                type=str(payload.get("type") or "webhook"),
                # The body's own time first: the header is the time of this
                # delivery attempt and changes on every retry.
                occurred_at=_created_at(payload) or sent_at,
                payload=payload,
            )
        ]
    )


def _header_family(request: WebhookRequest) -> str:
    """``svix`` only when no ``webhook-*`` header came, so errors name the standard's."""
    names = ("id", "timestamp", "signature")
    if any(f"webhook-{n}" in request.headers for n in names):
        return "webhook"
    if any(f"svix-{n}" in request.headers for n in names):
        return "svix"
    return "webhook"


def decode_secret(secret: str) -> bytes | None:
    """The HMAC key of ``whsec_<base64>`` (the prefix is optional), or None if malformed."""
    text = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        # Secrets are sometimes shown without padding; extra "=" is ignored.
        return base64.b64decode(text + "==", validate=False) or None
    except binascii.Error:
        return None


def _signatures(header: str) -> list[bytes]:
    out = []
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or version != VERSION:
            continue
        try:
            out.append(base64.b64decode(value, validate=True))
        except binascii.Error:
            continue  # one malformed entry must not hide a good one beside it
    return out


def _created_at(payload: dict[str, Any]) -> datetime | None:
    value = payload.get("created_at")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
