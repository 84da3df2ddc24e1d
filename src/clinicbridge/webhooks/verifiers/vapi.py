"""Vapi server messages, in each of the ways Vapi authenticates a server URL.

1. ``x-vapi-secret: <secret>``: the legacy inline ``server.secret``, and what a
   Bearer-token credential with header ``X-Vapi-Secret`` and no prefix sends.
2. ``Authorization: Bearer <secret>``: a Bearer-token credential (the default).
3. HMAC: hex (or base64) HMAC-SHA256 keyed with the secret, in
   ``x-vapi-signature``, optionally prefixed ``sha256=``. With a timestamp
   header the signed content is ``"<timestamp>.<raw body>"`` (Vapi's HMAC
   credential default payload format) and the replay window applies; without
   one it is the raw body. Vapi's HMAC credential names its headers freely and
   defaults to ``x-signature`` / ``x-timestamp``, so that pair is read too; a
   signature header is only ever paired with the timestamp header of its own
   family. The timestamp may be in seconds or milliseconds (12+ digits).
   Older Vapi docs say the plain secret itself is sent in ``X-Vapi-Signature``;
   that form is accepted as well, as it proves exactly what ``x-vapi-secret``
   does.

The static forms (1, 2 and the plain secret) prove the sender knows the secret
but do not cover the body or a time: prefer HMAC with a timestamp. A request
passes when any credential it carries matches any configured secret.

Event: ``message.type`` (``tool-calls``, ``status-update``,
``end-of-call-report``...), as ``voice.<type>``. Vapi sends no message id;
dedupe id: ``<message.call.id>:<type>:<message.timestamp>`` (epoch ms), or a
hash of the body in place of the timestamp when there is none.
"""

from __future__ import annotations

import base64
import contextlib
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
    content_id,
    from_unix,
    parse_json,
)

SECRET_HEADER = "x-vapi-secret"  # noqa: S105 - a header name, not a secret
AUTHORIZATION = "authorization"
# (signature header, its timestamp header): Vapi's names first, then the
# defaults of Vapi's HMAC credential.
SIGNATURE_HEADERS = (("x-vapi-signature", "x-vapi-timestamp"), ("x-signature", "x-timestamp"))
SIGNATURE_PREFIX = "sha256="
_MAX_DIGITS = 14  # epoch milliseconds until the year 5138
_MS_DIGITS = 12  # 12+ digits cannot be seconds before the year 5138


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    keys = [s for s in secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    tokens = _static_tokens(request)
    signature = _signature(request)
    if not tokens and signature is None:
        raise WebhookVerificationError(
            f"missing header {SECRET_HEADER}, {AUTHORIZATION} or {SIGNATURE_HEADERS[0][0]}"
        )

    # Every comparison runs (no early exit) so timing does not tell which one matched.
    static = [constant_time_equal(key, token) for key in keys for token in tokens]
    if signature is None:
        if not any(static):
            raise WebhookVerificationError("no matching secret or signature")
    else:
        value, timestamp, ts_header = signature
        # The plain secret in the signature header (older docs) proves what x-vapi-secret does.
        static += [constant_time_equal(key, value) for key in keys]
        content = request.body if timestamp is None else timestamp.encode() + b"." + request.body
        digests = [hmac.new(key.encode(), content, hashlib.sha256).digest() for key in keys]
        signed = [constant_time_equal(d, c) for d in digests for c in _candidates(value)]
        if not any(static):
            if not any(signed):
                raise WebhookVerificationError("no matching secret or signature")
            if timestamp is not None:  # only an HMAC binds a time; a static secret has none
                check_timestamp(_parse_timestamp(timestamp, ts_header), now, TOLERANCE)

    payload = parse_json(request.body)
    message = payload.get("message") if isinstance(payload, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WebhookVerificationError("signed body is not a Vapi server message")
    return Verified(
        [
            InboundEvent(
                provider_event_id=_event_id(message, request.body),
                type=f"voice.{message['type']}",
                occurred_at=_from_ms(message.get("timestamp")),
                payload=payload,
            )
        ]
    )


def _static_tokens(request: WebhookRequest) -> list[str]:
    tokens = []
    secret = request.headers.get(SECRET_HEADER, "").strip()
    if secret:
        tokens.append(secret)
    scheme, _, credential = request.headers.get(AUTHORIZATION, "").strip().partition(" ")
    if scheme.lower() == "bearer" and credential.strip():
        tokens.append(credential.strip())
    return tokens


def _signature(request: WebhookRequest) -> tuple[str, str | None, str] | None:
    for sig_header, ts_header in SIGNATURE_HEADERS:
        value = request.headers.get(sig_header, "").strip()
        if value:
            timestamp = request.headers.get(ts_header, "").strip() or None
            return value, timestamp, ts_header
    return None


def _candidates(value: str) -> list[bytes]:
    """The digest the header may spell, as hex or as base64."""
    text = value.removeprefix(SIGNATURE_PREFIX).strip()
    out = []
    with contextlib.suppress(ValueError):
        out.append(bytes.fromhex(text))
    with contextlib.suppress(ValueError):  # binascii.Error is a ValueError
        out.append(base64.b64decode(text, validate=True))
    return out


def _parse_timestamp(value: str, name: str) -> datetime:
    if not (0 < len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit()):
        raise WebhookVerificationError(f"invalid timestamp in {name}")
    number = int(value)
    seconds = number / 1000 if len(value) >= _MS_DIGITS else number
    return datetime.fromtimestamp(seconds, tz=UTC)


def _event_id(message: dict[str, Any], body: bytes) -> str:
    call = message.get("call")
    call_id = call.get("id") if isinstance(call, dict) else None
    stamp = message.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int | float | str) or stamp == "":
        stamp = content_id(body)
    return f"{call_id if isinstance(call_id, str) else ''}:{message['type']}:{stamp}"


def _from_ms(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return from_unix(value / 1000)
