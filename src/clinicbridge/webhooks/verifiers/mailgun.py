"""Mailgun: the signature travels inside the JSON body, not in a header.

Body: ``{"signature": {"timestamp": "<unix s>", "token": "<50 chars>",
"signature": "<hex>"}, "event-data": {...}}``. The signature is hex
HMAC-SHA256 keyed with the domain's HTTP webhook signing key over
``timestamp + token`` (no separator). For a subaccount's domain Mailgun adds
``parent-signature``, the same HMAC keyed with the primary account's key; either
one matching a configured secret passes.

What Mailgun signs is only ``timestamp + token``, never ``event-data``: the body
cannot be checked against the signature, so a captured signature block could be
glued to another event. Mailgun's answer is that a token is single-use, so the
token is the dedupe id: the inbox then refuses a second request carrying it. A
retry that Mailgun signs with a fresh token reaches handlers again; they are
idempotent, and ``event-data.id`` stays in the payload.

The signature block has to be read before anything is verified (it is the
body); ``event-data`` is looked at only after a match. The legacy form-encoded
webhooks (fields at the top level) are not supported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    parse_unix_timestamp,
)

SIGNATURE_FIELDS = ("signature", "parent-signature")


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    keys = [s.encode() for s in secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    body = _load(request.body)
    block = body.get("signature")
    if not isinstance(block, dict):
        raise WebhookVerificationError("missing signature object in body")
    timestamp = _text(block.get("timestamp"))
    token = _text(block.get("token"))
    if not timestamp:
        raise WebhookVerificationError("missing signature.timestamp")
    if not token:
        raise WebhookVerificationError("missing signature.token")
    sent = [v.lower() for f in SIGNATURE_FIELDS if isinstance(v := block.get(f), str) and v]
    if not sent:
        raise WebhookVerificationError("missing signature.signature")
    sent_at = parse_unix_timestamp(timestamp, "signature.timestamp")

    signed = (timestamp + token).encode()
    expected = [hmac.new(key, signed, hashlib.sha256).hexdigest() for key in keys]
    # Every pair is compared (no early exit) so timing does not tell which secret matched.
    matches = [constant_time_equal(e, s) for e in expected for s in sent]
    if not any(matches):
        raise WebhookVerificationError("no matching signature")
    check_timestamp(sent_at, now, TOLERANCE)

    data = body.get("event-data")
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise WebhookVerificationError("signed body has no event-data.event")
    return Verified(
        [
            InboundEvent(
                provider_event_id=token,
                type=f"email.{data['event']}",
                occurred_at=from_unix(data.get("timestamp")),
                payload=body,
            )
        ]
    )


def _load(raw: bytes) -> dict[str, Any]:
    # Only the signature block is read before the match; nothing is acted on.
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise WebhookVerificationError("body is not JSON (Mailgun signs inside it)") from exc
    if not isinstance(body, dict):
        raise WebhookVerificationError("body is not a JSON object")
    return body


def _text(value: object) -> str:
    # Mailgun sends the timestamp as a string; tolerate a JSON integer as well.
    if isinstance(value, bool):
        return ""
    if isinstance(value, int):
        return str(value)
    return value.strip() if isinstance(value, str) else ""
