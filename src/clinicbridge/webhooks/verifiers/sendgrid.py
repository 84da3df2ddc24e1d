"""SendGrid Event Webhook: ECDSA P-256 over ``timestamp + raw body``.

Headers: ``X-Twilio-Email-Event-Webhook-Signature`` (base64 of a DER ECDSA
signature, SHA-256) and ``X-Twilio-Email-Event-Webhook-Timestamp`` (epoch
seconds). The "secret" is not secret: it is the verification public key that
SendGrid shows under Mail Settings (base64 DER, or PEM). During a key rotation
several keys may be configured; any one verifying the signature passes.

The body is a JSON array; every element becomes one event.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    TOLERANCE,
    InboundEvent,
    Verified,
    WebhookRequest,
    check_timestamp,
    content_id,
    from_unix,
    parse_json,
    parse_unix_timestamp,
    require_header,
)

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    keys = [key for key in map(load_public_key, secrets) if key is not None]
    if not keys:
        raise WebhookVerificationError("no valid verification key configured")
    signature_b64 = require_header(request, SIGNATURE_HEADER)
    timestamp = require_header(request, TIMESTAMP_HEADER)
    sent_at = parse_unix_timestamp(timestamp, TIMESTAMP_HEADER)
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except binascii.Error:
        raise WebhookVerificationError(f"invalid base64 in {SIGNATURE_HEADER}") from None

    signed = timestamp.encode() + request.body
    if not any(_verifies(key, signature, signed) for key in keys):
        raise WebhookVerificationError("no matching signature")
    check_timestamp(sent_at, now, TOLERANCE)

    items = parse_json(request.body)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise WebhookVerificationError("signed body is not a JSON array of events")
    return Verified([_event(item) for item in items])


def load_public_key(text: str) -> ec.EllipticCurvePublicKey | None:
    """A P-256 public key from SendGrid's base64 DER (or PEM), or None if it is not one."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, TypeError, binascii.Error):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, signed: bytes) -> bool:
    try:
        key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _event(item: dict[str, Any]) -> InboundEvent:
    event_id = item.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id:
        # One item of a batch has no signed content of its own: hash its canonical form.
        canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        event_id = content_id(canonical.encode())
    return InboundEvent(
        provider_event_id=event_id,
        type=f"email.{item.get('event') or 'unknown'}",
        occurred_at=from_unix(item.get("timestamp")),
        payload=item,
    )
