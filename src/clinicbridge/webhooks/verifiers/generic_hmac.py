"""Any sender that signs with hex HMAC-SHA256: ``x-signature: [sha256=]<hex>``.

Without a timestamp header the signed content is the raw body. With one
(``x-timestamp``, epoch seconds) it is ``"<timestamp>.<raw body>"`` and the
replay window applies; dropping the header from a timestamped request does not
help an attacker, since the body alone was never signed. Header names are
parameters (``functools.partial(verify, signature_header="x-hub-signature-256")``
still fits the ``Verifier`` protocol).

Event: dedupe id from the ``x-event-id`` header, else the body's ``id``, else a
hash of the body (not of the timestamp, which changes when a sender retries);
type from the body's ``type``, else ``generic.event``. A JSON body that is not an
object is kept under ``payload["data"]``.
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
    parse_json,
    parse_unix_timestamp,
    require_header,
)

SIGNATURE_HEADER = "x-signature"
TIMESTAMP_HEADER = "x-timestamp"
EVENT_ID_HEADER = "x-event-id"
SIGNATURE_PREFIX = "sha256="
DEFAULT_TYPE = "generic.event"


def verify(
    request: WebhookRequest,
    secrets: Sequence[str],
    now: datetime,
    *,
    signature_header: str = SIGNATURE_HEADER,
    timestamp_header: str = TIMESTAMP_HEADER,
) -> Verified:
    keys = [s.encode() for s in secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    signature_header = signature_header.lower()  # request headers arrive lower-cased
    timestamp_header = timestamp_header.lower()
    sent = require_header(request, signature_header)
    sent = sent.removeprefix(SIGNATURE_PREFIX).strip().lower()
    timestamp = request.headers.get(timestamp_header, "").strip() or None
    sent_at = None if timestamp is None else parse_unix_timestamp(timestamp, timestamp_header)

    signed = request.body if timestamp is None else timestamp.encode() + b"." + request.body
    expected = [hmac.new(key, signed, hashlib.sha256).hexdigest() for key in keys]
    # Every secret is compared (no early exit) so timing does not tell which one matched.
    if not any([constant_time_equal(e, sent) for e in expected]):
        raise WebhookVerificationError("no matching signature")
    if sent_at is not None:
        check_timestamp(sent_at, now, TOLERANCE)

    parsed = parse_json(request.body)
    payload: dict[str, Any] = parsed if isinstance(parsed, dict) else {"data": parsed}
    kind = payload.get("type")
    return Verified(
        [
            InboundEvent(
                provider_event_id=_event_id(request, payload),
                type=kind if isinstance(kind, str) and kind else DEFAULT_TYPE,
                occurred_at=sent_at,
                payload=payload,
            )
        ]
    )


def _event_id(request: WebhookRequest, payload: dict[str, Any]) -> str:
    header = request.headers.get(EVENT_ID_HEADER, "").strip()
    if header:
        return header
    body_id = payload.get("id")
    if isinstance(body_id, str) and body_id:
        return body_id
    if isinstance(body_id, int) and not isinstance(body_id, bool):
        return str(body_id)
    return content_id(request.body)
