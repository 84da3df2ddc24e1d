"""Google Calendar push notifications (watch channels).

Google POSTs an empty body to the channel's address with ``X-Goog-Channel-ID``,
``X-Goog-Channel-Token`` (the token we set when creating the channel: the
integration's webhook secret), ``X-Goog-Resource-ID``, ``X-Goog-Resource-State``
(``sync`` once when the channel starts, then ``exists`` / ``not_exists``) and
``X-Goog-Message-Number`` (grows per channel). Nothing is signed: the channel token,
compared in constant time, is the proof. Dedupe id: ``<channel id>:<message number>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime

from clinicbridge.core.errors import WebhookVerificationError
from clinicbridge.webhooks.verifiers.base import (
    InboundEvent,
    Verified,
    WebhookRequest,
    constant_time_equal,
    require_header,
)

CHANGED = "calendar.changed"
STATES = frozenset({"sync", "exists", "not_exists"})


def verify(request: WebhookRequest, secrets: Sequence[str], now: datetime) -> Verified:
    keys = [s for s in secrets if s]
    if not keys:
        raise WebhookVerificationError("no secret configured")
    token = require_header(request, "x-goog-channel-token")
    if not any([constant_time_equal(token, key) for key in keys]):  # a list: all compared
        raise WebhookVerificationError("channel token does not match")
    channel = require_header(request, "x-goog-channel-id")
    number = require_header(request, "x-goog-message-number")
    state = require_header(request, "x-goog-resource-state")
    if state not in STATES or not number.isascii() or not number.isdigit():
        raise WebhookVerificationError("not a calendar channel notification")
    expiration = request.headers.get("x-goog-channel-expiration")
    return Verified(
        [
            InboundEvent(
                provider_event_id=f"{channel[:100]}:{number[:20]}",
                type=CHANGED,
                occurred_at=None,
                payload={
                    "channel_id": channel[:100],
                    "resource_id": request.headers.get("x-goog-resource-id", "")[:200],
                    "resource_state": state,
                    "message_number": int(number[:20]),
                    "expiration": _http_date(expiration),
                },
            )
        ]
    )


def _http_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError):
        return None
