"""DocuSign Connect with HMAC: ``X-DocuSign-Signature-<n>: base64(HMAC-SHA256(key, body))``.

An account can hold up to 100 Connect HMAC keys; DocuSign sends one header per
active key, numbered from 1 (``X-DocuSign-Signature-1``, ``-2``, ...), each an
HMAC-SHA256 of the raw body keyed with that key's text, base64-encoded
(``X-Authorization-Digest: HMACSHA256`` names the algorithm). A request passes
when any header matches any configured key, which is what lets keys be rotated.

DocuSign signs no timestamp, so no replay window can be checked: dedupe on the
event id below is what stops a replayed request. Only the JSON "SIM" format
(``event``, ``generatedDateTime``, ``data.envelopeId``) is read; a legacy XML
body verifies but is refused as not JSON.

Dedupe id: the body's ``eventId`` when present, else
``<event>:<envelopeId>[:<recipientId>]:<generatedDateTime>``. DocuSign resends a
failed notification with the same ``generatedDateTime`` (only ``retryCount``
changes), so retries collapse; the event name and recipient keep two events
generated in the same tick apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    InboundEvent,
    Verified,
    WebhookRequest,
    constant_time_equal,
    content_id,
    parse_json,
)

HEADER_PREFIX = "x-docusign-signature-"
MAX_KEYS = 100  # DocuSign's limit of HMAC keys per account
_HEADER = re.compile(r"x-docusign-signature-([1-9][0-9]{0,2})")


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    del now  # DocuSign signs no timestamp (see the module docstring)
    keys = [s.encode() for s in secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    signatures = _signatures(request)
    if not signatures:
        raise WebhookVerificationError(f"missing header {HEADER_PREFIX}1")

    expected = [hmac.new(key, request.body, hashlib.sha256).digest() for key in keys]
    # Every pair is compared (no early exit) so timing does not tell which key matched.
    matches = [constant_time_equal(e, sig) for e in expected for sig in signatures]
    if not any(matches):
        raise WebhookVerificationError("no matching signature")

    payload = parse_json(request.body)
    if not isinstance(payload, dict) or not isinstance(payload.get("event"), str):
        raise WebhookVerificationError("signed body is not a DocuSign Connect JSON event")
    return Verified(
        [
            InboundEvent(
                provider_event_id=_event_id(payload, request.body),
                type=f"esign.{payload['event']}",
                occurred_at=_parse_time(payload.get("generatedDateTime")),
                payload=payload,
            )
        ]
    )


def _signatures(request: WebhookRequest) -> list[bytes]:
    out = []
    for name, value in request.headers.items():
        found = _HEADER.fullmatch(name)
        if found is None or int(found.group(1)) > MAX_KEYS:
            continue
        try:
            out.append(base64.b64decode(value.strip(), validate=True))
        except binascii.Error:
            continue  # one malformed header must not hide a good one beside it
    return out


def _event_id(payload: dict[str, Any], body: bytes) -> str:
    event_id = payload.get("eventId")
    if isinstance(event_id, str) and event_id:
        return event_id
    data = payload.get("data")
    envelope = data.get("envelopeId") if isinstance(data, dict) else None
    generated = payload.get("generatedDateTime")
    if not (isinstance(envelope, str) and envelope and isinstance(generated, str) and generated):
        return content_id(body)
    recipient = data.get("recipientId") if isinstance(data, dict) else None
    parts = [payload["event"], envelope]
    if isinstance(recipient, str | int) and not isinstance(recipient, bool):
        parts.append(str(recipient))
    parts.append(generated)
    return ":".join(parts)


def _parse_time(value: object) -> datetime | None:
    # DocuSign writes seven fractional digits ("...20.2340000Z"); Python 3.11 reads them.
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
