"""Standard Webhooks signing for outbound deliveries.

A message is signed with HMAC-SHA256 over ``"<webhook-id>.<webhook-timestamp>.<body>"``,
keyed with the base64-decoded part of the endpoint's ``whsec_<base64>`` secret, and
sent as ``webhook-signature: v1,<base64 digest>``. The id is the same on every retry
(receivers deduplicate on it); the timestamp is the time of each attempt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from typing import Any

from clinicbridge.core.secrets import Secret

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 24
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


class InvalidSecretError(ValueError):
    """A given secret is not ``whsec_`` + base64 of 24 to 64 bytes (says no more)."""


def generate_secret() -> Secret:
    """A fresh ``whsec_`` secret: 24 random bytes, base64."""
    return Secret(SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode())


def secret_key(secret: str | Secret) -> bytes:
    """The HMAC key inside a ``whsec_`` secret; InvalidSecretError if malformed."""
    text = secret.reveal() if isinstance(secret, Secret) else secret
    if not text.startswith(SECRET_PREFIX):
        raise InvalidSecretError(f"must start with {SECRET_PREFIX}")
    encoded = text[len(SECRET_PREFIX) :]
    if not _BASE64.match(encoded):
        raise InvalidSecretError(f"must be {SECRET_PREFIX} followed by base64")
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise InvalidSecretError(f"must be {SECRET_PREFIX} followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise InvalidSecretError(f"must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes")
    return key


def encode_body(message: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, UTF-8."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str | Secret, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str | Secret, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
